"""bench/sim/prefix_reuse.py: hit shares of a leaf-first LRU prefix cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "sim_bench_prefix_reuse", Path(__file__).resolve().parents[2] / "bench" / "sim" / "prefix_reuse.py")
reuse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reuse)


def test_hit_fraction_counts_leading_cached_blocks_and_grows_with_the_cache():
    prefixes = [(1, 2, 3), (1, 2, 4), (5, 6), (1, 2, 3)]  # 11 blocks
    assert reuse.hit_fraction(prefixes, None) == 5 / 11  # (1, 2) then (1, 2, 3)
    # 3 blocks: (1, 2, 4) pushes out 3; (5, 6) then evicts 4 and 2, leaves first, so the last request
    # still hits its head (1)
    assert reuse.hit_fraction(prefixes, 3) == 3 / 11
    assert reuse.hit_fraction(prefixes, 1) == 1 / 11  # only the head 1 survives, until (5, 6)
    assert reuse.hit_fraction([], 5) == 0.0
