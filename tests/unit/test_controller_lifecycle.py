"""Table tests of the controller's pure decisions (core/scaling/lifecycle.py) and live-input parsers."""

from __future__ import annotations

import pytest

from hyperflexis_sglang.controller.snapshot import ClassRates, ClassRateConfig, counter_values, parse_loads
from hyperflexis_sglang.core.scaling.lifecycle import (WorkerLoad, backoff_s, is_drained, link_steps, pick_removal,
                                                       rates, switch_method, to_replace)
from hyperflexis_sglang.core.slo import SLOCatalog


@pytest.mark.parametrize("role, source, loader, steps, why", [
    ("collocated", "disk", True, ("start", "healthy", "register"), "disk"),
    ("collocated", "peer", True, ("start", "healthy", "load_weights", "register"), "peers"),
    ("collocated", "peer", False, ("start", "healthy", "register"), "no D2D loader"),
    ("prefill", "peer", True, ("start", "healthy", "load_weights", "bootstrap", "register"), "peers"),
    ("prefill", "disk", False, ("start", "healthy", "bootstrap", "register"), "disk"),
    ("decode", "disk", True, ("start", "healthy", "register"), "disk"),
])
def test_link_steps_register_last(role, source, loader, steps, why):
    got, reason = link_steps(role, source, loader)
    assert got == steps and why in reason
    assert got[-1] == "register"


@pytest.mark.parametrize("router_inflight, load, idle, done, needle", [
    (3, WorkerLoad(), 5, False, "router still has 3"),
    (None, None, 5, False, "unknown"),
    (0, WorkerLoad(num_running=1), 5, False, "1 running"),
    (None, WorkerLoad(num_waiting=2), 5, False, "2 waiting"),
    (None, WorkerLoad(num_inflight_kv=1), 5, False, "1 sending KV"),
    (0, WorkerLoad(), 1, False, "idle 1/2"),
    (0, WorkerLoad(), 2, True, "2 consecutive"),
    (None, WorkerLoad(), 3, True, "3 consecutive"),
])
def test_is_drained(router_inflight, load, idle, done, needle):
    ok, reason = is_drained(router_inflight, load, idle, quiet_polls=2)
    assert ok is done and needle in reason


def test_to_replace_only_ready_instances_past_threshold():
    phases = {"a": "ready", "b": "ready", "c": "starting", "d": "draining"}
    failures = {"a": 3, "b": 2, "c": 9, "d": 9}
    assert [iid for iid, _ in to_replace(phases, failures, 3)] == ["a"]
    assert "3 consecutive" in to_replace(phases, failures, 3)[0][1]
    assert to_replace(phases, failures, 4) == ()


@pytest.mark.parametrize("attempt, expected", [(1, 2.0), (2, 4.0), (3, 8.0), (6, 30.0)])
def test_backoff(attempt, expected):
    assert backoff_s(attempt, 2.0, 2.0, 30.0) == expected


def test_backoff_rejects_attempt_zero():
    with pytest.raises(ValueError, match="attempt"):
        backoff_s(0)


@pytest.mark.parametrize("backend, enabled, works, method, needle", [
    ("mooncake", True, True, "api", "supports"),
    ("mori", True, True, "api", "supports"),
    ("nixl", True, True, "restart", "no runtime role switch"),
    ("mooncake", False, True, "restart", "without --enable-pd-role-switch"),
    ("mooncake", True, False, "restart", "configured off"),
    (None, True, True, "restart", "no runtime"),
])
def test_switch_method(backend, enabled, works, method, needle):
    got, reason = switch_method(backend, enabled, works)
    assert got == method and needle in reason


def test_pick_removal_least_loaded_ready_of_role():
    cands = {"a": ("collocated", "ready", 5), "b": ("collocated", "ready", 1), "c": ("collocated", "draining", 0),
             "d": ("prefill", "ready", 0)}
    assert pick_removal(cands, "collocated")[0] == "b"
    assert pick_removal(cands, "decode") == (None, "no ready decode instance to remove")


@pytest.mark.parametrize("prev, now, dt, expected", [
    ({"a": 10}, {"a": 20}, 2.0, {"a": 5.0}),
    ({}, {"a": 4}, 2.0, {"a": 2.0}),
    ({"a": 10}, {"a": 3}, 1.0, {"a": 3.0}),  # counter reset
    ({"a": 1}, {"a": 2}, 0.0, {"a": 0.0}),
])
def test_rates(prev, now, dt, expected):
    assert rates(prev, now, dt) == expected


LOADS = {"loads": [
    {"dp_rank": 0, "num_running_reqs": 2, "num_waiting_reqs": 1, "num_waiting_uncached_tokens": 40,
     "num_used_tokens": 300, "max_total_num_tokens": 4096, "disaggregation": {"mode": "prefill",
                                                                            "prefill_inflight_queue_reqs": 1}},
    {"dp_rank": 1, "num_running_reqs": 1, "num_waiting_reqs": 0, "num_used_tokens": 100,
     "memory": {"token_capacity": 4096}}]}


def test_parse_loads_sums_ranks():
    load, fields = parse_loads(LOADS)
    assert load == WorkerLoad(3, 1, 1)
    assert fields == {"num_waiting": 1, "num_running": 3, "waiting_tokens": 40, "running_kv": 400,
                      "kv_capacity": 8192}


METRICS = """# HELP hfx_router_requests_total requests
# TYPE hfx_router_requests_total counter
hfx_router_requests_total{endpoint="generate",status="200"} 30.0
hfx_router_requests_total{endpoint="chat",status="200"} 10.0
hfx_router_requests_created{endpoint="chat",status="200"} 1.7e9
hfx_router_class_requests_total{slo_class="interactive"} 6.0
hfx_router_class_requests_total{slo_class="batch"} 2.0
"""


def test_counter_values_by_label_and_total():
    assert counter_values(METRICS, "hfx_router_class_requests_total", "slo_class") == {"interactive": 6.0,
                                                                                       "batch": 2.0}
    assert counter_values(METRICS, "hfx_router_requests", None) == {"": 40.0}
    assert counter_values(METRICS, "nothing", None) == {}


def test_class_rates_per_class_then_fallback_to_default_class():
    cat = SLOCatalog()
    cr = ClassRates(cat)
    cr.loads(METRICS, 0.0)
    more = METRICS.replace('"interactive"} 6.0', '"interactive"} 16.0')
    loads = {c.name: c for c in cr.loads(more, 2.0)}
    assert loads["interactive"].arrival_rate == 5.0 and loads["batch"].arrival_rate == 0.0
    assert cr.source == "hfx_router_class_requests_total"
    assert loads["interactive"].ttft_s == cat.get("interactive").ttft_ms / 1000
    fb = ClassRates(cat, ClassRateConfig(class_counter="absent"))
    fb.loads(METRICS, 0.0)
    loads = {c.name: c for c in fb.loads(METRICS.replace("30.0", "50.0"), 4.0)}
    assert fb.source == "hfx_router_requests_total"
    assert loads[cat.default].arrival_rate == 5.0
    assert sum(c.arrival_rate for c in loads.values()) == 5.0
