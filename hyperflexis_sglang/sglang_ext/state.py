"""Per-scheduler-process plugin state: the core policy, the live performance model, counters.

Calibration: every engine iteration's composition (prefill tokens, query-key
pairs, sequences, decode requests, decode KV tokens) and its duration (the
time between consecutive batch launches, which includes scheduling, so it
is the real period a request waits) are recorded; every ``fit_every``
iterations the core's least-squares fit replaces the model the policy
uses. The last ``MAX_SAMPLES`` iterations are kept in a numpy ring buffer,
so a refit is a few array operations, not a pass over Python objects. Hook
overhead is measured around every hook and reported as a fraction of
iteration time.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import replace

import numpy as np

from ..core.perf_model import PerfModel, PerfModelError, fit_arrays, prediction_errors_arrays, preset
from ..core.scheduling import SchedulerConfig, make_scheduler
from ..core.slo import SLOCatalog
from .config import PluginConfig

log = logging.getLogger("hyperflexis_sglang")

# Starting point before the first fit: a small model on a slow device (iterations of a few ms).
GENERIC = PerfModel(base=3e-3, per_prefill_token=2e-5, per_attn_pair=1e-9, per_prefill_seq=1e-4,
                    per_decode_req=1e-4, per_kv_token=1e-7, kv_capacity_tokens=4096, name="generic")
MAX_ITERATION_S = 30.0  # gaps longer than this are idle time, not an iteration
TRUSTED_FIT_ERROR = 0.25  # median relative error under which predictive verdicts are applied
TRUSTED_MIN_SAMPLES = 256  # ... and at least this many measured iterations
RECENT_PLANS = 64  # iteration plans kept for /server_info
MAX_SAMPLES = 4096  # measured iterations the fit uses (the most recent)
TRANSFER_EWMA = 0.1  # weight of the latest KV transfer in the P/D prefill server's moving average


def engine_mode(disaggregation_mode) -> str:
    """``--disaggregation-mode`` (a string "null"/"prefill"/"decode" in 0.5.23, or the enum) as the
    core's engine mode: "prefill", "decode" or "collocated"."""
    raw = str(getattr(disaggregation_mode, "value", disaggregation_mode) or "null").lower().split(".")[-1]
    return raw if raw in ("prefill", "decode") else "collocated"


class PluginState:
    def __init__(self, cfg: PluginConfig, server_args, kv_capacity: int, max_running: int):
        self.cfg = cfg
        self.catalog = SLOCatalog.from_file(cfg.slo_classes) if cfg.slo_classes else SLOCatalog()
        self.mode = engine_mode(getattr(server_args, "disaggregation_mode", None))
        mixed = bool(getattr(server_args, "enable_mixed_chunk", False))
        chunk = getattr(server_args, "chunked_prefill_size", None)
        self.sched_cfg = SchedulerConfig(
            chunk_size=chunk if chunk and chunk > 0 else 1 << 30,
            max_prefill_tokens=getattr(server_args, "max_prefill_tokens", 16384),
            max_running=max_running, mixed=mixed, page_size=getattr(server_args, "page_size", 1) or 1,
            preemption=cfg.preemption and self.mode == "collocated",  # the adder evicts the victims a plan names
            extra=dict(cfg.extra))
        self.policy = make_scheduler(cfg.policy, **{k: getattr(self.sched_cfg, k) for k in
                                                    ("chunk_size", "max_prefill_tokens", "max_running", "mixed",
                                                     "page_size", "preemption", "extra")})
        if cfg.perf_model == "fit":
            self.perf = replace(GENERIC, kv_capacity_tokens=kv_capacity)
        else:
            try:
                model, gpu, tp = cfg.perf_model.split("/")
                self.perf = replace(preset(model, gpu, int(tp)), kv_capacity_tokens=kv_capacity)
            except (ValueError, PerfModelError) as e:
                raise ValueError(f"HFX_PERF_MODEL={cfg.perf_model!r}: {e}") from None
        self._x = np.zeros((MAX_SAMPLES, 6))  # ring buffer: Sample.features() rows ...
        self._y = np.zeros(MAX_SAMPLES)  # ... and measured seconds
        self.fit_error: float | None = None
        self.fit_mean_ratio: float | None = None  # measured / predicted total iteration time on the samples
        self.fits = 0
        self.fired: collections.Counter = collections.Counter()
        self.hook_s_by: collections.Counter = collections.Counter()  # seconds per hook (where the overhead goes)
        self.iter_s = 0.0
        self.iterations = 0
        self.rejected = 0
        self.demoted = 0
        self.preempted = 0  # running requests evicted (back to the queue) for a waiting one
        self.recent_preemptions: collections.deque = collections.deque(maxlen=RECENT_PLANS)  # (rid, output tokens)
        self.invalid = 0
        self.arrivals = 0  # new requests enqueued (a blocked queue is looked at again when this moves)
        self.full_seen_arrivals = 0
        self.full_recheck_at = 0.0
        self.last_walk: tuple = (False, [])  # previous walk: (the plan admitted some, SGLang's can_run_list)
        self.refused_plans = 0
        self.refused_fallbacks = 0  # iterations handed to SGLang because it kept refusing what the plan admitted
        self.last_refusal: dict | None = None  # SGLang's answer and budgets when it last refused a planned request
        self.idle_fallbacks = 0  # plans that would have left the engine idle with work waiting (SGLang admitted)
        self.chunk_yields = 0  # plans in which a prompt mid chunked prefill left room to whole urgent prompts
        self._last: tuple[float, tuple] | None = None
        self.plan_reasons: collections.Counter = collections.Counter()  # why each iteration's walk stopped
        self.recent_plans: collections.deque = collections.deque(maxlen=RECENT_PLANS)
        self.transfers = 0  # P/D prefill server: KV transfers timed (prefill done -> decode server has the KV)
        self.transfer_s = 0.0  # their moving average, seconds

    def transfer_done(self, seconds: float) -> None:
        self.transfer_s = seconds if not self.transfers else self.transfer_s + TRANSFER_EWMA * (seconds - self.transfer_s)
        self.transfers += 1

    @property
    def handoff_s(self) -> float:
        """P/D prefill server: expected seconds from a prefill completing here to its first token
        (EngineSnapshot.handoff_s): the measured KV transfer plus the decode side's HFX_PD_HANDOFF_MS; 0 elsewhere."""
        return self.transfer_s + self.cfg.pd_handoff_ms * 1e-3 if self.mode == "prefill" else 0.0

    def planned(self, now: float, plan, waiting: int, running: int) -> None:
        """Record one iteration's plan: why it stopped, and what it admitted (reported for debugging)."""
        self.plan_reasons[plan.reason] += 1
        if len(plan.prefill) > 1 and not plan.prefill[0].completes:
            self.chunk_yields += 1
        self.recent_plans.append((round(now, 4), plan.reason, len(plan.prefill), sum(i.tokens for i in plan.prefill),
                                  waiting, running, plan.budget_s if plan.budget_s < math.inf else None,
                                  plan.predicted_s))

    # ---- calibration ---------------------------------------------------
    def iteration_started(self, now: float, composition: tuple) -> None:
        """A batch is launched now; the previous one took ``now - its start``."""
        if self._last is not None:
            start, comp = self._last
            dt = now - start
            if 0 < dt < MAX_ITERATION_S:
                n = self.iterations
                i = n % MAX_SAMPLES
                self._x[i] = (1.0, *comp)
                self._y[i] = dt
                self.iter_s += dt
                self.iterations = n = n + 1
                if self.cfg.perf_model == "fit" and (n in (8, 16, 32) or n % self.cfg.fit_every == 0):
                    self._refit()
        self._last = (now, composition)

    def idle(self) -> None:
        self._last = None

    def model_trusted(self) -> bool:
        """Predictive rejects/demotes only on a model that predicts this engine well: a preset the
        operator chose, or a fit on enough samples (a fit on a few small warm-up batches
        extrapolates badly to a loaded engine) with a small median error."""
        if self.cfg.perf_model != "fit":
            return True
        return (self.fit_error is not None and self.fit_error <= TRUSTED_FIT_ERROR
                and self.fits >= 4 and self.sample_count >= TRUSTED_MIN_SAMPLES)

    def _refit(self) -> None:
        try:
            x, y = self._x[:self.sample_count], self._y[:self.sample_count]
            model = fit_arrays(x, y, self.perf)
        except PerfModelError:
            return
        self.perf = replace(model, name="fitted")
        self.fit_error, self.fit_mean_ratio = prediction_errors_arrays(self.perf, x, y)
        self.fits += 1

    @property
    def sample_count(self) -> int:
        """Rows of the ring buffer in use."""
        return min(self.iterations, MAX_SAMPLES)

    # ---- reporting -----------------------------------------------------
    @property
    def hook_s(self) -> float:
        """Seconds spent in all hooks."""
        return sum(self.hook_s_by.values())

    def report(self) -> dict:
        from .cpu_pd import APPLIED
        hook_s = self.hook_s
        return {
            "enabled": True, "policy": self.cfg.policy, "mode": self.mode, "mixed_chunk": self.sched_cfg.mixed,
            "hooks_fired": dict(self.fired),
            "hook_overhead": (hook_s / self.iter_s) if self.iter_s else None,
            "hook_s": hook_s, "iteration_s": self.iter_s,  # raw totals: overhead over a window = deltas
            "hook_s_by_hook": {k: round(v, 6) for k, v in self.hook_s_by.items()},
            "iterations": self.iterations, "rejected": self.rejected, "demoted": self.demoted,
            "preempted": self.preempted, "preemption": self.sched_cfg.preemption,
            "recent_preemptions": [{"rid": rid, "output_tokens": n} for rid, n in self.recent_preemptions],
            "invalid_slo": self.invalid, "idle_fallbacks": self.idle_fallbacks, "chunk_yields": self.chunk_yields,
            "refused_fallbacks": self.refused_fallbacks, "last_refusal": self.last_refusal,
            "perf_model": self.perf.to_dict(), "fits": self.fits, "fit_median_rel_error": self.fit_error,
            "fit_mean_ratio": self.fit_mean_ratio,
            "samples": self.sample_count, "model_trusted": self.model_trusted(),
            "last_plan_reason": self.recent_plans[-1][1] if self.recent_plans else "",
            "plan_reasons": dict(self.plan_reasons),
            "recent_plans": [dict(zip(("t", "reason", "prefill_reqs", "prefill_tokens", "waiting", "running",
                                       "budget_s", "predicted_s"), p)) for p in self.recent_plans],
            "slo_classes": {k: vars(v) for k, v in self.catalog.classes.items()},
            "cpu_pd_fix": list(APPLIED),
            "handoff_s": self.handoff_s, "transfers": self.transfers, "transfer_s": self.transfer_s,
        }


class timed:
    """Context manager adding its duration to ``state.hook_s_by[name]`` and counting ``name``."""

    __slots__ = ("state", "name", "t0")

    def __init__(self, state: PluginState, name: str):
        self.state, self.name = state, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        st = self.state
        st.hook_s_by[self.name] += time.perf_counter() - self.t0
        st.fired[self.name] += 1
        return False
