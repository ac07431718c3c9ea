"""The customer-managed-key tests' real peers (tests/secrets/keypeers.py)."""

from tests.secrets.keypeers import openbao, softhsm

__all__ = ["openbao", "softhsm"]
