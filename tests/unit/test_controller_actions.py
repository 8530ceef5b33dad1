"""Controller behaviour that needs no SGLang server: retries with backoff on provisioner failures,
crash detection and replacement, linking order, skipping busy instances, the config file.

``FlakyProvisioner`` and ``RecordingRouter`` are test doubles: the first injects
provisioner failures (a fault that cannot be produced on demand with real
processes), the second records the ``/workers`` calls the controller makes.
The live behaviour (real SGLang, real router) is in tests/integration/test_controller_live.py.
"""

from __future__ import annotations

import json

import pytest

from hyperflexis_sglang.controller import __main__ as cli
from hyperflexis_sglang.controller.config import ConfigError, load
from hyperflexis_sglang.controller.controller import Controller, ControllerConfig
from hyperflexis_sglang.controller.provisioners.base import Handle, ProvisionError
from hyperflexis_sglang.core.scaling.types import ScaleAction, ScaleDecision
from hyperflexis_sglang.core.slo import SLOCatalog

DEAD = "http://127.0.0.1:9"  # discard port: nothing answers


class FlakyProvisioner:
    name = "flaky"
    role_switch_api = False
    transfer_backend = "mooncake"

    def __init__(self, fail_adds: int = 0):
        self.fail_adds, self.calls, self.n, self.dead = fail_adds, [], 0, set()

    def add(self, role, weight_source):
        self.calls.append(("add", role, weight_source))
        if self.fail_adds:
            self.fail_adds -= 1
            raise ProvisionError("quota exceeded")
        self.n += 1
        return Handle(f"i{self.n}", role, f"{DEAD}/{self.n}", 9000 + self.n if role == "prefill" else None, "disk")

    def wait_ready(self, handle, timeout_s):
        self.calls.append(("wait_ready", handle.iid))
        return handle

    def remove(self, handle):
        self.calls.append(("remove", handle.iid))

    def alive(self, handle):
        return handle.iid not in self.dead

    def log_tail(self, handle):
        return ""


class RecordingRouter:
    def __init__(self):
        self.calls, self.set = [], {}

    def add(self, url, worker_type, bootstrap_port=None, timeout_s=60):
        self.calls.append(("add", url, worker_type, bootstrap_port))
        self.set[url] = worker_type

    def remove(self, url):
        self.calls.append(("remove", url))
        return self.set.pop(url, None) is not None

    def find(self, url):
        return None

    def metrics_text(self, url=None):
        raise RuntimeError("no metrics here")


class Policy:
    name = "scripted"

    def __init__(self, *ticks):
        self.ticks, self.seen = list(ticks), []

    def tick(self, snap, now):
        self.seen.append(snap)
        return ScaleDecision(tuple(self.ticks.pop(0)) if self.ticks else (), "scripted")


def make(prov, policy=None, **cfg):
    sleeps = []
    ctl = Controller(prov, RecordingRouter(), policy or Policy(), SLOCatalog(),
                     ControllerConfig(backoff_initial_s=1.0, backoff_factor=3.0, **cfg), sleep=sleeps.append)
    return ctl, sleeps


def test_provisioner_failures_are_retried_with_backoff_and_reported():
    prov = FlakyProvisioner(fail_adds=2)
    ctl, sleeps = make(prov)
    r = ctl.execute(ScaleAction("add", "collocated", weight_source="disk"))
    assert r["ok"], r
    assert sleeps == [1.0, 3.0]
    fails = ctl.status()["provisioner_failures"]
    assert [(f["attempt"], f["retry_in_s"]) for f in fails] == [(1, 1.0), (2, 3.0)]
    assert "quota exceeded" in fails[0]["error"]
    assert ctl.router.calls == [("add", f"{DEAD}/1", "regular", None)]


def test_giving_up_keeps_the_fleet_and_reports():
    prov = FlakyProvisioner(fail_adds=10)
    ctl, sleeps = make(prov, max_attempts=3)
    ctl.adopt(Handle("old", "collocated", f"{DEAD}/old"))
    r = ctl.execute(ScaleAction("add", "collocated", weight_source="disk"))
    assert not r["ok"] and "gave up after 3 attempts" in r["error"]
    assert [i["iid"] for i in ctl.status()["instances"]] == ["old"]  # the serving fleet is untouched
    assert ctl.router.set == {f"{DEAD}/old": "regular"}


def test_prefill_is_linked_after_health_and_registered_with_its_bootstrap_port(monkeypatch):
    from hyperflexis_sglang.controller import actions
    order = []
    monkeypatch.setattr(actions, "_wait_bootstrap", lambda h, t: order.append(("bootstrap", h.iid)))
    prov = FlakyProvisioner()
    ctl, _ = make(prov)
    ctl.router.add = lambda url, wt, bp=None, timeout_s=60: order.append(("register", url, wt, bp))
    r = ctl.execute(ScaleAction("add", "prefill", weight_source="peer"))
    assert r["ok"] and r["steps"] == ["start", "healthy", "bootstrap", "register"]
    assert r["weight_source"] == "disk" and "no D2D loader" in r["weights"]  # no loader given: disk
    assert prov.calls == [("add", "prefill", "disk"), ("wait_ready", "i1")]
    assert order == [("bootstrap", "i1"), ("register", f"{DEAD}/1", "prefill", 9001)]


def test_crashed_instance_is_detected_and_replaced():
    prov = FlakyProvisioner()
    ctl, _ = make(prov, health_threshold=2)
    h = ctl.adopt(Handle("crashy", "decode", f"{DEAD}/c"), register=True).handle
    prov.dead.add("crashy")
    ctl.poll()
    assert ctl.find("crashy").failures == 1 and ctl.find("crashy").phase == "ready"
    ctl.poll()
    ctl.wait_idle(30)
    assert ctl.find("crashy") is None
    assert ("remove", "crashy") in prov.calls and ("add", "decode", "disk") in prov.calls
    assert ctl.router.set == {f"{DEAD}/1": "decode"}
    done = [e for e in ctl.events.log if e["event"] == "action_done"][-1]
    assert done["ok"] and "2 consecutive failed health checks" in done["reason"]
    assert h.url not in ctl.router.set


def test_actions_on_busy_instances_are_skipped_with_a_reason():
    ctl, _ = make(FlakyProvisioner())
    inst = ctl.adopt(Handle("x", "collocated", f"{DEAD}/x"))
    ctl.set_phase(inst, "draining")
    r = ctl.execute(ScaleAction("remove", "collocated", iid=f"{DEAD}/x"))
    assert not r["ok"] and "is draining; skipped" in r["error"]
    r = ctl.execute(ScaleAction("grow", "collocated"))
    assert not r["ok"] and "unknown action kind" in r["error"]


def test_tick_gives_the_policy_the_live_fleet_and_runs_its_actions():
    pol = Policy([ScaleAction("add", "collocated", weight_source="disk", reason="more")])
    ctl, _ = make(FlakyProvisioner(), pol)
    ctl.adopt(Handle("a", "collocated", f"{DEAD}/a"))
    d = ctl.tick()
    ctl.wait_idle(30)
    snap = pol.seen[0]
    assert [(i.iid, i.role, i.phase) for i in snap.instances] == [(f"{DEAD}/a", "collocated", "ready")]
    assert {c.name for c in snap.classes} == set(SLOCatalog().classes) and not snap.disaggregated
    assert d.actions[0].reason == "more" and len(ctl.status()["instances"]) == 2
    assert any(e["event"] == "metrics_unavailable" for e in ctl.events.log)


def write(tmp_path, data, name="c.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


GOOD = {"router": "http://127.0.0.1:8000", "policy": {"name": "static", "options": {"replicas": 2}},
        "provisioner": {"name": "local", "model": "/m", "extra_args": ["--x"]}, "initial": {"collocated": 1},
        "tick_s": 2, "role_switch": "restart"}


def test_config_loads(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.controller.tick_s == 2.0 and cfg.provisioner_cfg.extra_args == ("--x",)
    assert cfg.initial == {"collocated": 1} and cfg.policy_options == {"replicas": 2}


def test_config_toml(tmp_path):
    p = write(tmp_path, 'router = "http://r:1"\ntick_s = 3\n[provisioner]\nname = "kubernetes"\nnamespace = "n"\n',
              "c.toml")
    cfg = load(p)
    assert cfg.provisioner == "kubernetes" and cfg.provisioner_cfg.namespace == "n"


@pytest.mark.parametrize("patch, needle", [
    ({"router": 5}, "field 'router'"),
    ({"tick_s": "fast"}, "field 'tick_s' must be float"),
    ({"tick_s": -1}, "field 'tick_s' must be >= 0"),
    ({"bogus": 1}, "unknown field 'bogus'"),
    ({"provisioner": {"name": "aws"}}, "provisioner.name"),
    ({"provisioner": {"name": "local"}}, "model"),
    ({"initial": {"gpu": 1}}, "field 'initial'"),
    ({"role_switch": "magic"}, "field 'role_switch'"),
])
def test_bad_config_names_file_and_field(tmp_path, patch, needle):
    p = write(tmp_path, {**GOOD, **patch})
    with pytest.raises(ConfigError, match=needle) as e:
        load(p)
    assert str(p) in str(e.value)


def test_cli_exits_2_on_bad_config(tmp_path, capsys):
    p = write(tmp_path, "{not json")
    assert cli.main(["--config", str(p), "--check"]) == 2
    assert str(p) in capsys.readouterr().err
    p = write(tmp_path, {**GOOD, "policy": {"name": "nope"}})
    assert cli.main(["--config", str(p), "--check"]) == 2
    assert "policy" in capsys.readouterr().err
    assert cli.main(["--config", str(write(tmp_path, GOOD)), "--check"]) == 0
