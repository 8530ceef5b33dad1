"""Run the router: logging, the optional separate metrics port, uvicorn (uvloop when installed)."""

from __future__ import annotations

import logging
import os

import uvicorn

from .config import RouterConfig

log = logging.getLogger("hyperflexis_sglang.router")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def setup_logging(cfg: RouterConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if cfg.log_dir:
        os.makedirs(cfg.log_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(cfg.log_dir, "router.log")))
    logging.basicConfig(level=LEVELS[cfg.log_level], handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def loop_impl() -> str:
    try:
        import uvloop  # noqa: F401
        return "uvloop"
    except ImportError:
        return "asyncio"


def serve(cfg: RouterConfig, warnings: list[str] = ()) -> None:
    setup_logging(cfg)
    for w in warnings:
        log.warning(w)
    from .app import create_app
    app = create_app(cfg)
    if cfg.prometheus_port:
        from prometheus_client import start_http_server
        start_http_server(cfg.prometheus_port, cfg.prometheus_host, registry=app.state.router.metrics.registry)
    log.info("router on %s:%d, policy %s, %d worker(s)", cfg.host, cfg.port, cfg.policy,
             len(app.state.router.registry.workers))
    uvicorn.run(app, host=cfg.host, port=cfg.port, loop=loop_impl(), log_level=cfg.log_level.replace("warn", "warning"),
                access_log=False, timeout_graceful_shutdown=cfg.shutdown_grace_period_secs or None)
