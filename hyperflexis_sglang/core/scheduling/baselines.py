"""Baseline policies on the same walk as HFX (see base.py).

* ``sglang-fcfs``: SGLang 0.5.23 defaults (the :class:`Scheduler` itself).
* ``sglang-priority``: ``--enable-priority-scheduling``: larger priority
  first, FCFS within a priority; a waiting request that does not fit the KV
  pool preempts running requests whose priority is lower by more than
  ``preemption_threshold`` (``--priority-scheduling-preemption-threshold``,
  SGLang default 10; our classes use priorities 0-2, so the baseline uses 1
  unless ``extra`` says otherwise), lowest priority first.
* ``edf``: earliest TTFT deadline first, otherwise SGLang's mechanics.
* ``sarathi``: stall-free batching (Agrawal et al., OSDI 2024): every
  iteration decodes all running requests and fills a fixed token budget
  (``chunk_size``, default 512 here) with prefill chunks, FCFS.
"""

from __future__ import annotations

from typing import Sequence

from ..perf_model import PerfModel
from .base import Scheduler
from .hfx import _cover
from .types import EngineSnapshot, RequestView, RunningView, WaitingView


class SGLangPriorityScheduler(Scheduler):
    name = "sglang-priority"

    def key(self, req: RequestView, perf: PerfModel) -> tuple:
        return (-req.slo.priority, req.enqueue_time)

    def preempt(self, req: WaitingView, snap: EngineSnapshot, need_kv: float, taken: set) -> list[RunningView]:
        gap = int(self.cfg.extra.get("preemption_threshold", 1))
        pool = [r for r in snap.running if r.rid not in taken and req.slo.priority - r.slo.priority > gap - 1]
        return _cover(sorted(pool, key=lambda r: (r.slo.priority, -r.enqueue_time)), need_kv)

    def retraction_order(self, running: Sequence[RunningView], now: float) -> list[RunningView]:
        """``--retraction-policy priority``: lowest priority first, then SGLang's length order."""
        return sorted(running, key=lambda r: (r.slo.priority, r.output_len, -r.input_len))


class EDFScheduler(Scheduler):
    name = "edf"

    def key(self, req: RequestView, perf: PerfModel) -> tuple:
        return (req.slo.ttft_deadline(req.arrival),)


class SarathiScheduler(Scheduler):
    name = "sarathi"
