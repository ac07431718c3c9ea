"""The estimate of what evaluating an expression costs, built node by node by the
parser: `Est`, and how estimates combine.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.authz.conditions.limits import ASSUMED_LENGTH


@dataclass(frozen=True)
class Est:
    """What evaluating an expression costs and gives: `cost` steps in all, `local` of
    them outside the bodies of the comprehensions in it (what a metered iteration
    charges), `length` (as a range: its elements), `weight` (its size, what copying or
    comparing it costs), `depth` (comprehension nesting) and `item` (an element's
    estimate; None: like a context value)."""

    cost: int = 1
    local: int = 1
    length: int = 0
    weight: int = 1
    depth: int = 0
    item: Est | None = None
    literal: str | None = None  # a string literal's token, quotes and all

    def element(self) -> Est:
        """An element, when iterated over (of a context value: a small one)."""
        return self.item if self.item is not None else ITEM

    def field(self) -> Est:
        """A field or an indexed value (of a context value: as large as it)."""
        return self.item if self.item is not None else CONTEXT


CONTEXT = Est(length=ASSUMED_LENGTH, weight=ASSUMED_LENGTH)
ITEM = Est(length=ASSUMED_LENGTH, weight=4)


def _join(ests: list[Est]) -> Est | None:
    if not ests:
        return None
    return Est(
        cost=max(e.cost for e in ests),
        local=max(e.local for e in ests),
        length=max(e.length for e in ests),
        weight=max(e.weight for e in ests),
        depth=max(e.depth for e in ests),
        item=_join([e.element() for e in ests if e.item is not None]),
    )


def _node(*parts: Est, extra: int = 1) -> tuple[int, int, int]:
    """(cost, local, depth) of a node over `parts` costing `extra` steps itself."""
    return (
        sum(p.cost for p in parts) + extra,
        sum(p.local for p in parts) + extra,
        max((p.depth for p in parts), default=0),
    )
