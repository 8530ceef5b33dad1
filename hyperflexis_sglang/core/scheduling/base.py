"""The per-iteration walk shared by every scheduling policy.

It reproduces SGLang 0.5.23's prefill admission (``PrefillAdder``): the
chunked request continues first, then the waiting queue is walked in policy
order; a request that does not fit the KV budget or the running-request
limit stops the walk; a request larger than the remaining chunk budget is
truncated (becomes the chunked request) and stops the walk. A policy may have
the chunked request leave part of its chunk to waiting requests
(``chunk_reserve``); the walk then admits only requests that prefill whole
until it stops, since SGLang tracks one chunked request. Prefill wins: if
any prefill is planned, running requests decode in this iteration only when
mixed chunking is on. Otherwise the running batch decodes; if the KV pool
cannot hold one more token per running request, victims are retracted in the
policy's order until it can (for a few steps).

Policies differ only in the answers to small questions, each a method:
``key`` (queue order), ``screen`` (reject/demote a waiting request),
``prefill_budget`` (seconds of prefill allowed now), ``chunk_reserve``, ``decode_admits``
(may one more request join the decode batch), ``retraction_order`` and
``preempt`` (victims). The walk guarantees: never more than ``chunk_size``
new prefill tokens or ``max_running`` running requests, never a KV
over-commit beyond SGLang's own reservation rule, and every skipped or
stopped request has a reason.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Hashable, Sequence

from ..perf_model import PerfModel
from .types import (EngineSnapshot, IterationPlan, PrefillItem, RequestView, RunningView, SchedulerConfig,
                    Verdict, WaitingView)

KV_FULL = "KV cache full"  # the walk's stop reason when the pool cannot hold the next request
RETRACT_DECODE_STEPS = 20  # SGLang retracts until the pool holds this many steps for the rest
MIN_CHUNK_TOKENS = 32  # smaller SLO-limited chunks are not worth an iteration
MAX_VERDICTS = 64  # bounds one decision's cost when a backlog expires at once


class Scheduler:
    """SGLang 0.5.23 default behaviour (``sglang-fcfs``); subclasses override the questions."""

    name = "sglang-fcfs"

    def __init__(self, config: SchedulerConfig | None = None):
        self.cfg = config or SchedulerConfig()

    # ---- the questions -------------------------------------------------
    def key(self, req: RequestView, perf: PerfModel) -> tuple:
        """Time-invariant sort key of the waiting queue (smaller first).

        SGLang fcfs does not sort: new and retracted requests are appended, so
        the order is the (re-)entry time.
        """
        return (req.enqueue_time,)

    def decode_key(self, req: RequestView, perf: PerfModel) -> tuple:
        """Order in which a P/D decode server admits transferred requests."""
        return self.key(req, perf)

    def screen(self, req: WaitingView, snap: EngineSnapshot, done_by: float) -> Verdict | None:
        """Reject or demote ``req`` if it would be prefilled by ``done_by``; None keeps it."""
        return None

    def prefill_budget(self, snap: EngineSnapshot, running_kv: int) -> tuple[float, str]:
        """Seconds a prefill iteration may take now, and why."""
        return math.inf, "unconstrained"

    def first_token_budget(self, req: WaitingView, snap: EngineSnapshot, done_by: float) -> float:
        """Seconds from now by which this iteration must end so that ``req``, whose prefill completes in it
        at ``done_by``, gets its first token in time; inf leaves the rest of the chunk budget to others."""
        return math.inf

    def decode_admits(self, req: RequestView, snap: EngineSnapshot, batch_reqs: int, batch_kv: int) -> bool:
        """May ``req`` join a decode batch that will hold ``batch_reqs`` requests / ``batch_kv`` tokens?"""
        return True

    def retraction_order(self, running: Sequence[RunningView], now: float) -> list[RunningView]:
        """Victims first. SGLang ``--retraction-policy length``: fewest output tokens, then longest input."""
        return sorted(running, key=lambda r: (r.output_len, -r.input_len))

    def preempt(self, req: WaitingView, snap: EngineSnapshot, need_kv: float,
                taken: set) -> list[RunningView]:
        """Running requests to evict so that ``req`` fits; [] when the policy never preempts."""
        return []

    def chunk_reserve(self, snap: EngineSnapshot, rem_chunk: int, t: float) -> int:
        """Tokens of this iteration's chunk budget the chunked request leaves to waiting requests that
        prefill whole behind it (its chunk shrinks; it continues next iteration). SGLang: none."""
        return 0

    def screen_tail(self, rest, snap: EngineSnapshot) -> list[Verdict]:
        """Verdicts on requests beyond where the walk stopped (bounded look-ahead); none by default."""
        return []

    # ---- the walk -------------------------------------------------------
    def plan(self, snap: EngineSnapshot) -> IterationPlan:
        if snap.mode == "decode":
            return self._plan_decode(snap)
        return self._plan_prefill(snap)

    def reserved_kv(self, snap: EngineSnapshot) -> float:
        """KV SGLang keeps for the future tokens of running requests: the engine's own figure when the
        shell gives one, else estimated with the snapshot's ``new_token_ratio``."""
        if snap.reserved_kv_tokens >= 0:
            return snap.reserved_kv_tokens
        clip = self.cfg.clip_max_new_tokens  # _future_tokens inlined: this sums over every running request
        return sum(min(r.max_new_tokens - r.output_len, clip) for r in snap.running) * snap.new_token_ratio

    def _future_tokens(self, req: RequestView) -> int:
        """Output tokens ``req`` may still produce, as SGLang counts them for KV reservation (clipped)."""
        return min(req.max_new_tokens - req.output_len, self.cfg.clip_max_new_tokens)

    def _plan_prefill(self, snap: EngineSnapshot) -> IterationPlan:
        cfg, perf, now = self.cfg, snap.perf, snap.now
        running = snap.running
        run_n = len(running)
        run_kv = _running_kv(snap)
        decode_too = cfg.mixed and run_n > 0 and snap.mode == "collocated"
        budget_s, why = self.prefill_budget(snap, run_kv)
        t = perf.base + (perf.per_decode_req * run_n + perf.per_kv_token * run_kv if decode_too else 0.0)
        rem_total = snap.kv_free_tokens - self.reserved_kv(snap)
        rem_chunk = cfg.chunk_size - (run_n if decode_too else 0)
        rem_input = cfg.max_prefill_tokens
        items: list[PrefillItem] = []
        verdicts: list[Verdict] = []
        retract: list[Hashable] = []
        taken: set = set()
        batch_n, batch_kv = run_n, run_kv
        stop = "queue empty"
        queue = _chain(snap.chunked, snap.waiting)
        yielded = 0  # chunk tokens the chunked request left to whole waiting requests
        for req in queue:
            todo = req.input_len + req.output_len - req.cached_len
            if batch_n >= cfg.max_running:
                stop = "max_running reached"
                break
            verdict = None if req is snap.chunked else self.screen(req, snap, now + t + perf.chunk_time(todo, req.cached_len))
            if verdict is not None:
                verdicts.append(verdict)
                if len(verdicts) >= MAX_VERDICTS:
                    stop = "verdict cap (more are screened next iteration)"
                    break
                continue
            ctx = req.input_len + req.output_len
            if not self.decode_admits(req, snap, batch_n + 1, batch_kv + ctx):
                stop = "decode stage at TPOT capacity"
                break
            reserve = self._future_tokens(req)
            held = 0 if req is snap.chunked else req.cached_len  # a prefix hit leaves the evictable pool
            need = todo + held + reserve + cfg.page_size
            victims = ()
            if need >= rem_total:
                victims = self.preempt(req, snap, need - rem_total, taken) if cfg.preemption else ()
                if not victims:
                    stop = KV_FULL
                    break
            n = min(todo, rem_chunk, max(rem_input, 0))
            if req is snap.chunked and n < todo:
                yielded = max(min(self.chunk_reserve(snap, rem_chunk, t), n - MIN_CHUNK_TOKENS), 0)
                n -= yielded
            slo_limited = False
            if budget_s < math.inf:
                fit = perf.max_chunk_tokens(req.cached_len, budget_s - t)
                if fit < n:
                    n, slo_limited = fit, True
            if n < todo:
                n -= n % cfg.page_size
            if n <= 0 or (slo_limited and n < min(todo, MIN_CHUNK_TOKENS)):
                stop = f"SLO budget ({why})" if slo_limited else "chunk budget"
                break  # before evicting anyone: victims are only taken for a request that runs now
            if yielded and n < todo and req is not snap.chunked:
                stop = "chunked request open (one at a time)"  # SGLang tracks a single chunked request
                break
            for v in victims:
                taken.add(v.rid)
                retract.append(v.rid)
                rem_total += v.input_len + v.output_len + self._future_tokens(v) * snap.new_token_ratio
                batch_n -= 1
                batch_kv -= v.input_len + v.output_len
            items.append(PrefillItem(req.rid, n, n == todo))
            t += perf.chunk_time(n, req.cached_len)
            if n == todo:
                due = self.first_token_budget(req, snap, now + t)
                if due < budget_s:
                    budget_s, why = due, f"TTFT deadline of a {req.slo.cls!r} request in this iteration"
            rem_total -= n + held + cfg.page_size + (reserve if n == todo else 0)
            rem_chunk -= n
            rem_input -= n
            if n < todo:
                if yielded and req is snap.chunked:
                    continue  # the rest of the budget goes to the requests it yields to
                stop = "chunked"
                break
            batch_n += 1
            batch_kv += ctx + 1
            if rem_chunk <= 0 or rem_input <= 0 or rem_total <= 0:
                stop = "prefill token budget used"
                break
        verdicts += self.screen_tail(queue, snap)
        kv_full = stop == KV_FULL
        decode = bool(run_n - len(retract)) and snap.mode == "collocated" and (decode_too or not items)
        if decode and not items:
            retract += self._retract_for_decode(snap, taken, run_n - len(retract))
            live_n = run_n - len(retract)
            decode = live_n > 0
            gone = set(retract)
            live_kv = run_kv - sum(r.input_len + r.output_len for r in running if r.rid in gone)
            t = perf.decode_time(live_n, live_kv) if decode else 0.0
            stop = "decode" + (f" ({stop})" if snap.waiting or snap.chunked else "")
        elif not items:
            t = 0.0
        return IterationPlan(prefill=tuple(items), decode=decode, verdicts=tuple(verdicts), retract=tuple(retract),
                             reason=stop, budget_s=budget_s, predicted_s=t, kv_full=kv_full)

    def _retract_for_decode(self, snap: EngineSnapshot, taken: set, live_n: int) -> list[Hashable]:
        if snap.kv_free_tokens >= live_n:
            return []
        out: list[Hashable] = []
        free = snap.kv_free_tokens
        for victim in self.retraction_order([r for r in snap.running if r.rid not in taken], snap.now):
            if free >= live_n * min(RETRACT_DECODE_STEPS, 1 + free // max(live_n, 1)) or live_n <= 1:
                break
            out.append(victim.rid)
            free += victim.input_len + victim.output_len
            live_n -= 1
        return out

    def _plan_decode(self, snap: EngineSnapshot) -> IterationPlan:
        """P/D decode server: admit transferred requests into the batch, then decode."""
        running = snap.running
        batch_n = len(running)
        batch_kv = _running_kv(snap)
        admitted_kv = 0  # context of the requests admitted below; their KV leaves the free pool
        free = snap.kv_free_tokens - self.reserved_kv(snap)
        admit: list[Hashable] = []
        stop = "queue empty"
        for req in snap.waiting:
            ctx = req.input_len + req.output_len
            if batch_n >= self.cfg.max_running:
                stop = "max_running reached"
                break
            need = ctx + self._future_tokens(req) * snap.new_token_ratio
            if need > free:
                stop = KV_FULL
                break
            if not self.decode_admits(req, snap, batch_n + 1, batch_kv + ctx):
                stop = "decode stage at TPOT capacity"
                break
            admit.append(req.rid)
            free -= need
            batch_n += 1
            batch_kv += ctx
            admitted_kv += ctx
        after = replace(snap, kv_free_tokens=snap.kv_free_tokens - admitted_kv)
        retract = self._retract_for_decode(after, set(), len(running)) if running else []
        live = batch_n - len(retract)
        return IterationPlan(admit=tuple(admit), decode=live > 0, retract=tuple(retract), reason=stop,
                             kv_full=stop == KV_FULL,
                             predicted_s=snap.perf.decode_time(live, batch_kv) if live > 0 else 0.0)


def _running_kv(snap: EngineSnapshot) -> int:
    """Context tokens of the running batch: the shell's total when it gives one, else summed."""
    return snap.running_kv_tokens if snap.running_kv_tokens >= 0 else _context(snap.running)


def _context(reqs: Sequence[RequestView]) -> int:
    return sum(r.input_len + r.output_len for r in reqs)


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest
