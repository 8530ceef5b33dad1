"""Autoscaling in the simulator: snapshots of the simulated fleet in, core scaling actions applied.

Every ``tick_s`` the autoscaler builds a :class:`FleetSnapshot` from the
replicas and from the arrivals seen so far (per-class rates over the last
``window_s``, widened at low rates until it holds 50 arrivals; nothing from
the future), calls the *core* policy, and applies its actions:

* ``add``: a new replica in phase ``starting`` for the cold-start time of
  its weight source (``peer`` only when a ready replica exists and the run
  allows D2D, else ``disk``), then ``ready``; routers only see ready replicas.
* ``remove``: ``draining``: routed nothing new, retired when every request
  that touches it has ended (a P/D decode replica also waits for requests
  still prefilling elsewhere that were paired with it); a starting replica
  is cancelled at once. Requests are never dropped.
* ``switch_role``: drained the same way, then ``role_switch_s`` later it
  serves in the new role.

An action that would leave a role with no routable replica, or exceed
``max_replicas``, is refused and logged. Cost: GPU-seconds of every replica
from its add (starting counts) to its retirement or the last request's end.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.scaling import (WEIGHT_SOURCES, ClassLoad, ColdStartModel, FleetSnapshot, InstanceState, ScaleAction,
                            ScalingConfigError, make_scaler, scaler_options)
from ..core.slo import meets_slo
from .engine import Replica, SimRequest

if TYPE_CHECKING:
    from .cluster import Cluster

_PHASE = {"transition": "switching"}  # drained, changing role: still "switching" to the policy
STATS_WINDOW_S = 60.0  # mean lengths and measured attainment are taken over this window
MIN_ARRIVALS = 50  # the rate window widens until it holds this many arrivals (at most STATS_WINDOW_S)


@dataclass(frozen=True)
class AutoscaleConfig:
    scaler: str = "hfx"  # core scaling policy (core/scaling/registry.py)
    options: tuple = ()  # (name, value) pairs for the policy's config
    min_replicas: int = 1  # per role
    max_replicas: int = 16  # per role
    weight_source: str = "peer"  # "peer": D2D from a ready replica when one exists; "disk": always from disk
    tick_s: float = 5.0  # seconds between policy calls
    window_s: float = 10.0  # per-class arrival rates are measured over this window
    coldstart: ColdStartModel | None = None  # None: from the performance model's preset
    target: float = 0.9  # attainment every class must keep

    def __post_init__(self) -> None:
        if self.weight_source not in WEIGHT_SOURCES:
            raise ScalingConfigError(f"--weight-source must be one of {WEIGHT_SOURCES}, got {self.weight_source!r}")
        if not (isinstance(self.min_replicas, int) and isinstance(self.max_replicas, int)
                and 1 <= self.min_replicas <= self.max_replicas):
            raise ScalingConfigError(f"need 1 <= --min-replicas <= --max-replicas, got {self.min_replicas}, "
                                     f"{self.max_replicas}")
        if not (self.tick_s > 0 and self.window_s > 0 and 0 < self.target <= 1):
            raise ScalingConfigError("need tick_s > 0, window_s > 0 and 0 < target <= 1")


def _p90(values: list) -> float:
    """90th percentile of sorted ``values`` (nan under 10 values: too few to say)."""
    return float(values[int(0.9 * (len(values) - 1))]) if len(values) >= 10 else math.nan


class Autoscaler:
    def __init__(self, cluster: "Cluster", cfg: AutoscaleConfig):
        self.cluster, self.cfg = cluster, cfg
        self.coldstart = cfg.coldstart or ColdStartModel.for_perf(cluster.perf)
        opts = {"perf": cluster.perf, "min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                "weight_source": cfg.weight_source, **dict(cfg.options)}
        if "coldstart" in scaler_options(cfg.scaler):
            opts.setdefault("coldstart", self.coldstart)
        self.policy = make_scaler(cfg.scaler, **opts)
        self.phase: dict[int, str] = {r.iid: "ready" for r in cluster.replicas}
        self.since: dict[int, float] = {r.iid: 0.0 for r in cluster.replicas}
        self.born: dict[int, float] = {}
        self.died: dict[int, float] = {}
        self.switch_to: dict[int, str] = {}
        self.inflight: Counter = Counter()  # replica -> requests routed to it that have not ended
        self.arrivals: deque = deque()  # (time, class, input, output) within the stats window
        self.recent_ends: deque = deque()  # (time, class, met)
        self.slos: dict = {}  # class -> SLO (first seen)
        self.events: list = []  # (time, kind, iid, role, detail)
        self.timeline: list = []  # (time, replicas held, replicas ready)
        self.decisions = 0
        self.t0 = 0.0
        self.last_end = 0.0
        cluster.prefill = [r for r in cluster.replicas if r.role in ("collocated", "prefill")]
        cluster.decode = [r for r in cluster.replicas if r.role == "decode"]

    # ---- hooks from the cluster ---------------------------------------------------
    def start(self, t0: float) -> None:
        self.t0 = self.last_end = t0
        for iid in self.phase:
            self.born[iid], self.since[iid] = t0, t0
        self._mark(t0)
        self.cluster.at(t0 + self.cfg.tick_s, self._tick)

    def arrived(self, req: SimRequest) -> None:
        self.inflight[req.prefill_iid] += 1
        if req.decode_iid is not None:
            self.inflight[req.decode_iid] += 1
        self.arrivals.append((req.arrival, req.slo.cls, req.input_len, req.max_new_tokens))
        self.slos.setdefault(req.slo.cls, req.slo)

    def ended(self, req: SimRequest, now: float) -> None:
        self.last_end = now
        met = meets_slo(req.slo, req.arrival, req.first_token_time, req.finish_time, req.output_len)
        self.recent_ends.append((now, req.slo.cls, met))
        for iid in {req.prefill_iid, req.decode_iid} - {None}:
            self.inflight[iid] -= 1
            if self.phase.get(iid) in ("draining", "switching"):
                self._try_retire(iid, now)

    # ---- the control loop -----------------------------------------------------------
    def _tick(self, now: float) -> None:
        for iid in [i for i, p in self.phase.items() if p in ("draining", "switching")]:
            self._try_retire(iid, now)
        decision = self.policy.tick(self.snapshot(now), now)
        self.decisions += 1
        for action in decision.actions:
            self._apply(action, now)
        c = self.cluster
        if c._next_arrival < len(c.requests) or len(c.ended) < len(c.requests):
            c.at(now + self.cfg.tick_s, self._tick)

    def snapshot(self, now: float) -> FleetSnapshot:
        c = self.cluster
        insts = tuple(InstanceState(r.iid, r.role, _PHASE.get(self.phase[r.iid], self.phase[r.iid]),
                                    self.since[r.iid], r.perf.num_gpus,
                                    r.num_waiting, r.num_running, r.waiting_tokens, r.running_kv, r.capacity)
                      for r in c.replicas if self.phase[r.iid] != "removed")
        return FleetSnapshot(insts, self._classes(now), disaggregated=bool(c.cfg.pd))

    def _classes(self, now: float) -> tuple[ClassLoad, ...]:
        while self.arrivals and self.arrivals[0][0] < now - max(STATS_WINDOW_S, self.cfg.window_s):
            self.arrivals.popleft()
        while self.recent_ends and self.recent_ends[0][0] < now - STATS_WINDOW_S:
            self.recent_ends.popleft()
        window = self._rate_window(now)
        span = max(min(window, now - self.t0), 1e-9)
        out = []
        for name, slo in sorted(self.slos.items()):
            seen = [a for a in self.arrivals if a[1] == name]
            recent = sum(1 for a in seen if a[0] > now - window)
            ends = [m for _, k, m in self.recent_ends if k == name]
            inputs = sorted(a[2] for a in seen)
            out.append(ClassLoad(name, recent / span,
                                 sum(inputs) / len(inputs) if seen else 0.0,
                                 sum(a[3] for a in seen) / len(seen) if seen else 0.0,
                                 slo.ttft_s, slo.tpot_s, sum(ends) / len(ends) if ends else math.nan,
                                 self.cfg.target, _p90(inputs), len(ends)))
        return tuple(out)

    def _rate_window(self, now: float) -> float:
        """``window_s``, widened (up to the stats window) until it holds ``MIN_ARRIVALS`` arrivals: a rate
        measured from a handful of requests is mostly noise (low-rate traces such as Mooncake's)."""
        if len(self.arrivals) < MIN_ARRIVALS:
            return STATS_WINDOW_S
        return min(max(self.cfg.window_s, now - self.arrivals[-MIN_ARRIVALS][0]), STATS_WINDOW_S)

    # ---- applying actions ---------------------------------------------------------------
    def _apply(self, a: ScaleAction, now: float) -> None:
        handler = {"add": self._add, "remove": self._remove, "switch_role": self._switch}.get(a.kind)
        refusal = handler(a, now) if handler else f"unknown action {a.kind!r}"
        if refusal:
            self._log(now, "refused", a.iid, a.role, f"{a.kind}: {refusal}")

    def _serving(self, role: str) -> list[Replica]:
        return [r for r in self.cluster.replicas if r.role == role and self.phase[r.iid] in ("starting", "ready")]

    def _routable(self, role: str) -> list:
        return self.cluster.decode if role == "decode" else self.cluster.prefill

    def _add(self, a: ScaleAction, now: float) -> str | None:
        if len(self._serving(a.role)) >= self.cfg.max_replicas:
            return f"{a.role} already at --max-replicas {self.cfg.max_replicas}"
        peer_ok = self.cfg.weight_source == "peer" and any(p == "ready" for p in self.phase.values())
        source = "peer" if a.weight_source == "peer" and peer_ok else "disk"
        c = self.cluster
        rep = Replica(len(c.replicas), a.role, c.make_policy(), c.perf, c, c.true_perf)
        c.replicas.append(rep)
        self.born[rep.iid] = now
        self._set(rep, "starting", now)
        secs = self.coldstart.start_s(source)
        self._log(now, "add", rep.iid, a.role, f"{source} start {secs:.1f} s: {a.reason}")
        c.at(now + secs, lambda t: self._ready(rep, t))
        return None

    def _ready(self, rep: Replica, now: float) -> None:
        if self.phase[rep.iid] != "starting":
            return  # cancelled while starting
        self._set(rep, "ready", now)
        self._routable(rep.role).append(rep)
        self._log(now, "ready", rep.iid, rep.role, "")

    def _leave_routing(self, rep: Replica, kind: str) -> str | None:
        """Take ``rep`` out of routing unless it is its role's last routable replica."""
        pool = self._routable(rep.role)
        if rep in pool:
            if len(pool) <= 1:
                return f"replica {rep.iid} is the last routable {rep.role} replica"
            pool.remove(rep)
        return None

    def _remove(self, a: ScaleAction, now: float) -> str | None:
        rep = self._get(a.iid)
        if rep is None or self.phase[rep.iid] not in ("starting", "ready"):
            return f"replica {a.iid} is not serving"
        if self.phase[rep.iid] == "starting":
            self._retire(rep, now, "cancelled while starting")
            return None
        refusal = self._leave_routing(rep, "remove")
        if refusal:
            return refusal
        self._set(rep, "draining", now)
        self._log(now, "remove", rep.iid, rep.role, a.reason)
        self._try_retire(rep.iid, now)
        return None

    def _switch(self, a: ScaleAction, now: float) -> str | None:
        rep = self._get(a.iid)
        if rep is None or self.phase[rep.iid] != "ready" or rep.role == a.role:
            return f"replica {a.iid} is not a ready replica of another role"
        if a.role not in (("prefill", "decode") if self.cluster.cfg.pd else ("collocated",)):
            return f"role {a.role!r} does not exist in this deployment"
        refusal = self._leave_routing(rep, "switch")
        if refusal:
            return refusal
        self._set(rep, "switching", now)
        self.switch_to[rep.iid] = a.role
        self._log(now, "switch_role", rep.iid, rep.role, f"-> {a.role}: {a.reason}")
        self._try_retire(rep.iid, now)
        return None

    def _get(self, iid) -> Replica | None:
        reps = self.cluster.replicas
        return reps[iid] if isinstance(iid, int) and 0 <= iid < len(reps) else None

    def _drained(self, rep: Replica) -> bool:
        if rep.waiting or rep.chunked is not None or rep.running or rep.inflight_tokens or rep.kv_used > 0:
            return False
        return rep.role == "prefill" or self.inflight[rep.iid] == 0

    def _try_retire(self, iid: int, now: float) -> None:
        rep = self.cluster.replicas[iid]
        if not self._drained(rep):
            return
        if self.phase[iid] == "draining":
            self._retire(rep, now, "drained")
        elif self.phase[iid] == "switching":
            self._set(rep, "transition", now)
            self.cluster.at(now + self.coldstart.role_switch_s, lambda t: self._switched(rep, t))

    def _switched(self, rep: Replica, now: float) -> None:
        rep.role = self.switch_to.pop(rep.iid)
        rep.clear_cache()
        self._set(rep, "ready", now)
        self._routable(rep.role).append(rep)
        self._log(now, "switched", rep.iid, rep.role, "")

    def _retire(self, rep: Replica, now: float, why: str) -> None:
        self._set(rep, "removed", now)
        self.died[rep.iid] = now
        self._log(now, "retired", rep.iid, rep.role, why)

    def _set(self, rep: Replica, phase: str, now: float) -> None:
        self.phase[rep.iid], self.since[rep.iid] = phase, now
        self._mark(now)

    def _log(self, now: float, kind: str, iid, role: str, detail: str) -> None:
        self.events.append((now, kind, iid, role, detail))

    def _mark(self, now: float) -> None:
        held = sum(1 for p in self.phase.values() if p != "removed")
        ready = sum(1 for p in self.phase.values() if p == "ready")
        self.timeline.append((now, held, ready))

    # ---- results -----------------------------------------------------------------
    def gpu_seconds(self) -> float:
        end = self.last_end
        return sum((min(self.died.get(i, end), end) - min(b, end)) * self.cluster.replicas[i].perf.num_gpus
                   for i, b in self.born.items())

    def summary(self) -> dict:
        kinds = Counter(e[1] for e in self.events)
        return {"autoscaler": self.cfg.scaler, "weight_source": self.cfg.weight_source,
                "gpu_seconds": self.gpu_seconds(), "peak_replicas": max(h for _, h, _ in self.timeline),
                "scale_events": {k: kinds.get(k, 0) for k in ("add", "remove", "switch_role", "refused")},
                "decisions": self.decisions, "replica_timeline": [list(x) for x in self.timeline],
                "scale_log": [list(e) for e in self.events]}
