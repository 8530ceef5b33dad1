"""One inference request from parsed body to response: route, admit, forward with retries.

Routing uses the core's policies (``make_http_router``) on the registry's
workers, which are the core's ``InstanceView``s. In P/D mode the prefill
worker is picked by ``pick`` (``hfx``: predicted TTFT) and the decode worker
by ``pick_decode`` (``hfx``: predicted decode step, KV room); with
``hfx_pd_fallback_collocated`` a regular worker takes the request when no
prefill worker is healthy or predicted in time and a regular one is.
A retry re-routes among the workers not tried yet (all again if none is left).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, replace

import orjson
from starlette.responses import Response

from ..core.routing import RouteDecision, make_http_router
from .admission import Admitter
from .errors import RouterHTTPError, error_response
from .proxy import (PrefillCall, Relay, RelayResponse, Retryable, backoff_s, open_stream, pd_body, read_whole,
                    upstream_headers)
from .registry import Registry, Worker
from .upstream import Upstream, UpstreamTimeout


@dataclass(frozen=True)
class Plan:
    workers: tuple  # (regular worker,) or (prefill worker, decode worker)
    decision: RouteDecision  # the decision that chose workers[0]

    @property
    def predicted_ttft_s(self) -> float:
        return self.decision.predicted_ttft_s


@dataclass
class Hold:
    """One attempt's hold on its workers: their in-flight counts and, once ``count`` runs, the request's
    TPOT target in the decoding worker's ``min_running_tpot_s`` (the regular or P/D decode worker; a stream
    from its first chunk, when it is decoding; a non-streamed request from the start, as the router cannot
    tell). ``Dispatcher._release`` ends both."""

    plan: Plan
    tpot_s: float
    counted: bool = False

    def count(self) -> None:
        if not self.counted:
            self.counted = True
            self.plan.workers[-1].tpot_start(self.tpot_s)


class Dispatcher:
    def __init__(self, cfg, registry: Registry, client: Upstream, metrics):
        self.cfg, self.registry, self.client, self.metrics = cfg, registry, client, metrics
        opts = dict(cache_threshold=cfg.cache_threshold, balance_abs_threshold=cfg.balance_abs_threshold,
                    balance_rel_threshold=cfg.balance_rel_threshold, assignment_mode=cfg.assignment_mode,
                    bin_pack_ttft_s=cfg.hfx_bin_pack_ttft_ms / 1000 if cfg.hfx_bin_pack_ttft_ms > 0 else math.inf,
                    tight_tpot_s=cfg.hfx_tight_tpot_ms / 1000)
        self.policy = make_http_router(cfg.policy, **opts)
        self.prefill_policy = make_http_router(cfg.prefill_policy or cfg.policy, **opts)
        self.decode_policy = make_http_router(cfg.decode_policy or cfg.policy, **opts)
        blocks = max(cfg.max_tree_size // max(int(cfg.hfx_prefix_block_tokens * cfg.hfx_chars_per_token), 1), 1)
        for p in (self.policy, self.prefill_policy, self.decode_policy):
            p.prefix.max_blocks = blocks
        self.admitter = Admitter(cfg, metrics)
        self.rand = random.Random()
        self.active = 0  # requests being handled (for the drain on shutdown)

    # ---- routing -------------------------------------------------------------
    def _candidates(self, role: str, exclude=()) -> list[Worker]:
        now = time.monotonic()
        check = not self.cfg.disable_health_check
        cands = self.registry.routable(role, now, check, exclude)
        return cands or (self.registry.routable(role, now, check) if exclude else cands)

    def _pick(self, policy, role, route, exclude, decode=False) -> tuple[Worker | None, RouteDecision | None]:
        cands = self._candidates(role, exclude)
        if not cands:
            return None, None
        d = (policy.pick_decode if decode else policy.pick)(route, cands, self.rand.random())
        return next(w for w in cands if w.iid == d.iid), d

    def plan(self, route, exclude=()) -> Plan:
        if self.cfg.pd_disaggregation:
            return self._plan_pd(route, exclude)
        w, d = self._pick(self.policy, "regular", route, exclude)
        if w is None:
            raise RouterHTTPError(503, "no healthy worker available", None, "no_healthy_workers")
        return Plan((w,), d)

    def _plan_pd(self, route, exclude) -> Plan:
        p, pd_ = self._pick(self.prefill_policy, "prefill", route, exclude)
        if self.cfg.hfx_pd_fallback_collocated and (p is None or pd_.predicted_ttft_s > route.slo.ttft_s):
            r, rd = self._pick(self.policy, "regular", route, exclude)
            if r is not None and (p is None or not rd.predicted_ttft_s > route.slo.ttft_s):
                return Plan((r,), replace(rd, reason="P/D fallback to a regular worker: " + rd.reason))
        d, _ = self._pick(self.decode_policy, "decode", route, exclude, decode=True)
        if p is None or d is None:
            raise RouterHTTPError(503, f"no healthy {'prefill' if p is None else 'decode'} worker available",
                                  None, "no_healthy_workers")
        return Plan((p, d), pd_)

    # ---- one request -----------------------------------------------------------
    async def handle(self, endpoint: str, path: str, parsed, headers, rid: str, arrival: float) -> Response:
        route = parsed.route
        if route.target is not None:
            w = self.registry.find(str(route.target))
            route = replace(route, target=w.iid if w is not None else route.target)
        plan = await self.admitter.admit(route, arrival, lambda: self.plan(route))
        self.metrics.overhead.observe(time.monotonic() - arrival)
        hdrs = upstream_headers(headers, rid)
        tried: list[Worker] = []
        for attempt in range(1, self.cfg.attempts + 1):
            hold = self._reserve(plan, route, parsed.stream)
            try:
                return await self._send(hold, path, parsed, hdrs, rid)
            except Retryable as e:
                self._release(hold, ok=False)
                for w in plan.workers:
                    self.metrics.failures.labels(w.url).inc()
                last = str(e)
            except UpstreamTimeout:
                self._release(hold, ok=False)
                raise RouterHTTPError(504, f"worker did not answer within {self.cfg.request_timeout_secs:g} s",
                                      None, "upstream_timeout") from None
            tried.extend(plan.workers)
            if attempt == self.cfg.attempts:
                break
            self.metrics.retries.labels(plan.workers[0].url).inc()
            await asyncio.sleep(backoff_s(attempt, self.cfg.retry_initial_backoff_ms, self.cfg.retry_max_backoff_ms,
                                          self.cfg.retry_backoff_multiplier, self.cfg.retry_jitter_factor,
                                          self.rand.random()))
            plan = self.plan(route, exclude=tried)
        raise RouterHTTPError(502, f"request failed after {self.cfg.attempts} attempt(s); last error: {last}",
                              None, "upstream_failed")

    def _reserve(self, plan: Plan, route, stream: bool) -> Hold:
        self.admitter.started()
        for i, w in enumerate(plan.workers):
            w.sent_one(route.input_len)
            self.metrics.routed.labels(w.url, w.worker_type).inc()
        policy = self.prefill_policy if len(plan.workers) == 2 else self.policy
        policy.observe(route, plan.workers[0].iid)
        if len(plan.workers) == 2:
            self.decode_policy.observe(route, plan.workers[1].iid)
        hold = Hold(plan, route.slo.tpot_s)
        if not stream:
            hold.count()
        return hold

    def _release(self, hold: Hold, ok: bool) -> None:
        now = time.monotonic()
        if hold.counted:
            hold.plan.workers[-1].tpot_end(hold.tpot_s)
        for w in hold.plan.workers:
            w.done_one()
            w.cb.record(ok, now)
        self.admitter.finished()

    async def _send(self, hold: Hold, path: str, parsed, hdrs: dict, rid: str) -> Response:
        plan = hold.plan
        t = self.cfg.request_timeout_secs
        worker = plan.workers[-1]  # the one whose answer the client gets
        prefill = None
        if len(plan.workers) == 2:
            p = plan.workers[0]
            body = pd_body(parsed.body, p.host, p.bootstrap_port, parsed.batch)
            prefill = PrefillCall(self.client, p.url + path, orjson.dumps({**body, "stream": False}), hdrs, t,
                                  worker.url, body["rid"], hdrs)
            payload = orjson.dumps(body)
        else:
            payload = orjson.dumps(parsed.body)
        try:
            resp = await open_stream(self.client, worker.url + path, payload, hdrs, t)
        except BaseException:
            if prefill is not None:
                prefill.task.cancel()
            raise
        out_headers = {"x-request-id": rid, "x-hfx-worker": worker.url}
        if not math.isnan(plan.predicted_ttft_s):
            out_headers["x-hfx-predicted-ttft-ms"] = f"{plan.predicted_ttft_s * 1e3:.1f}"
        if prefill is not None:
            out_headers["x-hfx-prefill-worker"] = plan.workers[0].url
        if parsed.stream and resp.status == 200:
            return RelayResponse(Relay(resp, worker.url, lambda ok: self._release(hold, ok),
                                       prefill.tail if prefill else None, on_first=hold.count),
                                 status_code=200, media_type=resp.headers.get("content-type", "text/event-stream"),
                                 headers=out_headers)
        content = await read_whole(resp, worker.url)
        if prefill is not None:
            await asyncio.wait({prefill.task}, timeout=5)
            if prefill.status not in (None, 200):
                self._release(hold, ok=prefill.status != 0)
                if not prefill.status:
                    return error_response(502, prefill.error.decode(errors="replace"), None, "prefill_failed",
                                          out_headers)
                return Response(prefill.error, status_code=prefill.status,
                                media_type="application/json", headers=out_headers)
        self._release(hold, ok=resp.status < 500)
        return Response(content, status_code=resp.status,
                        media_type=resp.headers.get("content-type", "application/json"), headers=out_headers)
