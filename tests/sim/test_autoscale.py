"""Autoscaling in the simulator (sim/autoscale.py): conservation, draining, starting, cost, determinism, CLI.

Small synthetic workloads with a rate burst so every autoscaler adds and
removes replicas within a few simulated minutes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.scaling import SCALERS, ScaleAction, ScaleDecision
from hyperflexis_sglang.core.scaling.registry import SCALERS as REGISTRY
from hyperflexis_sglang.sim import cli
from hyperflexis_sglang.sim.autoscale import AutoscaleConfig
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig
from hyperflexis_sglang.sim.runner import simulate
from hyperflexis_sglang.sim.workload import TraceRow, build, burst, synthetic

PERF = preset()
FAST = (("cooldown_x", 0.5), ("peak_window_x", 0.5), ("stable_x", 0.25), ("min_timer_s", 2.0))  # HFX timers short enough for a short run
OPTS = {"hfx": FAST, "queue": (("down_window_s", 10.0), ("sync_s", 4.0)), "planner": (("interval_s", 20.0),), "static": ()}


def workload(n=1100, rate=8.0, factor=4.0):
    rng = random.Random(0)
    lengths = [TraceRow(0.0, rng.choice([300, 1200, 3000]), rng.choice([20, 120, 300])) for _ in range(40)]
    wl = build(synthetic(n, rate, seed=3, lengths=lengths), seed=3)
    return burst(wl, 20.0, 15.0, factor, 5.0)


def cluster(scaler="hfx", pd=None, replicas=1, **kw):
    auto = AutoscaleConfig(scaler=scaler, options=OPTS.get(scaler, ()), max_replicas=6, tick_s=2.0, **kw)
    return Cluster(ClusterConfig(policy="hfx", router="hfx", replicas=replicas, pd=pd, autoscale=auto), PERF)


@pytest.fixture(scope="module")
def runs():
    out = {}
    wl = workload()
    for name in sorted(SCALERS):
        for pd in (None, (1, 1)):
            c = cluster(name, pd)
            c.run(wl)
            out[(name, pd)] = (wl, c)
    return out


@pytest.mark.parametrize("name", sorted(SCALERS))
@pytest.mark.parametrize("pd", [None, (1, 1)], ids=["collocated", "pd"])
def test_every_request_ends_once(runs, name, pd):
    wl, c = runs[(name, pd)]
    assert len(c.ended) == len(wl) and {r.rid for r in c.ended} == set(c.requests)
    assert all(r.ended for r in c.requests.values())
    assert sum(c.autoscale.inflight.values()) == 0


@pytest.mark.parametrize("name", ["hfx", "queue", "planner"])
def test_autoscalers_scale_out_and_back_in(runs, name):
    _, c = runs[(name, None)]
    kinds = [e[1] for e in c.autoscale.events]
    assert "add" in kinds and "ready" in kinds and "retired" in kinds, kinds


def _windows(events, start_kind, end_kinds):
    """(iid, start, end) intervals from the scale log."""
    open_, out = {}, []
    for t, kind, iid, _, _ in events:
        if kind == start_kind:
            open_[iid] = t
        elif kind in end_kinds and iid in open_:
            out.append((iid, open_.pop(iid), t))
    return out + [(iid, t, float("inf")) for iid, t in open_.items()]


@pytest.mark.parametrize("key", [(n, pd) for n in ("hfx", "queue", "planner") for pd in (None, (1, 1))])
def test_draining_and_starting_replicas_get_no_new_requests(runs, key):
    _, c = runs[key]
    ev = c.autoscale.events
    blocked = _windows(ev, "remove", ("retired",)) + _windows(ev, "add", ("ready", "retired"))
    blocked += _windows(ev, "switch_role", ("switched",))
    assert blocked
    for iid, t0, t1 in blocked:
        late = [r.rid for r in c.requests.values() if t0 < r.arrival < t1 and iid in (r.prefill_iid, r.decode_iid)]
        assert not late, (iid, t0, t1, late[:5])


@pytest.mark.parametrize("key", [("hfx", None), ("queue", None), ("hfx", (1, 1))])
def test_gpu_seconds_are_replica_lifetimes(runs, key):
    wl, c = runs[key]
    a = c.autoscale
    end = max(r.finish_time or 0.0 for r in c.requests.values())
    assert a.last_end == pytest.approx(end)
    life = {r.iid: [wl.arrivals[0], end] for r in c.replicas}
    for t, kind, iid, _, _ in a.events:
        if kind == "add":
            life[iid][0] = t
        elif kind == "retired":
            life[iid][1] = min(t, end)  # cost is counted up to the last request's end
    expected = sum(t1 - t0 for t0, t1 in life.values())
    assert a.gpu_seconds() == pytest.approx(expected)
    assert 0 < a.gpu_seconds() < len(c.replicas) * (end - wl.arrivals[0])


def test_static_autoscaler_changes_nothing():
    """The autoscaler's ticks alone do not perturb the simulation (existing results stay as they are)."""
    wl = workload(600)
    plain = Cluster(ClusterConfig(policy="hfx", router="hfx", replicas=2), PERF)
    plain.run(wl)
    static = cluster("static", replicas=2)
    static.run(wl)
    assert [(r.first_token_time, r.finish_time) for r in plain.requests.values()] == \
           [(r.first_token_time, r.finish_time) for r in static.requests.values()]
    span = plain.now - wl.arrivals[0]
    assert static.autoscale.gpu_seconds() == pytest.approx(2 * span)


def test_deterministic():
    wl = workload(600)
    cfg = ClusterConfig(policy="hfx", router="hfx", replicas=1,
                        autoscale=AutoscaleConfig(scaler="hfx", options=FAST, max_replicas=6, tick_s=2.0))
    a, b = simulate(wl, cfg, PERF), simulate(wl, cfg, PERF)
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_disk_starts_are_slower_than_peer_starts():
    starts = {}
    for source in ("peer", "disk"):
        c = cluster("hfx", weight_source=source)
        c.run(workload(600))
        adds = {e[2]: e[0] for e in c.autoscale.events if e[1] == "add"}
        readies = {e[2]: e[0] for e in c.autoscale.events if e[1] == "ready"}
        starts[source] = min(readies[i] - adds[i] for i in readies)
    cs = cluster("hfx").autoscale.coldstart
    assert starts["peer"] == pytest.approx(cs.start_s("peer")) and starts["disk"] == pytest.approx(cs.start_s("disk"))


class Scripted:
    """A scripted scaling policy (test double for the policy, not for the simulator): fixed actions at fixed times."""

    name = "scripted"

    def __init__(self, cfg):
        self.script = list(cfg.script)

    def tick(self, snapshot, now):
        due = [a for t, acts in self.script if t <= now for a in acts]
        self.script = [(t, acts) for t, acts in self.script if t > now]
        return ScaleDecision(tuple(due), "scripted")


@dataclass(frozen=True)
class ScriptedConfig:
    script: tuple = ()  # (time, actions) pairs


def test_role_switch_in_pd(monkeypatch):
    monkeypatch.setitem(REGISTRY, "scripted", (Scripted, ScriptedConfig))
    script = ((10.0, (ScaleAction("add", "decode", reason="t"),)),
              (40.0, (ScaleAction("switch_role", "prefill", 1, reason="t"),)),
              (42.0, (ScaleAction("remove", "prefill", 0, reason="t"),)),  # refused: 1 is still switching
              (66.0, (ScaleAction("remove", "prefill", 0, reason="t"),)))
    auto = AutoscaleConfig(scaler="scripted", options=(("script", script),), max_replicas=6, tick_s=2.0)
    c = Cluster(ClusterConfig(policy="hfx", router="hfx", pd=(1, 1), autoscale=auto), PERF)
    wl = workload()
    c.run(wl)
    assert len(c.ended) == len(wl)
    kinds = [e[1] for e in c.autoscale.events]
    assert "switched" in kinds and "retired" in kinds and kinds.count("refused") == 1, c.autoscale.events
    assert "last routable prefill" in next(e[4] for e in c.autoscale.events if e[1] == "refused")
    assert c.replicas[1].role == "prefill" and c.autoscale.phase[0] == "removed"
    switched = next(e[0] for e in c.autoscale.events if e[1] == "switched")
    assert any(r.prefill_iid == 1 and r.arrival > switched for r in c.requests.values())
    drained_from = next(e[0] for e in c.autoscale.events if e[1] == "switch_role")
    assert not any(r.decode_iid == 1 and r.arrival > drained_from for r in c.requests.values())


def test_refuses_to_remove_the_last_routable_replica(monkeypatch):
    monkeypatch.setitem(REGISTRY, "scripted", (Scripted, ScriptedConfig))
    script = ((4.0, (ScaleAction("remove", "collocated", 0, reason="t"),)),)
    auto = AutoscaleConfig(scaler="scripted", options=(("script", script),), tick_s=2.0)
    c = Cluster(ClusterConfig(policy="hfx", router="hfx", replicas=1, autoscale=auto), PERF)
    c.run(workload(200))
    assert [e[1] for e in c.autoscale.events] == ["refused"] and len(c.ended) == 200


# ---- CLI -------------------------------------------------------------------------------
def test_cli_autoscaled_run(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": i * 40, "input_length": 800, "output_length": 50}) + "\n"
                             for i in range(1500)))
    out = tmp_path / "r.json"
    rc = cli.main(["run", "--trace", str(trace), "--replicas", "1", "--autoscaler", "hfx", "--max-replicas", "4",
                   "--weight-source", "disk", "--burst", "20:20:4:5", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["autoscaler"] == "hfx" and res["scale_events"]["add"] >= 1 and res["peak_replicas"] <= 4
    assert "GPU-seconds" in capsys.readouterr().out


@pytest.mark.parametrize("flags, match", [
    (["--autoscaler", "kubernetes"], "invalid choice"),
    (["--autoscaler", "hfx", "--min-replicas", "0"], "must be > 0"),
    (["--autoscaler", "hfx", "--min-replicas", "3", "--max-replicas", "2"], "--min-replicas 3 is above"),
    (["--autoscaler", "hfx", "--replicas", "8", "--max-replicas", "4"], "initial fleet"),
    (["--weight-source", "tape"], "invalid choice"),
    (["--burst", "10:5"], "START:DURATION:FACTOR"),
    (["--burst", "10:5:0"], "FACTOR > 0"),
])
def test_cli_bad_autoscale_flags_exit_2(tmp_path, capsys, flags, match):
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"timestamp": 0, "input_length": 10, "output_length": 5}) + "\n")
    try:
        rc = cli.main(["run", "--trace", str(trace)] + flags)
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert match in capsys.readouterr().err
