"""Workers known to the router: identity, role, health, circuit breaker, in-flight count, latest load.

A ``Worker`` is also the core's ``InstanceView`` (``core/routing/types.py``):
its load fields combine the latest poll with what the router itself sent
since that poll (optimistic accounting, so routing reacts at once and no
request waits for a poll).

Worker id: a UUID derived from the URL (``uuid5(NAMESPACE_URL, url)``), so the
same URL always has the same id; ``DELETE /workers/{id}`` also accepts the
URL itself, URL-encoded.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import unquote, urlparse

from ..core.perf_model import PerfModel
from ..core.routing.types import tally

ROLES = ("regular", "prefill", "decode")
CORE_ROLE = {"regular": "collocated", "prefill": "prefill", "decode": "decode"}


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int  # consecutive failures (within the window) that open the circuit
    success_threshold: int  # successes in half-open that close it
    timeout_s: float  # time open before a half-open trial
    window_s: float  # a failure older than this does not count
    enabled: bool = True  # False: never opens


class CircuitBreaker:
    """closed -> (failures) -> open -> (timeout) -> half_open -> (successes) -> closed; a failure in
    half_open opens it again. Time is passed in."""

    def __init__(self, cfg: BreakerConfig):
        self.cfg = cfg
        self.state = "closed"
        self.failures = 0
        self.successes = 0
        self.last_failure = -math.inf
        self.opened_at = -math.inf

    def allows(self, now: float) -> bool:
        if self.state == "open" and now - self.opened_at >= self.cfg.timeout_s:
            self.state, self.successes = "half_open", 0
        return self.state != "open"

    def record(self, ok: bool, now: float) -> None:
        if ok:
            if self.state == "half_open":
                self.successes += 1
                if self.successes >= self.cfg.success_threshold:
                    self.state, self.failures = "closed", 0
            else:
                self.failures = 0
            return
        if now - self.last_failure > self.cfg.window_s:
            self.failures = 0
        self.failures += 1
        self.last_failure = now
        if self.cfg.enabled and (self.state == "half_open" or self.failures >= self.cfg.failure_threshold):
            self.state, self.opened_at, self.successes = "open", now, 0


def worker_id(url: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, url))


class Worker:
    def __init__(self, url: str, role: str, breaker: BreakerConfig, perf: PerfModel,
                 bootstrap_port: int | None = None):
        if role not in ROLES:
            raise ValueError(f"worker_type must be one of {', '.join(ROLES)}, got {role!r}")
        self.url = url.rstrip("/")
        self.id = worker_id(self.url)
        self.iid = self.url
        self.worker_type = role
        self.role = CORE_ROLE[role]
        self.bootstrap_port = bootstrap_port
        self.host = urlparse(self.url).hostname or "127.0.0.1"
        self.cb = CircuitBreaker(breaker)
        self.healthy = False  # until the first good check
        self.was_healthy = False
        self.checked = False
        self.health_ok = self.health_fail = 0
        self.draining = False
        self.inflight = 0
        self.perf = perf
        self.perf_source = "default (no model reported yet)"
        self.loads_supported = True
        self.polled = {"running": 0, "waiting": 0, "waiting_tokens": 0, "running_kv": 0, "used": 0,
                       "capacity": perf.kv_capacity_tokens}
        self.sent = 0  # requests sent since the last poll (not yet in its numbers)
        self.sent_tokens = 0
        self.tpots: dict[float, int] = {}  # TPOT targets (s) of the router's requests decoding here -> count

    # ---- InstanceView ----------------------------------------------------
    @property
    def num_running(self) -> int:
        return self.polled["running"]

    @property
    def num_waiting(self) -> int:
        if not self.loads_supported:
            return self.inflight
        return self.polled["waiting"] + self.sent

    @property
    def waiting_tokens(self) -> int:
        return self.polled["waiting_tokens"] + self.sent_tokens

    @property
    def running_kv(self) -> int:
        return self.polled["running_kv"]

    @property
    def min_running_tpot_s(self) -> float:
        """Tightest TPOT target among the router's requests on this worker (SGLang does not report its
        requests' SLOs): streams past their first chunk, non-streamed requests in flight; inf if none."""
        return min(self.tpots) if self.tpots else math.inf

    @property
    def kv_free(self) -> int:
        # as in the simulator: free KV now; requests sent since the poll wait in the queue first
        return max(self.polled["capacity"] - self.polled["used"], 0)

    # ---- accounting --------------------------------------------------------
    def sent_one(self, tokens: int) -> None:
        self.inflight += 1
        self.sent += 1
        self.sent_tokens += tokens

    def done_one(self) -> None:
        self.inflight -= 1

    def tpot_start(self, tpot_s: float) -> None:
        """A request with this TPOT target runs here (counted in ``min_running_tpot_s`` until ``tpot_end``)."""
        if tpot_s < math.inf:
            tally(self.tpots, tpot_s, 1)

    def tpot_end(self, tpot_s: float) -> None:
        tally(self.tpots, tpot_s, -1)

    def update_load(self, polled: dict) -> None:
        self.polled = polled
        self.sent = self.sent_tokens = 0

    def check(self, ok: bool, success_threshold: int, failure_threshold: int) -> None:
        """One health/load check. A new worker is healthy after its first good check; one that
        became unhealthy needs ``success_threshold`` good checks in a row, and a healthy one
        turns unhealthy after ``failure_threshold`` failed checks in a row."""
        self.checked = True
        if ok:
            self.health_ok, self.health_fail = self.health_ok + 1, 0
            if not self.healthy and (self.health_ok >= success_threshold or not self.was_healthy):
                self.healthy = self.was_healthy = True
        else:
            self.health_fail, self.health_ok = self.health_fail + 1, 0
            if self.health_fail >= failure_threshold or not self.was_healthy:
                self.healthy = False

    def info(self, now: float) -> dict:
        return {"id": self.id, "url": self.url, "worker_type": self.worker_type, "bootstrap_port": self.bootstrap_port,
                "is_healthy": self.healthy, "draining": self.draining, "circuit_breaker": self.cb.state,
                "inflight": self.inflight,
                "min_running_tpot_ms": self.min_running_tpot_s * 1e3 if self.tpots else None,
                "load": {**self.polled, "sent_since_poll": self.sent},
                "perf_model": self.perf.name, "perf_model_source": self.perf_source}


class Registry:
    def __init__(self):
        self.workers: dict[str, Worker] = {}  # by id

    def add(self, w: Worker) -> Worker:
        existing = self.workers.get(w.id)
        if existing is not None and not existing.draining:
            raise KeyError(f"worker {w.url} is already registered (id {w.id})")
        self.workers[w.id] = w
        return w

    def find(self, key: str) -> Worker | None:
        """By id, URL, or URL-encoded URL."""
        if key in self.workers:
            return self.workers[key]
        url = unquote(key).rstrip("/")
        return self.workers.get(worker_id(url))

    def remove(self, w: Worker) -> None:
        if self.workers.get(w.id) is w:
            del self.workers[w.id]

    def of_type(self, role: str) -> list[Worker]:
        return [w for w in self.workers.values() if w.worker_type == role]

    def routable(self, role: str, now: float, check_health: bool, exclude: Iterable[Worker] = ()) -> list[Worker]:
        excl = {id(w) for w in exclude}
        return [w for w in self.workers.values()
                if w.worker_type == role and not w.draining and (w.healthy or not check_health)
                and id(w) not in excl and w.cb.allows(now)]
