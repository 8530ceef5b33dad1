"""The scaling controller on real CPU SGLang servers behind a real router: scale 1 -> 2 under load,
drain-and-remove with no lost request, a P -> D role transition with its time.

Servers are started by the controller's ``local`` provisioner (process groups,
stopped by PID); the router is the HFX router (``python -m hyperflexis_sglang.router``)
or, with ``HFX_TEST_ROUTER=sglang`` or where the HFX router is not installed,
sglang-router 0.3.2, which has the same ``/workers`` API. The policy input is a
scripted policy (``Scripted``: returns the actions it is given, one list per
tick): a test double for the *policy*, not for anything the controller drives.
At most three SGLang servers run at once (each test's fleet is stopped when it ends).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import time
import json
import urllib.error
import urllib.request

import pytest

from hyperflexis_sglang.controller.controller import Controller, ControllerConfig
from hyperflexis_sglang.controller.local import free_port
from hyperflexis_sglang.controller.provisioners.local import LocalConfig, LocalProvisioner
from hyperflexis_sglang.controller.router_client import RouterClient
from hyperflexis_sglang.controller.weights import default_loader
from hyperflexis_sglang.core.scaling.types import ScaleAction, ScaleDecision
from hyperflexis_sglang.core.slo import SLOCatalog

pytestmark = pytest.mark.integration

PROMPTS = ["Hello world", "The quick brown fox", "SGLang serves models", "Scaling controllers drain"]


class Scripted:
    """Policy double: tick i returns script[i] (then nothing)."""
    name = "scripted"

    def __init__(self, script):
        self.script, self.i, self.seen = list(script), 0, []

    def tick(self, snapshot, now):
        self.seen.append(snapshot)
        acts = self.script[self.i] if self.i < len(self.script) else ()
        self.i += 1
        return ScaleDecision(tuple(acts), f"scripted tick {self.i}")


def router_kind() -> str:
    want = os.environ.get("HFX_TEST_ROUTER")
    if want:
        return want
    return "hfx" if importlib.util.find_spec("hyperflexis_sglang.router.__main__") else "sglang"


class Router:
    def __init__(self, pd: bool):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kind = router_kind()
        mod = "hyperflexis_sglang.router" if self.kind == "hfx" else "sglang_router.launch_router"
        cmd = [sys.executable, "-m", mod, "--host", "127.0.0.1", "--port", str(self.port), "--policy", "round_robin"]
        if pd:
            cmd.append("--pd-disaggregation")
        self.log = tempfile.NamedTemporaryFile(prefix="hfx-router-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, open(self.log.name).read()[-2000:]
            try:
                urllib.request.urlopen(self.url + "/workers", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"router did not start: {open(self.log.name).read()[-2000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        os.unlink(self.log.name)


def generate(url: str, text: str, n: int = 8, timeout: float = 300) -> tuple[int, dict]:
    body = {"text": text, "sampling_params": {"max_new_tokens": n, "temperature": 0, "ignore_eos": True}}
    req = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")[:300]}
    except OSError as e:
        return 0, {"error": str(e)}


class Load:
    """Closed-loop client threads sending greedy requests through the router until stopped."""

    def __init__(self, url: str, threads: int = 2, n: int = 8):
        self.url, self.n, self.results, self.stop_ev = url, n, [], threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, k: int):
        i = 0
        while not self.stop_ev.is_set():
            text = PROMPTS[(k + i) % len(PROMPTS)]
            status, out = generate(self.url, text, self.n)
            with self.lock:
                self.results.append((text, status, out.get("output_ids"), out.get("error")))
            i += 1

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(300)
        return self.results


def router_set(router: RouterClient) -> dict[str, str]:
    return {w.url: w.worker_type for w in router.workers()}


def make_controller(tiny_model, cpu_classes, router_url, script, role_switch_api=False, **cfg):
    prov = LocalProvisioner(LocalConfig(model=str(tiny_model), env={"HFX_SLO_CLASSES": str(cpu_classes)},
                                        role_switch_api=role_switch_api))
    ctl = Controller(prov, RouterClient(router_url), Scripted(script), SLOCatalog(),
                     ControllerConfig(tick_s=1.0, drain_poll_s=0.3, max_attempts=2, ready_timeout_s=600, backoff_initial_s=1.0, **cfg),
                     weight_loader=default_loader())
    return prov, ctl


@pytest.fixture
def collocated(tiny_model, cpu_classes):
    router = Router(pd=False)
    prov, ctl = make_controller(tiny_model, cpu_classes, router.url, [])
    try:
        yield router, prov, ctl
    finally:
        ctl.stop()
        prov.stop_all()
        router.stop()


def test_scale_out_under_load_then_drain_and_remove(collocated):
    router, prov, ctl = collocated
    rc = ctl.router
    t0 = time.monotonic()
    first = ctl.execute(ScaleAction("add", "collocated", weight_source="disk", reason="initial fleet"))
    assert first["ok"], first
    assert router_set(rc) == {first["url"]: "regular"}
    reference = {p: generate(first["url"], p)[1]["output_ids"] for p in PROMPTS}

    load = Load(router.url)
    time.sleep(1.0)
    ctl.policy.script = [[ScaleAction("add", "collocated", weight_source="peer", reason="scale out under load")]]
    ctl.policy.i = 0
    ctl.tick()  # the policy sees the live fleet and asks for a second instance
    ctl.wait_idle(400)
    added = [e for e in ctl.events.log if e["event"] == "action_done" and e.get("action") == "add"][-1]
    assert added["ok"], added
    second = added["url"]
    assert router_set(rc) == {first["url"]: "regular", second: "regular"}  # linked only once ready
    time.sleep(2.0)
    results = load.stop()
    print(f"\nscale-out: second instance linked after {added['linked_s']} s (healthy {added['healthy_s']} s), "
          f"weights: {added['weight_source']} ({added['weights']}); {len(results)} requests under load; "
          f"router: {router.kind}")
    assert results and all(s == 200 for _, s, _, _ in results), [r for r in results if r[1] != 200][:3]
    assert all(ids == reference[t] for t, _, ids, _ in results)  # identical outputs on both instances
    for p in PROMPTS:  # the new instance directly: same greedy outputs as the first
        assert generate(second, p)[1]["output_ids"] == reference[p], p
    snap = ctl.policy.seen[-1]
    assert [i.phase for i in snap.instances] == ["ready"]  # the policy saw the one-instance fleet

    # Drain and remove the first instance while long requests are in flight on both.
    inflight = []
    threads = [threading.Thread(target=lambda p=p: inflight.append((p, *generate(router.url, p, 48))))
               for p in PROMPTS * 2]
    for t in threads:
        t.start()
    time.sleep(1.0)
    first_server = prov.servers[first["iid"]]
    removed = ctl.execute(ScaleAction("remove", "collocated", iid=first["url"], reason="scale in"))
    for t in threads:
        t.join(300)
    print(f"drain-and-remove: {removed}; {len(inflight)} in-flight requests, statuses "
          f"{sorted(s for _, s, _ in inflight)}; total {time.monotonic() - t0:.0f} s")
    assert removed["ok"] and removed["drained"], removed
    assert len(inflight) == len(threads) and all(s == 200 for _, s, _ in inflight), inflight
    assert router_set(rc) == {second: "regular"}
    assert first["iid"] not in prov.servers and first_server.proc.poll() is not None  # the first process is gone
    assert generate(router.url, PROMPTS[0])[0] == 200  # the fleet keeps serving


@pytest.fixture
def pd_fleet(tiny_model, cpu_classes):
    yield from start_pd_fleet(tiny_model, cpu_classes, role_switch="restart")


@pytest.fixture
def pd_fleet_switchable(tiny_model, cpu_classes):
    """The same fleet, every instance started with --enable-pd-role-switch; the controller switches in place."""
    yield from start_pd_fleet(tiny_model, cpu_classes, role_switch="api", role_switch_api=True)


def start_pd_fleet(tiny_model, cpu_classes, **cfg):
    router = Router(pd=True)
    prov, ctl = make_controller(tiny_model, cpu_classes, router.url, [], **cfg)
    try:
        handles = [prov.add(role, "disk") for role in ("prefill", "prefill", "decode")]
        for h in handles:
            ctl.adopt(prov.wait_ready(h, 300), register=False)
        for h in handles:  # register only now: every instance healthy (and bootstrap up, checked by adopt)
            from hyperflexis_sglang.controller.actions import _wait_bootstrap, register
            if h.role == "prefill":
                _wait_bootstrap(h, 60)
            register(ctl, h)
        yield router, prov, ctl, handles
    finally:
        ctl.stop()
        prov.stop_all()
        router.stop()


def test_role_transition_prefill_to_decode(pd_fleet):
    router, prov, ctl, (p1, p2, d1) = pd_fleet
    rc = ctl.router
    assert router_set(rc) == {p1.url: "prefill", p2.url: "prefill", d1.url: "decode"}
    status, out = generate(router.url, PROMPTS[0])
    assert status == 200, out
    reference = out["output_ids"]
    ctl.policy.script = [[ScaleAction("switch_role", "decode", iid=p2.url, reason="decode-bound load")]]
    ctl.tick()
    try:
        ctl.wait_idle(800)
    finally:
        print("\ncontroller events:", *[e for e in ctl.events.log if e["event"] != "metrics_unavailable"], sep="\n  ")
    tr = ctl.status()["transitions"]
    assert len(tr) == 1, ctl.events.log[-5:]
    t = tr[0]
    print(f"\nrole transition prefill -> decode by {t['method']} ({t['method_reason']}): drain {t['drain_s']} s, "
          f"switch {t['switch_s']} s, total {t['total_s']} s, weights {t.get('weight_source')}; router {router.kind}")
    assert t["from"] == "prefill" and t["to"] == "decode" and t["drained"]
    new_url = t.get("new_url", p2.url)
    assert router_set(rc) == {p1.url: "prefill", d1.url: "decode", new_url: "decode"}
    for _ in range(4):  # round robin over both decode servers: every answer equals the reference
        status, out = generate(router.url, PROMPTS[0])
        assert status == 200 and out["output_ids"] == reference, out


def switch(ctl, iid: str, role: str) -> dict:
    ctl.policy.script = ctl.policy.script[:ctl.policy.i] + [[ScaleAction("switch_role", role, iid=iid, reason="test")]]
    ctl.tick()
    ctl.wait_idle(300)
    return ctl.status()["transitions"][-1]


def test_role_switch_in_place_both_ways(pd_fleet_switchable):
    """SGLang's /pd_role_switch on CPU Mooncake with the plugin's fixes (sglang_ext/role_switch.py), two round trips.

    prefill -> decode in place: the switched server decodes correct answers and survives its idle checks
    (without the fix it died there: "pool memory leak detected"). decode -> prefill back: requests through it
    are answered, also on the second round trip, after the decode server had cached its KV endpoint (without
    the kept endpoint those requests waited for SGLang's 300 s bootstrap timeout; here 60 s fails the test).
    """
    router, prov, ctl, (p1, p2, d1) = pd_fleet_switchable
    rc = ctl.router
    status, out = generate(router.url, PROMPTS[0])
    assert status == 200, out
    reference = out["output_ids"]
    server = prov.servers[p2.iid]
    for trip in range(2):
        for _ in range(4):  # round robin over both prefill servers: d1 meets p2's KV endpoint
            status, out = generate(router.url, PROMPTS[0], timeout=60)
            assert status == 200 and out["output_ids"] == reference, (trip, out)
        t = switch(ctl, p2.url, "decode")
        print(f"\nround trip {trip + 1}: in place prefill -> decode: {t}")
        assert t["method"] == "api" and t["new_iid"] == p2.iid and t["drained"], t
        assert router_set(rc) == {p1.url: "prefill", d1.url: "decode", p2.url: "decode"}
        for round_ in range(2):  # round robin over both decode servers; idle polls run between the rounds
            for _ in range(4):
                status, out = generate(router.url, PROMPTS[0], timeout=60)
                assert status == 200 and out["output_ids"] == reference, (trip, out)
            time.sleep(2)
            assert server.proc.poll() is None, server.log_tail()
            assert urllib.request.urlopen(server.url + "/health", timeout=30).status == 200
        t = switch(ctl, p2.url, "prefill")
        print(f"round trip {trip + 1}: in place decode -> prefill: {t}")
        assert t["method"] == "api" and t["new_iid"] == p2.iid, t
        assert router_set(rc) == {p1.url: "prefill", d1.url: "decode", p2.url: "prefill"}
        for _ in range(4):  # round robin over both prefill servers
            status, out = generate(router.url, PROMPTS[0], timeout=60)
            assert status == 200 and out["output_ids"] == reference, (trip, out)
    assert server.proc.poll() is None
