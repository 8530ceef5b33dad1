"""HFX autoscaler: the cheapest actions that keep every class's predicted attainment above target.

Guarantees and rules (per tick):

* Sizing: the smallest fleet whose predicted attainment (``capacity.py``)
  is at least ``target + up_margin`` for every class and whose utilisation
  stays under ``rho_max``, for the *forecast* load: each class's rate plus
  its rising trend over the cold-start time, plus a surge reserve that grows
  with the cold-start time (a rise the trend has not shown yet may happen
  before new capacity is ready), plus the queued prefill work to drain. A
  class that no fleet size can rescue (its mean prompt does not prefill
  within its TTFT) is held to what it can attain, so it never demands
  unbounded capacity.
* Cold-start aware: the horizon and the reserve are the start time of the
  weight source in use; a peer (D2D) start is short, so the fleet runs leaner.
* Cost order: a P/D shortfall in one role is covered first by switching
  instances from the other role where it has a surplus (no cold start, no
  new GPUs), then by adding; starting instances count as capacity (no
  double adds).
* Hysteresis: scale-in only a cool-down after the last scale-out, after
  the smaller fleet has been predicted to meet ``target + down_margin`` under
  ``rho_max_down`` (< ``rho_max``: a dead band) for the *peak* rate of a
  recent window, and no tick of that window sized the fleet larger,
  continuously for a while, one instance at a time. The
  timers are multiples of the cold-start time (a wrong scale-in costs one
  cold start), so it never flaps on a steady noisy load, and with D2D
  starts it gives capacity back sooner.
* Protect requests: an instance is removed only by draining (the caller
  routes nothing new to it and retires it when empty); the victim is the
  cheapest to drain (a still-starting one, else the least work in flight).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from ..perf_model import PerfModel
from .capacity import Prediction, achievable, prefill_s, predict_collocated, predict_pd
from .coldstart import ColdStartModel, ScalingConfigError
from .common import add_actions, backlog_tokens, pick_victims, remove_actions, serving, with_rates
from .forecast import RateHistory
from .types import WEIGHT_SOURCES, FleetSnapshot, ScaleAction, ScaleDecision


@dataclass(frozen=True)
class HFXScalerConfig:
    perf: PerfModel  # performance model of one instance (sizing)
    coldstart: ColdStartModel | None = None  # start-time model (None: from the perf model's preset name)
    weight_source: str = "peer"  # preferred weight source for new instances (peer needs a ready instance)
    min_replicas: int = 1  # per role
    max_replicas: int = 64  # per role
    up_margin: float = 0.02  # scale out unless predicted attainment >= target + this
    down_margin: float = 0.05  # scale in only if the smaller fleet keeps target + this
    rho_max: float = 0.8  # utilisation cap when sizing up (Poisson noise within a tick, routing imbalance)
    rho_max_down: float = 0.75  # utilisation the smaller fleet must stay under to scale in (dead band; narrow
    # since the pooled-wait model prices queueing into the attainment itself)
    surge_per_min: float = 0.5  # reserve: relative rate rise per minute of cold start not yet in the trend
    trend_window_s: float = 30.0  # window of the least-squares rate trend
    # Scale-in timers, in multiples of the current cold-start time (a wrong scale-in costs one cold start,
    # so a fast D2D start allows a leaner fleet), each at least min_timer_s:
    peak_window_x: float = 4.0  # scale-in sizes for the peak rate over this window
    cooldown_x: float = 4.0  # no scale-in this long after a scale-out
    stable_x: float = 2.0  # the scale-in condition must hold this long
    scale_in_interval_x: float = 1.0  # at most one removal per this interval (per role)
    min_timer_s: float = 10.0  # floor of every scale-in timer
    drain_s: float = 10.0  # queued prefill work is planned to drain within this
    tpot_safety: float = 0.9  # steps planned at this share of the tightest TPOT
    feasible_slack: float = 0.02  # a class is held to min(target + margin, attainable - slack)

    def __post_init__(self) -> None:
        if not isinstance(self.perf, PerfModel):
            raise ScalingConfigError("hfx: perf must be a PerfModel")
        if self.weight_source not in WEIGHT_SOURCES:
            raise ScalingConfigError(f"hfx: weight_source must be one of {WEIGHT_SOURCES}, got {self.weight_source!r}")
        check_bounds("hfx", self.min_replicas, self.max_replicas)
        for name in ("up_margin", "down_margin", "surge_per_min", "trend_window_s", "peak_window_x", "cooldown_x",
                     "stable_x", "scale_in_interval_x", "min_timer_s", "feasible_slack"):
            if not getattr(self, name) >= 0:
                raise ScalingConfigError(f"hfx: {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.rho_max_down <= self.rho_max <= 1:
            raise ScalingConfigError(f"hfx: need 0 < rho_max_down <= rho_max <= 1, got {self.rho_max_down}, "
                                     f"{self.rho_max}")
        if not (self.drain_s > 0 and 0 < self.tpot_safety <= 1):
            raise ScalingConfigError("hfx: drain_s must be > 0 and tpot_safety in (0, 1]")


def check_bounds(who: str, lo, hi) -> None:
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ScalingConfigError(f"{who}: need integers 1 <= min_replicas <= max_replicas, got {lo!r}, {hi!r}")


@dataclass
class _RoleState:
    last_out: float = -math.inf  # last scale-out (add or switch into this role)
    last_in: float = -math.inf  # last removal or switch away
    shrink_since: float | None = None  # since when a smaller fleet has looked sufficient


class HFXScaler:
    name = "hfx"

    def __init__(self, cfg: HFXScalerConfig):
        self.cfg = cfg
        self.coldstart = cfg.coldstart or ColdStartModel.for_perf(cfg.perf)
        slowest = self.coldstart.start_s("disk")
        self.history = RateHistory(span_s=max(cfg.peak_window_x * slowest, cfg.trend_window_s) + 60.0)
        self.state = {r: _RoleState() for r in ("collocated", "prefill", "decode")}
        self.needs = {r: deque() for r in ("collocated", "prefill", "decode")}  # (time, fleet size needed)

    # ---- sizing -------------------------------------------------------------
    def _predict(self, snap: FleetSnapshot, classes, counts: dict, backlog: dict) -> Prediction:
        c = self.cfg
        if snap.disaggregated:
            return predict_pd(c.perf, classes, counts["prefill"], counts["decode"], backlog["prefill"], c.drain_s,
                              c.tpot_safety)
        return predict_collocated(c.perf, classes, counts["collocated"], backlog["collocated"], c.drain_s,
                                  c.tpot_safety)

    def _ok(self, pred: Prediction, goals: dict, rho: float) -> bool:
        return pred.rho <= rho and all(pred.attainment[k] >= g for k, g in goals.items())

    def _size(self, snap, classes, role: str, counts: dict, backlog: dict, goals, rho) -> int:
        """Smallest count of ``role`` (others as in ``counts``, or unbounded) that meets the goals."""
        c = self.cfg
        for n in range(c.min_replicas, c.max_replicas + 1):
            trial = {**counts, role: n}
            if self._ok(self._predict(snap, classes, trial, backlog), goals, rho):
                return n
        return c.max_replicas

    def _goals(self, snap: FleetSnapshot, margin: float) -> dict:
        """Per active class: target + margin, held to what an unbounded fleet attains minus the slack. A
        class with prompts too long for its TTFT is not sized for the prompts at the edge of feasibility:
        its reach counts only prompts that leave at least one mean prefill of the class for waiting (a prompt
        that must never wait needs an idle fleet)."""
        perf = self.cfg.perf
        tight = [replace(cl, ttft_s=max(cl.ttft_s - prefill_s(perf, cl.mean_input), 0.0)) for cl in snap.classes]
        reach = achievable(perf, tight, snap.disaggregated)
        return {cl.name: min(cl.target + margin, reach[cl.name] - self.cfg.feasible_slack) for cl in snap.classes
                if cl.arrival_rate > 0}

    def _timer(self, x: float, source: str) -> float:
        return max(x * self.coldstart.start_s(source), self.cfg.min_timer_s)

    def _loads(self, snap: FleetSnapshot, now: float, source: str):
        """(classes at the forecast rate for scale-out, classes at the peak-hold rate for scale-in)."""
        c = self.cfg
        horizon = self.coldstart.start_s(source)
        peak_window = self._timer(c.peak_window_x, source)
        reserve = 1.0 + c.surge_per_min * horizon / 60.0
        up = {cl.name: reserve * self.history.forecast(cl.name, now, cl.arrival_rate, horizon, c.trend_window_s)
              for cl in snap.classes}
        down = {cl.name: self.history.peak(cl.name, now, peak_window, cl.arrival_rate) for cl in snap.classes}
        return with_rates(snap.classes, up), with_rates(snap.classes, down), reserve

    # ---- the tick -----------------------------------------------------------
    def tick(self, snapshot: FleetSnapshot, now: float) -> ScaleDecision:
        c = self.cfg
        self.history.add(now, snapshot.classes)
        roles = ("prefill", "decode") if snapshot.disaggregated else ("collocated",)
        counts = {r: len(serving(snapshot, r)) for r in roles}
        backlog = {r: backlog_tokens(snapshot, r) for r in roles}
        source = "peer" if c.weight_source == "peer" and any(i.phase == "ready" for i in snapshot.instances) \
            else "disk"
        up, down, reserve = self._loads(snapshot, now, source)
        big = {r: c.max_replicas for r in roles}
        need = {r: self._size(snapshot, up, r, {**big, **{r: 0}}, backlog, self._goals(snapshot, c.up_margin),
                              c.rho_max) for r in roles}
        keep = {r: self._size(snapshot, down, r, big, backlog, self._goals(snapshot, c.down_margin), c.rho_max_down)
                for r in roles}
        for r in roles:  # scale-in also waits until no recent tick wanted more (recommendation stabilisation)
            self.needs[r].append((now, need[r]))
            while self.needs[r][0][0] < now - self._timer(c.peak_window_x, source):
                self.needs[r].popleft()
        keep = {r: max(keep[r], max(n for _, n in self.needs[r])) for r in roles}
        actions: list[ScaleAction] = []
        why = f"forecast x{reserve:.2f} reserve, {source} start {self.coldstart.start_s(source):.1f} s"
        if snapshot.disaggregated:
            actions += self._switches(snapshot, counts, need, keep, now, why)
        for r in roles:
            short = need[r] - counts[r]
            if short > 0:
                actions += add_actions(r, short, snapshot, source, f"{r}: {counts[r]} -> {need[r]} needed ({why})")
                counts[r] += short
                self.state[r].last_out = now
        if not actions:
            for r in roles:
                actions += self._scale_in(snapshot, r, counts[r], keep[r], now, source)
        after = {r: counts[r] for r in roles}
        pred = self._predict(snapshot, snapshot.classes, after, backlog)
        return ScaleDecision(tuple(actions), _summary(actions, counts, need, keep, roles), dict(pred.attainment))

    def _switches(self, snap: FleetSnapshot, counts: dict, need: dict, keep: dict, now: float, why: str) -> list:
        """Cover a role's shortfall from the other role's surplus (cheaper than adding)."""
        out = []
        for to, frm in (("prefill", "decode"), ("decode", "prefill")):
            k = min(need[to] - counts[to], counts[frm] - keep[frm])
            if k <= 0:
                continue
            donors = pick_victims(serving(snap, frm), k, keep_ready=1)
            for d in donors:
                out.append(ScaleAction("switch_role", to, d.iid, reason=f"{frm} surplus covers {to} shortfall "
                                                                         f"(no cold start; {why})"))
            counts[frm] -= len(donors)
            counts[to] += len(donors)
            self.state[to].last_out = self.state[frm].last_in = now
        return out

    def _scale_in(self, snap: FleetSnapshot, role: str, count: int, keep: int, now: float, source: str) -> list:
        c, st = self.cfg, self.state[role]
        peak = self._timer(c.peak_window_x, source)
        if keep >= count or not self.history.covers(now, peak):
            st.shrink_since = None
            return []
        if st.shrink_since is None:
            st.shrink_since = now
        waited = now - st.shrink_since
        if (now - st.last_out < self._timer(c.cooldown_x, source) or waited < self._timer(c.stable_x, source)
                or now - st.last_in < self._timer(c.scale_in_interval_x, source)):
            return []
        victims = pick_victims(serving(snap, role), 1, keep_ready=1)
        if not victims:
            return []
        st.last_in = now
        return remove_actions(victims, f"{role}: {count} -> {count - 1}: {keep} keep target + "
                                       f"{c.down_margin} at the {peak:.0f} s peak rate for {waited:.0f} s")


def _summary(actions, counts, need, keep, roles) -> str:
    state = ", ".join(f"{r} {counts[r]} (need {need[r]}, keep {keep[r]})" for r in roles)
    if not actions:
        return f"within target: {state}"
    kinds = ", ".join(sorted({a.kind for a in actions}))
    return f"{kinds}: {state}"
