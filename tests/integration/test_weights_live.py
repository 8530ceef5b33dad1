"""D2D weight loading between real SGLang 0.5.23 CPU servers (tiny model, gloo), nothing faked.

Three servers start in parallel, all with the HFX plugin and its weight agent
(``HFX_WEIGHTS_AGENT=1``): a seed, a second seed whose scheduler exits after
sending two buckets (fault injection ``HFX_WEIGHTS_TEST_EXIT_AFTER_SENT``),
and a new instance started with ``--load-format dummy``.
"""

from __future__ import annotations

import pytest

from hyperflexis_sglang.controller.local import SGLangServer
from hyperflexis_sglang.weights import load_from_peers
from hyperflexis_sglang.weights.orchestrate import _http

pytestmark = pytest.mark.integration
PROMPTS = ["The quick brown fox", "What is the capital of France?", "Numbers: 1 2 3"]
AGENT_ENV = {"HFX_WEIGHTS_AGENT": "1"}


@pytest.fixture(scope="module")
def trio(tiny_model, cpu_classes):
    env = {**AGENT_ENV, "HFX_SLO_CLASSES": str(cpu_classes)}
    seed = SGLangServer(tiny_model, hfx=True, env=env, name="w-seed")
    faulty = SGLangServer(tiny_model, hfx=True, env={**env, "HFX_WEIGHTS_TEST_EXIT_AFTER_SENT": "2"},
                          name="w-faulty")
    new = SGLangServer(tiny_model, hfx=True, env=env, extra_args=["--load-format", "dummy"], name="w-new")
    servers = (seed, faulty, new)
    try:
        for s in servers:
            s.start_async()
        for s in servers:
            s.wait_healthy()
        yield servers
    finally:
        for s in servers:
            s.stop()


def greedy(server: SGLangServer) -> list[list[int]]:
    out = []
    for p in PROMPTS:
        code, body = server.post("/generate", {"text": p, "sampling_params": {"max_new_tokens": 12,
                                                                             "temperature": 0}})
        assert code == 200, body
        out.append(body["meta_info"].get("output_ids") or body["text"])
    return out


def weights_entry(server: SGLangServer) -> dict:
    return server.get("/server_info")["internal_states"][0]["hfx_weights"]


def checksum(server: SGLangServer) -> dict:
    return _http("GET", weights_entry(server)["agent_url"] + "/hfx/weights/checksum")


def test_scale_1_to_2_from_peer(trio):
    seed, _, new = trio
    assert weights_entry(seed)["state"] == "ready" and weights_entry(new)["state"] == "unloaded"
    reference = greedy(seed)
    assert greedy(new) != reference, "dummy weights already give the seed's output"
    assert checksum(new)["total"] != checksum(seed)["total"]

    report = load_from_peers([new.url], [seed.url], bucket_mb=1)

    assert report.ok and report.ready == (new.url,) and report.from_disk == (), report
    assert report.buckets > 1 and len(report.attempts) == 1
    mine, theirs = checksum(new), checksum(seed)
    assert mine["params"] == theirs["params"] and mine["total"] == report.checksum
    assert weights_entry(new)["state"] == "ready"
    assert greedy(new) == reference


def test_seed_dies_mid_transfer_falls_back_to_disk(trio):
    seed, faulty, new = trio
    reference = greedy(seed)

    report = load_from_peers([new.url], [faulty.url], bucket_mb=1, timeout_s=60)

    first = report.attempts[0]
    assert faulty.url in first.failed and first.error, report
    faulty.proc.wait(60)  # the scheduler exited mid-transfer; SGLang stops the server
    assert faulty.proc.returncode is not None
    assert report.ok and report.from_disk == (new.url,) and report.ready == (), report
    assert checksum(new)["total"] == checksum(seed)["total"] == report.checksum
    assert weights_entry(new)["state"] == "ready"
    assert greedy(new) == reference
