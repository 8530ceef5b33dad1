"""Summaries of a load run: per-class attainment and latency percentiles, a table, JSON and a PNG.

Attainment is the project's (core/slo.py): requests that met TTFT and
average TPOT / all requests sent; errors (rejections, 429s, timeouts,
connection failures) are misses. Percentiles are nearest-rank over the
requests that produced the value (TTFT over every request with a first
token, TPOT over the successful ones).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable, Sequence

from ..sim.cli import write_atomic
from ..sim.metrics import percentile
from .client import Outcome

_COLUMNS = ("class", "n", "attained", "per-token", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "errors")


def _error_kind(error: str) -> str:
    return error.split(":")[0].split(" after ")[0] if error else ""


def class_stats(outcomes: Sequence[Outcome]) -> dict:
    """Numbers for one group of requests (one class, or all)."""
    n = len(outcomes)
    ttft = [o.ttft for o in outcomes if o.ttft is not None]
    tpot = [o.tpot for o in outcomes if o.tpot is not None]
    e2e = [o.e2e for o in outcomes if o.e2e is not None]
    errors = [o for o in outcomes if o.error]
    return {
        "n": n, "met": sum(o.met for o in outcomes),
        "attainment": sum(o.met for o in outcomes) / n if n else 0.0,
        "attainment_per_token": sum(o.met_per_token for o in outcomes) / n if n else 0.0,
        "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
        "tpot_p50": percentile(tpot, 50), "tpot_p99": percentile(tpot, 99),
        "e2e_p50": percentile(e2e, 50), "e2e_p99": percentile(e2e, 99),
        "errors": len(errors), "error_kinds": dict(Counter(_error_kind(o.error) for o in errors)),
    }


def summarize(outcomes: Iterable[Outcome], duration: float) -> dict:
    """``{"overall": stats, CLASS: stats, ..., "duration_s", "goodput_rps", "throughput_rps"}``."""
    outs = list(outcomes)
    by_class = {c: [o for o in outs if o.cls == c] for c in sorted({o.cls for o in outs})}
    stats = {"overall": class_stats(outs), **{c: class_stats(v) for c, v in by_class.items()}}
    d = max(duration, 1e-9)
    return {"classes": stats, "duration_s": duration, "goodput_rps": stats["overall"]["met"] / d,
            "throughput_rps": sum(1 for o in outs if not o.error) / d}


def _ms(v: float) -> str:
    return "-" if v != v else (f"{v * 1e3:.0f}ms" if v < 1 else f"{v:.2f}s")


def table(summary: dict) -> str:
    """Markdown table of the per-class numbers."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for cls, s in summary["classes"].items():
        lines.append(f"| {cls} | {s['n']} | {s['attainment']:.3f} | {s['attainment_per_token']:.3f} | "
                     f"{_ms(s['ttft_p50'])} | {_ms(s['ttft_p99'])} | {_ms(s['tpot_p50'])} | {_ms(s['tpot_p99'])} | "
                     f"{s['errors']} |")
    return "\n".join(lines)


def outcome_dict(o: Outcome, t0: float = 0.0) -> dict:
    """One request for the JSON file; ``arrival`` in seconds from ``t0`` (the first arrival)."""
    return {"index": o.index, "cls": o.cls, "arrival": round(o.arrival - t0, 6), "status": o.status,
            "error": o.error, "tokens": o.tokens,
            "ttft": o.ttft, "tpot": o.tpot, "e2e": o.e2e, "send_lag": round(o.send_lag, 6), "met": o.met,
            "met_per_token": o.met_per_token, "token_times": [list(p) for p in o.token_times]}


def write_json(path: str, summary: dict, outcomes: Sequence[Outcome], meta: dict) -> None:
    t0 = min((o.arrival for o in outcomes), default=0.0)
    doc = {"meta": meta, "summary": summary, "requests": [outcome_dict(o, t0) for o in outcomes]}
    write_atomic(path, (json.dumps(json_safe(doc), indent=1, default=str) + "\n").encode())


def json_safe(obj):
    """NaN (a percentile of no values) becomes null, so the file is strict JSON."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_png(path: str, summary: dict, outcomes: Sequence[Outcome], title: str) -> None:
    """Per-class attainment bars and TTFT CDFs."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(summary["classes"])
    ax1.bar(names, [summary["classes"][c]["attainment"] for c in names], color="tab:blue", label="average TPOT")
    ax1.bar(names, [summary["classes"][c]["attainment_per_token"] for c in names], color="tab:orange",
            width=0.4, label="per-token")
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("SLO attainment")
    ax1.legend(loc="lower right", fontsize=8)
    for cls in names[1:]:
        ttft = sorted(o.ttft for o in outcomes if o.cls == cls and o.ttft is not None)
        if ttft:
            ax2.step(ttft, [(i + 1) / len(ttft) for i in range(len(ttft))], where="post", label=cls)
    ax2.set_xlabel("TTFT (s)")
    ax2.set_ylabel("fraction of requests")
    if ax2.lines:
        ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
