"""A real P/D pair (prefill + decode servers, KV over Mooncake TCP, CPU, tiny model) with HFX on both sides.

The pair is driven the way a P/D router drives it (``pd_generate``: the same
body with bootstrap fields POSTed to both servers, the decode server's
answer returned). On a machine without CUDA the plugin applies its CPU P/D
fix (``sglang_ext/cpu_pd.py``); the test checks that it did.
"""

from __future__ import annotations

import threading
import time

import pytest

from hyperflexis_sglang.controller.local import SGLangServer, free_port
from hyperflexis_sglang.testing.client import pd_generate

pytestmark = pytest.mark.integration

PROMPTS = ["Hello world", "The quick brown fox jumps over the lazy dog", "SGLang serves models"]
PD_ENV = {"MOONCAKE_PROTOCOL": "tcp", "MC_FORCE_TCP": "1"}  # the CPU P/D fix sets the rest


class Pair:
    def __init__(self, prefill: SGLangServer, decode: SGLangServer, bootstrap_port: int):
        self.prefill, self.decode, self.bootstrap_port = prefill, decode, bootstrap_port

    def generate(self, body: dict):
        return pd_generate(self.prefill.url, self.decode.url, self.bootstrap_port, body)


def greedy_body(text: str, n: int = 12, **sampling) -> dict:
    return {"text": text, "sampling_params": {"max_new_tokens": n, "temperature": 0, **sampling}}


@pytest.fixture(scope="module")
def pd(tiny_model, cpu_classes):
    """An HFX prefill + decode pair; a stock collocated server, started alongside, gives the
    reference outputs and is stopped before the tests run (three servers at most at a time)."""
    boot = free_port()
    env = {**PD_ENV, "HFX_SLO_CLASSES": str(cpu_classes)}
    common = ["--disaggregation-transfer-backend", "mooncake"]
    prefill = SGLangServer(tiny_model, hfx=True, name="prefill", env=env, extra_args=[
        *common, "--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(boot)])
    decode = SGLangServer(tiny_model, hfx=True, name="decode", env=env, extra_args=[
        *common, "--disaggregation-mode", "decode", "--disaggregation-decode-retraction-backup", "cpu_tensor"])
    ref = SGLangServer(tiny_model, hfx=False, name="collocated-ref")
    servers = (prefill, decode, ref)
    try:
        t0 = time.monotonic()
        for s in servers:
            s.start_async()
        for s in servers:
            s.wait_healthy(300)
        print(f"\n3 servers healthy after {time.monotonic() - t0:.0f} s")
        reference = {}
        for p in PROMPTS:
            status, out = ref.post("/generate", greedy_body(p))
            assert status == 200, out
            reference[p] = out["output_ids"]
        ref.stop()
        yield Pair(prefill, decode, boot), reference
    finally:
        for s in servers:
            s.stop()


def test_pair_output_equals_collocated_reference(pd):
    pair, reference = pd
    for p in PROMPTS:
        t = pair.generate(greedy_body(p))
        assert t.status == 200 and not t.error, (t.status, t.error)
        assert list(t.output_ids) == reference[p], p  # the KV really moved from prefill to decode


def test_hfx_state_and_hooks_on_both_stages(pd):
    pair, _ = pd
    assert pair.generate(greedy_body("warm up", 4)).status == 200
    p, d = pair.prefill.hfx_state(), pair.decode.hfx_state()
    print("prefill hooks:", p["hooks_fired"], "decode hooks:", d["hooks_fired"], "CPU P/D fix:", p["cpu_pd_fix"])
    assert p["enabled"] and p["mode"] == "prefill"
    assert d["enabled"] and d["mode"] == "decode"
    for hook in ("enqueue", "order", "plan", "transfer"):
        assert p["hooks_fired"].get(hook, 0) > 0, p["hooks_fired"]
    # the prefill server timed the real KV transfers over Mooncake: TTFT deadlines leave room for them
    # and for the decode side (HFX_PD_HANDOFF_MS, 25 ms by default); the decode server has no handoff
    print("transfers:", p["transfers"], "transfer_s:", p["transfer_s"], "handoff_s:", p["handoff_s"])
    assert p["transfers"] >= 1 and 0 < p["transfer_s"] < 60
    assert p["handoff_s"] == pytest.approx(p["transfer_s"] + 0.025)
    assert d["handoff_s"] == 0 and d["transfers"] == 0
    for hook in ("enqueue", "decode_order"):
        assert d["hooks_fired"].get(hook, 0) > 0, d["hooks_fired"]
    assert "MooncakeKVSender.supports_host_tensor_indices=False" in p["cpu_pd_fix"]


@pytest.mark.parametrize("fields, needle", [
    ({}, "without bootstrap room"),  # SGLang's own check
    ({"bootstrap_room": 12345}, "missing bootstrap_host"),  # the plugin's enqueue hook (stock SGLang would queue it)
])
def test_decode_request_without_bootstrap_is_400_and_pair_keeps_serving(pd, fields, needle):
    pair, reference = pd
    status, out = pair.decode.post("/generate", {**greedy_body("no router", 4), **fields})
    assert status == 400, out
    assert needle in str(out)
    t = pair.generate(greedy_body(PROMPTS[0]))
    assert t.status == 200 and list(t.output_ids) == reference[PROMPTS[0]]


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else float("inf")


def test_tight_class_overtakes_loose_requests_through_the_pair(pd):
    """Loose (batch) requests first, tight (interactive) ones 0.3 s later, all through the pair:
    the interactive ones get their first token sooner."""
    pair, _ = pd
    results: dict[str, list] = {"batch": [], "interactive": []}
    lock = threading.Lock()

    def one(cls, i):
        text = " ".join(f"w{(i * 7 + k) % 97}" for k in range(120))
        t = pair.generate({"text": text, "sampling_params": {
            "max_new_tokens": 8, "temperature": 0, "ignore_eos": True, "custom_params": {"slo": {"class": cls}}}})
        with lock:
            results[cls].append(t)

    early = [threading.Thread(target=one, args=("batch", i)) for i in range(20)]
    late = [threading.Thread(target=one, args=("interactive", 100 + i)) for i in range(5)]
    for th in early:
        th.start()
    time.sleep(0.3)
    for th in late:
        th.start()
    for th in early + late:
        th.join(300)
    bad = [(cls, t.status, t.error[:160]) for cls, ts in results.items() for t in ts
           if t.status != 200 and "SLO cannot be met" not in t.error]
    assert not bad, bad[:3]  # the only acceptable failure is an early SLO rejection with its reason
    ttft = {cls: median([t.ttft for t in ts if not t.error]) for cls, ts in results.items()}
    served = {cls: sum(1 for t in ts if not t.error) for cls, ts in results.items()}
    print("P/D median TTFT (s):", ttft, "served:", served,
          "prefill:", {k: v for k, v in pair.prefill.hfx_state().items() if k in ("rejected", "demoted", "fits")},
          "decode hooks:", pair.decode.hfx_state()["hooks_fired"])
    assert served["interactive"] > 0 and served["batch"] > 0, served
    assert ttft["interactive"] < ttft["batch"], ttft
