"""Circuit breaker state machine, health state, retry backoff and the OpenAI-style error objects."""

from __future__ import annotations

import orjson
import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.router.errors import RouterHTTPError, error_body, sse_error
from hyperflexis_sglang.router.proxy import backoff_s
from hyperflexis_sglang.router.registry import BreakerConfig, CircuitBreaker, Registry, Worker, worker_id

CFG = BreakerConfig(failure_threshold=3, success_threshold=2, timeout_s=10.0, window_s=60.0)


def test_breaker_opens_after_threshold_then_half_opens_and_closes():
    cb = CircuitBreaker(CFG)
    for t in (0, 1):
        cb.record(False, t)
    assert cb.state == "closed" and cb.allows(2)
    cb.record(False, 2)
    assert cb.state == "open" and not cb.allows(5)
    assert cb.allows(12) and cb.state == "half_open"
    cb.record(True, 12)
    assert cb.state == "half_open"
    cb.record(True, 13)
    assert cb.state == "closed"


def test_failure_in_half_open_reopens():
    cb = CircuitBreaker(CFG)
    for t in range(3):
        cb.record(False, t)
    assert cb.allows(20)
    cb.record(False, 20)
    assert cb.state == "open" and not cb.allows(25)


def test_success_resets_and_old_failures_expire():
    cb = CircuitBreaker(CFG)
    cb.record(False, 0)
    cb.record(False, 1)
    cb.record(True, 2)
    cb.record(False, 3)
    assert cb.state == "closed"
    cb.record(False, 4)
    cb.record(False, 100)  # window 60 s: the earlier two no longer count
    assert cb.state == "closed" and cb.failures == 1


def test_disabled_breaker_never_opens():
    cb = CircuitBreaker(BreakerConfig(1, 1, 1, 1, enabled=False))
    for t in range(10):
        cb.record(False, t)
    assert cb.allows(10)


def test_health_states():
    w = Worker("http://w:1/", "regular", CFG, preset())
    assert w.url == "http://w:1" and not w.healthy
    w.check(True, 2, 3)
    assert w.healthy  # a new worker: one good check
    w.check(False, 2, 3)
    w.check(False, 2, 3)
    assert w.healthy
    w.check(False, 2, 3)
    assert not w.healthy
    w.check(True, 2, 3)
    assert not w.healthy  # needs two in a row now
    w.check(True, 2, 3)
    assert w.healthy


def test_registry_finds_by_id_url_and_encoded_url_and_routes_only_healthy():
    reg = Registry()
    w = reg.add(Worker("http://10.0.0.1:8000", "regular", CFG, preset()))
    assert w.id == worker_id("http://10.0.0.1:8000")
    for key in (w.id, "http://10.0.0.1:8000", "http%3A%2F%2F10.0.0.1%3A8000"):
        assert reg.find(key) is w
    assert reg.routable("regular", 0, True) == []
    w.check(True, 1, 1)
    assert reg.routable("regular", 0, True) == [w]
    w.draining = True
    assert reg.routable("regular", 0, True) == []
    with pytest.raises(ValueError, match="worker_type"):
        Worker("http://x:1", "mixed", CFG, preset())


def test_optimistic_load_accounting():
    w = Worker("http://w:1", "regular", CFG, preset())
    w.update_load({"running": 2, "waiting": 1, "waiting_tokens": 100, "running_kv": 50, "used": 150,
                   "capacity": 1000})
    w.sent_one(40)
    assert (w.num_waiting, w.waiting_tokens, w.kv_free, w.inflight) == (2, 140, 850, 1)
    w.update_load({**w.polled})
    assert (w.num_waiting, w.inflight) == (1, 1)


@pytest.mark.parametrize("attempt, rand, expected_ms", [
    (1, 0.5, 50), (2, 0.5, 75), (3, 0.5, 112.5), (30, 0.5, 30000), (1, 0.0, 40), (1, 0.999999, 60),
])
def test_backoff(attempt, rand, expected_ms):
    assert backoff_s(attempt, 50, 30000, 1.5, 0.2, rand) * 1000 == pytest.approx(expected_ms, rel=1e-4)


@pytest.mark.parametrize("status, type_", [(400, "invalid_request_error"), (401, "authentication_error"),
                                           (413, "invalid_request_error"), (429, "rate_limit_error"),
                                           (503, "service_unavailable"), (504, "timeout_error")])
def test_error_objects(status, type_):
    err = orjson.loads(error_body(status, "why", "field", "c"))["error"]
    assert err == {"message": "why", "type": type_, "param": "field", "code": "c"}
    resp = RouterHTTPError(status, "why").response("rid-1")
    assert resp.status_code == status and resp.headers["x-request-id"] == "rid-1"
    assert set(orjson.loads(resp.body)["error"]) == {"message", "type", "param", "code"}


def test_sse_error_ends_stream():
    ev = sse_error("worker died")
    assert ev.startswith(b"data: {") and ev.endswith(b"data: [DONE]\n\n")
    assert orjson.loads(ev.split(b"\n\n")[0][6:])["error"]["message"] == "worker died"
