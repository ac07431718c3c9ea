"""Organisations, teams and memberships."""
