"""A real upstream MCP server for the gateway's tests and benchmark: the `mcp` SDK's
`MCPServer` over Streamable HTTP, served by uvicorn on a free port in a thread of the
test process, recording every call it receives (the proof that a denied call never
reached it), the headers it was sent and the JSON-RPC method of each request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.e2e.server import free_port


class Upstream:
    def __init__(
        self, *, token: str | None = None, check: Callable[[str], bool] | None = None
    ) -> None:
        """`token`: the one bearer it accepts; `check`: whether it accepts a bearer (as a
        resource server introspecting it at its OAuth server); else anyone."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.methods: list[str] = []
        self.token = token
        self.check = check
        self.server = MCPServer("upstream")
        self._describe = "Add two numbers."
        self._install()
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _install(self) -> None:
        calls = self.calls

        def add(a: int, b: int) -> int:
            calls.append(("add", {"a": a, "b": b}))
            return a + b

        def refund(amount: int) -> str:
            calls.append(("refund", {"amount": amount}))
            return f"refunded {amount}"

        self.server.add_tool(add, name="add", description=self._describe)
        self.server.add_tool(refund, name="refund", description="Refund an order.")

    def change_add(self, description: str) -> None:
        """A changed upstream definition (what a rug pull looks like)."""
        self.server.remove_tool("add")
        calls = self.calls

        def add(a: int, b: int) -> int:
            calls.append(("add", {"a": a, "b": b}))
            return a + b

        self.server.add_tool(add, name="add", description=description)

    def _app(self) -> ASGIApp:
        inner = self.server.streamable_http_app(json_response=True, stateless_http=True)
        seen = self.headers
        methods = self.methods
        token = self.token
        check = self.check

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                seen.append(headers)
                given = headers.get("authorization", "")
                bearer = given[7:] if given.startswith("Bearer ") else ""
                if (token is not None and given != f"Bearer {token}") or (
                    check is not None and not (bearer and check(bearer))
                ):
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
                    return
                messages: list[Message] = []
                while True:  # the body read here (to record its method), replayed inside
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request" or not message.get("more_body"):
                        break
                body = b"".join(m.get("body", b"") for m in messages)
                try:
                    methods.append(str(json.loads(body).get("method")))
                except (ValueError, AttributeError):
                    methods.append(scope["method"])
                replay = iter(messages)

                async def again() -> Message:
                    return next(replay, None) or await receive()

                await inner(scope, again, send)
                return
            await inner(scope, receive, send)

        return app

    def start(self) -> Upstream:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._uvicorn.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the upstream MCP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
