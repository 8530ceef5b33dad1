"""Background load and health polling; no request ever waits for a poll.

Every ``hfx_load_poll_interval_ms`` each worker's ``GET /v1/loads?include=core,memory,queues``
gives its running/waiting requests, waiting prefill tokens, KV use and
capacity (summed over DP ranks); a good answer is a good health check and a
failure a failed one. Every ``hfx_perf_refresh_secs`` the worker's HFX
plugin state (``/server_info`` -> ``internal_states[0].hfx.perf_model``) gives
its performance model (``PerfModel.from_dict``); a worker without the plugin
keeps the default model (the plugin's own pre-fit ``GENERIC``), and
``GET /workers`` says which one is used. A worker without ``/v1/loads``
(404) is health-checked on ``health_check_endpoint`` every
``health_check_interval_secs`` instead, and its load is the router's
in-flight count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Callable

import orjson

from ..core.perf_model import PerfModel, PerfModelError
from .config import RouterConfig
from .registry import Registry, Worker
from .upstream import Upstream, UpstreamError

log = logging.getLogger("hyperflexis_sglang.router")
LOADS_PATH = "/v1/loads?include=core,memory,queues"
WORKER_MODEL = "worker's HFX model"  # perf_source prefix once a worker's (trusted) model is in use


def default_perf() -> PerfModel:
    from ..sglang_ext.state import GENERIC  # the plugin's starting model (pure data; imports no SGLang)
    return GENERIC


def parse_loads(data: dict) -> dict:
    """Sum of the per-DP-rank loads in a ``/v1/loads`` answer."""
    out = {"running": 0, "waiting": 0, "waiting_tokens": 0, "running_kv": 0, "used": 0, "capacity": 0}
    for rank in data.get("loads") or []:
        out["running"] += int(rank.get("num_running_reqs") or 0)
        out["waiting"] += int(rank.get("num_waiting_reqs") or 0)
        out["waiting_tokens"] += int(rank.get("num_waiting_uncached_tokens") or 0)
        out["running_kv"] += int(rank.get("num_total_tokens") or 0)
        out["used"] += int(rank.get("num_used_tokens") or 0)
        out["capacity"] += int(rank.get("max_total_num_tokens") or (rank.get("memory") or {}).get("token_capacity")
                               or 0)
    return out


def perf_from_server_info(info: dict) -> tuple[PerfModel | None, str]:
    """The worker's HFX performance model if the worker trusts it (a preset, or a fit with enough samples
    and a small error), else None (keep the current one); and a line saying where the model comes from."""
    states = info.get("internal_states") or [{}]
    hfx = (states[0] or {}).get("hfx") if isinstance(states[0], dict) else None
    if not hfx or "perf_model" not in hfx:
        return None, "default (worker reports no HFX performance model)"
    try:
        model = PerfModel.from_dict(hfx["perf_model"])
    except (PerfModelError, TypeError) as e:
        return None, f"default (worker's model unreadable: {e})"
    samples = hfx.get("samples", 0)
    if not hfx.get("model_trusted"):  # the plugin does not act on it either (a young or noisy fit can be wild)
        err = hfx.get("fit_median_rel_error")
        return None, (f"default (worker's {model.name} model not trusted yet: {samples} samples, median error "
                      f"{'n/a' if err is None else f'{err:.2f}'})")
    return model, f"{WORKER_MODEL} ({model.name}, {samples} samples, trusted)"


class Poller:
    def __init__(self, cfg: RouterConfig, registry: Registry, client: Upstream,
                 on_update: Callable[[], None] = lambda: None):
        self.cfg, self.registry, self.client, self.on_update = cfg, registry, client, on_update
        self._task: asyncio.Task | None = None
        self._last_perf: dict[str, float] = {}
        self._last_health: dict[str, float] = {}

    async def poll_worker(self, w: Worker) -> None:
        now = time.monotonic()
        timeout = self.cfg.health_check_timeout_secs
        ok = False
        try:
            if w.loads_supported:
                r = await self.client.request("GET", w.url + LOADS_PATH, timeout=timeout)
                if r.status == 404:
                    w.loads_supported = False
                elif r.status == 200:
                    polled = parse_loads(orjson.loads(r.body))
                    if not polled["capacity"]:
                        polled["capacity"] = w.perf.kv_capacity_tokens
                    w.update_load(polled)
                    ok = True
            if not w.loads_supported:
                if now - self._last_health.get(w.id, -1e18) < self.cfg.health_check_interval_secs and w.checked:
                    return
                self._last_health[w.id] = now
                r = await self.client.request("GET", w.url + self.cfg.health_check_endpoint, timeout=timeout)
                ok = r.status == 200
            if ok and now - self._last_perf.get(w.id, -1e18) >= self.cfg.hfx_perf_refresh_secs:
                self._last_perf[w.id] = now
                await self._refresh_perf(w, timeout)
        except (UpstreamError, ValueError, OSError) as e:
            log.debug("poll of %s failed: %r", w.url, e)
            ok = False
        was = w.healthy
        w.check(ok, self.cfg.health_success_threshold, self.cfg.health_failure_threshold)
        if was != w.healthy:
            log.warning("worker %s is now %s", w.url, "healthy" if w.healthy else "unhealthy")

    async def _refresh_perf(self, w: Worker, timeout: float) -> None:
        r = await self.client.request("GET", w.url + "/server_info", timeout=timeout)
        if r.status != 200:
            return
        model, source = perf_from_server_info(orjson.loads(r.body))
        if model is not None:
            cap = w.polled.get("capacity") or model.kv_capacity_tokens
            w.perf = replace(model, kv_capacity_tokens=cap)
            w.perf_source = source
        elif not w.perf_source.startswith(WORKER_MODEL):  # keep the last trusted model and its source
            w.perf_source = source

    async def poll_all(self) -> None:
        workers = list(self.registry.workers.values())
        if workers:
            await asyncio.gather(*(self.poll_worker(w) for w in workers), return_exceptions=True)
        self.on_update()

    async def _run(self) -> None:
        interval = self.cfg.hfx_load_poll_interval_ms / 1000.0
        while True:
            t0 = time.monotonic()
            try:
                await self.poll_all()
            except Exception:  # never let the poller die
                log.exception("load poll failed")
            await asyncio.sleep(max(interval - (time.monotonic() - t0), 0.01))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
