"""Fuzz of the router's validation layer over every route in its OpenAPI schema (hypothesis, bounded).

The app runs in-process (``httpx.ASGITransport``, no lifespan) with one
registered worker that is unreachable and never checked, so no request
reaches a worker: every input must be answered with a 4xx or 503 JSON error
in the OpenAI format, never a 500 or an exception, and the router keeps
answering afterwards.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperflexis_sglang.router.app import create_app
from hyperflexis_sglang.router.cli import parse_args

def _dumps(value) -> bytes:
    return json.dumps(value).encode()  # the stdlib: integers beyond 64 bits too


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
FIELDS = ["text", "input_ids", "prompt", "messages", "sampling_params", "max_tokens", "max_completion_tokens",
          "stream", "priority", "custom_params", "model", "url", "worker_type", "bootstrap_port"]
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(_dumps),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5).map(_dumps),
    st.fixed_dictionaries({"custom_params": st.fixed_dictionaries({"slo": json_values})},
                          optional={"prompt": st.text(max_size=8), "text": st.text(max_size=8),
                                    "messages": json_values}).map(_dumps),
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
headers = st.dictionaries(st.sampled_from(["x-slo-class", "x-slo-ttft-ms", "x-slo-tpot-ms", "x-priority",
                                           "x-smg-routing-key", "x-smg-target-worker", "content-type"]),
                          header_values, max_size=3)


@pytest.fixture(scope="module")
def app_and_routes():
    cfg, _ = parse_args(["--worker-urls", "http://127.0.0.1:9", "--max-payload-size", "4096"])
    app = create_app(cfg)
    routes = [(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops]
    loop = asyncio.new_event_loop()  # one loop: the app's worker client is bound to it
    yield app, routes, loop
    loop.run_until_complete(app.state.router.client.close())
    loop.close()


def _check(status: int, body: bytes) -> None:
    assert status != 500 and (400 <= status < 500 or status == 503 or status == 200), status
    if status != 200:
        err = orjson.loads(body)["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), body=bodies, hdrs=headers)
def test_any_input_gets_a_json_error_never_a_500(app_and_routes, data, body, hdrs):
    app, routes, loop = app_and_routes
    method, path = data.draw(st.sampled_from(routes))
    path = path.replace("{worker_id}", data.draw(st.sampled_from(["nope", "http%3A%2F%2F1.2.3.4%3A5", "x/y"])))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
            r = await c.request(method, path, content=body if method in ("POST", "PUT") else None, headers=hdrs)
            _check(r.status_code, r.content)
            if method == "POST" and path == "/workers" and r.status_code == 200:  # keep the registry small
                await c.delete("/workers/" + orjson.loads(r.content)["worker_id"])
            live = await c.get("/liveness")
            assert live.status_code == 200
    loop.run_until_complete(go())


def test_schema_lists_the_sglang_router_endpoints(app_and_routes):
    _, routes, _ = app_and_routes
    for route in [("POST", "/generate"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                  ("GET", "/v1/models"), ("GET", "/health"), ("GET", "/readiness"), ("GET", "/liveness"),
                  ("GET", "/server_info"), ("GET", "/model_info"), ("POST", "/flush_cache"), ("GET", "/workers"),
                  ("POST", "/workers"), ("DELETE", "/workers/{worker_id}"), ("GET", "/metrics")]:
        assert route in routes, route


@pytest.mark.parametrize("method, path, body, hdrs, status, code", [
    ("POST", "/generate", b'{"text": "x"', {}, 400, "invalid_json"),
    ("POST", "/v1/completions", b'{"prompt": "x", "max_tokens": -1}', {}, 400, "invalid_value"),
    ("POST", "/v1/completions", b'{"prompt": "x"}', {"x-slo-class": "gold"}, 400, "invalid_slo"),
    ("POST", "/v1/chat/completions", b'{"messages": "hi"}', {}, 400, "invalid_value"),
    ("POST", "/generate", b'{"text": "' + b"x" * 5000 + b'"}', {}, 413, "payload_too_large"),
    ("POST", "/generate", b'{"text": "x"}', {}, 503, "no_healthy_workers"),
    ("POST", "/workers", b'{"url": "ftp://x"}', {}, 400, "invalid_value"),
    ("DELETE", "/workers/unknown", b"", {}, 404, "not_found"),
])
def test_bad_input_table(app_and_routes, method, path, body, hdrs, status, code):
    app, _, loop = app_and_routes

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
            return await c.request(method, path, content=body or None, headers=hdrs)
    r = loop.run_until_complete(go())
    assert r.status_code == status and orjson.loads(r.content)["error"]["code"] == code, r.text


def test_missing_api_key_is_401():
    cfg, _ = parse_args(["--worker-urls", "http://127.0.0.1:9", "--api-key", "sekrit"])
    app = create_app(cfg)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
            no_key = await c.post("/generate", content=b'{"text": "x"}')
            wrong = await c.get("/workers", headers={"authorization": "Bearer nope"})
            ok = await c.get("/workers", headers={"authorization": "Bearer sekrit"})
            open_ = await c.get("/liveness")
            return no_key, wrong, ok, open_
    no_key, wrong, ok, open_ = asyncio.run(go())
    assert no_key.status_code == wrong.status_code == 401
    assert orjson.loads(no_key.content)["error"]["type"] == "authentication_error"
    assert ok.status_code == 200 and open_.status_code == 200


def test_valid_requests_are_counted_by_slo_class():
    """The controller's per-class arrival rates come from this counter (header or body SLO, invalid ones not)."""
    cfg, _ = parse_args(["--worker-urls", "http://127.0.0.1:9", "--disable-retries"])
    app = create_app(cfg)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
            await c.post("/generate", content=b'{"text": "x"}', headers={"x-slo-class": "interactive"})
            await c.post("/v1/completions", content=b'{"prompt": "x", "custom_params": {"slo": {"class": "batch"}}}')
            await c.post("/generate", content=b'{"text": "x"}', headers={"x-slo-class": "nope"})  # 400: not counted
            return (await c.get("/metrics")).text
    text = asyncio.run(go())
    counts = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("hfx_router_class_requests_total{")}
    assert counts == {"interactive": 1.0, "batch": 1.0}
