"""Deterministic discrete-event simulation of a cluster of engine replicas.

Event loop: a heap of ``(time, seq, callback)``; ``seq`` breaks ties in
insertion order, so a run is a pure function of (workload, config, seed).
A router (core routing policy) places each arriving request on a replica
(collocated), or on a prefill and a decode replica (P/D: the pair is chosen
at arrival, as SGLang's router does). In P/D the KV cache moves after the
prefill in ``input_len x kv_bytes_per_token / link_bandwidth + latency``
seconds; the first token reaches the client when the decode server admits
the request.

Conservation: every request ends exactly once (finished or rejected), or
is reported as unfinished when the run stops at ``horizon_s``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Callable

from ..core.perf_model import PerfModel
from ..core.routing import RouteRequest, make_router
from ..core.scheduling import IterationPlan, make_scheduler
from .autoscale import AutoscaleConfig, Autoscaler
from ..core.routing.types import tally
from .engine import Replica, SimRequest
from .workload import Workload

DECODE_STEP_EWMA = 0.1  # weight of the latest decode iteration in the decode servers' moving average


@dataclass(frozen=True)
class ClusterConfig:
    policy: str = "hfx"  # scheduling policy on every replica
    router: str = "round_robin"  # routing policy (P/D: for both pools)
    replicas: int = 4  # collocated replicas (ignored when pd is set)
    pd: tuple[int, int] | None = None  # (prefill, decode) replicas for P/D disaggregation
    link_gbps: float = 200.0  # P/D KV transfer bandwidth per request stream, Gbit/s (e.g. 200 Gb/s RDMA NIC)
    link_latency_s: float = 0.001  # per-transfer fixed latency
    seed: int = 0  # seeds routing randomness
    horizon_s: float | None = None  # stop simulating at this time (None: run until all requests end)
    scheduler_overrides: tuple = ()  # (field, value) pairs replacing SchedulerConfig defaults
    autoscale: AutoscaleConfig | None = None  # autoscaling (sim/autoscale.py); None: a fixed fleet
    hicache_ratio: float = 0.0  # host KV tier of prefill/collocated replicas, x the GPU pool (0: off, SGLang's default)
    hicache_gbps: float = 200.0  # host-to-GPU KV load bandwidth, Gbit/s (25 GB/s: ~40% of PCIe Gen5 x16's 64 GB/s)
    ignore_eos: bool = False  # clients send ignore_eos: SGLang reserves KV for all remaining tokens (ratio 1)
    # what the router sees as each replica's tightest TPOT (InstanceView.min_running_tpot_s): "running" its
    # running batch's; the HTTP router's views of the requests it routed there and that have not ended:
    # "streamed" from their first token on (streamed requests), "inflight" from routing on (non-streamed
    # ones); "none" nothing (every replica inf)
    router_view: str = "running"


ROUTER_VIEWS = ("running", "streamed", "inflight", "none")


class Cluster:
    def __init__(self, cfg: ClusterConfig, perf: PerfModel, true_perf: PerfModel | None = None):
        if cfg.router_view not in ROUTER_VIEWS:
            raise ValueError(f"router_view must be one of {', '.join(ROUTER_VIEWS)}, got {cfg.router_view!r}")
        self.cfg = cfg
        self.perf = perf
        self._routed: dict[int, Replica] = {}  # router_view streamed/inflight: rid -> the replica counting it
        self.events: list = []
        self.seq = 0
        self.now = 0.0
        self.rng = random.Random(cfg.seed)
        self.router = make_router(cfg.router)
        self.decode_router = make_router(cfg.router)  # own state, as sglang-router's --decode-policy
        self.requests: dict[int, SimRequest] = {}
        self.ended: list[SimRequest] = []
        overrides = dict(cfg.scheduler_overrides)
        make = lambda: make_scheduler(cfg.policy, **overrides)  # noqa: E731 (one policy object per replica)
        self.make_policy, self.true_perf = make, true_perf
        if cfg.pd:
            p, d = cfg.pd
            self.prefill = [Replica(i, "prefill", make(), perf, self, true_perf) for i in range(p)]
            self.decode = [Replica(p + i, "decode", make(), perf, self, true_perf) for i in range(d)]
            self.replicas = self.prefill + self.decode
        else:
            self.replicas = [Replica(i, "collocated", make(), perf, self, true_perf) for i in range(cfg.replicas)]
            self.prefill, self.decode = self.replicas, []
        self.transfer_s = 0.0
        self.decode_step_s = 0.0  # moving average of the decode servers' iteration time
        self.plans = 0
        self.autoscale = Autoscaler(self, cfg.autoscale) if cfg.autoscale else None

    # ---- event loop ---------------------------------------------------
    def at(self, t: float, fn: Callable[[float], None]) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, fn))

    def run(self, workload: Workload) -> None:
        arrivals = workload.arrivals
        for i in range(len(workload)):
            req = SimRequest(i, arrivals[i], workload.slos[i], workload.input_lens[i], workload.output_lens[i],
                             workload.blocks[i])
            self.requests[i] = req
        self._next_arrival = 0
        self._workload = workload
        if len(workload):
            self.at(arrivals[0], self._arrive)
            if self.autoscale:
                self.autoscale.start(arrivals[0])
        horizon = self.cfg.horizon_s
        events = self.events
        while events:
            t, _, fn = heapq.heappop(events)
            if horizon is not None and t > horizon:
                break
            self.now = t
            fn(t)

    def _arrive(self, now: float) -> None:
        i = self._next_arrival
        self._next_arrival += 1
        if self._next_arrival < len(self._workload):
            self.at(self._workload.arrivals[self._next_arrival], self._arrive)
        req = self.requests[i]
        rr = RouteRequest(req.rid, req.input_len, req.max_new_tokens, req.slo, req.blocks)
        target = self.router.pick(rr, self.prefill, self.rng.random())
        inst = self._by_iid(target.iid)
        self.router.observe(rr, inst.iid)
        req.prefill_iid = inst.iid
        if self.decode:
            d = self.decode_router.pick_decode(rr, self.decode, self.rng.random())
            req.decode_iid = d.iid
        if self.cfg.router_view == "inflight":
            self._count_routed(req)
        if self.autoscale:
            self.autoscale.arrived(req)
        inst.enqueue(req, now)

    def _by_iid(self, iid) -> Replica:
        return self.replicas[iid]

    def _count_routed(self, req: SimRequest) -> None:
        """Count ``req``'s TPOT target on the replica that decodes it, until it ends (router_view)."""
        rep = self._routed[req.rid] = self._by_iid(req.decode_iid if self.decode else req.prefill_iid)
        tally(rep.routed_tpots, req.slo.tpot_s, 1)

    def first_token(self, req: SimRequest) -> None:
        """``req``'s first token reached the client (a streaming client's router sees its first chunk)."""
        if self.cfg.router_view == "streamed":
            self._count_routed(req)

    # ---- callbacks from replicas ----------------------------------------
    def observe_plan(self, replica: Replica, plan: IterationPlan) -> None:
        self.plans += 1

    def transfer(self, src: Replica, req: SimRequest, now: float) -> None:
        secs = self.cfg.link_latency_s + req.input_len * self.kv_s_per_token
        self.transfer_s += secs

        def done(t: float) -> None:
            src.release_transferred(req)
            self._by_iid(req.decode_iid).enqueue(req, t)
            if not src.busy and (src.waiting or src.chunked):
                src.busy = True
                self.at(t, src.step)

        self.at(now + secs, done)

    def decode_step(self, seconds: float) -> None:
        self.decode_step_s += DECODE_STEP_EWMA * (seconds - self.decode_step_s)

    @property
    def kv_s_per_token(self) -> float:
        """Seconds one prompt token's KV takes over the P/D link."""
        return self.perf.kv_bytes_per_token * 8 / (self.cfg.link_gbps * 1e9)

    def handoff(self) -> tuple[float, float]:
        """What a prefill server expects between a prefill completing and the first token (EngineSnapshot.handoff_s,
        handoff_s_per_token): the KV transfer over the link (as ``transfer`` times it), then a wait of up to one
        decode iteration for admission."""
        return self.cfg.link_latency_s + self.decode_step_s, self.kv_s_per_token

    def end(self, req: SimRequest, now: float) -> None:
        if req.ended:
            raise AssertionError(f"request {req.rid} ended twice")
        req.ended = True
        req.finish_time = None if req.rejected else now
        rep = self._routed.pop(req.rid, None)
        if rep is not None:
            tally(rep.routed_tpots, req.slo.tpot_s, -1)
        self.ended.append(req)
        if self.autoscale:
            self.autoscale.ended(req, now)
