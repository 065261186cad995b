"""Partition patterns in Jepsen's manner (its nemesis "grudges"), as pairs of node sets
to cut apart. Pure: the random choices come from the ``rng`` given (seeded by a
timeline's ``seed`` for a reproducible run), and what was chosen is returned for the
run record.

* ``halves``: a random split into a minority (⌊n/2⌋ nodes) and a majority;
* ``isolate``: one random node cut from all the others;
* ``ring``: nodes on a random ring, each still reaching its nearest neighbours (a
  majority counting itself) and cut from the others: every node sees a majority,
  no two the same one (with 3 nodes the ring is complete and nothing is cut);
* ``bridge``: two halves cut apart except for one node that reaches both.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["PATTERNS", "cuts"]

PATTERNS = ("halves", "isolate", "ring", "bridge")

Cut = tuple[tuple[str, ...], tuple[str, ...]]


def _ring(order: list[str]) -> list[Cut]:
    n = len(order)
    majority = n // 2 + 1
    reach = -(-(majority - 1) // 2)  # nearest neighbours on each side
    found: list[Cut] = []
    for i in range(n):
        for j in range(i + 1, n):
            distance = min(j - i, n - (j - i))
            if distance > reach:
                found.append(((order[i],), (order[j],)))
    return found


def cuts(pattern: str, nodes: list[str], rng: random.Random) -> tuple[list[Cut], dict[str, Any]]:
    """The cuts of ``pattern`` over ``nodes`` and a description of the choice."""
    if len(nodes) < 2:
        raise ValueError(f"partition {pattern}: needs at least 2 nodes")
    order = list(nodes)
    rng.shuffle(order)
    if pattern == "halves":
        minority, majority = order[: len(order) // 2], order[len(order) // 2 :]
        return [(tuple(minority), tuple(majority))], {
            "pattern": pattern,
            "minority": sorted(minority),
            "majority": sorted(majority),
        }
    if pattern == "isolate":
        alone, rest = order[0], order[1:]
        return [((alone,), tuple(rest))], {"pattern": pattern, "isolated": alone}
    if pattern == "ring":
        return _ring(order), {"pattern": pattern, "ring": order}
    if pattern == "bridge":
        if len(order) < 3:
            raise ValueError("partition bridge: needs at least 3 nodes")
        bridge, others = order[0], order[1:]
        a, b = others[: len(others) // 2], others[len(others) // 2 :]
        return [(tuple(a), tuple(b))], {
            "pattern": pattern,
            "bridge": bridge,
            "sides": [sorted(a), sorted(b)],
        }
    raise ValueError(f"unknown partition pattern {pattern!r} (known: {', '.join(PATTERNS)})")
