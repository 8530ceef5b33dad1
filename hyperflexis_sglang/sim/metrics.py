"""Run summaries: the project's attainment definition, latency percentiles, cost.

Attainment (see ``core/slo.py``): requests that met TTFT and average TPOT /
all requests that arrived; rejected and unfinished requests are misses.
The per-token-deadline variant is ``slo_attainment_per_token``.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from ..core.slo import avg_tpot, meets_slo
from .engine import SimRequest


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def summarize(requests: Iterable[SimRequest], gpu_seconds: float, extra: dict | None = None) -> dict:
    reqs = list(requests)
    classes = sorted({r.slo.cls for r in reqs})
    met = {c: 0 for c in classes}
    met_tok = {c: 0 for c in classes}
    total = {c: 0 for c in classes}
    ttft, tpot, e2e = [], [], []
    rejected = demoted = unfinished = retracted = 0
    first = min((r.arrival for r in reqs), default=0.0)
    last = first
    for r in reqs:
        total[r.slo.cls] += 1
        rejected += r.rejected
        demoted += r.demoted
        retracted += r.retractions > 0
        if r.first_token_time is not None:
            ttft.append(r.first_token_time - r.arrival)
        if r.finish_time is None:
            unfinished += not r.rejected
            continue
        last = max(last, r.finish_time)
        e2e.append(r.finish_time - r.arrival)
        if r.max_new_tokens > 1:
            tpot.append(avg_tpot(r.first_token_time, r.finish_time, r.output_len))
        if meets_slo(r.slo, r.arrival, r.first_token_time, r.finish_time, r.output_len):
            met[r.slo.cls] += 1
            if r.late_max <= 1e-6:
                met_tok[r.slo.cls] += 1
    n = len(reqs)
    duration = max(last - first, 1e-9)
    out = {
        "requests": n,
        "slo_attainment": {"overall": _ratio(sum(met.values()), n), **{c: _ratio(met[c], total[c]) for c in classes}},
        "slo_attainment_per_token": {"overall": _ratio(sum(met_tok.values()), n),
                                     **{c: _ratio(met_tok[c], total[c]) for c in classes}},
        "goodput_rps": sum(met.values()) / duration,
        "throughput_rps": len(e2e) / duration,
        "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
        "tpot_p50": percentile(tpot, 50), "tpot_p99": percentile(tpot, 99),
        "e2e_p50": percentile(e2e, 50), "e2e_p99": percentile(e2e, 99),
        "rejected": rejected, "demoted": demoted, "unfinished": unfinished, "retracted": retracted,
        "duration_s": duration,
        "gpu_seconds": gpu_seconds,
    }
    if extra:
        out.update(extra)
    return out
