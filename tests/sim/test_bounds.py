"""hyperflexis_sglang.sim.bounds: the attainment bounds hold against the simulator and are exact where they can be."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.slo import DEFAULT_CLASSES, meets_slo
from hyperflexis_sglang.sim.bounds import (cached_prefix, finite_run_bound, idle_alone, request_work,
                                          steady_state_bound)
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig
from hyperflexis_sglang.sim.engine import BLOCK_TOKENS
from hyperflexis_sglang.sim.runner import simulate
from hyperflexis_sglang.sim.workload import Workload, build, load_trace

PERF = preset("llama-3-8b", "h100", 1)
AZURE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "azure_conv_2023.csv"


def _wl(arrivals, inp=1000, out=100, cls="standard", blocks=None) -> Workload:
    n = len(arrivals)
    return Workload(tuple(arrivals), (inp,) * n, (out,) * n, tuple(blocks or [()] * n), (DEFAULT_CLASSES[cls],) * n)


def test_cached_prefix_earlier_arrivals_only_unless_any_order():
    wl = _wl([0.0, 1.0, 2.0], inp=4 * BLOCK_TOKENS, blocks=[(1, 2), (1, 2, 3), (1, 9)])
    assert cached_prefix(wl) == [0, 2 * BLOCK_TOKENS, BLOCK_TOKENS]
    # any order: request 0's blocks 1 and 2 appear in request 1, which may be served first
    assert cached_prefix(wl, any_order=True) == [2 * BLOCK_TOKENS, 2 * BLOCK_TOKENS, BLOCK_TOKENS]
    # never the whole prompt: one token is always computed
    assert cached_prefix(_wl([0.0, 1.0], inp=BLOCK_TOKENS, blocks=[(5,), (5,)])) == [0, BLOCK_TOKENS - 1]


def test_a_request_infeasible_alone_costs_infinite_work():
    wl = _wl([0.0, 0.1], inp=30_000, cls="interactive")  # 30k tokens cannot prefill in 450 ms
    assert [ok for _, ok in idle_alone(wl, PERF)] == [False, False]
    work = request_work(wl, PERF)
    assert all(math.isinf(c) for c in work.prefill)
    assert steady_state_bound(wl, PERF)["bound"] == 0.0 and finite_run_bound(wl, PERF) == 0.0


def test_steady_state_bound_is_capacity_over_work_for_identical_requests():
    # 1000 identical requests, one every 10 ms, on one replica
    wl = _wl([i * 0.01 for i in range(1000)])
    work = request_work(wl, PERF)
    each = work.prefill[0] + max(work.decode_kv[0], work.decode_even[0])
    capacity = 1000 * 0.01  # n gaps at the trace's rate
    got = steady_state_bound(wl, PERF, replicas=1)
    assert got["bound"] == pytest.approx(min(1.0, math.floor(capacity / each) / 1000))
    assert got["utilisation"] == pytest.approx(1000 * each / capacity)
    assert got["bound"] < 1.0 < got["utilisation"]  # the point of the case: overloaded
    # twice the replicas, twice the met requests (until all are)
    assert steady_state_bound(wl, PERF, replicas=2)["bound"] == pytest.approx(
        min(1.0, math.floor(2 * capacity / each) / 1000))


def test_decode_shares_are_the_documented_lower_bounds():
    wl = _wl([0.0, 0.5], inp=800, out=51)
    work = request_work(wl, PERF)
    steps, context = 50, 50 * (800 + 51 / 2)
    linear = steps * PERF.per_decode_req + PERF.per_kv_token * context
    w_min = PERF.per_decode_req + PERF.per_kv_token * 801
    assert work.prefill[0] == pytest.approx(PERF.chunk_time(800, 0))
    assert work.decode_kv[0] == pytest.approx(linear + PERF.base * context / PERF.kv_capacity_tokens)
    assert work.decode_even[0] == pytest.approx(linear + steps * PERF.base * w_min / (0.2 - PERF.base))
    # alone, a request's replica time is at least its work (the simulator charges base on top)
    alone = PERF.prefill_time(800, 0) + sum(PERF.decode_time(1, 800 + t) for t in range(1, 51))
    assert alone >= work.prefill[0] + max(work.decode_kv[0], work.decode_even[0])


def test_bounds_never_rise_with_load():
    wl_rows = [(i * 0.05, 600 + 37 * (i % 11), 50 + 13 * (i % 7)) for i in range(600)]

    def wl(scale):
        return Workload(tuple(t / scale for t, _, _ in wl_rows), tuple(n for _, n, _ in wl_rows),
                        tuple(o for _, _, o in wl_rows), ((),) * 600,
                        tuple(DEFAULT_CLASSES[("interactive", "standard", "batch")[i % 3]] for i in range(600)))
    steady = [steady_state_bound(wl(s), PERF, replicas=1)["bound"] for s in (1, 4, 16, 64)]
    finite = [finite_run_bound(wl(s), PERF, replicas=1) for s in (1, 4, 16, 64)]
    assert steady == sorted(steady, reverse=True) and steady[0] == 1.0 and steady[-1] < 0.5
    assert finite == sorted(finite, reverse=True) and all(f >= s for f, s in zip(finite, steady))


@pytest.mark.skipif(not AZURE.is_file(), reason="real trace missing (shared/ beside the clone)")
@pytest.mark.parametrize("policy,pd", [("sglang-fcfs", None), ("hfx", None), ("sglang-priority", (1, 1)),
                                       ("hfx", (1, 1))])
def test_no_simulated_policy_beats_the_finite_run_bound(policy, pd):
    # an overloaded run: the bound is below 1, so exceeding it would be a real violation
    wl = build(load_trace(AZURE, 400), seed=0, rate_scale=40.0)
    cfg = ClusterConfig(policy=policy, router="round_robin", replicas=1, pd=pd)
    bound = finite_run_bound(wl, PERF, replicas=1, pd=pd)
    got = simulate(wl, cfg, PERF)["slo_attainment"]["overall"]
    assert bound < 0.95 and got <= bound + 1e-9, (got, bound)


@pytest.mark.skipif(not AZURE.is_file(), reason="real trace missing (shared/ beside the clone)")
def test_replica_time_covers_the_work_of_every_met_request():
    wl = build(load_trace(AZURE, 300), seed=0, rate_scale=40.0)
    cluster = Cluster(ClusterConfig(policy="hfx", router="hfx", replicas=2), PERF, PERF)
    cluster.run(wl)
    work = request_work(wl, PERF)
    met = [r.rid for r in cluster.requests.values()
           if meets_slo(r.slo, r.arrival, r.first_token_time, r.finish_time, r.output_len)]
    busy = sum(rep.busy_s for rep in cluster.replicas)
    assert met
    for decode in (work.decode_kv, work.decode_even):
        assert busy >= sum(work.prefill[i] + decode[i] for i in met)
