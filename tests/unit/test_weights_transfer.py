"""Real gloo transfers between local processes (standalone weight agents on the tiny model; a few seconds).

Nothing is faked: each agent is its own Python process holding the model's
tensors (read from safetensors, or random for a "new instance"), the bytes
move over torch.distributed gloo on localhost, and a seed "dies" by exiting
its process mid-transfer (fault injection flag ``--exit-after-sent``). The
disk fallback is tested on real SGLang servers (tests/integration/test_weights_live.py).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model
from hyperflexis_sglang.weights import WeightLoadError, load_from_peers
from hyperflexis_sglang.weights.orchestrate import _http
from hyperflexis_sglang.weights.standalone import AgentProcess, main as standalone_main

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("wmodel") / "tiny")


@pytest.fixture(scope="module")
def seeds(model):
    """Two long-lived seeds (they only send, so tests can share them)."""
    pair = [AgentProcess(model).launch(), AgentProcess(model).launch()]
    try:
        yield [a.wait_ready() for a in pair]
    finally:
        for a in pair:
            a.stop()


@pytest.fixture
def agents(model):
    started: list[AgentProcess] = []

    def make(*specs: dict) -> list[AgentProcess]:
        """Agents started in parallel, one per spec (AgentProcess keyword arguments)."""
        new = [AgentProcess(spec.pop("path", model), **spec).launch() for spec in specs]
        started.extend(new)
        return [a.wait_ready() for a in new]
    yield make
    for a in started:
        a.stop()


def checksum(agent: AgentProcess) -> dict:
    return _http("GET", agent.url + "/hfx/weights/checksum")


def test_two_seeds_fan_out_to_two_new_instances_bit_exact(agents, seeds):
    s1, s2 = seeds
    n1, n2 = agents({"dummy": True}, {"dummy": True})
    ref = checksum(s1)
    assert checksum(n1)["total"] != ref["total"]

    report = load_from_peers([n1.url, n2.url], [s1.url, s2.url], bucket_mb=1)

    assert report.ok and set(report.ready) == {n1.url, n2.url} and len(report.attempts) == 1, report
    assert report.buckets > 4 and report.checksum == ref["total"]
    for n in (n1, n2):
        assert checksum(n)["params"] == ref["params"]
        assert _http("GET", n.url + "/hfx/weights/status")["state"] == "ready"
    sent = {s: _http("GET", s.url + "/hfx/weights/status")["sessions"][-1]["sent_bytes"] for s in (s1, s2, n1, n2)}
    assert sent[s1] > 0 and sent[s2] > 0, "both seeds must send (multi-seed)"
    assert sent[n1] + sent[n2] > 0, "a new instance must forward buckets (fan-out)"


def test_seed_dies_mid_transfer_other_seed_completes(agents, seeds):
    good = seeds[0]
    dying, new = agents({"extra": ["--exit-after-sent", "2"]}, {"dummy": True})

    report = load_from_peers([new.url], [dying.url, good.url], bucket_mb=1, fallback_disk=False, timeout_s=30)

    assert dying.proc.wait(10) == 9
    assert len(report.attempts) == 2 and dying.url in report.attempts[0].failed, report
    assert report.attempts[1].seeds == (good.url,)
    assert report.ok and report.ready == (new.url,) and report.from_disk == ()
    assert checksum(new)["total"] == checksum(good)["total"]


def test_failed_load_is_never_ready_then_another_seed_completes_it(agents, seeds):
    dying, new = agents({"extra": ["--exit-after-sent", "1"]}, {"dummy": True})

    report = load_from_peers([new.url], [dying.url], bucket_mb=1, timeout_s=30, fallback_disk=False)

    assert not report.ok and report.failed == (new.url,) and report.ready == (), report
    assert _http("GET", new.url + "/hfx/weights/status")["state"] == "failed"
    assert checksum(new)["total"] != report.checksum  # partly written, and never marked ready

    again = load_from_peers([new.url], [seeds[0].url], bucket_mb=1)
    assert again.ok and again.ready == (new.url,)
    assert checksum(new)["total"] == report.checksum


def test_different_models_are_refused(agents, seeds, tmp_path):
    from hyperflexis_sglang.sglang_ext.tiny_model import TinyLlamaSpec
    other = ensure_tiny_model(tmp_path / "other", TinyLlamaSpec(layers=1))
    seed, (new,) = seeds[0], agents({"dummy": True, "path": other})
    with pytest.raises(WeightLoadError, match="parameters differ"):
        load_from_peers([new.url], [seed.url])


@pytest.mark.parametrize("body, param", [
    ({"me": "a"}, "session"),
    ({"session": "x", "me": "z", "nodes": ["a"], "backend": "gloo", "buckets": [], "ops": []}, "me"),
    ({"session": "x", "me": "a", "nodes": ["a"], "backend": "mpi", "buckets": [], "ops": []}, "backend"),
    ({"session": "x", "me": "b", "nodes": ["a", "b"], "backend": "gloo", "buckets": [], "ops": []}, "store"),
    ({"session": "x", "me": "a", "nodes": ["a", "b"], "backend": "gloo", "buckets": [],
      "ops": [[0, 5, "a", "b"]]}, "ops"),
])
def test_bad_session_request_is_400_with_error_object(seeds, body, param):
    a = seeds[1]
    req = urllib.request.Request(a.url + "/hfx/weights/session", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    err = json.loads(e.value.read())["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
    assert _http("GET", a.url + "/hfx/weights/status")["state"] == "ready"  # still serving


def test_standalone_missing_model_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        standalone_main(["--model", str(tmp_path / "nope")])
    assert e.value.code == 2 and "--model" in capsys.readouterr().err
