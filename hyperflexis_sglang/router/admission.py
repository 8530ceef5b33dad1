"""Router-side admission: the core's decision (``core/routing/admission.py``) applied, and the queue.

A held request waits in ``HoldQueue`` (ordered by the core's ``queue_key``:
priority, then TTFT deadline) until it is woken (a request finished: the
head is woken; a load poll arrived: all are woken, in order) or a short
re-check interval passes, then is decided again. Every wait is bounded: a
request is rejected with a clear error (503 ``queue_timeout``) once it has
waited ``queue_timeout_secs``, and the core dispatches an SLO-held request
best effort after ``hfx_max_hold_fraction`` of its TTFT target.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from ..core.routing import DISPATCH, REJECT, AdmissionInput, decide, queue_key
from .errors import RouterHTTPError

RECHECK_S = 0.25  # a held request re-decides at least this often


class HoldQueue:
    def __init__(self):
        self._heap: list = []
        self._ties = itertools.count()  # a request re-queued with its old key must not compare futures
        self.live = 0
        self.reserved = 0  # slots freed for woken waiters that have not decided yet

    def __len__(self) -> int:
        return self.live

    async def wait(self, key: tuple, timeout: float) -> bool:
        """Wait until woken or ``timeout``. True: woken with a slot reserved for this waiter, which the
        caller gives back (``reserved -= 1``) once it has decided."""
        fut = asyncio.get_running_loop().create_future()
        if len(self._heap) > 2 * self.live + 64:  # drop entries of waits that already ended
            self._heap = [e for e in self._heap if not e[2].done()]
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, (key, next(self._ties), fut))
        self.live += 1
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return False
        except asyncio.CancelledError:  # the client went away: its reserved slot goes back
            if fut.done() and not fut.cancelled() and fut.result():
                self.reserved -= 1
            raise
        finally:
            if not fut.done():
                fut.cancel()
            self.live -= 1

    def pump(self, n: int | None = None, reserve: bool = False) -> None:
        """Wake the first ``n`` waiters (all if None), in queue order; ``reserve``: each keeps a freed slot
        until it has decided, so a request arriving meanwhile cannot take it."""
        woken = 0
        while self._heap and (n is None or woken < n):
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(reserve)
                self.reserved += reserve
                woken += 1


class Admitter:
    def __init__(self, cfg, metrics):
        self.cfg, self.metrics = cfg, metrics
        self.queue = HoldQueue()
        self.inflight = 0  # requests dispatched and not finished
        self._seq = 0

    def at_capacity(self, own_reservation: bool = False) -> bool:
        """No slot for this request: slots reserved for woken waiters count as taken, except its own."""
        limit = self.cfg.max_concurrent_requests
        return limit > 0 and self.inflight + self.queue.reserved - own_reservation >= limit

    async def admit(self, route, arrival: float, plan_fn):
        """Decide until dispatched: returns ``plan_fn()``'s plan, or raises 429/503."""
        self._seq += 1
        seq = self._seq
        reserved = False
        try:
            while True:
                plan = plan_fn()
                waited = time.monotonic() - arrival
                adm = decide(AdmissionInput(route.slo, waited, plan.predicted_ttft_s, self.at_capacity(reserved),
                                            len(self.queue) < self.cfg.queue_size, self.cfg.hfx_max_hold_fraction))
                if reserved:  # decided: the slot is taken (dispatch) or passed to the next waiter
                    self.queue.reserved -= 1
                    reserved = False
                    if adm.action != DISPATCH:
                        self.queue.pump(1, reserve=True)
                if adm.action == DISPATCH:
                    return plan
                if adm.action == REJECT:
                    self.metrics.rejected(route.slo.cls, adm.code)
                    raise RouterHTTPError(429, adm.reason, "custom_params.slo" if adm.code == "slo_unattainable"
                                          else None, adm.code)
                left = self.cfg.queue_timeout_secs - waited
                if left <= 0:
                    self.metrics.rejected(route.slo.cls, "queue_timeout")
                    raise RouterHTTPError(503, f"request waited {waited:.1f} s in the router queue "
                                               f"(limit {self.cfg.queue_timeout_secs:g} s): {adm.reason}",
                                          None, "queue_timeout")
                reserved = await self.queue.wait(queue_key(route.slo, arrival, seq), min(left, RECHECK_S))
        finally:
            if reserved:
                self.queue.reserved -= 1

    def started(self) -> None:
        self.inflight += 1

    def finished(self) -> None:
        self.inflight -= 1
        self.queue.pump(1, reserve=True)
