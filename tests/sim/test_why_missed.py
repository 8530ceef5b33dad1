"""bench/sim/why_missed.py: every feasible request is counted once, as met or by one miss category."""

from __future__ import annotations

import collections
import importlib.util
import sys
from pathlib import Path

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig
from hyperflexis_sglang.sim.engine import BLOCK_TOKENS
from hyperflexis_sglang.sim.workload import build, load_trace

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sim"
sys.path.insert(0, str(BENCH))  # why_missed imports attainment beside it
spec = importlib.util.spec_from_file_location("sim_bench_why_missed", BENCH / "why_missed.py")
why = importlib.util.module_from_spec(spec)
spec.loader.exec_module(why)
MOONCAKE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "mooncake_conversation.jsonl"


def test_cached_tokens_counts_the_leading_cached_blocks_without_touching_lru_order():
    perf = preset("llama-3-8b", "h100", 1)
    rep = Cluster(ClusterConfig(policy="hfx", replicas=1), perf, perf).replicas[0]
    rep.cache.update(collections.OrderedDict.fromkeys([3, 1, 2]))
    assert rep.cached_tokens((1, 2, 7, 3)) == 2 * BLOCK_TOKENS
    assert rep.cached_tokens((9, 1)) == 0
    assert list(rep.cache) == [3, 1, 2]
    assert rep._cache_hit((1, 2, 7)) == (2 * BLOCK_TOKENS, 0)  # a hit does touch it (no host tier: 0 from it)
    assert list(rep.cache) == [3, 2, 1]  # the head of the hit prefix is the most recent
    assert rep._cache_hit((3,)) == (BLOCK_TOKENS, 0) and list(rep.cache) == [2, 1, 3]


def test_prefix_cache_evicts_leaves_first_as_sglang_radix_cache():
    """A full cache drops the tail of the least recent prefix, so its head still hits (a flat LRU dropped the
    head first and kept a tail no request could use)."""
    perf = preset("llama-3-8b", "h100", 1)
    rep = Cluster(ClusterConfig(policy="hfx", replicas=1), perf, perf).replicas[0]
    rep.cache_blocks = 4
    rep._cache_insert((1, 2, 3))
    rep._cache_insert((8, 9))
    assert rep.cached_tokens((1, 2, 3)) == 2 * BLOCK_TOKENS and rep.cached_tokens((8, 9)) == 2 * BLOCK_TOKENS
    rep._cache_hit((1, 2))  # shared head refreshed: the next eviction takes the other prefix's tail
    rep._cache_insert((1, 2, 5))
    assert rep.cached_tokens((1, 2, 5)) == 3 * BLOCK_TOKENS and rep.cached_tokens((8, 9)) == BLOCK_TOKENS
    assert len(rep.cache) == 4


@pytest.mark.skipif(not MOONCAKE.is_file(), reason="real trace missing (shared/ beside the clone)")
def test_every_feasible_request_is_met_or_missed_once():
    perf = preset("llama-3-8b", "h100", 1)
    wl = build(load_trace(MOONCAKE, 300), seed=0, rate_scale=0.5)
    cluster = why.ProbedCluster(ClusterConfig(policy="hfx", router="hfx", replicas=2), perf, perf)
    cluster.run(wl)
    rows = why.classify(cluster, wl, why.idle_alone(wl, perf))
    allowed = {f"{o} / {c}" for o in why.OUTCOMES for c in why.CACHE}
    assert sum(r["requests"] for r in rows.values()) == len(wl)
    for row in rows.values():
        assert set(row["missed"]) <= allowed
        assert row["feasible alone"] == row["met"] + sum(row["missed"].values())
        assert row["feasible alone"] <= row["requests"]
    assert any(row["met"] for row in rows.values())
    assert "| interactive |" in why.report(rows, type("A", (), {"trace": "t", "deploy": "collocated", "limit": 300,
                                                                 "rate_scale": 0.5})(), "cmd")
