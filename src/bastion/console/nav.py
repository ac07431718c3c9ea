"""The console's navigation: every page of the contract, in the order shown. A page not
built yet answers with its heading and "not yet available" (`bastion.console.placeholder`)
until a module of `bastion.console.pages` serves its path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    heading: str  # the page's heading and link text (accessible names are fixed)
    path: str


ITEMS: tuple[Item, ...] = (
    Item("Approvals", "/console/approvals"),
    Item("Agents", "/console/agents"),
    Item("Audit log", "/console/audit"),
    Item("Alerts", "/console/alerts"),
    Item("Users", "/console/users"),
    Item("Teams", "/console/teams"),
    Item("Roles", "/console/roles"),
    Item("API keys", "/console/api-keys"),
    Item("Secrets", "/console/secrets"),
    Item("Webhooks", "/console/webhooks"),
    Item("Compliance", "/console/compliance"),
    Item("Access reviews", "/console/access-reviews"),
    Item("Settings", "/console/settings"),
)
