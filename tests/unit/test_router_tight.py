"""The HTTP router's view of tight-TPOT work: each worker counts the TPOT targets of the router's requests
running on it (streams from their first chunk, non-streamed requests from the start), and ``hfx`` routing
packs tight requests onto the workers that already serve them.

Real ``Dispatcher``, ``Registry``, ``Worker`` and ``Relay`` objects, no HTTP: ``_reserve``/``_release`` are
what a request's dispatch calls before sending and when its answer ends or fails.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.routing import RouteRequest
from hyperflexis_sglang.core.slo import DEFAULT_CLASSES
from hyperflexis_sglang.router.cli import parse_args
from hyperflexis_sglang.router.config import RouterConfig
from hyperflexis_sglang.router.dispatch import Dispatcher, Plan
from hyperflexis_sglang.router.proxy import Relay
from hyperflexis_sglang.router.metrics import Metrics
from hyperflexis_sglang.router.registry import BreakerConfig, Registry, Worker

INTER, STD = DEFAULT_CLASSES["interactive"], DEFAULT_CLASSES["standard"]  # TPOT 40 ms (tight) / 200 ms
BREAKER = BreakerConfig(10, 3, 60.0, 120.0)


def fleet(n: int = 2, **cfg) -> Dispatcher:
    d = Dispatcher(RouterConfig(policy="hfx", **cfg), Registry(), None, Metrics())
    for k in range(n):
        w = d.registry.add(Worker(f"http://w{k}:1", "regular", BREAKER, preset()))
        w.update_load({"running": 0, "waiting": 0, "waiting_tokens": 0, "running_kv": 0, "used": 0,
                       "capacity": 400_000})
        w.check(True, 2, 3)
    return d


def route(rid: str, slo) -> RouteRequest:
    return RouteRequest(rid, 500, 64, slo)


def workers(d: Dispatcher) -> list[Worker]:
    return list(d.registry.workers.values())


def test_worker_counts_tpot_targets():
    w = Worker("http://w:1", "regular", BREAKER, preset())
    assert w.min_running_tpot_s == math.inf and w.info(0.0)["min_running_tpot_ms"] is None
    for t in (0.2, 0.04, 0.04, math.inf):  # inf: no TPOT target, not counted
        w.tpot_start(t)
    assert w.min_running_tpot_s == 0.04 and w.info(0.0)["min_running_tpot_ms"] == pytest.approx(40)
    w.tpot_end(0.04)
    assert w.min_running_tpot_s == 0.04  # one 40 ms request still running
    w.tpot_end(0.04)
    assert w.min_running_tpot_s == 0.2
    w.tpot_end(0.2)
    w.tpot_end(math.inf)
    assert w.min_running_tpot_s == math.inf and w.tpots == {}
    w.tpot_end(0.04)  # an unmatched end never goes negative nor raises
    assert w.tpots == {}


def test_a_stream_counts_from_its_first_chunk_a_plain_request_at_once():
    d = fleet()
    first, second = workers(d)
    plan = d.plan(route("a", INTER))
    hold = d._reserve(plan, route("a", INTER), stream=True)
    assert plan.workers[0].min_running_tpot_s == math.inf and plan.workers[0].inflight == 1  # queued, maybe

    class Answer:  # the part of an aiohttp response the relay reads: one SSE chunk
        content = None

        async def iter_any(self):
            yield b"data: {}\n\n"
            assert plan.workers[0].min_running_tpot_s == INTER.tpot_s  # counted as the first chunk went out

        def release(self):
            pass
    answer = Answer()
    answer.content = answer
    relay = Relay(answer, plan.workers[0].url, lambda ok: d._release(hold, ok), on_first=hold.count)

    async def drain():
        return [c async for c in relay.chunks()]
    assert asyncio.run(drain()) == [b"data: {}\n\n"]
    assert plan.workers[0].min_running_tpot_s == math.inf and plan.workers[0].inflight == 0  # released at the end
    hold = d._reserve(plan, route("b", INTER), stream=False)
    assert plan.workers[0].min_running_tpot_s == INTER.tpot_s
    d._release(hold, ok=True)
    assert plan.workers[0].tpots == {} and d.admitter.inflight == 0


def queue(w: Worker, waiting_tokens: int) -> None:
    """A worker's polled load: prefill work queued there (another client's, or loose requests)."""
    w.update_load({**w.polled, "waiting": 1, "waiting_tokens": waiting_tokens})


def test_tight_request_joins_the_worker_already_serving_tight_work():
    # neither worker is nearly idle, both meet an interactive TTFT (450 ms); w1 has more queued
    d = fleet()
    first, second = workers(d)
    queue(first, 9_000)
    queue(second, 11_000)
    hold = d._reserve(Plan((second,), d.plan(route("b", INTER)).decision), route("b", INTER), False)  # on w1
    plan = d.plan(route("c", INTER))
    assert plan.workers == (second,) and "tight host" in plan.decision.reason
    d._release(hold, ok=True)
    assert second.min_running_tpot_s == math.inf
    plan = d.plan(route("d", INTER))  # w1 no longer hosts tight work: the least predicted TTFT
    assert plan.workers == (first,) and "no tight host or nearly idle instance" in plan.decision.reason


def test_loose_request_keeps_off_the_tight_host():
    d = fleet()
    first, second = workers(d)
    queue(second, 3_000)  # w1 is busier, but a standard request (TTFT 2 s) still has a comfortable margin there
    d._reserve(Plan((first,), d.plan(route("a", INTER)).decision), route("a", INTER), False)
    plan = d.plan(route("b", STD))
    assert plan.workers == (second,)
    assert first.min_running_tpot_s == INTER.tpot_s and second.min_running_tpot_s == math.inf


def test_pd_counts_the_tpot_on_the_decode_worker_only():
    d = Dispatcher(RouterConfig(policy="hfx", pd_disaggregation=True), Registry(), None, Metrics())
    pre = d.registry.add(Worker("http://p:1", "prefill", BREAKER, preset(), 8998))
    dec = d.registry.add(Worker("http://d:1", "decode", BREAKER, preset()))
    for w in (pre, dec):
        w.update_load({**w.polled, "capacity": 400_000})
        w.check(True, 2, 3)
    plan = d.plan(route("a", INTER))
    assert plan.workers == (pre, dec)
    hold = d._reserve(plan, route("a", INTER), stream=False)
    assert dec.min_running_tpot_s == INTER.tpot_s and pre.min_running_tpot_s == math.inf
    assert (pre.inflight, dec.inflight) == (1, 1)
    d._release(hold, ok=True)
    assert dec.tpots == {} and (pre.inflight, dec.inflight) == (0, 0)


def test_tight_threshold_flag_and_zero_turns_packing_off():
    cfg, _ = parse_args(["--worker-urls", "http://w0:1", "--policy", "hfx", "--hfx-tight-tpot-ms", "250"])
    assert cfg.hfx_tight_tpot_ms == 250
    d = fleet(hfx_tight_tpot_ms=0)
    first, second = workers(d)
    queue(first, 9_000)
    queue(second, 11_000)
    d._reserve(Plan((second,), d.plan(route("a", INTER)).decision), route("a", INTER), False)
    plan = d.plan(route("b", INTER))
    assert plan.workers == (first,) and "spread" in plan.decision.reason  # the larger margin
