"""Baseline autoscalers: static provisioning, a queue-length HPA, a throughput-profile planner.

* ``static``: keeps the fleet it was given (or ``replicas`` per role);
  replaces lost instances, never removes. "Static peak" = this at the
  peak's size.
* ``queue``: Kubernetes HPA (as KEDA drives it) on the average number of
  waiting requests per instance, per role, with HPA's defaults: sync every
  15 s, ``desired = ceil(current x metric / target)`` (instances still
  starting count with metric 0), no change within a 10% tolerance, scale-up
  at most ``max(2 x current, current + 4)`` per sync, no scale-up
  stabilisation, scale-down to the *largest* recommendation of the last
  300 s. A removed instance is the newest (ReplicaSet's deletion order:
  not-ready pods first, then the most recently ready).
* ``planner``: NVIDIA Dynamo's SLA planner, throughput mode: every
  ``interval_s`` it predicts the next interval's request rate from past
  interval averages (``constant``: last interval; ``moving_average``;
  ``linear``: trend, standing in for its ARIMA/Prophet predictors) and sets
  ``replicas = ceil(predicted rate / per-replica rate at SLO)``, the
  per-replica rate taken from the performance model at the tightest class's
  TPOT (a profile-based planner has one SLO per deployment), per stage in
  P/D. No correction factors (the performance model is exact in simulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..perf_model import PerfModel
from .capacity import replica_rate_limit, stage_rate_limits
from .coldstart import ScalingConfigError
from .common import add_actions, roles, serving, total_rate
from .hfx import check_bounds
from .types import WEIGHT_SOURCES, FleetSnapshot, InstanceState, ScaleAction, ScaleDecision


def _newest_first(insts: list[InstanceState], k: int) -> list[InstanceState]:
    """Kubernetes' ReplicaSet scale-down order: not ready (starting) first, then most recently ready;
    the last ready instance is kept."""
    ordered = sorted(insts, key=lambda i: (i.phase != "starting", -i.since))
    out, ready = [], sum(1 for i in insts if i.phase == "ready")
    for inst in ordered[:k]:
        if inst.phase == "ready":
            if ready <= 1:
                continue
            ready -= 1
        out.append(inst)
    return out


def _resize(snap: FleetSnapshot, role: str, desired: int, prefer: str, why: str) -> list[ScaleAction]:
    cur = serving(snap, role)
    if desired > len(cur):
        return add_actions(role, desired - len(cur), snap, prefer, why)
    victims = _newest_first(cur, len(cur) - desired)
    return [ScaleAction("remove", role, v.iid, reason=why) for v in victims]


@dataclass(frozen=True)
class StaticConfig:
    replicas: int | None = None  # per role; None: the count seen at the first tick
    weight_source: str = "peer"  # for replacements

    def __post_init__(self) -> None:
        if self.replicas is not None and not (isinstance(self.replicas, int) and self.replicas >= 1):
            raise ScalingConfigError(f"static: replicas must be an integer >= 1, got {self.replicas!r}")
        _check_source("static", self.weight_source)


class StaticScaler:
    name = "static"

    def __init__(self, cfg: StaticConfig):
        self.cfg = cfg
        self.size: dict[str, int] = {}

    def tick(self, snapshot: FleetSnapshot, now: float) -> ScaleDecision:
        actions = []
        for role in roles(snapshot):
            have = len(serving(snapshot, role))
            want = self.size.setdefault(role, self.cfg.replicas or have)
            if have < want:
                actions += add_actions(role, want - have, snapshot, self.cfg.weight_source, "static: replace")
        return ScaleDecision(tuple(actions), "static provisioning")


@dataclass(frozen=True)
class QueueConfig:
    target_waiting: float = 4.0  # average waiting requests per instance the HPA aims for
    sync_s: float = 15.0  # HPA --horizontal-pod-autoscaler-sync-period default
    tolerance: float = 0.1  # HPA --horizontal-pod-autoscaler-tolerance default
    down_window_s: float = 300.0  # HPA behavior.scaleDown.stabilizationWindowSeconds default
    min_replicas: int = 1  # per role
    max_replicas: int = 64  # per role
    weight_source: str = "peer"  # for new instances (peer when one is ready)

    def __post_init__(self) -> None:
        check_bounds("queue", self.min_replicas, self.max_replicas)
        if not (self.target_waiting > 0 and self.sync_s >= 0 and 0 <= self.tolerance < 1
                and self.down_window_s >= 0):
            raise ScalingConfigError("queue: need target_waiting > 0, sync_s >= 0, 0 <= tolerance < 1, "
                                     "down_window_s >= 0")
        _check_source("queue", self.weight_source)


class QueueScaler:
    name = "queue"

    def __init__(self, cfg: QueueConfig):
        self.cfg = cfg
        self.last_sync = -math.inf
        self.recs: dict[str, list[tuple[float, int]]] = {}  # role -> (time, recommendation)

    def tick(self, snapshot: FleetSnapshot, now: float) -> ScaleDecision:
        c = self.cfg
        if now - self.last_sync < c.sync_s:
            return ScaleDecision((), "between HPA syncs")
        self.last_sync = now
        actions, notes = [], []
        for role in roles(snapshot):
            cur = serving(snapshot, role)
            waiting = sum(i.num_waiting for i in cur if i.phase == "ready")
            n = len(cur)
            ratio = waiting / max(n, 1) / c.target_waiting
            rec = n if abs(ratio - 1.0) <= c.tolerance else math.ceil(n * ratio)
            rec = max(c.min_replicas, min(c.max_replicas, rec, max(2 * n, n + 4)))
            start = self.recs.setdefault(role, [(now, n)])  # the initial fleet is the first recommendation
            hist = [(t, r) for t, r in start if t > now - c.down_window_s] + [(now, rec)]
            self.recs[role] = hist
            desired = rec if rec >= n else min(n, max(r for _, r in hist))
            notes.append(f"{role}: {waiting} waiting on {n} (target {c.target_waiting:g}/instance) -> {desired}")
            if desired != n:
                actions += _resize(snapshot, role, desired, c.weight_source, notes[-1])
        return ScaleDecision(tuple(actions), "; ".join(notes))


PREDICTORS = ("constant", "moving_average", "linear")


@dataclass(frozen=True)
class PlannerConfig:
    perf: PerfModel  # performance model (the planner's throughput profile)
    interval_s: float = 180.0  # adjustment interval (Dynamo's planner default, 180 s)
    predictor: str = "constant"  # one of PREDICTORS
    history: int = 3  # intervals the moving average / trend uses
    tpot_safety: float = 0.9  # the engine plans steps at this share of TPOT
    min_replicas: int = 1  # per role
    max_replicas: int = 64  # per role
    weight_source: str = "peer"  # for new instances (peer when one is ready)

    def __post_init__(self) -> None:
        if not isinstance(self.perf, PerfModel):
            raise ScalingConfigError("planner: perf must be a PerfModel")
        check_bounds("planner", self.min_replicas, self.max_replicas)
        if self.predictor not in PREDICTORS:
            raise ScalingConfigError(f"planner: predictor must be one of {PREDICTORS}, got {self.predictor!r}")
        if not (self.interval_s > 0 and isinstance(self.history, int) and self.history >= 1):
            raise ScalingConfigError("planner: need interval_s > 0 and an integer history >= 1")
        _check_source("planner", self.weight_source)


class PlannerScaler:
    name = "planner"

    def __init__(self, cfg: PlannerConfig):
        self.cfg = cfg
        self.start: float | None = None
        self.samples: list[float] = []  # total rate at each tick of the current interval
        self.averages: list[float] = []  # per past interval

    def _predict(self) -> float:
        h = self.averages[-self.cfg.history:]
        if self.cfg.predictor == "constant" or len(h) < 2:
            return h[-1]
        if self.cfg.predictor == "moving_average":
            return sum(h) / len(h)
        slope = (h[-1] - h[0]) / (len(h) - 1)
        return max(h[-1] + slope, 0.0)

    def tick(self, snapshot: FleetSnapshot, now: float) -> ScaleDecision:
        c = self.cfg
        self.start = now if self.start is None else self.start
        self.samples.append(total_rate(snapshot.classes))
        if now - self.start < c.interval_s:
            return ScaleDecision((), "between planner intervals")
        self.start = now
        self.averages.append(sum(self.samples) / len(self.samples))
        self.samples = []
        rate = self._predict()
        if snapshot.disaggregated:
            limits = dict(zip(("prefill", "decode"), stage_rate_limits(c.perf, snapshot.classes, c.tpot_safety)))
        else:
            limits = {"collocated": replica_rate_limit(c.perf, snapshot.classes, c.tpot_safety)}
        actions, notes = [], []
        for role, per in limits.items():
            want = math.ceil(rate / per) if per > 0 and math.isfinite(per) else c.min_replicas
            want = max(c.min_replicas, min(c.max_replicas, want))
            notes.append(f"{role}: predicted {rate:.2f} req/s / {per:.2f} per replica at SLO -> {want}")
            actions += _resize(snapshot, role, want, c.weight_source, notes[-1])
        return ScaleDecision(tuple(actions), "; ".join(notes))


def _check_source(who: str, source: str) -> None:
    if source not in WEIGHT_SOURCES:
        raise ScalingConfigError(f"{who}: weight_source must be one of {WEIGHT_SOURCES}, got {source!r}")
