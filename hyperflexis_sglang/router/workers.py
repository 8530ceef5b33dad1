"""Management and information endpoints: ``/workers`` (as sglang-router), health, model info, metrics.

``POST /workers {"url", "worker_type": "regular"|"prefill"|"decode", "bootstrap_port"}``
registers a worker and checks it once before answering (``is_healthy`` in
the answer). ``GET /workers`` lists them, ``GET /workers/{id}`` shows one.
``DELETE /workers/{id}`` (id from the listing, or the worker's URL,
URL-encoded) drains it: no new requests go there, in-flight ones finish,
then it is removed (202 while draining, 200 once gone).
"""

from __future__ import annotations

import asyncio
import functools
import time

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from .errors import RouterHTTPError, error_response
from .registry import ROLES
from .upstream import UpstreamError

DRAIN_LIMIT_S = 3600.0


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _guard(check_api_key):
    def wrap(fn):
        @functools.wraps(fn)
        async def inner(request: Request, *args, **kwargs):
            try:
                check_api_key(request.app.state.router.cfg, request)
                return await fn(request, *args, **kwargs)
            except RouterHTTPError as e:
                return e.response()
        return inner
    return wrap


def _worker_spec(raw: bytes) -> tuple[str, str, int | None]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RouterHTTPError(400, f"request body is not valid JSON: {e}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise RouterHTTPError(400, "request body must be a JSON object", None, "invalid_json")
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise RouterHTTPError(400, "url must be a string starting with http:// or https://", "url", "invalid_value")
    role = body.get("worker_type") or "regular"
    if role not in ROLES:
        raise RouterHTTPError(400, f"worker_type must be one of {', '.join(ROLES)}, got {role!r}", "worker_type",
                              "invalid_value")
    port = body.get("bootstrap_port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise RouterHTTPError(400, f"bootstrap_port must be a port number or null, got {port!r}", "bootstrap_port",
                              "invalid_value")
    return url.rstrip("/"), role, port


def add_worker_routes(app: FastAPI, state, check_api_key) -> None:
    guard = _guard(check_api_key)

    @app.post("/workers")
    @guard
    async def add_worker(request: Request):
        url, role, port = _worker_spec(await request.body())
        old = state.registry.find(url)
        if old is not None and not old.draining:
            raise RouterHTTPError(409, f"worker {url} is already registered (id {old.id})", "url", "already_exists")
        w = state.add_worker(url, role, port)
        try:
            await asyncio.wait_for(state.poller.poll_worker(w), state.cfg.health_check_timeout_secs + 1)
        except asyncio.TimeoutError:
            pass
        return _json({"status": "accepted", "worker_id": w.id, "url": w.url, "location": f"/workers/{w.id}",
                      "worker": w.info(time.monotonic())})

    @app.get("/workers")
    @guard
    async def list_workers(request: Request):
        now = time.monotonic()
        ws = list(state.registry.workers.values())
        return _json({"workers": [w.info(now) for w in ws], "total": len(ws),
                      "stats": {f"{r}_count": sum(w.worker_type == r for w in ws) for r in ROLES}})

    @app.get("/workers/{worker_id:path}")
    @guard
    async def get_worker(request: Request, worker_id: str):
        return _json(_find(state, worker_id).info(time.monotonic()))

    @app.delete("/workers/{worker_id:path}")
    @guard
    async def remove_worker(request: Request, worker_id: str):
        w = _find(state, worker_id)
        w.draining = True
        if w.inflight == 0:
            _forget(state, w)
            return _json({"status": "removed", "worker_id": w.id, "url": w.url})
        asyncio.get_running_loop().create_task(_drain(state, w))
        return _json({"status": "draining", "worker_id": w.id, "url": w.url, "inflight": w.inflight}, 202)


def _find(state, worker_id: str):
    """The registered worker with this id (or URL), else a 404."""
    w = state.registry.find(worker_id)
    if w is None:
        raise RouterHTTPError(404, f"no worker {worker_id!r}", "worker_id", "not_found")
    return w


def _forget(state, w) -> None:
    state.registry.remove(w)
    d = state.dispatcher
    for p in (d.policy, d.prefill_policy, d.decode_policy):
        p.prefix.forget(w.iid)


async def _drain(state, w) -> None:
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while w.inflight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if w.draining:
        _forget(state, w)


def info_routes(app: FastAPI, state, check_api_key) -> None:
    guard = _guard(check_api_key)

    async def from_one_worker(path: str) -> Response:
        now = time.monotonic()
        for role in ("regular", "decode", "prefill"):
            for w in state.registry.routable(role, now, not state.cfg.disable_health_check):
                try:
                    r = await state.client.request("GET", w.url + path, timeout=state.cfg.health_check_timeout_secs)
                except UpstreamError:
                    continue
                return Response(r.body, status_code=r.status, media_type=r.content_type)
        raise RouterHTTPError(503, "no healthy worker available", None, "no_healthy_workers")

    for path, alias in (("/v1/models", None), ("/model_info", "/get_model_info"),
                        ("/server_info", "/get_server_info")):
        async def handler(request: Request, _path=path):
            return await from_one_worker(_path)
        for p in filter(None, (path, alias)):
            app.add_api_route(p, guard(handler), methods=["GET"], name=p)

    @app.get("/liveness")
    async def liveness():
        return _json({"status": "alive"})

    @app.get("/health")
    @app.get("/readiness")
    async def readiness(request: Request):
        ok, why = state.ready()
        if not ok:
            return error_response(503, f"router not ready: {why}", None, "not_ready")
        now = time.monotonic()
        healthy = sum(1 for w in state.registry.workers.values() if w.healthy and not w.draining
                      and w.cb.allows(now))
        return _json({"status": "ready", "healthy_workers": healthy, "total_workers": len(state.registry.workers)})

    @app.post("/flush_cache")
    @guard
    async def flush_cache(request: Request):
        ws = list(state.registry.workers.values())
        if not ws:
            return error_response(503, "no worker registered", None, "no_workers")

        async def one(w):
            try:
                r = await state.client.request("POST", w.url + "/flush_cache",
                                               timeout=state.cfg.health_check_timeout_secs)
                return w.url, r.status
            except UpstreamError as e:
                return w.url, f"{type(e).__name__}"
        results = dict(await asyncio.gather(*(one(w) for w in ws)))
        if all(v == 200 for v in results.values()):
            return _json({"status": "ok", "results": results})
        return error_response(503, f"flush_cache failed on some workers: {orjson.dumps(results).decode()}", None,
                              "flush_failed")

    @app.get("/get_loads")
    @guard
    async def get_loads(request: Request):
        return _json({"workers": [{"url": w.url, "worker_type": w.worker_type, "inflight": w.inflight,
                                   **w.polled} for w in state.registry.workers.values()]})

    @app.get("/metrics")
    async def metrics():
        m = state.metrics
        m.inflight.set(state.dispatcher.admitter.inflight)
        m.queued.set(len(state.dispatcher.admitter.queue))
        return Response(m.render(list(state.registry.workers.values())),
                        media_type="text/plain; version=0.0.4; charset=utf-8")
