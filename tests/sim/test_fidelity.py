"""The fidelity benchmark's pure parts: live stream -> simulator workload, the replay, errors and verdicts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hyperflexis_sglang.core.perf_model import PerfModel
from hyperflexis_sglang.core.slo import SLO

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "live" / "fidelity.py"
spec = importlib.util.spec_from_file_location("live_bench_fidelity", SCRIPT)
fidelity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity)

PERF = PerfModel(base=0.01, per_prefill_token=1e-4, per_attn_pair=0.0, per_prefill_seq=0.0, per_decode_req=1e-3,
                 per_kv_token=0.0, kv_capacity_tokens=4096)
SETTINGS = {"chunk_size": 4096, "max_prefill_tokens": 16384, "max_running": 64, "mixed": False, "page_size": 1,
            "kv_capacity": 4096}


def _req(t, out, cls="standard", ttft=30.0, tpot=2.0):
    return {"t": t, "cls": cls, "slo": SLO(ttft * 1e3, tpot * 1e3, 1, cls), "words": 10, "out": out}


def test_workload_keeps_the_stream_and_counts_prompts_in_tokens():
    reqs = [_req(0.0, 8), _req(0.5, 3, "batch")]
    wl = fidelity.sim_workload(reqs, [35, 12])
    assert wl.arrivals == (0.0, 0.5) and wl.input_lens == (35, 12) and wl.output_lens == (8, 3)
    assert [s.cls for s in wl.slos] == ["standard", "batch"] and wl.blocks == ((), ())
    with pytest.raises(ValueError):
        fidelity.sim_workload(reqs, [35])


def test_a_lone_request_takes_one_prefill_then_one_decode_step_per_token():
    res = fidelity.simulate_stream(fidelity.sim_workload([_req(1.0, 5)], [100]), "sglang-fcfs", SETTINGS, PERF)
    assert res[0]["ttft"] == pytest.approx(0.01 + 100 * 1e-4)
    assert res[0]["tpot"] == pytest.approx(0.01 + 1e-3)
    assert res[0]["met"] and res[0]["error"] == "" and res[0]["cls"] == "standard"


def test_the_request_path_outside_the_engine_adds_to_ttft_only():
    wl = fidelity.sim_workload([_req(1.0, 5)], [100])
    res = fidelity.simulate_stream(wl, "sglang-fcfs", SETTINGS, PERF, frontend_s=0.015)
    assert res[0]["ttft"] == pytest.approx(0.015 + 0.01 + 100 * 1e-4)
    assert res[0]["tpot"] == pytest.approx(0.01 + 1e-3)


def test_frontend_latency_is_the_median_ttft_beyond_the_predicted_prefill():
    prefill = PERF.prefill_time(20)
    assert fidelity.frontend_latency([prefill + 0.01, prefill + 0.03, prefill + 0.012], [20] * 3, PERF) \
        == pytest.approx(0.012)
    assert fidelity.frontend_latency([prefill / 2], [20], PERF) == 0.0
    assert fidelity.frontend_latency([], [], PERF) == 0.0


def test_a_missed_ttft_is_a_miss():
    res = fidelity.simulate_stream(fidelity.sim_workload([_req(0.0, 2, ttft=0.001)], [100]), "hfx",
                                   {**SETTINGS, "mixed": True}, PERF)
    assert not res[0]["met"]


def test_engine_settings_come_from_server_info():
    info = {"chunked_prefill_size": 4096, "max_prefill_tokens": 16384, "enable_mixed_chunk": True, "page_size": 1,
            "internal_states": [{"effective_max_running_requests_per_dp": 2048,
                                 "memory_usage": {"token_capacity": 4096}}]}
    assert fidelity.engine_settings(info) == {"chunk_size": 4096, "max_prefill_tokens": 16384, "max_running": 2048,
                                              "mixed": True, "page_size": 1, "kv_capacity": 4096}


@pytest.mark.parametrize("sim,meas,err", [(1.1, 1.0, 0.1), (0.5, 1.0, -0.5), (0.0, 0.0, 0.0)])
def test_relative_error(sim, meas, err):
    assert fidelity.rel_err(sim, meas) == pytest.approx(err)


def test_verdicts_per_target_on_overall_rows_and_on_every_class():
    row = {"ttft_p50": 1.0, "ttft_p99": 2.0, "tpot_p50": 0.01, "tpot_p99": 0.02, "attainment": 1.0, "n": 10}
    off = {**row, "ttft_p50": 1.1, "ttft_p99": 2.6}  # +10% and +30%
    cmp = {"hfx": fidelity.compare({"overall": row, "batch": row}, {"overall": row, "batch": off})}
    assert cmp["hfx"]["batch"]["rel_err"]["ttft_p99"] == pytest.approx(0.3)
    got = {(v["target"], v["scope"]): v["met"] for v in fidelity.verdicts(cmp)}
    assert got == {("p50 within 15%", "overall"): True, ("p50 within 15%", "every class"): True,
                   ("p99 within 25%", "overall"): True, ("p99 within 25%", "every class"): False}
