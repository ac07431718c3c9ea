"""docs/benchmarks.md: each benchmark owns one marked section and rewrites only that."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.scale import SCALE

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Written by `make bench` (`python -m bench.run`); each section is rewritten by its own
benchmark. Figures are medians of the runs named in each section, measured on the machine
named there; ratios compare peers measured in the same run on the same machine.
"""


def machine() -> str:
    cpus = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return (
        f"{platform.system()} {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}"
    )


def write_section(name: str, body: str) -> None:
    """Replace the section `name` of docs/benchmarks.md (a smoke run's figures are
    meaningless: it only checks that the section renders)."""
    if SCALE.smoke:
        print(f"  smoke run: section {name!r} rendered ({len(body):,} characters), not written")
        return
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    block = (
        f"{start}\n{body.rstrip()}\n\n_Measured {stamp} on {machine()};"
        f" load average at the end {load}._\n{end}"
    )
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    DOC.write_text(text)


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
