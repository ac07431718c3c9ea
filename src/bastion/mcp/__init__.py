"""MCP servers: the organisation's registry of upstream MCP servers (Streamable HTTP)
and the client that speaks to them for the gateway (`/v1/runs/{run}/mcp`).

Below `bastion.agents` (which checks that a connection names a server of the org);
the gateway itself sits at the edge (`bastion.api.mcp_gateway`), composing the agents'
gate with this package's client.
"""
