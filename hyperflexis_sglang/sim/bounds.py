"""Upper bounds on SLO attainment that no scheduler can beat in the simulator's model.

Three bounds, from loosest assumption to tightest:

* :func:`idle_alone` / :func:`idle_bound`: each request alone on an idle
  replica with the best prefix cache it could have. A request that misses
  its SLO even then is infeasible at every load.
* :func:`finite_run_bound`: the run as simulated (a finite trace that ends,
  after which replicas drain). Work that meets an SLO lies between its
  request's arrival and deadline; for any partition of time into windows,
  the requests whose window lies inside one of them fit in that window's
  replica-seconds, cheapest first.
* :func:`steady_state_bound`: the same load held for a long run (the trace's
  requests standing for a stationary stream at its arrival rate). Met
  requests' work fits in ``replicas x span``; cheapest first.

A request's work is a *lower bound* on the replica time it takes, from the
performance model the simulator charges (:meth:`PerfModel.iteration_time`):

* prefill: :meth:`PerfModel.chunk_time` of its uncached tokens (chunking
  only adds per-sequence costs; the iteration base is left out);
* decode: ``output - 1`` steps of ``per_decode_req + per_kv_token x context``
  plus a share of each step's ``base``, split two ways (each a valid
  lower bound, so the bounds take the smaller answer of the two):

  - by KV: an iteration's batch holds at most ``kv_capacity_tokens`` of
    context, so a request's share is at least ``base x context / capacity``;
  - evenly, for requests that meet TPOT: a batch of ``b`` requests takes at
    least ``base + b x w_min``, so ``b <= (T - base) / w_min`` and the share
    ``base / b >= base x w_min / (T - base)``; averaged over the request's
    steps (convexity), with mean step time ``T <= TPOT``, the share is at
    least ``base x w_min / (TPOT - base)``.

A P/D deployment charges prefill to the prefill replicas and decode to the
decode replicas; a met request needs both, so the bound is the smaller one.
KV transfers, queueing, retraction and cache misses only add time, which is
why these are bounds and not predictions.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..core.perf_model import PerfModel
from ..core.routing.prefix import held_prefix
from .engine import BLOCK_TOKENS
from .workload import Workload

WINDOW_LENGTHS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, math.inf)
WINDOW_OFFSETS = 4


def cached_prefix(wl: Workload, any_order: bool = False) -> list[int]:
    """Per request: prefix tokens an unbounded cache could hold when it is prefilled.

    ``any_order=False``: blocks of requests that arrived earlier (the order a FCFS server sees).
    ``any_order=True``: blocks of any other request (a scheduler may serve a later request first),
    which is the assumption a bound needs."""
    shared = Counter(b for blocks in wl.blocks for b in set(blocks)) if any_order else None
    seen: set = set()
    out = []
    for blocks, n in zip(wl.blocks, wl.input_lens):
        hit = 0
        if any_order:
            while hit < len(blocks) and shared[blocks[hit]] > 1:
                hit += 1
        else:
            hit = held_prefix(seen, blocks)
            seen.update(blocks)
        out.append(min(hit * BLOCK_TOKENS, n - 1))
    return out


def idle_alone(wl: Workload, perf: PerfModel, any_order: bool = False) -> list[tuple[int, bool]]:
    """Per request: (prefix tokens cached, could meet its SLO) when served alone on an idle replica (no
    queue, no other request in the batch) with the cache of :func:`cached_prefix`."""
    out = []
    for i, cached in enumerate(cached_prefix(wl, any_order)):
        n, o, slo = wl.input_lens[i], wl.output_lens[i], wl.slos[i]
        out.append((cached, perf.prefill_time(n - cached, cached) <= slo.ttft_s
                    and (o <= 1 or perf.decode_time(1, n + o) <= slo.tpot_s)))
    return out


def idle_bound(wl: Workload, perf: PerfModel) -> dict:
    """Share of requests, overall and per class, that could meet their SLO at all (:func:`idle_alone`,
    earlier arrivals' prefixes cached). Where this is below 0.9 the "load sustained at 90%" does not exist."""
    ok: dict = {}
    for slo, (_, feasible) in zip(wl.slos, idle_alone(wl, perf)):
        for key in ("overall", slo.cls):
            ok.setdefault(key, []).append(feasible)
    return {k: sum(v) / len(v) for k, v in ok.items()}


@dataclass(frozen=True)
class Work:
    """Per-request lower bounds on replica-seconds (``inf``: infeasible even alone) and time windows."""

    prefill: np.ndarray
    decode_kv: np.ndarray  # base shared by KV held
    decode_even: np.ndarray  # base shared evenly within a TPOT-bounded batch
    arrival: np.ndarray
    first_due: np.ndarray  # arrival + TTFT
    last_due: np.ndarray  # arrival + TTFT + (output - 1) x TPOT


def request_work(wl: Workload, perf: PerfModel) -> Work:
    n = len(wl)
    pre, dkv, deven = np.empty(n), np.empty(n), np.empty(n)
    arrival, first_due, last_due = np.empty(n), np.empty(n), np.empty(n)
    w_min = perf.per_decode_req + perf.per_kv_token * (min(wl.input_lens, default=0) + 1)
    for i, (cached, feasible) in enumerate(idle_alone(wl, perf, any_order=True)):
        inp, out, slo = wl.input_lens[i], wl.output_lens[i], wl.slos[i]
        steps = max(out - 1, 0)
        context = steps * (inp + out / 2.0)  # sum over steps of (input + tokens so far)
        linear = steps * perf.per_decode_req + perf.per_kv_token * context
        arrival[i], first_due[i] = wl.arrivals[i], wl.arrivals[i] + slo.ttft_s
        last_due[i] = first_due[i] + steps * slo.tpot_s
        if not feasible:
            pre[i] = dkv[i] = deven[i] = math.inf
            continue
        pre[i] = perf.chunk_time(inp - cached, cached)
        dkv[i] = linear + perf.base * context / perf.kv_capacity_tokens
        deven[i] = linear + steps * perf.base * w_min / (slo.tpot_s - perf.base)  # feasible: tpot > base
    return Work(pre, dkv, deven, arrival, first_due, last_due)


def _cheapest_fit(cost: np.ndarray, capacity_s: float) -> int:
    c = np.sort(cost[np.isfinite(cost)])
    return int(np.searchsorted(np.cumsum(c), capacity_s, side="right"))


def _constraints(work: Work, replicas: int, pd: tuple[int, int] | None) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(cost, deadline, replicas) per resource constraint; every one must hold for the met set."""
    if pd:
        p, d = pd
        return [(work.prefill, work.first_due, p), (work.decode_kv, work.last_due, d),
                (work.decode_even, work.last_due, d)]
    return [(work.prefill, work.first_due, replicas), (work.prefill + work.decode_kv, work.last_due, replicas),
            (work.prefill + work.decode_even, work.last_due, replicas)]


def steady_state_bound(wl: Workload, perf: PerfModel, replicas: int = 4, pd: tuple[int, int] | None = None) -> dict:
    """Most attainment any scheduler can hold when this load lasts: ``bound`` (share of requests) and
    ``utilisation`` (the feasible requests' least work over the capacity, the largest over resources)."""
    n = len(wl)
    if n < 2 or wl.arrivals[-1] <= wl.arrivals[0]:
        raise ValueError("a steady-state bound needs at least two requests arriving over a positive span")
    span = n * (wl.arrivals[-1] - wl.arrivals[0]) / (n - 1)  # n inter-arrival gaps at the trace's rate
    work = request_work(wl, perf)
    met, util = n, 0.0
    for cost, _, r in _constraints(work, replicas, pd):
        met = min(met, _cheapest_fit(cost, r * span))
        util = max(util, float(cost[np.isfinite(cost)].sum()) / (r * span))
    return {"bound": met / n, "utilisation": util}


def finite_run_bound(wl: Workload, perf: PerfModel, replicas: int = 4, pd: tuple[int, int] | None = None,
                     lengths: tuple[float, ...] = WINDOW_LENGTHS_S, offsets: int = WINDOW_OFFSETS) -> float:
    """Most attainment any scheduler can reach on this finite run (replicas may drain after the last
    arrival). For each window partition (every length x offset), requests whose [arrival, deadline] lies
    in one window share that window's replica-seconds (clipped to their own span), cheapest first;
    requests crossing a boundary are counted as met. The smallest count over partitions is the bound."""
    n = len(wl)
    if n == 0:
        return 1.0
    work = request_work(wl, perf)
    best, t0 = n, float(work.arrival.min())
    for cost, due, r in _constraints(work, replicas, pd):
        for length in lengths:
            for k in range(offsets if math.isfinite(length) else 1):
                if math.isfinite(length):
                    off = t0 - length * k / offsets
                    start = np.floor((work.arrival - off) / length)
                    inside = start == np.floor((due - off) / length)
                else:
                    start, inside = np.zeros(n), np.ones(n, dtype=bool)
                met = int((~inside & np.isfinite(cost)).sum())
                for w in np.unique(start[inside]):
                    m = inside & (start == w)
                    met += _cheapest_fit(cost[m], r * float(due[m].max() - work.arrival[m].min()))
                best = min(best, met)
    return best / n
