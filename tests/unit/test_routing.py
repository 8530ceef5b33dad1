"""Instance selection policies (core/routing/).

Instances are small dataclasses with the attributes of ``InstanceView``
(the interface itself, as the simulator's replicas and the router's worker
registry provide it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable

import pytest

from hyperflexis_sglang.core.perf_model import PerfModel, preset
from hyperflexis_sglang.core.routing import (ROUTERS, PrefixTracker, RouteRequest, RoutingError, UnknownRouter,
                                             make_router)
from hyperflexis_sglang.core.slo import DEFAULT_CLASSES

P = preset()
INTER, STD, BATCH = DEFAULT_CLASSES["interactive"], DEFAULT_CLASSES["standard"], DEFAULT_CLASSES["batch"]


@dataclass
class Inst:
    iid: Hashable
    num_waiting: int = 0
    num_running: int = 0
    waiting_tokens: int = 0
    running_kv: int = 0
    kv_free: int = 400_000
    role: str = "collocated"
    perf: PerfModel = field(default=P)
    min_running_tpot_s: float = math.inf


def req(rid="r", input_len=1000, slo=STD, blocks=(), max_new_tokens=100) -> RouteRequest:
    return RouteRequest(rid, input_len, max_new_tokens, slo, tuple(blocks))


RANDS = [k / 97 for k in range(97)]


# ---- registry / errors -----------------------------------------------------------
def test_registry():
    assert set(ROUTERS) == {"random", "round_robin", "power_of_two", "cache_aware", "hfx"}
    for name in ROUTERS:
        assert make_router(name).name == name


def test_unknown_router():
    with pytest.raises(UnknownRouter, match="unknown routing policy 'least_load'.*round_robin"):
        make_router("least_load")


@pytest.mark.parametrize("name", sorted(ROUTERS))
@pytest.mark.parametrize("method", ["pick", "pick_decode"])
def test_empty_instance_list(name, method):
    with pytest.raises(RoutingError, match="no instance"):
        getattr(make_router(name), method)(req(), [], 0.5)


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_single_instance_always_chosen(name):
    r = make_router(name)
    for rand in (0.0, 0.5, 0.999):
        d = r.pick(req(slo=INTER, blocks=(1, 2)), [Inst("only", num_waiting=500, waiting_tokens=10**6)], rand)
        assert d.iid == "only" and d.reason


# ---- baselines -----------------------------------------------------------------------------
def test_random_uses_the_passed_randomness():
    r = make_router("random")
    insts = [Inst(i) for i in range(4)]
    assert [r.pick(req(), insts, u).iid for u in (0.0, 0.26, 0.51, 0.99)] == [0, 1, 2, 3]


def test_round_robin_cycles():
    r = make_router("round_robin")
    insts = [Inst("a"), Inst("b"), Inst("c", num_waiting=99)]  # load is ignored
    assert [r.pick(req(), insts, 0.0).iid for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    assert "round robin" in r.pick(req(), insts, 0.0).reason


def test_power_of_two_picks_less_loaded_of_two():
    r = make_router("power_of_two")
    two = [Inst("busy", num_waiting=5, num_running=5), Inst("idle", num_running=1)]
    for u in RANDS:
        d = r.pick(req(), two, u)
        assert d.iid == "idle" and ("1 vs 10" in d.reason or "10 vs 1" in d.reason)


def test_power_of_two_never_picks_the_most_loaded_and_compares_distinct_candidates():
    r = make_router("power_of_two")
    insts = [Inst(0, num_waiting=3), Inst(1, num_waiting=50), Inst(2, num_waiting=7), Inst(3, num_waiting=1)]
    picks = {r.pick(req(), insts, u).iid for u in RANDS}
    assert 1 not in picks and picks <= {0, 2, 3}
    assert 3 in picks  # the least loaded is reachable


def test_cache_aware_routes_to_prefix_holder():
    r = make_router("cache_aware")
    insts = [Inst(0), Inst(1, num_running=3), Inst(2)]
    first = req("a", blocks=(10, 11, 12, 13))
    r.observe(first, 1)
    d = r.pick(req("b", blocks=(10, 11, 12, 99)), insts, 0.0)  # 3 of 4 blocks match on instance 1
    assert d.iid == 1 and "prefix match 3/4" in d.reason


def test_cache_aware_low_match_goes_to_smallest_tree():
    r = make_router("cache_aware")
    insts = [Inst(0), Inst(1)]
    r.observe(req("a", blocks=tuple(range(100))), 0)
    d = r.pick(req("b", blocks=(500, 501)), insts, 0.0)
    assert d.iid == 1 and "smallest tree" in d.reason


def test_cache_aware_routes_to_least_loaded_when_imbalanced():
    r = make_router("cache_aware")
    insts = [Inst(0, num_waiting=200, num_running=50), Inst(1, num_running=2), Inst(2, num_running=5)]
    r.observe(req("a", blocks=(1, 2, 3)), 0)
    d = r.pick(req("b", blocks=(1, 2, 3)), insts, 0.0)
    assert d.iid == 1 and "imbalanced" in d.reason
    # balanced (difference under the absolute threshold): the prefix wins again
    insts[0] = Inst(0, num_waiting=20, num_running=10)
    assert r.pick(req("c", blocks=(1, 2, 3)), insts, 0.0).iid == 0


def test_prefix_tracker_lru_bound_evicts_leaves_first():
    t = PrefixTracker(max_blocks_per_instance=3)
    t.record("x", (1, 2, 3))
    t.record("x", (4,))  # evicts 3, the tail of the least recent prefix (as SGLang's radix cache)
    assert t.size("x") == 3 and t.match("x", (1, 2, 3)) == 2 and t.match("x", (4,)) == 1
    t.record("x", (1, 5))  # refreshes 1; evicts 2 (now the oldest leaf), keeps 4 and the new prefix
    assert t.size("x") == 3 and t.match("x", (1, 5)) == 2 and t.match("x", (1, 2)) == 1 and t.match("x", (4,)) == 1
    t.forget("x")
    assert t.size("x") == 0 and t.match("x", (2,)) == 0


@pytest.mark.parametrize("seed", range(20))
def test_prefix_tracker_never_keeps_a_tail_without_its_head(seed):
    """Random prefixes of a random tree (a block is its path, as a chained hash): after any sequence of
    records, every held block's prefix is held, so the bound is spent only on blocks ``match`` can count."""
    import random
    rnd = random.Random(seed)
    t = PrefixTracker(max_blocks_per_instance=rnd.randint(1, 12))
    for _ in range(60):
        path, chain = (), []
        for _ in range(rnd.randint(1, 6)):
            path += (rnd.randint(0, 2),)
            chain.append(path)
        t.record("x", tuple(chain))
        held = set(t._sets["x"])
        assert all(b[:k] in held for b in held for k in range(1, len(b)))


# ---- hfx --------------------------------------------------------------------------------------
def test_hfx_prefers_instance_meeting_ttft_and_reports_prediction():
    r = make_router("hfx")
    queued = Inst("queued", num_waiting=10, waiting_tokens=40_000)  # ~1.4 s of prefill ahead
    light = Inst("light", num_waiting=1, waiting_tokens=2_000)
    d = r.pick(req(slo=INTER, input_len=2000), [queued, light], 0.0)
    assert d.iid == "light"
    ttft, _ = r.predict(req(slo=INTER, input_len=2000), light)
    assert d.predicted_ttft_s == pytest.approx(ttft) and 0 < ttft < INTER.ttft_s
    assert d.predicted_tpot_s > 0 and f"{ttft * 1e3:.0f} ms" in d.reason
    assert r.predict(req(input_len=2000), queued)[0] > INTER.ttft_s


def test_hfx_prediction_grows_with_queue_and_decode_load():
    r = make_router("hfx")
    base = r.predict(req(), Inst(0))[0]
    assert r.predict(req(), Inst(0, waiting_tokens=10_000))[0] > base
    assert r.predict(req(), Inst(0, num_running=64, running_kv=64_000, min_running_tpot_s=0.04))[0] > base
    assert r.predict(req(input_len=100), Inst(0))[0] < base


def test_hfx_prefix_hit_shortens_predicted_ttft():
    r = make_router("hfx")
    a, b = Inst("a"), Inst("b")
    r.observe(req("x", input_len=4096, blocks=range(8)), "a")
    new = req("y", input_len=4096, blocks=range(8))
    assert r.predict(new, a)[0] < r.predict(new, b)[0]
    assert r.pick(new, [b, a], 0.0).iid == "a"


def test_hfx_spreads_tight_and_bin_packs_loose_requests():
    # bin-packing is switched on by ``bin_pack_ttft_s`` (TTFT targets at or above it are "loose"); the
    # module doc promises it, but today's default threshold is inf (off), so the test sets it; TPOT-class
    # packing is off here (tight_tpot_s=0), so tight requests spread like any other
    r = make_router("hfx", bin_pack_ttft_s=5.0, tight_tpot_s=0.0)
    # both instances meet every TTFT; "fuller" has less margin
    insts = [Inst("fuller", num_waiting=3, waiting_tokens=6_000), Inst("emptier")]
    tight = r.pick(req(slo=INTER), insts, 0.0)
    loose = r.pick(req(slo=BATCH), insts, 0.0)
    assert tight.iid == "emptier" and "spread" in tight.reason
    assert loose.iid == "fuller" and "bin-pack" in loose.reason


@dataclass
class PrioInst(Inst):
    """An instance that reports its queue per priority (all of it below the request's here)."""

    def tokens_ahead(self, priority: int) -> int:
        return 0


TIGHT_HOST = dict(num_running=8, running_kv=8_000, min_running_tpot_s=0.04)  # runs interactive requests


@pytest.mark.parametrize("slo, insts, want, why", [
    # a tight request joins a tight host that meets its SLO rather than the emptier instance
    (INTER, [Inst("host", waiting_tokens=2_000, **TIGHT_HOST), Inst("empty")], "host", "tight host"),
    # no tight host yet: first fit among nearly idle instances (not the largest margin)
    (INTER, [Inst("a", waiting_tokens=2_000), Inst("b")], "a", "new tight host"),
    # an instance with a long queue of lower priority (so a comfortable predicted TTFT for this request)
    # does not become a tight host: its loose requests need its long iterations
    (INTER, [PrioInst("a", waiting_tokens=20_000), Inst("b")], "b", "new tight host"),
    # nobody meets the SLO: the tight host with the least predicted TTFT, not a new one
    (INTER, [Inst("host", waiting_tokens=60_000, **TIGHT_HOST), Inst("b", waiting_tokens=30_000)], "host",
     "among tight hosts"),
    # a loose request keeps off a tight host when another instance has a comfortable margin
    (STD, [Inst("host", **TIGHT_HOST), Inst("plain", waiting_tokens=3_000)], "plain", "spread"),
    (STD, [Inst("host", **TIGHT_HOST), Inst("plain", waiting_tokens=60_000)], "host", "spread"),
])
def test_hfx_packs_tight_tpot_requests(slo, insts, want, why):
    d = make_router("hfx").pick(req(slo=slo), insts, 0.0)
    assert d.iid == want and why in d.reason


def test_hfx_packing_is_collocated_only():
    # a P/D prefill server runs no decode batch: tight requests spread there
    insts = [Inst("a", role="prefill", waiting_tokens=2_000), Inst("b", role="prefill")]
    d = make_router("hfx").pick(req(slo=INTER), insts, 0.0)
    assert d.iid == "b" and "spread" in d.reason


@pytest.mark.parametrize("kv_free, waiting, role, want", [
    (400_000, 1_000, "collocated", "roomy"),  # "roomy" has the larger margin
    (3_000, 0, "collocated", "roomy"),  # 3000 free hold the 1000-token prompt and 1500 new tokens
    (3_000, 1_000, "collocated", "other"),  # not once the 1000 queued prompt tokens are counted
    (3_000, 1_000, "prefill", "roomy"),  # a prefill server keeps no generation in KV
])
def test_hfx_needs_kv_room_for_queue_and_generation(kv_free, waiting, role, want):
    insts = [Inst("roomy", kv_free=kv_free, waiting_tokens=waiting, role=role),
             Inst("other", waiting_tokens=4_000, role=role)]
    d = make_router("hfx").pick(req(slo=BATCH, input_len=1000, max_new_tokens=1_500), insts, 0.0)
    assert d.iid == want


def test_hfx_no_instance_meets_slo_takes_least_predicted_ttft():
    r = make_router("hfx")
    insts = [Inst("a", waiting_tokens=60_000), Inst("b", waiting_tokens=30_000)]
    d = r.pick(req(slo=INTER), insts, 0.0)
    assert d.iid == "b" and "no instance meets" in d.reason and d.predicted_ttft_s > INTER.ttft_s


def test_hfx_skips_instances_without_kv_room():
    r = make_router("hfx")
    d = r.pick(req(input_len=5000), [Inst("full", kv_free=100), Inst("busy", waiting_tokens=20_000)], 0.0)
    assert d.iid == "busy"
    d = r.pick(req(input_len=5000), [Inst("a", kv_free=100), Inst("b", kv_free=4000)], 0.0)
    assert d.iid == "b" and "KV" in d.reason


def test_hfx_pick_decode_chooses_lowest_decode_step():
    r = make_router("hfx")
    insts = [Inst("d0", role="decode", num_running=100, running_kv=150_000),
             Inst("d1", role="decode", num_running=20, running_kv=30_000),
             Inst("d2", role="decode", num_running=10, running_kv=10_000, num_waiting=30, waiting_tokens=60_000)]
    d = r.pick_decode(req(input_len=1000), insts, 0.0)
    steps = {i.iid: P.decode_time(i.num_running + i.num_waiting + 1, i.running_kv + 1000 + i.waiting_tokens)
             for i in insts}
    assert d.iid == min(steps, key=steps.get) == "d1"
    assert d.predicted_tpot_s == pytest.approx(steps["d1"]) and "decode step" in d.reason


def test_hfx_pick_decode_without_kv_room_takes_most_free():
    r = make_router("hfx")
    insts = [Inst("a", role="decode", kv_free=50), Inst("b", role="decode", kv_free=500)]
    d = r.pick_decode(req(input_len=1000), insts, 0.0)
    assert d.iid == "b" and "KV" in d.reason


def test_hfx_prefill_role_ignores_tpot():
    r = make_router("hfx")
    # a huge running batch would break TPOT on a collocated instance, not on a prefill server
    heavy = dict(num_running=500, running_kv=390_000)
    assert r.pick(req(slo=INTER), [Inst("p", role="prefill", **heavy)], 0.0).reason.startswith("spread")
    assert r.pick(req(slo=INTER), [Inst("c", **heavy)], 0.0).reason.startswith("no instance meets")
