"""The router's FastAPI app: ``create_app(cfg)``.

Inference endpoints (``/generate``, ``/v1/completions``, ``/v1/chat/completions``)
take raw ``Request`` objects (no pydantic on the hot path). State is built
eagerly, so the app also works without its lifespan (e.g. under
``httpx.ASGITransport``; the worker client is created on first use); the lifespan starts the load poller and, on
shutdown, drains: in-flight requests finish (up to
``shutdown_grace_period_secs``) before the worker connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Route

from ..core.slo import SLOCatalog
from .config import RouterConfig
from .dispatch import Dispatcher
from .errors import RouterHTTPError, error_response
from .load import Poller, default_perf
from .metrics import Metrics
from .registry import BreakerConfig, Registry, Worker
from .request import parse
from .upstream import Upstream
from .workers import add_worker_routes, info_routes

log = logging.getLogger("hyperflexis_sglang.router")
OPEN_PATHS = frozenset({"/health", "/liveness", "/readiness", "/metrics"})


class RouterState:
    def __init__(self, cfg: RouterConfig):
        self.cfg = cfg
        self.catalog = SLOCatalog.from_file(cfg.hfx_slo_classes) if cfg.hfx_slo_classes else SLOCatalog()
        self.metrics = Metrics(cfg.prometheus_duration_buckets)
        self.registry = Registry()
        self.breaker = BreakerConfig(cfg.cb_failure_threshold, cfg.cb_success_threshold, cfg.cb_timeout_duration_secs,
                                     cfg.cb_window_duration_secs, not cfg.disable_circuit_breaker)
        self.client = Upstream()
        self.dispatcher = Dispatcher(cfg, self.registry, self.client, self.metrics)
        self.poller = Poller(cfg, self.registry, self.client, on_update=lambda: self.dispatcher.admitter.queue.pump())
        self.shutting_down = False
        for url in cfg.worker_urls:
            self.add_worker(url, "regular")
        for url, port in cfg.prefill_urls:
            self.add_worker(url, "prefill", port)
        for url in cfg.decode_urls:
            self.add_worker(url, "decode")

    def add_worker(self, url: str, role: str, bootstrap_port: int | None = None) -> Worker:
        return self.registry.add(Worker(url, role, self.breaker, default_perf(), bootstrap_port))

    def ready(self) -> tuple[bool, str]:
        roles = ("prefill", "decode") if self.cfg.pd_disaggregation else ("regular",)
        now = time.monotonic()
        missing = [r for r in roles if not self.registry.routable(r, now, not self.cfg.disable_health_check)]
        if self.cfg.pd_disaggregation and missing and self.cfg.hfx_pd_fallback_collocated and \
                self.registry.routable("regular", now, not self.cfg.disable_health_check):
            missing = []
        return (not missing and not self.shutting_down,
                "shutting down" if self.shutting_down else
                f"no healthy {' or '.join(missing)} worker" if missing else "ready")


def request_id(cfg: RouterConfig, headers) -> str:
    for h in cfg.request_id_headers:
        v = headers.get(h)
        if v:
            return v[:128]
    return uuid.uuid4().hex


def header_dict(scope) -> dict:
    """The request's headers as a plain dict (lower-case names; a repeated header keeps its last value):
    one pass instead of a list scan per lookup."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


INFERENCE = (("/generate", "generate"), ("/v1/completions", "completions"), ("/v1/chat/completions", "chat"))
DRAIN_FACTOR = 16  # an oversize body is read and dropped up to this many limits, so the client sees the 413


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413. Clients send the whole body before reading the answer, so an oversize body is
    consumed (and dropped) up to ``DRAIN_FACTOR x limit``: closing on unread data would reset the connection
    and the client would get a broken pipe instead of the error."""
    declared = request.headers.get("content-length")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        what = f"of {declared} bytes " if declared is not None and declared.isdigit() else ""
        raise RouterHTTPError(413, f"request body {what}is over the {limit}-byte limit", None, "payload_too_large")
    return b"".join(chunks)


def check_api_key(cfg: RouterConfig, request: Request, headers=None) -> None:
    if cfg.api_key is None or request.url.path in OPEN_PATHS:
        return
    headers = request.headers if headers is None else headers
    auth = headers.get("authorization", "")
    if auth != f"Bearer {cfg.api_key}" and headers.get("x-api-key") != cfg.api_key:
        raise RouterHTTPError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'", None,
                              "invalid_api_key")


def create_app(cfg: RouterConfig) -> FastAPI:
    state = RouterState(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(state.poller.poll_all(), cfg.health_check_timeout_secs + 1)
        state.poller.start()
        try:
            yield
        finally:
            state.shutting_down = True
            deadline = time.monotonic() + cfg.shutdown_grace_period_secs
            while state.dispatcher.active and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await state.poller.stop()
            await state.client.close()

    app = FastAPI(title="hyperflexis-sglang router", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.router = state
    if cfg.cors_allowed_origins:
        from starlette.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_allowed_origins, allow_methods=["*"],
                           allow_headers=["*"])

    async def inference(request: Request, kind: str) -> Response:
        arrival = time.monotonic()
        headers = header_dict(request.scope)
        rid = request_id(cfg, headers)
        endpoint = request.scope["path"]
        d = state.dispatcher
        d.active += 1
        status = 500
        try:
            check_api_key(cfg, request, headers)
            if state.shutting_down:
                raise RouterHTTPError(503, "router is shutting down", None, "shutting_down")
            raw = await read_body(request, cfg.max_payload_size)
            parsed = parse(kind, raw, headers, state.catalog, rid, cfg.hfx_chars_per_token,
                           cfg.hfx_prefix_block_tokens)
            state.metrics.class_requests.labels(parsed.route.slo.cls).inc()
            resp = await d.handle(endpoint, endpoint, parsed, headers, rid, arrival)
        except RouterHTTPError as e:
            resp = e.response(rid)
        except Exception as e:  # a bug must not take the router down; the client still gets a JSON error
            log.exception("request %s failed", rid)
            resp = error_response(500, f"router error: {type(e).__name__}: {e}", None, "router_error",
                                  {"x-request-id": rid})
        finally:
            d.active -= 1
        status = resp.status_code
        state.metrics.requests.labels(endpoint, str(status)).inc()
        state.metrics.duration.labels(endpoint).observe(time.monotonic() - arrival)
        return resp

    # The inference endpoints are served by plain Starlette routes placed first (no FastAPI dependency
    # solving or response wrapping on the hot path); the same endpoints declared to FastAPI behind them only
    # document them in /openapi.json.
    for path, kind in INFERENCE:
        async def endpoint(request: Request, _kind=kind) -> Response:
            return await inference(request, _kind)
        app.router.routes.insert(0, Route(path, endpoint, methods=["POST"], include_in_schema=False))
        app.add_api_route(path, endpoint, methods=["POST"], name=kind)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), None, None, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return error_response(400, f"invalid request: {first.get('msg', 'bad input')}",
                              ".".join(str(x) for x in first.get("loc", ())[1:]) or None, "invalid_value")

    @app.exception_handler(RouterHTTPError)
    async def router_error(request: Request, exc: RouterHTTPError):
        return exc.response()

    info_routes(app, state, check_api_key)
    add_worker_routes(app, state, check_api_key)
    return app
