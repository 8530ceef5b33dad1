"""Live inputs of the scaling policy: worker loads (``/v1/loads``) and per-class arrival rates (router metrics).

Per instance: ``GET {url}/v1/loads?include=core,memory,disagg,queues`` summed
over data-parallel ranks -> ``InstanceState`` (queued and running requests,
uncached waiting tokens, used KV tokens, KV capacity) and the ``WorkerLoad``
the drain check uses (P/D transfer queues count as waiting; a prefill's KV
still in flight counts too).

Per class: a Prometheus counter of the router with an SLO-class label
(``class_counter``/``class_label`` in the config; default
``hfx_router_class_requests_total{slo_class=...}``), turned into a rate
between two ticks. When the router does not export it (sglang-router; the HFX
router's first version counts requests by endpoint only), all requests
counted by ``total_counter`` (default ``hfx_router_requests_total``) are
attributed to the catalog's default class, and the other classes get rate 0.
Mean prompt/output lengths are the configured defaults (no router exports
them yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from ..core.scaling.lifecycle import WorkerLoad, rates
from ..core.scaling.types import ClassLoad, InstanceState
from ..core.slo import SLOCatalog

LOADS_PATH = "/v1/loads?include=core,memory,disagg,queues"
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_loads(body: dict) -> tuple[WorkerLoad, dict]:
    """(drain view, InstanceState fields) from a /v1/loads answer, summed over DP ranks."""
    run = wait = kv_inflight = waiting_tokens = used = cap = 0
    for load in body.get("loads", []):
        run += int(load.get("num_running_reqs", 0))
        wait += int(load.get("num_waiting_reqs", 0))
        waiting_tokens += int(load.get("num_waiting_uncached_tokens", 0))
        used += int(load.get("num_used_tokens", 0))
        cap += int(load.get("max_total_num_tokens", 0) or (load.get("memory") or {}).get("token_capacity", 0))
        disagg = load.get("disaggregation") or {}
        kv_inflight += int(disagg.get("prefill_inflight_queue_reqs", 0))
    fields = {"num_waiting": wait, "num_running": run, "waiting_tokens": waiting_tokens, "running_kv": used,
              "kv_capacity": cap}
    return WorkerLoad(run, wait, kv_inflight), fields


def counter_values(text: str, name: str, label: str | None) -> dict[str, float]:
    """Sum of a counter's samples by the value of ``label`` (or all under "" when ``label`` is None)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) not in (name, name + "_total"):
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        key = labels.get(label, "") if label else ""
        out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


@dataclass(frozen=True)
class ClassRateConfig:
    class_counter: str = "hfx_router_class_requests_total"  # counter with an SLO-class label
    class_label: str = "slo_class"  # that label
    total_counter: str = "hfx_router_requests_total"  # fallback: all requests, attributed to the default class
    mean_input: float = 512.0  # prompt tokens assumed per request
    mean_output: float = 128.0  # output tokens assumed per request


class ClassRates:
    """Counter readings between ticks -> ``ClassLoad`` per catalog class."""

    def __init__(self, catalog: SLOCatalog, cfg: ClassRateConfig = ClassRateConfig()):
        self.catalog, self.cfg = catalog, cfg
        self.prev: dict[str, float] | None = None
        self.prev_t = 0.0
        self.source = "none"  # which counter the last reading came from

    def read(self, metrics_text: str | None) -> dict[str, float]:
        if not metrics_text:
            self.source = "none"
            return {}
        per_class = counter_values(metrics_text, self.cfg.class_counter, self.cfg.class_label)
        if per_class:
            self.source = self.cfg.class_counter
            return per_class
        total = counter_values(metrics_text, self.cfg.total_counter, None)
        self.source = self.cfg.total_counter if total else "none"
        return {self.catalog.default: total.get("", 0.0)} if total else {}

    def loads(self, metrics_text: str | None, now: float) -> tuple[ClassLoad, ...]:
        counts = self.read(metrics_text)
        r = rates(self.prev, counts, now - self.prev_t) if self.prev is not None else {}
        self.prev, self.prev_t = counts, now
        out = []
        for name, slo in sorted(self.catalog.classes.items()):
            out.append(ClassLoad(name, r.get(name, 0.0), self.cfg.mean_input, self.cfg.mean_output,
                                 slo.ttft_ms / 1000, slo.tpot_ms / 1000))
        return tuple(out)


def poll_worker(http: httpx.Client, url: str) -> tuple[WorkerLoad, dict] | None:
    """The worker's load, or None when it does not answer (crashed, starting, overloaded HTTP)."""
    try:
        r = http.get(url.rstrip("/") + LOADS_PATH)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    try:
        return parse_loads(r.json())
    except (ValueError, TypeError, AttributeError):
        return None


def health_ok(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url.rstrip("/") + "/health").status_code == 200
    except httpx.HTTPError:
        return False


def instance_state(iid: str, role: str, phase: str, since: float, fields: dict | None, num_gpus: int = 1
                   ) -> InstanceState:
    return InstanceState(iid, role, phase, since, num_gpus, **(fields or {}))
