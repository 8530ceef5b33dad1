"""Cold-start model, capacity/attainment model, rate forecast and configuration errors (core/scaling/)."""

from __future__ import annotations

import math

import pytest

from hyperflexis_sglang.core.perf_model import MODELS, preset
from hyperflexis_sglang.core.scaling import (SCALERS, ClassLoad, ColdStartModel, ScalingConfigError, achievable,
                                             make_scaler, predict_collocated, predict_pd, replica_rate_limit,
                                             scaler_options, stage_rate_limits)
from hyperflexis_sglang.core.scaling.forecast import RateHistory

PERF = preset()


def classes(rate, inp=1155, out=211):
    return (ClassLoad("interactive", 0.2 * rate, inp, out, 0.45, 0.04), ClassLoad("standard", 0.5 * rate, inp, out,
                                                                                 2.0, 0.2),
            ClassLoad("batch", 0.3 * rate, inp, out, 15.0, 0.2))


# ---- cold start ----------------------------------------------------------------------
@pytest.mark.parametrize("model, tp", [("llama-3-8b", 1), ("llama-3-70b", 4), ("llama-3-70b", 8)])
def test_cold_start_from_peer_is_faster_than_from_disk(model, tp):
    cs = ColdStartModel.for_model(model, tp)
    assert cs.start_s("peer") < cs.start_s("disk")
    assert cs.load_s("disk") == pytest.approx(MODELS[model].weight_bytes / 2e9)
    assert cs.load_s("peer") == pytest.approx(MODELS[model].weight_bytes / tp / 25e9)
    assert cs.start_s("disk") - cs.load_s("disk") == pytest.approx(cs.process_start_s)


def test_cold_start_grows_with_weights_and_shrinks_with_bandwidth():
    small, big = ColdStartModel.for_model("llama-3-8b"), ColdStartModel.for_model("llama-3-70b")
    assert big.start_s("disk") > small.start_s("disk")
    assert ColdStartModel.for_model("llama-3-8b", disk_gbs=8.0).load_s("disk") == pytest.approx(
        small.load_s("disk") / 4)


def test_cold_start_for_perf_uses_the_preset_name():
    cs = ColdStartModel.for_perf(preset("llama-3-70b", "h100", 4))
    assert cs.weight_bytes == MODELS["llama-3-70b"].weight_bytes and cs.tp == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"weight_bytes": 0}, "weight_bytes"), ({"weight_bytes": 1e9, "disk_gbs": -1}, "disk_gbs"),
    ({"weight_bytes": 1e9, "peer_gbs": 0}, "peer_gbs"), ({"weight_bytes": 1e9, "process_start_s": -1}, "process"),
    ({"weight_bytes": 1e9, "tp": 0}, "tp"),
])
def test_cold_start_bad_values(kwargs, match):
    with pytest.raises(ScalingConfigError, match=match):
        ColdStartModel(**kwargs)


def test_cold_start_bad_source_and_model():
    with pytest.raises(ScalingConfigError, match="weight source"):
        ColdStartModel.for_model("llama-3-8b").start_s("tape")
    with pytest.raises(ScalingConfigError, match="unknown model"):
        ColdStartModel.for_model("gpt-5")


# ---- capacity model -----------------------------------------------------------------
def test_more_replicas_never_predict_less():
    prev = None
    for n in range(1, 12):
        p = predict_collocated(PERF, classes(60.0), n)
        if prev is not None:
            assert all(p.attainment[k] >= prev.attainment[k] - 1e-12 for k in p.attainment)
            assert p.rho <= prev.rho
        prev = p
    assert prev.attainment["standard"] > 0.99


def test_overload_predicts_zero_and_idle_predicts_one():
    assert predict_collocated(PERF, classes(200.0), 1).attainment["batch"] == 0.0
    assert predict_collocated(PERF, classes(0.0), 1).attainment == {"interactive": 1.0, "standard": 1.0, "batch": 1.0}


def test_tighter_classes_see_less_load_under_priority_service():
    p = predict_collocated(PERF, classes(25.0), 2)
    assert p.attainment["interactive"] > 0 and p.rho < 1


def test_rate_limit_matches_utilisation_one():
    per = replica_rate_limit(PERF, classes(10.0))
    assert 5 < per < 40  # Llama-3-8B/H100, Azure-like lengths: ~14 req/s at the 40 ms TPOT step cap
    assert predict_collocated(PERF, classes(per * 3 * 1.05), 3).rho > 1.0
    assert predict_collocated(PERF, classes(per * 3 * 0.95), 3).rho < 1.0


def test_pd_model_prefill_and_decode_are_separate():
    cls = classes(12.0, inp=4000, out=60)
    pre, dec = stage_rate_limits(PERF, cls)
    assert pre < dec  # long prompts, short outputs: prefill-bound
    assert predict_pd(PERF, cls, 1, 8).attainment["standard"] < predict_pd(PERF, cls, 8, 1).attainment["standard"]
    assert predict_pd(PERF, cls, 0, 4).attainment["batch"] == 0.0


def test_achievable_flags_infeasible_ttft():
    reach = achievable(PERF, classes(1.0, inp=20_000, out=300))
    assert reach["interactive"] == 0.0 and reach["standard"] > 0.99


# ---- forecast -------------------------------------------------------------------------
def test_trend_forecast_and_peak():
    h = RateHistory()
    for t in range(0, 31, 5):
        h.add(float(t), (ClassLoad("a", 10.0 + t, 100, 10, 1, 0.1),))
    assert h.trend("a", 30.0, 30.0) == pytest.approx(1.0)
    assert h.forecast("a", 30.0, 40.0, 10.0, 30.0) == pytest.approx(50.0)
    assert h.peak("a", 30.0, 12.0, 0.0) == 40.0
    falling = RateHistory()
    for t in range(0, 31, 5):
        falling.add(float(t), (ClassLoad("a", 40.0 - t, 100, 10, 1, 0.1),))
    assert falling.forecast("a", 30.0, 10.0, 60.0, 30.0) == 10.0  # never below the current rate


# ---- configuration errors ------------------------------------------------------------------
def test_registry_names():
    assert set(SCALERS) == {"static", "queue", "planner", "hfx"}
    for name in SCALERS:
        assert make_scaler(name, perf=PERF).name == name
        assert scaler_options(name)


@pytest.mark.parametrize("name, opts, match", [
    ("kubernetes", {}, "unknown scaler 'kubernetes'.*hfx"),
    ("hfx", {"perf": PERF, "cooldown": 3}, "unknown option.*cooldown"),
    ("hfx", {}, "perf"),
    ("hfx", {"perf": "llama"}, "perf must be a PerfModel"),
    ("hfx", {"perf": PERF, "min_replicas": 3, "max_replicas": 2}, "min_replicas <= max_replicas"),
    ("hfx", {"perf": PERF, "min_replicas": 0}, "min_replicas"),
    ("hfx", {"perf": PERF, "weight_source": "tape"}, "weight_source"),
    ("hfx", {"perf": PERF, "rho_max": 1.5}, "rho_max"),
    ("hfx", {"perf": PERF, "rho_max_down": 0.9, "rho_max": 0.8}, "rho_max_down"),
    ("hfx", {"perf": PERF, "cooldown_x": -1}, "cooldown_x"),
    ("queue", {"target_waiting": 0}, "target_waiting"),
    ("queue", {"tolerance": 1.5}, "tolerance"),
    ("planner", {"perf": PERF, "predictor": "prophet"}, "predictor"),
    ("planner", {"perf": PERF, "interval_s": 0}, "interval_s"),
    ("static", {"replicas": 0}, "replicas"),
])
def test_bad_config_is_a_clear_error(name, opts, match):
    with pytest.raises(ScalingConfigError, match=match):
        make_scaler(name, **opts)


def test_nan_free_predictions():
    p = predict_collocated(PERF, classes(30.0), 3)
    assert all(math.isfinite(v) for v in p.attainment.values())
