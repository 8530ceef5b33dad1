"""The scaling controller: a clock that turns live fleet snapshots into provisioner actions.

Every ``tick_s``: poll each instance (``/v1/loads``, ``/health``, the
provisioner's liveness), replace crashed ones, build a ``FleetSnapshot``, ask
the policy, and run its actions in worker threads (``actions.py``) so the
loop keeps polling while an instance starts or drains. Invariants:

* the router's worker set only ever holds instances that are healthy, have
  their weights and (prefill) bootstrap server: registration is the last link
  step; a removed or switched instance leaves the router *before* it drains;
* an action that targets an instance already busy (starting, draining,
  switching) is skipped with a reason, so the policy can repeat itself safely;
* a provisioner failure is retried with backoff and reported in ``status()``;
  the rest of the fleet keeps serving meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from ..core.scaling.lifecycle import WorkerLoad, to_replace
from ..core.scaling.types import FleetSnapshot, ScaleAction, ScaleDecision
from . import actions
from .provisioners.base import Handle
from .snapshot import ClassRates, health_ok, instance_state, poll_worker

log = logging.getLogger("hyperflexis_sglang.controller")


@dataclass(frozen=True)
class ControllerConfig:
    tick_s: float = 5.0  # seconds between policy ticks
    ready_timeout_s: float = 300.0  # an added instance must be healthy within this
    drain_timeout_s: float = 900.0  # a draining instance is stopped after this even if busy (reported)
    drain_poll_s: float = 0.5  # seconds between drain checks
    quiet_polls: int = 2  # consecutive idle polls before an instance counts as drained
    health_threshold: int = 3  # consecutive failed health checks before a ready instance is replaced
    max_attempts: int = 4  # provisioner attempts per action
    backoff_initial_s: float = 2.0  # first retry delay
    backoff_factor: float = 2.0  # delay multiplier per retry
    backoff_cap_s: float = 60.0  # longest retry delay
    role_switch: str = "api"  # "api": /pd_role_switch where instances and backend allow it, else restart; "restart"
    replace_weight_source: str = "peer"  # weights of an instance that replaces a crashed one
    metrics_url: str | None = None  # router metrics URL (default: router URL + /metrics)


@dataclass
class Instance:
    handle: Handle  # provisioner handle (URL, role, bootstrap port)
    phase: str  # starting | ready | draining | switching
    since: float  # when it entered the phase (controller clock)
    failures: int = 0  # consecutive failed health checks
    load: WorkerLoad | None = None  # last polled load (drain view)
    fields: dict | None = None  # last polled InstanceState fields

    @property
    def key(self) -> str:  # the id the policy sees: the worker URL once known
        return self.handle.url or self.handle.iid


@dataclass
class Events:
    log: list = field(default_factory=list)  # recent events (dicts), newest last
    transitions: list = field(default_factory=list)  # role transitions with their times
    failures: list = field(default_factory=list)  # provisioner failures (with attempt and retry delay)

    def add(self, kind: str, **kw) -> dict:
        e = {"t": time.time(), "event": kind, **kw}
        self.log.append(e)
        del self.log[:-200]
        log.info("controller %s %s", kind, kw)
        return e


class Controller:
    def __init__(self, provisioner, router, policy, catalog, cfg: ControllerConfig = ControllerConfig(),
                 weight_loader=None, clock=time.monotonic, sleep=time.sleep, workers: int = 4):
        self.prov, self.router, self.policy, self.cfg = provisioner, router, policy, cfg
        self.loader = weight_loader  # callable(targets, seeds) -> report with .ok/.reason, or None
        self.clock, self.sleep = clock, sleep
        self.instances: dict[str, Instance] = {}  # by provisioner iid
        self.lock = threading.RLock()
        self.events = Events()
        self.rates = ClassRates(catalog)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="hfx-ctl")
        self.pending: list[Future] = []
        self.http = httpx.Client(timeout=5.0)
        self.last_decision: ScaleDecision | None = None
        self.disaggregated = False
        self._stop = threading.Event()

    # ---- fleet bookkeeping -------------------------------------------------------------
    def adopt(self, handle: Handle, register: bool = True) -> Instance:
        """Manage an instance that already serves (e.g. the initial fleet); register it with the router."""
        if register:
            actions.register(self, handle)
        inst = Instance(handle, "ready", self.clock())
        with self.lock:
            self.instances[handle.iid] = inst
            self.disaggregated |= handle.role != "collocated"
        self.events.add("adopted", iid=handle.iid, url=handle.url, role=handle.role)
        return inst

    def find(self, key) -> Instance | None:
        with self.lock:
            return next((i for i in self.instances.values() if key in (i.key, i.handle.iid, i.handle.url)), None)

    def set_phase(self, inst: Instance, phase: str) -> None:
        with self.lock:
            inst.phase, inst.since = phase, self.clock()

    def ready(self, role: str | None = None) -> list[Instance]:
        with self.lock:
            return [i for i in self.instances.values() if i.phase == "ready" and role in (None, i.handle.role)]

    # ---- one tick -----------------------------------------------------------------------
    def poll(self) -> None:
        """Loads and health of every instance; crashed ready instances are replaced."""
        with self.lock:
            insts = list(self.instances.values())
        for inst in insts:
            if not inst.handle.url:
                continue
            polled = poll_worker(self.http, inst.handle.url)
            inst.load, inst.fields = polled if polled else (None, inst.fields)
            ok = polled is not None or health_ok(self.http, inst.handle.url)
            ok = ok and self.prov.alive(inst.handle)
            inst.failures = 0 if ok else inst.failures + 1
        with self.lock:
            phases = {i.handle.iid: i.phase for i in self.instances.values()}
            failures = {i.handle.iid: i.failures for i in self.instances.values()}
        for iid, reason in to_replace(phases, failures, self.cfg.health_threshold):
            inst = self.instances[iid]
            self.set_phase(inst, "draining")  # not a candidate for the policy any more
            self.submit(ScaleAction("replace", inst.handle.role, iid, self.cfg.replace_weight_source, reason))

    def snapshot(self) -> FleetSnapshot:
        metrics = None
        try:
            metrics = self.router.metrics_text(self.cfg.metrics_url)
        except Exception as e:  # the router's metrics are optional input; note and go on
            self.events.add("metrics_unavailable", error=str(e)[:200])
        now = self.clock()
        with self.lock:
            states = tuple(instance_state(i.key, i.handle.role, i.phase, i.since, i.fields)
                           for i in self.instances.values())
        return FleetSnapshot(states, self.rates.loads(metrics, now), self.disaggregated)

    def tick(self) -> ScaleDecision:
        self.poll()
        decision = self.policy.tick(self.snapshot(), self.clock())
        self.last_decision = decision
        for action in decision.actions:
            self.submit(action)
        return decision

    def submit(self, action: ScaleAction) -> Future:
        fut = self.pool.submit(actions.execute, self, action)
        with self.lock:
            self.pending = [f for f in self.pending if not f.done()] + [fut]
        return fut

    def execute(self, action: ScaleAction) -> dict:
        """Run one action now, in this thread (tests, CLI one-shots); returns its result record."""
        return actions.execute(self, action)

    def wait_idle(self, timeout_s: float = 600.0) -> None:
        """Block until every submitted action has finished."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                pending = [f for f in self.pending if not f.done()]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} action(s) still running after {timeout_s:.0f} s")
            pending[0].result(timeout=max(0.0, deadline - time.monotonic()))

    # ---- loop and status ----------------------------------------------------------------
    def run(self, ticks: int | None = None) -> None:
        n = 0
        while not self._stop.is_set() and (ticks is None or n < ticks):
            try:
                d = self.tick()
                if d.actions:
                    self.events.add("decision", reason=d.reason, actions=[vars(a) for a in d.actions])
            except Exception as e:  # a bad tick must not stop the controller; it is reported
                self.events.add("tick_failed", error=f"{type(e).__name__}: {e}"[:300])
            n += 1
            self._stop.wait(self.cfg.tick_s)

    def stop(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    def status(self) -> dict:
        with self.lock:
            insts = [{"iid": i.handle.iid, "url": i.handle.url, "role": i.handle.role, "phase": i.phase,
                      "since": i.since, "health_failures": i.failures, "gpu": i.handle.gpu,
                      "bootstrap_port": i.handle.bootstrap_port, "weight_source": i.handle.weight_source,
                      "load": vars(i.load) if i.load else None} for i in self.instances.values()]
        d = self.last_decision
        return {"policy": getattr(self.policy, "name", type(self.policy).__name__), "provisioner": self.prov.name,
                "instances": insts, "last_decision": {"reason": d.reason, "actions": [vars(a) for a in d.actions]}
                if d else None, "class_rate_source": self.rates.source,
                "transitions": list(self.events.transitions), "provisioner_failures": list(self.events.failures),
                "events": list(self.events.log[-50:])}
