"""Router-side approximation of each instance's prefix cache (as sglang-router's cache-aware tree).

Per instance, a bounded LRU set of the prefix-block hashes the router has
sent there. ``match`` counts how many leading blocks of a request the
instance probably holds. Deterministic; no clocks (an insertion counter
orders the LRU).

Eviction is leaf first, as in SGLang's radix cache and sglang-router's
tree: a block is always more recently used than every block after it in a
prefix (``touch_prefix``), so the LRU end drops the tails of old prefixes and
never a head whose tail stays (a cached tail without its head is useless:
``match`` stops at the first missing block).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


def touch_prefix(lru: OrderedDict, blocks, cap: int | None = None) -> None:
    """Mark ``blocks`` (one prefix, in order) most recently used, the head most recent of all; then, if
    ``cap`` is given, evict least recently used blocks (leaves first) down to ``cap``."""
    for b in reversed(blocks):
        lru[b] = None
        lru.move_to_end(b)
    while cap is not None and len(lru) > cap:
        lru.popitem(last=False)


def held_prefix(lru, blocks, start: int = 0) -> int:
    """How many leading blocks of ``blocks`` are held: the index of the first block from ``start`` on that
    ``lru`` lacks (a prefix hit stops at its first miss)."""
    n = start
    while n < len(blocks) and blocks[n] in lru:
        n += 1
    return n


class PrefixTracker:
    def __init__(self, max_blocks_per_instance: int = 200_000):
        self.max_blocks = max_blocks_per_instance
        self._sets: dict[Hashable, OrderedDict] = {}

    def match(self, iid: Hashable, blocks: tuple) -> int:
        seen = self._sets.get(iid)
        return held_prefix(seen, blocks) if seen else 0

    def record(self, iid: Hashable, blocks: tuple) -> None:
        seen = self._sets.setdefault(iid, OrderedDict())
        touch_prefix(seen, blocks, self.max_blocks)

    def size(self, iid: Hashable) -> int:
        return len(self._sets.get(iid, ()))

    def forget(self, iid: Hashable) -> None:
        self._sets.pop(iid, None)
