"""Per-iteration scheduling decisions of every policy (core/scheduling/).

The engines hand a policy their own request objects; here a tiny dataclass
with the attributes of the views in ``types.py`` plays that role (it is the
real interface, not a mock of a component). The waiting queue in a snapshot
is, as in the engines, already sorted by the policy's ``key`` (or
``decode_key`` on a P/D decode server).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Hashable

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.scheduling import (POLICIES, EngineSnapshot, IterationPlan, PrefillItem, Scheduler,
                                                UnknownPolicy, make_scheduler)
from hyperflexis_sglang.core.slo import DEFAULT_CLASSES, SLO

P = preset("llama-3-8b", "h100", 1)
INTER, STD, BATCH = DEFAULT_CLASSES["interactive"], DEFAULT_CLASSES["standard"], DEFAULT_CLASSES["batch"]
BIG_KV = 400_000


@dataclass
class Req:
    """A request as the views in core/scheduling/types.py describe it."""

    rid: Hashable
    arrival: float = 0.0
    slo: SLO = STD
    input_len: int = 1000
    output_len: int = 0
    max_new_tokens: int = 100
    first_token_time: float | None = None
    best_effort: bool = False
    enqueue_time: float | None = None
    cached_len: int = 0

    def __post_init__(self):
        if self.enqueue_time is None:
            self.enqueue_time = self.arrival


def running(rid, slo=STD, input_len=1000, output_len=10, max_new_tokens=100, arrival=0.0, ftt=0.3, **kw) -> Req:
    return Req(rid, arrival, slo, input_len, output_len, max_new_tokens, ftt, **kw)


def snapshot(policy: Scheduler, waiting=(), run=(), kv=BIG_KV, now=1.0, mode="collocated", **kw) -> EngineSnapshot:
    key = policy.decode_key if mode == "decode" else policy.key
    queue = sorted(waiting, key=lambda r: key(r, P))
    return EngineSnapshot(now=now, waiting=queue, running=list(run), kv_free_tokens=kv, perf=P, mode=mode, **kw)


def plan(name: str, waiting=(), run=(), sched: Scheduler | None = None, **kw) -> IterationPlan:
    sched = sched or make_scheduler(name)
    return sched.plan(snapshot(sched, waiting, run, **kw))


def tokens(p: IterationPlan) -> int:
    return sum(item.tokens for item in p.prefill)


# ---- registry ----------------------------------------------------------------
def test_registry_names():
    assert set(POLICIES) == {"sglang-fcfs", "sglang-priority", "edf", "sarathi", "hfx"}
    for name in POLICIES:
        assert make_scheduler(name).name == name


def test_make_scheduler_unknown_name():
    with pytest.raises(UnknownPolicy, match="unknown policy 'fifo'.*sglang-fcfs"):
        make_scheduler("fifo")


def test_make_scheduler_overrides_and_fresh_objects():
    s = make_scheduler("sglang-fcfs", chunk_size=1024, max_running=3)
    assert (s.cfg.chunk_size, s.cfg.max_running) == (1024, 3)
    assert make_scheduler("hfx") is not make_scheduler("hfx")
    assert make_scheduler("sarathi").cfg.chunk_size == 512 and make_scheduler("sarathi").cfg.mixed
    with pytest.raises(TypeError):
        make_scheduler("edf", no_such_field=1)


# ---- sglang-fcfs: the shared walk ----------------------------------------------
@pytest.mark.parametrize("reqs, order", [
    ([Req("a", 0.0), Req("b", 1.0), Req("c", 2.0)], ["a", "b", "c"]),
    # a retracted request re-enters at the back: ordered by enqueue time, not arrival
    ([Req("old", 0.0, enqueue_time=5.0), Req("b", 1.0), Req("c", 2.0)], ["b", "c", "old"]),
    ([Req("i", 3.0, INTER), Req("s", 1.0, STD), Req("b", 2.0, BATCH)], ["s", "b", "i"]),  # class-blind
])
def test_fcfs_key_is_enqueue_time(reqs, order):
    s = make_scheduler("sglang-fcfs")
    assert [r.rid for r in sorted(reqs, key=lambda r: s.key(r, P))] == order


def test_fcfs_walk_in_order_and_truncates_at_chunk_size():
    p = plan("sglang-fcfs", [Req("a", 0.0, input_len=5000), Req("b", 0.1, input_len=5000), Req("c", 0.2, input_len=10)])
    assert p.prefill == (PrefillItem("a", 5000, True), PrefillItem("b", 8192 - 5000, False))
    assert p.reason == "chunked" and not p.decode  # c is not planned: truncation stops the walk
    assert p.predicted_s == pytest.approx(P.base + P.chunk_time(5000, 0) + P.chunk_time(3192, 0))


@pytest.mark.parametrize("cfg, lens, expected, reason", [
    ({"max_prefill_tokens": 4096}, [4096, 10], [("a", 4096, True)], "prefill token budget used"),
    ({"max_prefill_tokens": 4096}, [3000, 5000], [("a", 3000, True), ("b", 1096, False)], "chunked"),
    ({"chunk_size": 1000}, [400, 600, 10], [("a", 400, True), ("b", 600, True)], "prefill token budget used"),
    ({"chunk_size": 1000, "page_size": 64}, [400, 900], [("a", 400, True), ("b", 576, False)], "chunked"),
    ({}, [100, 200], [("a", 100, True), ("b", 200, True)], "queue empty"),
    ({"max_running": 1}, [100, 200], [("a", 100, True)], "max_running reached"),
])
def test_fcfs_token_budgets(cfg, lens, expected, reason):
    s = make_scheduler("sglang-fcfs", **cfg)
    p = plan("", [Req(rid, i * 0.1, input_len=n) for i, (rid, n) in enumerate(zip("abc", lens))], sched=s)
    assert [(i.rid, i.tokens, i.completes) for i in p.prefill] == expected
    assert p.reason == reason


def test_fcfs_kv_full_stops_the_walk_with_reason():
    # need = 1000 prompt + 100 reserved + 1 page >= free KV 1000
    p = plan("sglang-fcfs", [Req("a", input_len=1000), Req("b", 0.1, input_len=10)], kv=1000)
    assert p.prefill == () and p.reason == "KV cache full" and p.idle and p.predicted_s == 0.0
    assert p.kv_full  # the shell tells the engine the pool is full (SGLang then pauses admission)


def test_fcfs_kv_reservation_of_running_requests_counts():
    # 2 running requests reserve 0.7 x 90 tokens each; the same request fits without them
    w = [Req("a", input_len=1000)]
    assert plan("sglang-fcfs", w, kv=1200).prefill
    p = plan("sglang-fcfs", w, [running("r1"), running("r2")], kv=1200)
    assert not p.prefill and p.decode and p.reason == "decode (KV cache full)" and p.kv_full


def test_fcfs_prefill_wins_over_decode():
    p = plan("sglang-fcfs", [Req("a", 1.0, input_len=500)], [running("r1"), running("r2")])
    assert p.prefill == (PrefillItem("a", 500, True),) and not p.decode and not p.kv_full
    assert p.predicted_s == pytest.approx(P.prefill_time(500))


def test_fcfs_decode_when_queue_empty():
    run = [running("r1", input_len=100, output_len=5), running("r2", input_len=300, output_len=7)]
    p = plan("sglang-fcfs", [], run)
    assert p.decode and not p.prefill and not p.retract and p.reason == "decode"
    assert p.predicted_s == pytest.approx(P.decode_time(2, 412))


def test_idle_when_nothing_to_do():
    p = plan("sglang-fcfs")
    assert p.idle and p.reason == "queue empty" and p.predicted_s == 0.0


@pytest.mark.parametrize("kv, c_input, retract", [
    # victims by (fewest output, longest input): c (2 out), then b (2 out, 3 in); a (5 out) survives
    (0, 5, ("c", "b")),  # c frees 7 tokens: 7 < 2 live x min(20, 1 + 3): b goes too, then 1 live is enough
    (2, 5, ("c", "b")),  # 9 < 2 x min(20, 1 + 4)
    (0, 50, ("c",)),  # c frees 52 >= 2 live x 20 steps
    (3, 5, ()),  # room for one token per running request: nothing to retract
])
def test_fcfs_retraction_order_when_kv_cannot_hold_one_token_each(kv, c_input, retract):
    run = [running("a", input_len=3, output_len=5), running("b", input_len=3, output_len=2),
           running("c", input_len=c_input, output_len=2)]
    p = plan("sglang-fcfs", [], run, kv=kv)
    assert p.retract == retract and p.decode and not p.prefill


def test_fcfs_retraction_order_function():
    s = make_scheduler("sglang-fcfs")
    run = [running("a", input_len=3, output_len=5), running("b", input_len=3, output_len=2),
           running("c", input_len=5, output_len=2), running("d", input_len=1, output_len=1)]
    assert [r.rid for r in s.retraction_order(run, 0.0)] == ["d", "c", "b", "a"]


def test_fcfs_never_retracts_the_last_running_request():
    p = plan("sglang-fcfs", [], [running("a", input_len=3, output_len=5)], kv=0)
    assert p.retract == () and p.decode


def test_chunked_request_continues_first():
    s = make_scheduler("sglang-fcfs")
    ch = Req("ch", arrival=5.0, input_len=6000, cached_len=4096)  # later than "a", still first
    p = s.plan(snapshot(s, [Req("a", 0.0, input_len=5000)], chunked=ch))
    assert p.prefill == (PrefillItem("ch", 1904, True), PrefillItem("a", 5000, True))


def test_chunked_request_chunks_again():
    s = make_scheduler("sglang-fcfs")
    ch = Req("ch", input_len=20000, cached_len=8192)
    p = s.plan(snapshot(s, [Req("a")], chunked=ch))
    assert p.prefill == (PrefillItem("ch", 8192, False),) and p.reason == "chunked"


# ---- a long prompt mid chunked prefill yields room (HFX) ------------------------------------------------
LONG = dict(arrival=9.0, slo=BATCH, input_len=40000, cached_len=8192)  # ~2.5 s of prefill left


@pytest.mark.parametrize("policy, waiting, expected, reason", [
    # an interactive request that would miss its 450 ms TTFT behind the remaining 31.8k tokens, and
    # prefills whole in the room the long prompt leaves: both in this iteration
    ("hfx", [Req("i", 10.0, INTER, 1000)], [("ch", 8192 - 1001, False), ("i", 1000, True)], "queue empty"),
    # two of them (least slack first), then a standard one too long to prefill whole: it waits (never a
    # second chunked request)
    ("hfx", [Req("i1", 10.0, INTER, 1000), Req("i2", 10.0, INTER, 2000), Req("s", 10.0, STD, 9000)],
     [("ch", 8192 - 3002, False), ("i2", 2000, True), ("i1", 1000, True)], "chunked request open (one at a time)"),
    # a batch request has 15 s: it can wait for the long prompt, which keeps the whole chunk
    ("hfx", [Req("b", 10.0, BATCH, 1000)], [("ch", 8192, False)], "chunked"),
    # too long to prefill whole beside a chunk: no room is yielded
    ("hfx", [Req("i", 10.0, INTER, 8200)], [("ch", 8192, False)], "chunked"),
    # SGLang's own walk never yields
    ("sglang-fcfs", [Req("i", 10.0, INTER, 1000)], [("ch", 8192, False)], "chunked"),
    ("sglang-priority", [Req("i", 10.0, INTER, 1000)], [("ch", 8192, False)], "chunked"),
])
def test_long_chunked_prompt_yields_to_urgent_whole_prompts(policy, waiting, expected, reason):
    s = make_scheduler(policy)
    p = s.plan(snapshot(s, waiting, now=10.0, chunked=Req("ch", **LONG)))
    assert [(i.rid, i.tokens, i.completes) for i in p.prefill] == expected
    assert p.reason == reason


def test_a_yielding_chunk_never_leaves_a_second_request_truncated():
    """Behind a chunk that yielded room (to "i"), a running request's TPOT deadline cuts the iteration
    short (SLO budget): "j", which would then be truncated, waits instead of becoming a second chunked
    request (SGLang tracks one; the simulator lost the first when two came out of one iteration)."""
    s = make_scheduler("hfx")
    run = [running("r", INTER, input_len=1000, output_len=19, max_new_tokens=200, arrival=8.5, ftt=9.76)]
    waiting = [Req("i", 9.83, INTER, 300), Req("j", 10.0, INTER, 4000)]
    p = s.plan(snapshot(s, waiting, run, now=10.0, chunked=Req("ch", **LONG)))
    assert [(i.rid, i.completes) for i in p.prefill] == [("ch", False), ("i", True)], p
    assert p.reason == "chunked request open (one at a time)" and tokens(p) < 8192


@pytest.mark.parametrize("slack_s, waiting_slo, yields", [
    (0.5, STD, True),  # the long prompt's own TTFT slack holds the short prefill
    (0.01, STD, False),  # it does not: an equal-priority request waits
    (0.01, INTER, True),  # a higher-priority one still goes first
    (-0.5, STD, True),  # the long prompt misses its TTFT anyway: nothing to protect
])
def test_a_long_prompt_yields_only_what_its_own_ttft_slack_holds(slack_s, waiting_slo, yields):
    s = make_scheduler("hfx")
    rest = P.prefill_time(20000 - 8192, 8192)
    chunked = Req("ch", 10.0 + slack_s + rest - STD.ttft_s, STD, 20000, cached_len=8192)
    w = Req("w", 10.0 - waiting_slo.ttft_s + 0.1, waiting_slo, 1000)  # 100 ms left: urgent behind the rest
    p = s.plan(snapshot(s, [w], now=10.0, chunked=chunked))
    assert [i.rid for i in p.prefill] == (["ch", "w"] if yields else ["ch"]), p


def test_chunked_prompt_yields_nothing_on_an_untrusted_model_or_near_its_end():
    s = make_scheduler("hfx")
    urgent = [Req("i", 10.0, INTER, 1000)]
    off = make_scheduler("hfx", extra={"chunk_yield": False})  # the knob keeps SGLang's rule
    assert off.plan(snapshot(off, urgent, now=10.0, chunked=Req("ch", **LONG))).prefill == \
        (PrefillItem("ch", 8192, False),)
    p = s.plan(snapshot(s, urgent, now=10.0, chunked=Req("ch", **LONG), perf_trusted=False))
    assert p.prefill == (PrefillItem("ch", 8192, False),)
    near_end = Req("ch", **{**LONG, "cached_len": 40000 - 5000})  # finishes in this chunk: SGLang's walk
    p = s.plan(snapshot(s, urgent, now=10.0, chunked=near_end))
    assert p.prefill == (PrefillItem("ch", 5000, True), PrefillItem("i", 1000, True))


def test_mixed_chunk_decodes_and_counts_decode_tokens():
    s = make_scheduler("sglang-fcfs", mixed=True, chunk_size=1000)
    p = s.plan(snapshot(s, [Req("a", 1.0, input_len=5000)], [running("r1"), running("r2")]))
    assert p.decode and p.prefill == (PrefillItem("a", 998, False),)


# ---- sglang-priority ----------------------------------------------------------------
def test_priority_key_orders_by_priority_then_fcfs():
    s = make_scheduler("sglang-priority")
    reqs = [Req("b0", 0.0, BATCH), Req("s1", 1.0, STD), Req("i1", 3.0, INTER), Req("i0", 2.0, INTER),
            Req("s0", 0.5, STD)]
    assert [r.rid for r in sorted(reqs, key=lambda r: s.key(r, P))] == ["i0", "i1", "s0", "s1", "b0"]


LOW = [running("b1", BATCH, 1000, 10, 20, ftt=0.1, enqueue_time=0.0),
       running("b2", BATCH, 1000, 10, 20, ftt=0.1, enqueue_time=0.2),
       running("s1", STD, 1000, 10, 20, ftt=0.1, enqueue_time=0.1)]


def test_priority_preempts_lower_priority_when_kv_short():
    # free 2000 - 0.7 x 30 reserved; the interactive request needs 3011: two batch requests (lowest
    # priority, latest first) are retracted; the standard one (also lower priority) is not needed
    urgent = Req("i", 1.0, INTER, input_len=3000, max_new_tokens=10)
    p = plan("sglang-priority", [urgent], LOW, kv=2000)
    assert p.retract == ("b2", "b1")
    assert p.prefill == (PrefillItem("i", 3000, True),) and not p.decode
    # the same snapshot under FCFS: no preemption, the running batch decodes
    f = plan("sglang-fcfs", [urgent], LOW, kv=2000)
    assert f.retract == () and f.prefill == () and f.decode and "KV cache full" in f.reason


def test_no_victim_is_evicted_for_a_request_that_does_not_run_now():
    # mixed chunk: the three decode rows spend the whole 3-token chunk budget, so the urgent request
    # cannot start this iteration, and evicting batch requests for it would only throw their KV away
    urgent = Req("i", 1.0, INTER, input_len=3000, max_new_tokens=10)
    p = plan("sglang-priority", [urgent], LOW, kv=2000, sched=make_scheduler("sglang-priority", chunk_size=3,
                                                                              mixed=True))
    assert p.prefill == () and p.retract == () and p.decode and "chunk budget" in p.reason
    roomy = plan("sglang-priority", [urgent], LOW, kv=2000, sched=make_scheduler("sglang-priority", mixed=True))
    assert roomy.retract == ("b2", "b1") and roomy.prefill[0].rid == "i"  # with room it does preempt


@pytest.mark.parametrize("reserved, admitted", [
    (-1.0, True),  # estimated: 0.7 x 3 x 10 = 21 tokens reserved, 1979 free for the 1011 needed
    (0.0, True),
    (990.0, False),  # the engine's own reservation (e.g. ignore_eos at ratio 1, mixed decode rows) is larger
])
def test_engine_reservation_replaces_the_estimate(reserved, admitted):
    p = plan("sglang-fcfs", [Req("w", 1.0, STD, input_len=1000, max_new_tokens=10)], LOW, kv=2000,
             reserved_kv_tokens=reserved)
    assert bool(p.prefill) is admitted
    assert p.reason == ("queue empty" if admitted else "decode (KV cache full)")


def test_priority_does_not_preempt_equal_or_higher_priority():
    p = plan("sglang-priority", [Req("b", 1.0, BATCH, input_len=3000, max_new_tokens=10)], LOW, kv=2000)
    assert p.retract == () and p.prefill == () and "KV cache full" in p.reason


def test_priority_preemption_threshold_knob():
    s = make_scheduler("sglang-priority", extra={"preemption_threshold": 3})  # gap of 2 is not enough
    urgent = Req("i", 1.0, INTER, input_len=3000, max_new_tokens=10)
    assert plan("", [urgent], LOW, sched=s, kv=2000).retract == ()


def test_priority_retraction_lowest_priority_first():
    s = make_scheduler("sglang-priority")
    run = [running("i", INTER, output_len=1), running("b", BATCH, output_len=50), running("s", STD, output_len=2)]
    assert [r.rid for r in s.retraction_order(run, 1.0)] == ["b", "s", "i"]


# ---- edf -------------------------------------------------------------------------------
def test_edf_orders_by_ttft_deadline():
    s = make_scheduler("edf")
    reqs = [Req("b", 0.0, BATCH), Req("s", 0.0, STD), Req("i", 1.0, INTER), Req("i0", 0.5, INTER)]
    # deadlines: b 15.0, s 2.0, i 1.45, i0 0.95
    assert [r.rid for r in sorted(reqs, key=lambda r: s.key(r, P))] == ["i0", "i", "s", "b"]
    p = plan("edf", reqs)
    assert [i.rid for i in p.prefill] == ["i0", "i", "s", "b"]


# ---- sarathi -----------------------------------------------------------------------------
@pytest.mark.parametrize("n_running, prompt", [(4, 2000), (0, 2000), (100, 300), (4, 300)])
def test_sarathi_mixed_batch_within_token_budget(n_running, prompt):
    run = [running(f"r{k}") for k in range(n_running)]
    p = plan("sarathi", [Req("a", 1.0, input_len=prompt), Req("b", 1.1, input_len=prompt)], run)
    assert p.decode == (n_running > 0)  # every running request decodes in every iteration
    assert p.prefill and tokens(p) + n_running <= 512
    if prompt > 512:
        assert tokens(p) + n_running == 512 and not p.prefill[-1].completes


# ---- hfx ---------------------------------------------------------------------------------
def hfx(**extra) -> Scheduler:
    return make_scheduler("hfx", extra=extra) if extra else make_scheduler("hfx")


@pytest.mark.parametrize("reqs, order", [
    ([Req("s", 0.0, STD), Req("i", 0.0, INTER)], ["i", "s"]),  # tighter TTFT first
    ([Req("b", 0.0, BATCH), Req("s", 0.0, STD), Req("i", 0.0, INTER)], ["i", "s", "b"]),
    ([Req("s", 0.0, STD), Req("i", 0.3, INTER)], ["i", "s"]),  # a later interactive request still goes first
    ([Req("i2", 0.2, INTER), Req("i1", 0.1, INTER)], ["i1", "i2"]),  # same class: arrival order
    # best effort last, whatever its class or arrival; FCFS among them
    ([Req("be2", 0.1, INTER, best_effort=True), Req("be1", 0.0, STD, best_effort=True), Req("b", 5.0, BATCH)],
     ["b", "be1", "be2"]),
])
def test_hfx_key_order(reqs, order):
    s = hfx()
    assert [r.rid for r in sorted(reqs, key=lambda r: s.key(r, P))] == order


def test_hfx_key_accounts_for_prefill_length():
    # same class and arrival: the longer prompt has less slack (must start earlier)
    s = hfx()
    assert s.key(Req("long", input_len=8000), P) < s.key(Req("short", input_len=100), P)


@pytest.mark.parametrize("slo, action", [(INTER, "reject"), (STD, "demote"),
                                         (replace(STD, on_miss="reject"), "reject"),
                                         (replace(INTER, on_miss="best_effort"), "demote")])
def test_hfx_infeasible_ttft_verdict(slo, action):
    now = 10.0
    late = Req("late", arrival=now - slo.ttft_s + 0.01, slo=slo, input_len=8000)  # 10 ms left, prefill ~270 ms
    ok = Req("ok", arrival=now, slo=BATCH, input_len=500)
    p = plan("hfx", [late, ok], now=now)
    assert [(v.rid, v.action) for v in p.verdicts] == [("late", action)]
    assert f"'{slo.cls}'" in p.verdicts[0].reason and "TTFT" in p.verdicts[0].reason
    assert [i.rid for i in p.prefill] == ["ok"]  # the walk goes on past a verdict


def test_hfx_no_verdict_for_feasible_or_best_effort_requests():
    now = 10.0
    reqs = [Req("i", now, INTER, input_len=2000), Req("be", 0.0, INTER, input_len=8000, best_effort=True)]
    p = plan("hfx", reqs, now=now)
    assert p.verdicts == () and [i.rid for i in p.prefill] == ["i", "be"]


def test_hfx_screens_beyond_the_stop_point():
    # the walk stops at the first request (KV full); a hopeless interactive request behind it is
    # still rejected early, before any compute is spent on it
    now = 10.0
    first = Req("big", now, STD, input_len=3000)
    hopeless = Req("late", now - 0.44, INTER, input_len=6000)
    s = hfx()
    snap = EngineSnapshot(now, [first, hopeless], [], 2000, P)
    p = s.plan(snap)
    assert p.prefill == () and p.reason == "KV cache full"
    assert [(v.rid, v.action) for v in p.verdicts] == [("late", "reject")]


def near_deadline_interactive() -> Req:
    # first token at 0.3 s, 10 of 100 tokens out: token 26's deadline is about 1.2-1.3 s
    return running("r", INTER, input_len=1000, output_len=10, max_new_tokens=100, arrival=0.0, ftt=0.3)


def test_hfx_prefill_budget_shrinks_near_a_running_deadline():
    waiting = [Req("a", 1.0, STD, input_len=8000)]
    run = [near_deadline_interactive()]
    h = plan("hfx", waiting, run, now=1.0)
    f = plan("sglang-fcfs", waiting, run, now=1.0)
    print(f"hfx plans {tokens(h)} prefill tokens (budget {h.budget_s * 1e3:.1f} ms), fcfs {tokens(f)}")
    assert tokens(f) == 8000
    assert h.budget_s < math.inf
    assert tokens(h) < tokens(f)
    assert h.predicted_s < f.predicted_s
    assert h.decode  # the protected request still gets its token


def test_hfx_budget_tighter_when_deadline_closer():
    waiting = [Req("a", 1.0, STD, input_len=8000)]
    run = [near_deadline_interactive()]
    early, late = plan("hfx", waiting, run, now=0.9), plan("hfx", waiting, run, now=1.0)
    assert late.budget_s < early.budget_s and tokens(late) <= tokens(early)


def test_hfx_budget_reason_names_the_protected_class():
    s = hfx()
    budget, why = s.prefill_budget(snapshot(s, [Req("a", 1.0)], [near_deadline_interactive()]), 1010)
    assert budget < math.inf and "'interactive'" in why


def test_hfx_no_budget_without_running_requests():
    waiting = [Req("a", 1.0, STD, input_len=8000), Req("b", 1.0, BATCH, input_len=6000)]
    h, f = plan("hfx", waiting), plan("sglang-fcfs", waiting)
    assert h.budget_s == pytest.approx(STD.ttft_s)  # only a's own first token bounds the iteration
    assert tokens(h) == tokens(f) == 8192


def test_hfx_keeps_a_first_token_in_time_from_the_work_added_behind_it(arrival=0.8):
    """An interactive request completing its prefill this iteration (due 0.45 s after arrival) is not
    delayed past its TTFT by another request's prefill added behind it."""
    waiting = [Req("tight", arrival, INTER, input_len=6000), Req("std", 0.5, STD, input_len=2000)]
    h, f = plan("hfx", waiting), plan("sglang-fcfs", waiting)
    assert tokens(f) == 8000 and 1.0 + P.prefill_time(8000) > 0.8 + INTER.ttft_s  # all of it would be late
    assert h.prefill[0].rid == "tight" and h.prefill[0].tokens == 6000
    assert h.budget_s == pytest.approx(arrival + INTER.ttft_s - 1.0)
    assert 1.0 + h.predicted_s <= arrival + INTER.ttft_s + 1e-9
    assert 0 < tokens(h) - 6000 < 2000


def test_hfx_best_effort_running_requests_are_not_protected():
    run = [replace(near_deadline_interactive(), best_effort=True)]
    h = plan("hfx", [Req("a", 1.0, STD, input_len=8000)], run)
    assert h.budget_s == pytest.approx(STD.ttft_s) and tokens(h) == 8000  # only a's own first token


@pytest.mark.parametrize("run_slos, req_slo, best_effort, limit", [
    ([INTER], STD, False, 0.040), ([BATCH], STD, False, 0.200), ([BATCH], INTER, False, 0.040),
    ([BATCH], INTER, True, 0.200), ([], STD, True, math.inf), ([STD, INTER], BATCH, False, 0.040),
])
@pytest.mark.parametrize("batch_kv", [10_000, 100_000, 250_000, 380_000, 2_000_000])
def test_hfx_decode_admits_against_headroom_times_tightest_tpot(run_slos, req_slo, best_effort, limit, batch_kv):
    s = hfx(decode_headroom=0.6)
    snap = snapshot(s, [], [running(f"r{k}", slo) for k, slo in enumerate(run_slos)])
    req = Req("new", 1.0, req_slo, best_effort=best_effort)
    n = len(run_slos) + 1
    expected = n <= 1 or P.decode_time(n, batch_kv) <= 0.6 * limit
    assert s.decode_admits(req, snap, n, batch_kv) is expected


def test_hfx_decode_admits_refuses_in_the_walk():
    s = hfx(decode_headroom=0.6)
    r = near_deadline_interactive()
    # the running batch already reads 380k KV tokens: one more request pushes the step past 0.6 x 40 ms
    snap = snapshot(s, [Req("a", 1.0, STD, input_len=1000)], [r], now=0.5, running_kv_tokens=380_000)
    assert P.decode_time(2, 381_000) > 0.6 * INTER.tpot_s
    p = s.plan(snap)
    assert not p.prefill and p.decode and "TPOT capacity" in p.reason and not p.kv_full  # held back, not blocked


def test_hfx_untrusted_model_orders_but_does_not_throttle():
    """A young or noisy fit (``perf_trusted=False``) neither limits prefill nor refuses decode admission:
    HFX then admits like SGLang (in SLO order), so a wild model cannot starve the engine."""
    s = hfx(decode_headroom=0.6)
    waiting = [Req("a", 1.0, STD, input_len=8000)]
    trusted = s.plan(snapshot(s, waiting, [near_deadline_interactive()], now=1.0))
    guess = s.plan(snapshot(s, waiting, [near_deadline_interactive()], now=1.0, perf_trusted=False))
    assert trusted.budget_s < math.inf and tokens(trusted) < 8000
    assert guess.budget_s == math.inf and tokens(guess) == 8000 and guess.decode
    assert s.prefill_budget(snapshot(s, waiting, [near_deadline_interactive()], perf_trusted=False), 1010)[1] == \
        "performance model not trusted yet"
    busy = snapshot(s, [Req("b", 1.0, STD, input_len=1000)], [near_deadline_interactive()], now=0.5,
                    running_kv_tokens=380_000, perf_trusted=False)
    p = s.plan(busy)
    assert [i.rid for i in p.prefill] == ["b"] and "TPOT capacity" not in p.reason


def test_hfx_decode_mode_admits_in_decode_key_order():
    s = hfx()
    waiting = [Req("x", 0.0, BATCH, 1000, 0), Req("z", 0.2, STD, 1000, 0), Req("y", 0.5, INTER, 1000, 0)]
    snap = snapshot(s, waiting, [], mode="decode")
    assert [r.rid for r in snap.waiting] == ["y", "z", "x"]
    p = s.plan(snap)
    assert p.admit == ("y", "z", "x") and p.decode and not p.prefill
    # room for two: the batch request waits
    need = 1000 + 0.7 * 100
    p2 = s.plan(snapshot(s, waiting, [], mode="decode", kv=int(2 * need) + 5))
    assert p2.admit == ("y", "z") and p2.reason == "KV cache full" and p2.kv_full and not p.kv_full
    # FCFS on a decode server admits by enqueue time instead
    f = make_scheduler("sglang-fcfs")
    assert f.plan(snapshot(f, waiting, [], mode="decode")).admit == ("x", "z", "y")


def test_hfx_retraction_order_best_effort_then_low_priority():
    s = hfx()
    run = [running("i", INTER), running("b", BATCH), running("be", INTER, best_effort=True), running("s", STD)]
    assert [r.rid for r in s.retraction_order(run, 1.0)] == ["be", "b", "s", "i"]


def test_hfx_preempts_lower_priority_for_a_tight_request():
    urgent = Req("i", 1.0, INTER, input_len=3000, max_new_tokens=10)
    p = plan("hfx", [urgent], LOW, kv=2000)
    assert set(p.retract) <= {"b1", "b2", "s1"} and p.retract and p.prefill[0].rid == "i"
    assert plan("hfx", [replace(urgent, best_effort=True)], LOW, kv=2000).retract == ()


def test_hfx_tightest_tpot_not_stale_across_snapshots():
    """The tightest-TPOT cache must follow the snapshot it was computed for (it once keyed on id())."""
    s = hfx(decode_headroom=0.6)
    req = Req("new", 1.0, BATCH)
    busy = EngineSnapshot(1.0, (), [running("r", INTER)], BIG_KV, P)
    idle = EngineSnapshot(1.0, (), [], BIG_KV, P)
    assert s.decode_admits(req, busy, 2, 400_000) is False  # 0.6 x 40 ms is exceeded
    assert s.decode_admits(req, idle, 2, 400_000) is True  # only the batch TPOT (200 ms) applies now
    assert s.decode_admits(req, busy, 2, 400_000) is False


# ---- invariants of every plan, every policy ------------------------------------------------
def scenarios():
    rng = random.Random(7)
    slos = [INTER, STD, BATCH]
    out = []
    for k in range(80):
        now = 5.0 + rng.random()
        waiting = [Req(f"w{i}", now - rng.random() * 3, rng.choice(slos), rng.choice([50, 700, 3000, 9000]),
                       best_effort=rng.random() < 0.1) for i in range(rng.randrange(0, 8))]
        run = [running(f"r{i}", rng.choice(slos), rng.choice([100, 2000]), rng.randrange(1, 50), 60,
                       arrival=now - 3, ftt=now - 2 + rng.random()) for i in range(rng.randrange(0, 6))]
        chunked = (Req("ch", now - 1, rng.choice(slos), rng.choice([12000, 60000]), cached_len=4096)
                   if k % 3 == 0 else None)
        if chunked is not None:  # a fresh tight request behind it (HFX may yield room of the chunk to it)
            waiting.append(Req("fresh", now, INTER, rng.choice([50, 700, 3000])))
        mode = ["collocated", "collocated", "prefill", "decode"][k % 4]
        if mode == "decode":
            chunked = None
        kv = rng.choice([0, 50, 3000, 20000, BIG_KV])
        out.append((now, waiting, run, chunked, mode, kv))
    return out


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_plan_is_well_formed(name):
    s = make_scheduler(name)
    for now, waiting, run, chunked, mode, kv in scenarios():
        snap = snapshot(s, waiting, run, kv=kv, now=now, mode=mode, chunked=chunked)
        p = s.plan(snap)
        assert p.reason, p
        w_ids = {r.rid for r in waiting} | ({chunked.rid} if chunked else set())
        r_ids = {r.rid for r in run}
        assert {i.rid for i in p.prefill} <= w_ids and set(p.admit) <= w_ids
        assert {v.rid for v in p.verdicts} <= w_ids and all(v.action in ("reject", "demote") for v in p.verdicts)
        assert all(v.reason for v in p.verdicts)
        assert not ({v.rid for v in p.verdicts} & ({i.rid for i in p.prefill} | set(p.admit)))
        assert set(p.retract) <= r_ids and len(set(p.retract)) == len(p.retract)
        assert len({i.rid for i in p.prefill}) == len(p.prefill)
        assert all(i.tokens > 0 for i in p.prefill)
        open_ = [k for k, i in enumerate(p.prefill) if not i.completes]  # SGLang tracks one chunked request
        assert len(open_) <= 1 and (not open_ or open_[0] == len(p.prefill) - 1
                                    or (open_[0] == 0 and p.prefill[0].rid == "ch" and name == "hfx")), p
        assert tokens(p) + (len(run) - len(p.retract) if p.decode and p.prefill else 0) <= s.cfg.chunk_size
        assert p.predicted_s >= 0 and (p.predicted_s == 0) == p.idle
        if chunked is not None and p.prefill:
            assert p.prefill[0].rid == "ch"
        if mode == "decode":
            assert not p.prefill
        else:
            assert not p.admit
        if mode == "prefill":
            assert not p.decode
        if p.decode and mode != "decode":
            assert len(run) > len(p.retract)


@pytest.mark.parametrize("handoff_s, per_token, rejected", [
    (0.0, 0.0, False),  # the prefill alone finishes in time
    (0.040, 0.0, True),  # but not with a 40 ms handoff to the decode server behind it
    (0.0, 40e-6, True),  # nor with a 40 ms transfer of its 1000 prompt tokens
])
def test_hfx_prefill_server_meets_ttft_before_the_handoff_to_decode(handoff_s, per_token, rejected):
    now = 10.0
    prefill = P.prefill_time(1000, 0)
    req = Req("i", now - INTER.ttft_s + prefill + 0.02, INTER, input_len=1000)  # 20 ms to spare after its prefill
    snap = snapshot(hfx(), [req], now=now, mode="prefill", handoff_s=handoff_s, handoff_s_per_token=per_token)
    assert snap.handoff(req) == pytest.approx(handoff_s + per_token * 1000)
    p = hfx().plan(snap)
    assert [v.rid for v in p.verdicts] == (["i"] if rejected else [])
    assert [i.rid for i in p.prefill] == ([] if rejected else ["i"])


def test_hfx_first_token_budget_ends_before_the_handoff():
    now = 10.0
    req = Req("i", now, INTER, input_len=500)
    s = hfx()
    plain = s.first_token_budget(req, snapshot(s, [req], now=now, mode="prefill"), now + 0.05)
    handed = s.first_token_budget(req, snapshot(s, [req], now=now, mode="prefill", handoff_s=0.03), now + 0.05)
    assert plain == pytest.approx(INTER.ttft_s) and handed == pytest.approx(INTER.ttft_s - 0.03)
