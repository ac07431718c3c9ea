"""Agents, their runs and the tool-call gate."""

# Registered whenever any part of this package is imported: run tokens as a credential
# kind and the agent rows that invalidate cached answers (with identity and core), and
# the agents' facts and visibility rule (with authorization's engine).
from bastion.agents import credentials as _credentials  # noqa: F401
from bastion.agents import facts as _facts  # noqa: F401
