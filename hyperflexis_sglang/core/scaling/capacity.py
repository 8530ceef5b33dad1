"""Predicted per-class SLO attainment of a fleet, from per-class load and the performance model.

Steady-state model of an engine under mixed chunked prefill (as the HFX
scheduler runs it), per replica with the load split evenly by the router:

* every iteration pays ``base``; steps are capped at ``tpot_safety`` x the
  tightest TPOT among classes with load (HFX plans at 90% of TPOT), so the
  share of time left for useful work is ``useful = 1 - base / T``;
* per second a replica must do ``R_dec = sum x_k (D_k - 1) c_dec_k`` of
  decode work and ``R_pre = sum x_k c_p_k`` of prefill work
  (``c_p`` = chunk time of the mean prompt, ``c_dec`` = per decoded token
  at the mean context), plus the fleet's queued prefill tokens spread over
  ``drain_s``;
* HFX serves classes in priority order and protects decode, so class k sees
  the utilisation ``rho_k = (R_dec + R_pre(priority >= k) + R_backlog) / useful``;
* TTFT_k = own prefill ``S_k(L)`` of a prompt of ``L`` tokens (its chunks
  get the time decode leaves) plus the wait in the queue the router pools
  over the ``n`` replicas (M/M/n, ``queueing.py``):
  ``P(wait > w) = C(n, rho_k) exp(-n (1 - rho_k) w / S_mean)``; the class's
  attainment averages ``P(wait <= ttft_k - S_k(L))`` over its prompt
  lengths (log-normal from the mean and p90, ``queueing.length_points``);
* KV: the decode batch (Little's law) must fit in the KV pool, else 0.

P/D: prefill replicas serve prompts in 8192-token chunks (no decode share);
decode replicas meet TPOT iff ``R_dec < 1 - base / T``. A class's predicted
attainment is the TTFT probability times the TPOT verdict.

It is a sizing model, not a latency predictor: it ignores per-tick
burstiness and routing imbalance, which callers cover with a utilisation cap
(``rho_max``) and margins. Pure functions; no state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..perf_model import PerfModel
from .queueing import length_points, wait_within
from .types import ClassLoad

CHUNK_TOKENS = 8192  # SGLang's default chunked-prefill size
LARGE_FLEET = 1_000_000  # "infinitely many replicas": what a class can attain at all


@dataclass(frozen=True)
class Prediction:
    attainment: dict  # class -> predicted attainment
    rho: float  # utilisation of the busiest stage (1.0 or more: overloaded)
    reason: str  # the binding constraint, e.g. "ttft standard", "kv", "tpot"


def prefill_s(perf: PerfModel, tokens: float) -> float:
    """Prefill seconds of one prompt of ``tokens`` (its chunks; each further chunk pays an iteration)."""
    p = max(tokens, 1.0)
    return perf.chunk_time(int(p), 0) + (math.ceil(p / CHUNK_TOKENS) - 1) * perf.base


def _work(perf: PerfModel, c: ClassLoad) -> tuple[float, float]:
    """(prefill seconds per request, decode seconds per request after the first token)."""
    p = max(c.mean_input, 1.0)
    d = max(c.mean_output, 1.0)
    prefill = prefill_s(perf, p)
    per_token = perf.per_decode_req + perf.per_kv_token * (p + d / 2.0)
    return prefill, (d - 1.0) * per_token


def _active(classes: Sequence[ClassLoad]) -> list[ClassLoad]:
    return [c for c in classes if c.arrival_rate > 0]


def _ttft_prob(c: ClassLoad, service, mean_service: float, rho: float, n: int) -> float:
    """P(TTFT <= target): the pooled wait (``n`` replicas) within what the own prefill leaves, averaged
    over the class's prompt lengths (``service(tokens)`` = own time to first token)."""
    points = length_points(max(c.mean_input, 1.0), c.p90_input)
    return sum(wait_within(c.ttft_s - service(p), n, rho, mean_service) for p in points) / len(points)


def _step_cap(classes: Sequence[ClassLoad], tpot_safety: float) -> float:
    return tpot_safety * min(c.tpot_s for c in classes)


def predict_collocated(perf: PerfModel, classes: Sequence[ClassLoad], n: int, backlog_tokens: float = 0.0,
                       drain_s: float = 10.0, tpot_safety: float = 0.9) -> Prediction:
    """Predicted attainment of ``n`` collocated replicas (see module doc)."""
    act = _active(classes)
    if not act:
        return Prediction({c.name: 1.0 for c in classes}, 0.0, "no load")
    if n <= 0:
        return Prediction({c.name: 0.0 for c in classes}, math.inf, "no replica")
    useful = 1.0 - perf.base / _step_cap(act, tpot_safety)
    if useful <= 0:
        return Prediction({c.name: 0.0 for c in classes}, math.inf, "tpot below one iteration")
    work = {c.name: _work(perf, c) for c in act}
    r_dec = sum(c.arrival_rate / n * work[c.name][1] for c in act)
    r_back = backlog_tokens * perf.per_prefill_token / n / drain_s
    prefill_share = max(useful - r_dec, 0.05)
    out, worst, why = {}, 0.0, "ok"
    for c in classes:
        if c.arrival_rate <= 0:
            out[c.name] = 1.0
            continue
        ahead = [a for a in act if _prio(a) >= _prio(c)]
        rate_ahead = sum(a.arrival_rate for a in ahead)
        r_pre = sum(a.arrival_rate / n * work[a.name][0] for a in ahead)
        rho = (r_dec + r_pre + r_back) / useful
        mean_s = sum(a.arrival_rate * work[a.name][0] for a in ahead) / rate_ahead / prefill_share
        out[c.name] = _ttft_prob(c, lambda p: perf.base + prefill_s(perf, p) / prefill_share, mean_s, rho, n)
        if rho > worst:
            worst, why = rho, f"ttft {c.name}"
    step_s = perf.base / max(1.0 - r_dec - _pre_all(act, work, n), 1e-9)
    if not _kv_fits(perf, act, n, step_s):
        return Prediction({c.name: 0.0 for c in classes}, max(worst, 1.0), "kv")
    return Prediction(out, worst, why)


def _pre_all(act, work, n) -> float:
    return sum(c.arrival_rate / n * work[c.name][0] for c in act)


def _kv_fits(perf: PerfModel, act: Sequence[ClassLoad], n: int, step_s: float) -> bool:
    """Little's law: requests in decode x their mean context must fit in 90% of the KV pool."""
    tokens = sum(c.arrival_rate / n * max(c.mean_output - 1, 0) * step_s * (c.mean_input + c.mean_output / 2)
                 for c in act)
    return tokens <= 0.9 * perf.kv_capacity_tokens


def predict_pd(perf: PerfModel, classes: Sequence[ClassLoad], n_prefill: int, n_decode: int,
               backlog_tokens: float = 0.0, drain_s: float = 10.0, tpot_safety: float = 0.9) -> Prediction:
    """Predicted attainment of a P/D fleet (see module doc)."""
    act = _active(classes)
    if not act:
        return Prediction({c.name: 1.0 for c in classes}, 0.0, "no load")
    if n_prefill <= 0 or n_decode <= 0:
        return Prediction({c.name: 0.0 for c in classes}, math.inf, "no prefill or no decode replica")
    work = {c.name: _work(perf, c) for c in act}
    pre = {c.name: work[c.name][0] + perf.base for c in act}  # prefill-only iterations
    r_back = backlog_tokens * perf.per_prefill_token / n_prefill / drain_s
    useful_d = 1.0 - perf.base / _step_cap(act, tpot_safety)
    r_dec = sum(c.arrival_rate / n_decode * work[c.name][1] for c in act)
    rho_d = r_dec / useful_d if useful_d > 0 else math.inf
    decode_ok = rho_d < 1.0 and _kv_fits(perf, act, n_decode, perf.base / max(1.0 - r_dec, 1e-9))
    out, worst, why = {}, rho_d, "tpot (decode)"
    for c in classes:
        if c.arrival_rate <= 0:
            out[c.name] = 1.0
            continue
        ahead = [a for a in act if _prio(a) >= _prio(c)]
        rho = sum(a.arrival_rate / n_prefill * pre[a.name] for a in ahead) + r_back
        mean_s = sum(a.arrival_rate * pre[a.name] for a in ahead) / sum(a.arrival_rate for a in ahead)
        own = _ttft_prob(c, lambda p: perf.base + prefill_s(perf, p), mean_s, rho, n_prefill)
        out[c.name] = own if decode_ok else 0.0
        if rho > worst:
            worst, why = rho, f"ttft {c.name} (prefill)"
    return Prediction(out, worst, why)


def _prio(c: ClassLoad) -> float:
    """Service order under HFX: tighter TTFT first (the class priority follows it in the defaults)."""
    return -c.ttft_s


def replica_rate_limit(perf: PerfModel, classes: Sequence[ClassLoad], tpot_safety: float = 0.9) -> float:
    """Requests/s one collocated replica sustains at the tightest TPOT (utilisation 1): the
    throughput-at-SLO figure a profile-based planner divides the predicted load by."""
    act = _active(classes)
    if not act:
        return math.inf
    useful = 1.0 - perf.base / _step_cap(act, tpot_safety)
    total = sum(c.arrival_rate for c in act)
    per_req = sum(c.arrival_rate / total * sum(_work(perf, c)) for c in act)
    return max(useful, 0.0) / per_req


def stage_rate_limits(perf: PerfModel, classes: Sequence[ClassLoad], tpot_safety: float = 0.9) -> tuple[float, float]:
    """(requests/s per prefill replica, requests/s per decode replica) at utilisation 1."""
    act = _active(classes)
    if not act:
        return math.inf, math.inf
    total = sum(c.arrival_rate for c in act)
    pre = sum(c.arrival_rate / total * (_work(perf, c)[0] + perf.base) for c in act)
    dec = sum(c.arrival_rate / total * _work(perf, c)[1] for c in act)
    useful_d = max(1.0 - perf.base / _step_cap(act, tpot_safety), 0.0)
    return 1.0 / pre, (useful_d / dec if dec > 0 else math.inf)


def achievable(perf: PerfModel, classes: Sequence[ClassLoad], disaggregated: bool = False) -> dict:
    """Per class, the attainment an unbounded fleet would reach (a class whose mean prompt cannot
    prefill within its TTFT cannot be rescued by more replicas)."""
    if disaggregated:
        return predict_pd(perf, classes, LARGE_FLEET, LARGE_FLEET).attainment
    return predict_collocated(perf, classes, LARGE_FLEET).attainment
