"""The router benchmark's arithmetic: sustained throughput and the target verdicts in router.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "router"
sys.path.insert(0, str(BENCH))  # the scripts import their sibling procs.py


def _load(name: str):
    """A bench/router script as a uniquely named module (generic names must not shadow others)."""
    spec = importlib.util.spec_from_file_location(f"router_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


overhead, tables = _load("overhead"), _load("tables")


def _point(c, rps, p99, errors=0):
    return {"concurrency": c, "rps": rps, "p99_ms": p99, "errors": errors, "p50_ms": 1.0}


def test_sustained_is_the_best_point_with_no_errors_and_a_sane_p99():
    sweep = [_point(1, 500, 2), _point(16, 2000, 40), _point(64, 2500, 150), _point(128, 2600, 60, errors=3)]
    assert overhead.sustained(sweep) == 2000
    assert overhead.sustained([_point(1, 10, 500)]) == 0.0


def _router(p50, p99, rps):
    return {"open": {"p50_ms": 0.2 + p50, "p99_ms": 1.0 + p99}, "sweep": [_point(16, rps, 10)], "sustained_rps": rps,
            "added_p50_ms": p50, "added_p99_ms": p99}


def _doc():
    return {"overhead": {"command": "c", "loadavg_before": [1.0, 1.0, 1.0], "rate": 200, "n": 100,
                         "concurrencies": [16], "duration_s": 1, "sane_p99_ms": 100,
                         "direct": {"open": {"p50_ms": 0.2, "p99_ms": 1.0}, "sweep": [_point(16, 9000, 5)],
                                    "sustained_rps": 9000},
                         "routers": {"sglang-router/cache_aware": _router(0.5, 3.0, 3000),
                                     "hfx-router/hfx": _router(1.5, 4.0, 1500)}},
            "slo": {"command": "c", "args": {"trace": "/x/azure.csv", "requests": 3, "rate_scale": 40, "len_scale": 2,
                                             "max_input": 400, "max_output": 64, "seed": 0, "warmup": 4},
                    "runs": {name: {"summary": {"classes": {
                        "overall": {"n": 3, "attainment": a[0], "ttft_p50": 1.0, "ttft_p99": 2.0, "errors": 0},
                        "batch": {"n": 2, "attainment": a[1], "ttft_p50": 1.0, "ttft_p99": 2.0, "errors": 0},
                        "interactive": {"n": 1, "attainment": a[2], "ttft_p50": None, "ttft_p99": None,
                                        "errors": 1}}}}
                        for name, a in (("sglang-router/cache_aware", (0.67, 0.5, 1.0)),
                                        ("hfx-router/hfx", (0.67, 1.0, 0.0)))}}}


def test_markdown_states_each_target_and_the_ratio():
    md = tables.markdown(_doc())
    assert "- sglang-router/cache_aware: p50 met, p99 met, throughput met" in md
    assert "- hfx-router/hfx: p50 NOT met, p99 met, throughput met" in md
    assert "hfx-router/hfx / sglang-router/cache_aware: sustained 0.50x" in md
    assert "**NOT met** (lower in: interactive)" in md
    assert "| interactive (n=1) | 1.000 (- / - s, 1 err) | 0.000 (- / - s, 1 err) |" in md


def test_png_is_written(tmp_path):
    tables.png(_doc(), str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_router_adopts_only_a_trusted_worker_model():
    from hyperflexis_sglang.core.perf_model import preset
    from hyperflexis_sglang.router.load import perf_from_server_info
    model = preset("llama-3-8b", "h100", 1).to_dict()
    wild = {**model, "per_prefill_token": 0.0, "per_kv_token": 0.0025, "name": "fitted"}  # a degenerate young fit

    def info(**hfx):
        return {"internal_states": [{"hfx": hfx}]}
    got, why = perf_from_server_info(info(perf_model=wild, model_trusted=False, samples=64, fit_median_rel_error=1.3))
    assert got is None and "not trusted yet" in why and "64 samples" in why and "1.30" in why
    got, why = perf_from_server_info(info(perf_model=model, model_trusted=True, samples=512))
    assert got is not None and got.per_prefill_token == model["per_prefill_token"] and "trusted" in why
    assert perf_from_server_info({"internal_states": [{}]})[0] is None
    assert "unreadable" in perf_from_server_info(info(perf_model={"base": "x"}, model_trusted=True))[1]
