"""Table-driven tests of the pure D2D weight-transfer planner (core/weights/plan.py)."""

from __future__ import annotations

import pytest

from hyperflexis_sglang.core.weights import (LinkModel, ParamSpec, PlanConfig, WeightPlanError, estimate,
                                             estimate_load_seconds, make_buckets, per_param_seconds,
                                             plan_transfers)

MIB = 1 << 20


def params(*sizes_mib: float, dtype: str = "float32") -> list[ParamSpec]:
    return [ParamSpec(f"p{i}", dtype, (int(s * MIB) // 4,), int(s * MIB)) for i, s in enumerate(sizes_mib)]


@pytest.mark.parametrize("sizes, cfg, expected", [
    # everything fits one bucket when the model is small (min_bucket_bytes floor)
    ((1, 2, 3), PlanConfig(), [[("p0", 0, 1), ("p1", 0, 2), ("p2", 0, 3)]]),
    # equal buckets of bucket_bytes; a big parameter is split across buckets
    ((10, 10, 50, 5), PlanConfig(bucket_bytes=20 * MIB, min_buckets=1),
     [[("p0", 0, 10), ("p1", 0, 10)], [("p2", 0, 20)], [("p2", 20, 20)], [("p2", 40, 10), ("p3", 0, 5)]]),
    # min_buckets splits a model smaller than one bucket for pipelining
    ((8,) * 4, PlanConfig(bucket_bytes=1 << 40, min_buckets=8, min_bucket_bytes=1),
     [[(f"p{i}", off, 4)] for i in range(4) for off in (0, 4)]),
])
def test_make_buckets_cuts_byte_ranges(sizes, cfg, expected):
    buckets = make_buckets(params(*sizes), cfg)
    assert [[(p.name, p.offset / MIB, p.nbytes / MIB) for p in b.pieces] for b in buckets] == expected
    assert [b.index for b in buckets] == list(range(len(expected)))
    assert [b.nbytes for b in buckets] == [sum(p.nbytes for p in b.pieces) for b in buckets]
    assert sum(b.nbytes for b in buckets) == int(sum(sizes) * MIB)


def test_pieces_cover_every_parameter_exactly_once():
    ps = params(3.3, 0.7, 12.1, 0.01, 5) + [ParamSpec("empty", "float32", (0,), 0)]
    covered: dict[str, list[tuple[int, int]]] = {}
    for b in make_buckets(ps, PlanConfig(bucket_bytes=2 * MIB, min_bucket_bytes=1)):
        assert b.nbytes <= 2 * MIB
        for p in b.pieces:
            covered.setdefault(p.name, []).append((p.offset, p.offset + p.nbytes))
    for p in ps:
        spans = sorted(covered.get(p.name, []))
        assert [a for a, _ in spans] == [0] + [e for _, e in spans[:-1]] if spans else p.nbytes == 0
        assert (spans[-1][1] if spans else 0) == p.nbytes


def test_buckets_hold_one_dtype_each():
    ps = params(4, 4) + [ParamSpec("h0", "bfloat16", (8,), 16), ParamSpec("h1", "bfloat16", (8,), 16)]
    ps = [ps[0], ps[2], ps[1], ps[3]]  # interleaved dtypes
    buckets = make_buckets(ps, PlanConfig())
    assert [(b.dtype, b.names) for b in buckets] == [("float32", ("p0", "p1")), ("bfloat16", ("h0", "h1"))]
    assert all(p.offset == 0 for b in buckets for p in b.pieces)


CASES = [  # seeds, receivers, config
    (1, 1, PlanConfig(min_bucket_bytes=1)),
    (2, 1, PlanConfig(min_bucket_bytes=1)),
    (2, 3, PlanConfig(min_bucket_bytes=1)),
    (1, 3, PlanConfig(min_bucket_bytes=1)),
    (3, 8, PlanConfig(min_bucket_bytes=1, max_recv_streams=3)),
    (2, 3, PlanConfig(min_bucket_bytes=1, fanout=False)),
    (2, 2, PlanConfig(min_bucket_bytes=1, max_send_streams=2, max_recv_streams=1)),
]


@pytest.mark.parametrize("n_seeds, n_recv, cfg", CASES)
def test_plan_invariants(n_seeds, n_recv, cfg):
    seeds = [f"s{i}" for i in range(n_seeds)]
    recv = [f"r{i}" for i in range(n_recv)]
    plan = plan_transfers(params(*([8] * 16)), seeds, recv, cfg)
    every = set(range(len(plan.buckets)))
    held = {n: set(every) if n in seeds else set() for n in plan.nodes}
    for rnd in range(plan.rounds):
        step = [t for t in plan.transfers if t.round == rnd]
        assert step, "a round without transfers"
        for t in step:
            assert t.bucket in held[t.src], f"{t} sends a bucket it does not hold yet"
            assert t.bucket not in held[t.dst], f"{t} sends a bucket twice"
            assert t.reason == ("seed" if t.src in seeds else "fan-out")
            if not cfg.fanout:
                assert t.src in seeds
        for n in plan.nodes:
            assert sum(t.src == n for t in step) <= cfg.max_send_streams
            assert sum(t.dst == n for t in step) <= cfg.max_recv_streams
        for t in step:
            held[t.dst].add(t.bucket)
    assert all(held[r] == every for r in recv)
    assert len(plan.transfers) == n_recv * len(every)
    assert plan.nodes == tuple(seeds + recv)


def test_multi_seed_splits_bytes_evenly():
    plan = plan_transfers(params(*([8] * 16)), ["a", "b"], ["r"], PlanConfig(min_bucket_bytes=1))
    assert plan.sent_bytes("a") == plan.sent_bytes("b") == 64 * MIB
    assert plan.rounds == 8  # two disjoint buckets per round, in parallel


def test_fanout_keeps_three_receivers_close_to_one():
    link = LinkModel(send_gbs=1.0, recv_gbs=2.0, latency_s=0.001)  # a receiver can take two seeds' streams
    one = estimate_load_seconds(640 * MIB, 2, 1, link)
    three = estimate_load_seconds(640 * MIB, 2, 3, link)
    no_fanout = estimate_load_seconds(640 * MIB, 2, 3, link, PlanConfig(fanout=False))
    assert three <= 1.5 * one
    assert no_fanout >= 2.5 * one  # without fan-out the two seeds send all three copies


def test_replan_sends_only_missing_buckets():
    ps = params(*([8] * 16))
    cfg = PlanConfig(min_bucket_bytes=1)
    plan = plan_transfers(ps, ["b"], ["r1", "r2"], cfg, have={"r1": range(10), "r2": [0, 99]})
    got = {r: sorted(t.bucket for t in plan.transfers if t.dst == r) for r in ("r1", "r2")}
    assert got == {"r1": list(range(10, 16)), "r2": list(range(1, 16))}


@pytest.mark.parametrize("plan_link, buckets, expected_s", [
    # 2 buckets of 1 GB, one seed, 1 GB/s, 0.5 s latency each: sequential rounds
    ((1, 1, ["s"], ["r"], LinkModel(1.0, 1.0, 0.5)), 2, 3.0),
    # two seeds share a receiver with 2 GB/s ingress: both buckets in one round at 1 GB/s each
    ((1, 2, ["s1", "s2"], ["r"], LinkModel(1.0, 2.0, 0.0)), 2, 1.0),
    # same, but the receiver's 1 GB/s is shared: 0.5 GB/s per stream
    ((1, 2, ["s1", "s2"], ["r"], LinkModel(1.0, 1.0, 0.0)), 2, 2.0),
])
def test_estimate_table(plan_link, buckets, expected_s):
    send, recv_streams, seeds, recv, link = plan_link
    ps = [ParamSpec(f"p{i}", "float32", (1,), 10 ** 9) for i in range(buckets)]
    cfg = PlanConfig(bucket_bytes=10 ** 9, min_buckets=1, max_send_streams=send, max_recv_streams=recv_streams)
    assert estimate(plan_transfers(ps, seeds, recv, cfg), link).total_s == pytest.approx(expected_s)


def test_per_param_baseline():
    ps = [ParamSpec(f"p{i}", "float32", (1,), 10 ** 9) for i in range(3)]
    assert per_param_seconds(ps, LinkModel(2.0, 1.0, 0.1)) == pytest.approx(3.3)


@pytest.mark.parametrize("seeds, recv, ps, msg", [
    ([], ["r"], params(1), "no seed"),
    (["s"], [], params(1), "no receiver"),
    (["s"], ["s"], params(1), "listed twice"),
    (["s"], ["r"], [], "no parameters"),
    (["s"], ["r"], params(1) + params(1), "p0"),
])
def test_bad_inputs(seeds, recv, ps, msg):
    with pytest.raises(WeightPlanError, match=msg):
        plan_transfers(ps, seeds, recv)


def test_bad_config():
    with pytest.raises(WeightPlanError, match="bucket_bytes"):
        PlanConfig(bucket_bytes=0)


def test_deterministic():
    a = plan_transfers(params(*([3] * 40)), ["a", "b"], ["x", "y", "z"], PlanConfig(min_bucket_bytes=1))
    b = plan_transfers(params(*([3] * 40)), ["a", "b"], ["x", "y", "z"], PlanConfig(min_bucket_bytes=1))
    assert a == b


def test_controller_api_imports_neither_torch_nor_sglang():
    import subprocess
    import sys
    code = ("import sys, hyperflexis_sglang.weights as w; w.load_from_peers; "
            "bad = [m for m in ('torch', 'sglang') if m in sys.modules]; sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_agent_on_all_interfaces_is_reached_at_the_server_host():
    from hyperflexis_sglang.weights.orchestrate import _reachable
    assert _reachable("http://0.0.0.0:4000", "http://10.1.2.3:30000") == "http://10.1.2.3:4000"
    assert _reachable("http://127.0.0.1:4000", "http://127.0.0.1:30000") == "http://127.0.0.1:4000"
