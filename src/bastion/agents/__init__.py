"""Agents, their runs and the tool-call gate."""
