"""Pure router decisions: admission (core/routing/admission.py) and the manual policy (core/routing/manual.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Hashable

import pytest

from hyperflexis_sglang.core.perf_model import PerfModel, preset
from hyperflexis_sglang.core.routing import (DISPATCH, HOLD, REJECT, AdmissionInput, HTTP_ROUTERS, ROUTERS,
                                             RouteRequest, UnknownRouter, decide, make_http_router, queue_key)
from hyperflexis_sglang.core.slo import DEFAULT_CLASSES

INTER, STD, BATCH = DEFAULT_CLASSES["interactive"], DEFAULT_CLASSES["standard"], DEFAULT_CLASSES["batch"]


@pytest.mark.parametrize("slo, waited, pred, at_cap, room, action, code", [
    (STD, 0.0, math.nan, False, True, DISPATCH, ""),  # a policy without predictions: as sglang-router
    (INTER, 0.0, 0.2, False, True, DISPATCH, ""),  # 200 ms < 450 ms
    (INTER, 0.3, 0.2, False, True, REJECT, "slo_unattainable"),  # only 150 ms left
    (INTER, 0.0, 0.5, False, True, REJECT, "slo_unattainable"),
    (STD, 0.0, 3.0, False, True, HOLD, ""),  # best effort, time left to wait for room
    (STD, 0.0, 3.0, False, False, DISPATCH, ""),  # queue full: best effort now
    (STD, 1.0, 3.0, False, True, DISPATCH, ""),  # held half its TTFT already: best effort
    (BATCH, 0.0, 1.0, True, True, HOLD, ""),  # concurrency limit
    (BATCH, 0.0, 1.0, True, False, REJECT, "queue_full"),
    (INTER, 0.0, math.nan, True, True, HOLD, ""),
])
def test_admission_table(slo, waited, pred, at_cap, room, action, code):
    a = decide(AdmissionInput(slo, waited, pred, at_cap, room, 0.5))
    assert (a.action, a.code) == (action, code), a.reason
    assert a.reason


def test_rejection_names_class_and_predicted_ttft():
    a = decide(AdmissionInput(INTER, 0.0, 0.9, False, True))
    assert "'interactive'" in a.reason and "900 ms" in a.reason


def test_queue_order_priority_then_deadline():
    keys = sorted([queue_key(BATCH, 0.0, 1), queue_key(INTER, 5.0, 2), queue_key(STD, 1.0, 3),
                   queue_key(STD, 0.0, 4)])
    assert [k[2] for k in keys] == [2, 4, 3, 1]


@dataclass
class Inst:
    iid: Hashable
    num_waiting: int = 0
    num_running: int = 0
    waiting_tokens: int = 0
    running_kv: int = 0
    kv_free: int = 100_000
    role: str = "collocated"
    perf: PerfModel = field(default_factory=preset)
    min_running_tpot_s: float = math.inf


def rr(key=None, target=None) -> RouteRequest:
    return RouteRequest("r", 100, 10, STD, (), routing_key=key, target=target)


def test_http_registry_adds_manual_only():
    assert set(HTTP_ROUTERS) == set(ROUTERS) | {"manual"} and "manual" not in ROUTERS
    with pytest.raises(UnknownRouter, match="manual"):
        make_http_router("nope")


def test_manual_target_hit_and_miss():
    p = make_http_router("manual")
    insts = [Inst("a"), Inst("b")]
    assert p.pick(rr(target="b"), insts, 0.0).iid == "b"
    d = p.pick(rr(target="gone"), insts, 0.99)
    assert d.iid == "b" and "random" in d.reason


@pytest.mark.parametrize("mode, expected", [("min_load", "b"), ("min_group", "b"), ("random", "a")])
def test_manual_routing_key_is_sticky_and_assigned_by_mode(mode, expected):
    p = make_http_router("manual", assignment_mode=mode)
    insts = [Inst("a", num_waiting=5), Inst("b")]
    p.observe(rr("k0"), "a")  # a holds one key already
    d = p.pick(rr("k1"), insts, 0.0)
    assert d.iid == expected and "new routing key" in d.reason
    p.observe(rr("k1"), d.iid)
    for r in (0.0, 0.5, 0.99):
        assert p.pick(rr("k1"), insts, r) == replace(d, reason="routing key hit")


def test_manual_key_map_is_bounded_lru():
    p = make_http_router("manual", max_keys=2)
    for k in ("x", "y", "z"):
        p.observe(rr(k), "a")
    assert list(p.keys) == ["y", "z"] and p.groups["a"] == 2


def test_manual_bad_assignment_mode():
    with pytest.raises(ValueError, match="assignment_mode"):
        make_http_router("manual", assignment_mode="sticky")
