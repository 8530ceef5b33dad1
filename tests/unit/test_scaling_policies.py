"""Table tests of the scaling policies (core/scaling/): burst, idle, noise, P/D imbalance, static.

A tiny pure "fleet" applies each decision at once (adds start, then become
ready after the cold start; removals leave at once), so a policy can be
driven tick by tick through a load pattern without a simulator.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.scaling import (ClassLoad, ColdStartModel, FleetSnapshot, InstanceState, make_scaler)

PERF = preset()
COLD = ColdStartModel.for_perf(PERF)  # peer start ~15.6 s, disk ~23 s
MIX = (("interactive", 0.2, 0.45, 0.04), ("standard", 0.5, 2.0, 0.2), ("batch", 0.3, 15.0, 0.2))


def classes(rate: float, inp: float = 1155, out: float = 211) -> tuple[ClassLoad, ...]:
    return tuple(ClassLoad(n, rate * w, inp, out, ttft, tpot) for n, w, ttft, tpot in MIX)


def inst(iid, role="collocated", phase="ready", since=0.0, waiting=0, tokens=0, kv=0, running=0):
    return InstanceState(iid, role, phase, since, 1, waiting, running, tokens, kv, PERF.kv_capacity_tokens)


class Fleet:
    """Applies decisions instantly (ready after the cold start); counts scale events per direction."""

    def __init__(self, n: int = 2, role: str = "collocated", pd: tuple[int, int] | None = None):
        self.pd = pd
        if pd:
            self.insts = [inst(i, "prefill") for i in range(pd[0])] + [inst(pd[0] + i, "decode") for i in range(pd[1])]
        else:
            self.insts = [inst(i, role) for i in range(n)]
        self.next = len(self.insts)
        self.log: list[tuple[float, str]] = []

    def snap(self, now, cls, waiting=0):
        """``waiting``: requests queued in the whole fleet, spread over the ready instances."""
        self.insts = [replace(i, phase="ready") if i.phase == "starting" and now - i.since >= COLD.start_s("peer")
                      else i for i in self.insts]
        ready = max(sum(1 for i in self.insts if i.phase == "ready"), 1)
        insts = tuple(replace(i, num_waiting=round(waiting / ready)) if i.phase == "ready" else i for i in self.insts)
        return FleetSnapshot(insts, cls, disaggregated=bool(self.pd))

    def apply(self, decision, now):
        for a in decision.actions:
            assert a.reason, a
            self.log.append((now, a.kind))
            if a.kind == "add":
                self.insts.append(inst(self.next, a.role, "starting", now))
                self.next += 1
            elif a.kind == "remove":
                self.insts = [i for i in self.insts if i.iid != a.iid]
            else:
                self.insts = [replace(i, role=a.role) if i.iid == a.iid else i for i in self.insts]

    def count(self, role="collocated"):
        return sum(1 for i in self.insts if i.role == role)

    def run(self, policy, rate_at, t0, t1, dt=5.0, waiting_at=lambda t: 8):
        t = t0
        while t < t1:
            self.apply(policy.tick(self.snap(t, classes(rate_at(t)), waiting_at(t)), t), t)
            t += dt
        return t


def scalers(max_replicas=10):
    return {
        "hfx": make_scaler("hfx", perf=PERF, max_replicas=max_replicas),
        "queue": make_scaler("queue", max_replicas=max_replicas, target_waiting=4),
        "planner": make_scaler("planner", perf=PERF, max_replicas=max_replicas, interval_s=60),
    }


# Each autoscaler sees its own signal of a burst: HFX and the planner the arrival rate, the HPA the queue.
BURST = [("hfx", 60.0), ("queue", 60.0), ("planner", 60.0)]


@pytest.mark.parametrize("name, burst_rate", BURST)
def test_burst_scales_out(name, burst_rate):
    policy, fleet = scalers()[name], Fleet(2)
    t = fleet.run(policy, lambda t: 15.0, 0, 300)
    assert not [k for _, k in fleet.log if k == "add"], fleet.log  # 15 req/s fits 2 replicas
    fleet.run(policy, lambda t: burst_rate, t, t + 200, waiting_at=lambda t: 200)
    assert fleet.count() >= 4, (name, fleet.log)
    assert fleet.log[0][1] == "add"
    assert fleet.log[0][0] <= t + (60 if name == "planner" else 15), fleet.log  # the planner acts per interval


def test_hfx_reacts_within_two_ticks_and_sizes_for_the_forecast():
    policy, fleet = scalers()["hfx"], Fleet(2)
    t = fleet.run(policy, lambda t: 15.0, 0, 300)
    fleet.run(policy, lambda t: 60.0, t, t + 10)
    assert fleet.count() >= math.ceil(60.0 / 14.35), fleet.log  # at least the rate at utilisation 1


@pytest.mark.parametrize("name, earliest", [("hfx", 4 * COLD.start_s("peer")), ("queue", 300.0), ("planner", 0.0)])
def test_idle_scales_in_only_after_cool_down(name, earliest):
    policy, fleet = scalers()[name], Fleet(2)
    t = fleet.run(policy, lambda t: 15.0, 0, 200)
    t = fleet.run(policy, lambda t: 60.0, t, t + 120, waiting_at=lambda t: 200)
    peak, last_add = fleet.count(), max(s for s, k in fleet.log if k == "add")
    fleet.run(policy, lambda t: 2.0, t, t + 900, waiting_at=lambda t: 0)
    removes = [s for s, k in fleet.log if k == "remove"]
    assert removes and fleet.count() < peak, (name, fleet.log)
    assert min(removes) - last_add >= earliest, (name, min(removes), last_add)
    if name == "hfx":  # one at a time, spaced by the scale-in interval
        assert all(b - a >= COLD.start_s("peer") - 1e-9 for a, b in zip(removes, removes[1:])), removes


def noisy(t: float) -> float:
    """A steady 30 req/s with +-20% deterministic noise (a fixed pseudo-random sequence)."""
    k = int(t / 5)
    return 30.0 * (1 + 0.2 * (((k * 7919) % 13) / 6.0 - 1.0))


@pytest.mark.parametrize("name", ["hfx", "queue", "planner"])
def test_no_flapping_on_noisy_steady_load(name):
    policy, fleet = scalers()[name], Fleet(3)
    fleet.run(policy, noisy, 0, 1800, waiting_at=lambda t: noisy(t) * 12 / 30)  # 4 per instance +-20%
    kinds = [k for _, k in fleet.log]
    changes = sum(1 for a, b in zip(kinds, kinds[1:]) if a != b)
    assert changes <= 1, (name, fleet.log)  # at most one initial adjustment, never back and forth


def test_pd_imbalance_prefers_role_switch_over_new_instance():
    policy = make_scaler("hfx", perf=PERF, max_replicas=10)
    fleet = Fleet(pd=(1, 5))
    # long prompts, short outputs: prefill-heavy; five decode replicas are far more than needed
    cls = classes(12.0, inp=4000, out=60)
    decision = policy.tick(FleetSnapshot(tuple(fleet.insts), cls, disaggregated=True), 0.0)
    kinds = [a.kind for a in decision.actions]
    assert "switch_role" in kinds and "add" not in kinds, decision
    assert all(a.role == "prefill" for a in decision.actions)
    assert "no cold start" in decision.actions[0].reason


def test_pd_switch_needs_a_decode_surplus():
    policy = make_scaler("hfx", perf=PERF, max_replicas=10)
    cls = classes(12.0, inp=4000, out=60)
    decision = policy.tick(FleetSnapshot(tuple(Fleet(pd=(1, 1)).insts), cls, disaggregated=True), 0.0)
    assert {a.kind for a in decision.actions} == {"add"} and all(a.role == "prefill" for a in decision.actions)


def test_hfx_adds_from_peer_when_a_ready_peer_exists_else_disk():
    policy = make_scaler("hfx", perf=PERF, max_replicas=10)
    d = policy.tick(FleetSnapshot((inst(0),), classes(60.0)), 0.0)
    assert d.actions and {a.weight_source for a in d.actions} == {"peer"}
    policy = make_scaler("hfx", perf=PERF, max_replicas=10, weight_source="disk")
    d = policy.tick(FleetSnapshot((inst(0),), classes(60.0)), 0.0)
    assert {a.weight_source for a in d.actions} == {"disk"}


def test_hfx_runs_leaner_with_peer_starts_than_with_disk():
    """Cold-start aware: the reserve for a rise during the start is smaller when D2D makes it short."""
    slow = ColdStartModel.for_model("llama-3-8b", disk_gbs=0.2)  # ~95 s from disk
    sizes = {}
    for source in ("peer", "disk"):
        policy = make_scaler("hfx", perf=PERF, max_replicas=20, coldstart=slow, weight_source=source)
        d = policy.tick(FleetSnapshot((inst(0),), classes(70.0)), 0.0)
        sizes[source] = 1 + len(d.actions)
    assert sizes["peer"] < sizes["disk"], sizes


def test_hfx_removes_the_cheapest_to_drain():
    policy = make_scaler("hfx", perf=PERF, max_replicas=10, min_timer_s=0.0, cooldown_x=0.0, stable_x=0.0,
                         peak_window_x=0.0)
    busy = [inst(0, kv=50_000, running=40), inst(1, kv=500, running=1), inst(2, kv=90_000, running=70)]
    d = policy.tick(FleetSnapshot(tuple(busy), classes(1.0)), 100.0)
    assert [(a.kind, a.iid) for a in d.actions] == [("remove", 1)], d


def test_infeasible_class_does_not_demand_unbounded_capacity():
    """Mooncake-like prompts: interactive cannot prefill 20k tokens within 450 ms on any fleet size,
    so it adds nothing to the fleet the other classes need."""
    cls = classes(0.5, inp=20_000, out=300)
    d = make_scaler("hfx", perf=PERF, max_replicas=50).tick(FleetSnapshot((inst(0),), cls), 0.0)
    assert d.predicted["interactive"] == 0.0
    assert 0 < len(d.actions) < 10, d  # sized for standard and batch, not driven to the maximum
    assert d.predicted["standard"] >= 0.9


def test_static_replaces_lost_instances_and_never_removes():
    policy = make_scaler("static")
    fleet = Fleet(3)
    fleet.run(policy, lambda t: 1.0, 0, 100)
    assert fleet.log == []
    fleet.insts = fleet.insts[:2]
    fleet.run(policy, lambda t: 100.0, 100, 200)
    assert [k for _, k in fleet.log] == ["add"] and fleet.count() == 3


@pytest.mark.parametrize("name", ["hfx", "queue", "planner", "static"])
def test_decisions_carry_reasons(name):
    policy = make_scaler(name, perf=PERF) if name in ("hfx", "planner") else make_scaler(name)
    d = policy.tick(FleetSnapshot((inst(0),), classes(5.0)), 0.0)
    assert isinstance(d.reason, str) and d.reason
