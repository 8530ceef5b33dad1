"""HFX: multi-SLO scheduling with budget estimation and prioritisation.

Guarantees, per iteration, given an accurate performance model:

1. Protect ongoing requests. The prefill work admitted into an iteration is
   bounded so that every protected running request still gets its next
   token by its TPOT deadline: ``budget = min slack - decode step time``.
   A running request is protected unless it is best effort, or it is so far
   behind that it cannot catch up before its last token, or a more
   important waiting request is urgent (see 3).
2. Protect new requests. The waiting queue is ordered by least slack
   (latest time prefill may start and still meet TTFT), shifted earlier by
   ``priority_boost_s`` per priority level; best-effort requests come last,
   first come first served. The slack keeps ``ttft_reserve`` of each TTFT
   target in reserve (the order is by ``arrival + (1 - reserve) x TTFT``):
   under overload pure least slack serves every request just before its
   deadline, so any burst tips the loosest class (always served last) past
   it; with a reserve a loose request reaches the head while part of its
   target is left. The price: under overload tighter classes give up some
   of their share to it. Within an iteration, a request whose prefill
   completes in it bounds the iteration at its TTFT deadline (while it can
   still meet it), so prefill work added behind it cannot delay its first
   token. On a P/D prefill server the first token reaches the client only
   after the KV transfer and the decode server's admission, so every TTFT
   deadline there is moved earlier by ``EngineSnapshot.handoff`` (measured
   by the shell). A request is only admitted to the decode batch if the predicted
   decode step stays within ``decode_headroom`` x the
   tightest TPOT in the batch (``tpot_safety`` x on a P/D decode server,
   which runs no prefill), so admission never breaks ongoing requests'
   TPOT and leaves room for prefill progress.
   A long prompt mid chunked prefill (SGLang continues it first, with the
   whole chunk) yields part of its chunk to the queue head(s) that would miss
   their TTFT behind its remaining chunks but meet it if prefilled now, and
   that prefill whole in the room left (SGLang tracks one chunked request;
   ``chunk_reserve``); it continues next iteration.
3. Priorities across stages. When the head of the queue is urgent (one more
   decode step would make it miss TTFT), running requests of lower priority
   stop constraining the budget.
4. Early verdicts. A request whose TTFT cannot be met even if prefilled now,
   or that would miss behind more urgent work in this iteration, is
   rejected or demoted to best effort per its class (``on_miss``); rejection
   happens before any compute is spent on it.

In ``average`` TPOT mode a stall may be amortised over the next
``tpot_horizon_tokens`` tokens (16, capped by ``max_new_tokens``): the budget
protects the deadline of token ``out + h`` minus ``h - 1`` decode steps. In
``per_token`` mode ``h`` is 1.

Budgets (1) and decode admission (2) use the performance model only when the
engine trusts it (``EngineSnapshot.perf_trusted``: a preset, or an online fit
with enough samples and a small error); until then HFX orders the queue by
SLO and otherwise admits like SGLang, so a wild young fit cannot throttle the
engine.

Knobs (``SchedulerConfig.extra``): ``priority_boost_s`` (0.5),
``ttft_reserve`` (0.5), ``decode_headroom`` (0.6), ``tpot_safety`` (0.9: plan to 90% of each TPOT),
``tpot_horizon_tokens`` (16), ``lookahead`` (32 requests screened beyond the
stop point per iteration, and looked at for a chunk yield), ``chunk_yield``
(true; false keeps SGLang's rule that the chunked prompt takes the whole chunk).
"""

from __future__ import annotations

import math
from typing import Sequence

from ..perf_model import PerfModel
from .base import MIN_CHUNK_TOKENS, Scheduler
from .types import EngineSnapshot, RequestView, RunningView, SchedulerConfig, Verdict, WaitingView


class HFXScheduler(Scheduler):
    name = "hfx"

    def __init__(self, config: SchedulerConfig | None = None):
        super().__init__(config)
        extra = self.cfg.extra
        self.boost = float(extra.get("priority_boost_s", 0.5))
        self.headroom = float(extra.get("decode_headroom", 0.6))
        self.lookahead = int(extra.get("lookahead", 32))
        self.horizon = int(extra.get("tpot_horizon_tokens", 16))
        self.safety = float(extra.get("tpot_safety", 0.9))
        self.ttft_share = 1.0 - float(extra.get("ttft_reserve", 0.5))  # share of the TTFT target the order uses
        self.chunk_yield = bool(extra.get("chunk_yield", True))  # long prompts mid chunk yield room (chunk_reserve)
        self._tight_snap: EngineSnapshot | None = None  # snapshot the cached tightest TPOT belongs to
        self._tight = math.inf

    # queue order: least slack first, priority-shifted; best effort last
    def key(self, req: RequestView, perf: PerfModel) -> tuple:
        if req.best_effort:
            return (1, req.arrival)
        todo = req.input_len + req.output_len - getattr(req, "cached_len", 0)
        if req.first_token_time is not None:  # retracted mid-decode: next token deadline
            due = req.slo.token_deadline(req.output_len + 1, req.arrival, req.first_token_time)
        else:
            due = req.arrival + self.ttft_share * req.slo.ttft_s
        return (0, due - perf.prefill_time(todo, 0) - self.boost * req.slo.priority)

    def decode_key(self, req: RequestView, perf: PerfModel) -> tuple:
        if req.best_effort:
            return (1, req.arrival)
        due = req.slo.token_deadline(req.output_len + 1, req.arrival, req.first_token_time)
        return (0, due - self.boost * req.slo.priority)

    def screen(self, req: WaitingView, snap: EngineSnapshot, done_by: float) -> Verdict | None:
        if req.best_effort or req.first_token_time is not None:
            return None
        deadline = _ttft_due(req, snap)
        if done_by <= deadline:
            return None
        return self._verdict(req, snap, deadline, behind_queue=True)

    def screen_tail(self, rest, snap: EngineSnapshot) -> list[Verdict]:
        out = []
        for _, req in zip(range(self.lookahead), rest):
            if req.best_effort or req.first_token_time is not None:
                continue
            deadline = _ttft_due(req, snap)
            todo = req.input_len + req.output_len - req.cached_len
            if snap.now + snap.perf.prefill_time(todo, req.cached_len) > deadline:
                out.append(self._verdict(req, snap, deadline, behind_queue=False))
        return out

    def _verdict(self, req: WaitingView, snap: EngineSnapshot, deadline: float, behind_queue: bool) -> Verdict:
        todo = req.input_len + req.output_len - req.cached_len
        need = snap.perf.prefill_time(todo, req.cached_len)
        left = deadline - snap.now
        if snap.now + need <= deadline and behind_queue:
            why = (f"TTFT {req.slo.ttft_ms:g} ms of class {req.slo.cls!r} would be missed behind more urgent "
                   f"requests ({left * 1e3:.0f} ms left)")
        else:
            why = (f"TTFT {req.slo.ttft_ms:g} ms of class {req.slo.cls!r} cannot be met: prefill needs "
                   f"{need * 1e3:.0f} ms, {max(left, 0) * 1e3:.0f} ms left")
        return Verdict(req.rid, "reject" if req.slo.on_miss == "reject" else "demote", why)

    def chunk_reserve(self, snap: EngineSnapshot, rem_chunk: int, t: float) -> int:
        # A long prompt mid chunked prefill yields room to the queue head(s) that can still meet TTFT if
        # prefilled in this iteration but would miss it behind the prompt's remaining chunks, and that
        # prefill whole. Its own chunk shrinks so that the iteration still ends by their deadlines; it
        # yields freely if it is best effort or late anyway, else only the prefill time its own TTFT slack
        # holds, unless the request it yields to has a higher priority.
        chunked = snap.chunked
        if chunked is None or not self.chunk_yield or not snap.perf_trusted or chunked.first_token_time is not None:
            return 0
        perf, now, page = snap.perf, snap.now, self.cfg.page_size
        rest = chunked.input_len + chunked.output_len - chunked.cached_len
        rest_s = perf.prefill_time(rest, chunked.cached_len)
        ch_slack = math.inf if chunked.best_effort else _ttft_due(chunked, snap) - now - rest_s
        if ch_slack < 0:
            ch_slack = math.inf
        reserve, spent, limit = 0, 0.0, math.inf  # tokens kept, their prefill time, time left for the chunk
        for _, req in zip(range(self.lookahead), snap.waiting):
            if req.best_effort or req.first_token_time is not None:
                break
            todo = req.input_len + req.output_len - req.cached_len
            own = perf.chunk_time(todo, req.cached_len)
            due = _ttft_due(req, snap)
            if not now + t + own <= due < now + rest_s + own:
                break  # not urgent behind the long prompt, or lost already
            if spent + own > ch_slack and req.slo.priority <= chunked.slo.priority:
                break
            cap = min(limit, due - now - t - spent - own)
            chunk = min(rem_chunk - reserve - todo - page, perf.max_chunk_tokens(chunked.cached_len, cap))
            if chunk < MIN_CHUNK_TOKENS:
                break  # no room for it and a chunk of the long prompt
            reserve, spent, limit = reserve + todo + page, spent + own, cap
        if not reserve:
            return 0
        return rem_chunk - min(rem_chunk - reserve, perf.max_chunk_tokens(chunked.cached_len, limit))

    def first_token_budget(self, req: WaitingView, snap: EngineSnapshot, done_by: float) -> float:
        # protect a new request's first token from the prefill work added behind it in the same iteration
        if req.best_effort or req.first_token_time is not None or not snap.perf_trusted:
            return math.inf
        deadline = _ttft_due(req, snap)
        return deadline - snap.now if done_by <= deadline else math.inf  # a late one is not protected

    # budget estimation: protect the running requests' next-token deadlines
    def prefill_budget(self, snap: EngineSnapshot, running_kv: int) -> tuple[float, str]:
        if snap.mode != "collocated" or not snap.running:
            return math.inf, "no running requests"
        if not snap.perf_trusted:
            return math.inf, "performance model not trusted yet"
        perf, now = snap.perf, snap.now
        td = perf.decode_time(len(snap.running), running_kv)
        floor = self._urgent_priority(snap, td)
        slack, who = math.inf, None
        horizon, safety = self.horizon, self.safety
        for r in snap.running:  # hot loop (<= 256 requests): keep it inlined
            slo = r.slo
            if r.best_effort or slo.priority < floor:
                continue
            left = r.max_new_tokens - r.output_len
            tpot = slo.tpot_ms * 1e-3
            if slo.tpot_mode == "per_token" or r.first_token_time is None:
                h = 1
                s = r.arrival + slo.ttft_ms * 1e-3 + r.output_len * tpot * safety - now
            else:
                h = horizon if horizon < left else (left if left > 1 else 1)
                s = r.first_token_time + (r.output_len + h - 1) * tpot * safety - now - (h - 1) * td
            if s < slack:
                if s < 0 and -s > left * (tpot - td):
                    continue  # cannot catch up before its end: no longer protected
                slack, who = (s if s > 0 else 0.0), r
        if who is None:
            return math.inf, "no protected running request"
        # mixed chunk: the running requests' token comes out of this very iteration
        return (slack if self.cfg.mixed else slack - td), f"TPOT deadline of a {who.slo.cls!r} request"

    def _urgent_priority(self, snap: EngineSnapshot, td: float) -> float:
        """Priority of the queue head if one more decode step would make it miss TTFT, else -inf."""
        head = snap.chunked
        if head is None:
            head = next((w for w in snap.waiting if not w.best_effort), None)
        if head is None or head.best_effort or head.first_token_time is not None:
            return -math.inf
        need = snap.perf.prefill_time(head.input_len - head.cached_len, head.cached_len)
        deadline = _ttft_due(head, snap)
        if snap.now + need <= deadline < snap.now + td + need:
            return head.slo.priority + 1
        return -math.inf

    # decode-stage admission: keep the batch's step time within the tightest TPOT
    def decode_admits(self, req: RequestView, snap: EngineSnapshot, batch_reqs: int, batch_kv: int) -> bool:
        if batch_reqs <= 1 or not snap.perf_trusted:
            return True
        tight = self._tightest_tpot(snap)
        if not req.best_effort:
            tight = min(tight, req.slo.tpot_s)
        if tight == math.inf:
            return True
        # a P/D decode server runs no prefill: its steps may use the whole (planned) TPOT
        share = self.headroom if snap.mode == "collocated" else 1.0
        return snap.perf.decode_time(batch_reqs, batch_kv) <= share * tight

    def _tightest_tpot(self, snap: EngineSnapshot) -> float:
        if self._tight_snap is not snap:  # identity, not id(): a freed snapshot's address is reused
            self._tight = min((r.slo.tpot_s for r in snap.running if not r.best_effort), default=math.inf)
            self._tight_snap = snap
        return self._tight

    # victims: best effort first, then lower priority, then most slack, then least progress
    def retraction_order(self, running: Sequence[RunningView], now: float) -> list[RunningView]:
        def cost(r: RunningView) -> tuple:
            slack = r.slo.token_deadline(r.output_len + 1, r.arrival, r.first_token_time) - now
            return (not r.best_effort, r.slo.priority, -slack, r.output_len)
        return sorted(running, key=cost)

    def preempt(self, req: WaitingView, snap: EngineSnapshot, need_kv: float, taken: set) -> list[RunningView]:
        if req.best_effort:
            return []
        pool = [r for r in snap.running if r.rid not in taken and (r.best_effort or r.slo.priority < req.slo.priority)]
        return _cover(self.retraction_order(pool, snap.now), need_kv)


def _ttft_due(req: WaitingView, snap: EngineSnapshot) -> float:
    """When ``req``'s prefill must complete here for its first token to reach the client in time: its TTFT
    deadline, less the handoff to a P/D decode server (0 elsewhere)."""
    return req.slo.ttft_deadline(req.arrival) - snap.handoff(req)


def _cover(victims: Sequence[RunningView], need_kv: float) -> list[RunningView]:
    """Shortest prefix of ``victims`` freeing ``need_kv`` tokens; [] if all of them are not enough."""
    out, freed = [], 0
    for v in victims:
        if freed >= need_kv:
            break
        out.append(v)
        freed += v.input_len + v.output_len
    return out if freed >= need_kv else []
