"""Agents, their runs and the tool-call gate."""

# Run tokens as a credential kind, and the agent rows that invalidate cached answers:
# registered with identity and core whenever any part of this package is imported.
from bastion.agents import credentials as _credentials  # noqa: F401
