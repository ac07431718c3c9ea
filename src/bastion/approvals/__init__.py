"""Approval policies and human approval of agents' tool calls."""
