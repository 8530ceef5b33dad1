"""What HFX routing gains from knowing each worker's tightest TPOT, and whether the live router's view suffices.

HFX routing packs requests with a tight TPOT target onto few instances and
keeps loose requests off them (``core/routing/policies.py``); it reads each
instance's ``min_running_tpot_s``. The simulator knows every replica's
running batch. The HTTP router cannot: SGLang does not report its requests'
SLOs, so the router counts the TPOT targets of its own requests on each
worker until their answer ends: a streamed request from its first chunk (its
first token: it is decoding), a non-streamed one from the moment it is sent
(it may still be queued). This runs HFX (scheduler and router) on the
collocated setups of ``attainment.py`` (first 3000 requests, seed 0,
Llama-3-8B on H100, 4 replicas) with the router seeing (a) the running
batch, as every other simulation does, (b) every request past its first
token, as the HTTP router sees streams, (c) every request from routing on,
as it sees non-streamed requests, and (d) nothing, as the HTTP router did
before it counted them. P/D is left out: packing applies to collocated
instances only (a prefill server runs no decode batch).

    python bench/sim/router_view.py [--traces-dir ../shared/traces] [--limit 3000]

Writes ``bench/results/sim_router_view.{md,json}`` and one PNG per trace. Deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attainment import SETUPS, load_at  # noqa: E402

from hyperflexis_sglang.core.perf_model import preset  # noqa: E402
from hyperflexis_sglang.sim.cli import plot, write_atomic  # noqa: E402
from hyperflexis_sglang.sim.cluster import ClusterConfig  # noqa: E402
from hyperflexis_sglang.sim.runner import simulate  # noqa: E402
from hyperflexis_sglang.sim.workload import build, load_trace  # noqa: E402

VIEWS = {"running": "running batch (simulator)", "streamed": "streams past their first token (HTTP router)",
         "inflight": "requests in flight (HTTP router, non-streamed)", "none": "none (HTTP router before)"}


def run_trace(rows, setup: dict, perf) -> list[dict]:
    results = []
    for view in VIEWS:
        cfg = ClusterConfig(policy="hfx", router="hfx", replicas=setup["replicas"], router_view=view)
        for s in setup["scales"]:
            r = simulate(build(rows, seed=0, rate_scale=s), cfg, perf)
            r["rate_scale"], r["policy"] = s, f"hfx, TPOT view: {view}"
            r["router_view"] = view
            results.append(r)
    return results


def report(trace: str, results: list[dict], scales: list[float]) -> tuple[str, dict]:
    att = {(r["router_view"], r["rate_scale"]): r["slo_attainment"] for r in results}
    md = [f"## {trace} (collocated x4)\n",
          "| rate | " + " | ".join(f"{v}: overall | {v}: interactive" for v in VIEWS) + " |",
          "|---|" + "---|---|" * len(VIEWS)]
    for s in scales:
        md.append(f"| {s:g} | " + " | ".join(f"{att[v, s]['overall']:.3f} | {att[v, s]['interactive']:.3f}"
                                            for v in VIEWS) + " |")
    sustained = {v: load_at([(s, att[v, s]["overall"]) for s in scales], 0.9) for v in VIEWS}
    md.append("")
    md.append("Load sustained at 90% attainment: " + ", ".join(f"{v} x{x:.2f}" for v, x in sustained.items())
              + ".")
    summary = {"sustained_90": sustained}
    parts = []
    for a, b in (("streamed", "running"), ("inflight", "running"), ("streamed", "none"), ("inflight", "none")):
        d = [att[a, s]["overall"] - att[b, s]["overall"] for s in scales]
        summary[f"{a}_minus_{b}"] = {"min": min(d), "max": max(d)}
        parts.append(f"{a} - {b} {min(d):+.3f} to {max(d):+.3f}")
    md.append("Overall attainment differences over the loads above: " + "; ".join(parts) + ".")
    return "\n".join(md) + "\n", summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--limit", type=int, default=3000, help="first N requests of each trace")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    if args.limit < 1:
        ap.error("--limit must be >= 1")
    perf = preset("llama-3-8b", "h100", 1)
    out_dir = Path(args.out)
    t0 = time.perf_counter()
    sections, everything = [], {}
    for (trace, deploy), setup in SETUPS.items():
        if deploy != "collocated":
            continue
        rows = load_trace(Path(args.traces_dir) / trace, args.limit)
        results = run_trace(rows, setup, perf)
        text, summary = report(trace, results, setup["scales"])
        png = f"sim_router_view_{Path(trace).stem}.png"
        plot([dict(r, policy=f"hfx, {VIEWS[r['router_view']]}") for r in results], str(out_dir / png),
             f"{trace}: the router's view of TPOT targets")
        sections.append(text + f"\n![attainment]({png})\n")
        everything[trace] = {"results": results, **summary}
        print(text, flush=True)
    head = ("# HFX routing: the router's view of each instance's tightest TPOT\n\n"
            f"Produced by `python bench/sim/router_view.py --limit {args.limit}` ({time.perf_counter() - t0:.0f} s "
            "on a 2-core machine; the results are deterministic). HFX scheduler and router, collocated x4, "
            "Llama-3-8B on H100 preset, SLO mix interactive:0.2, standard:0.5, batch:0.3 (seed 0). The router sees "
            "each instance's tightest TPOT target among: " + "; ".join(f"`{k}`: {v}" for k, v in VIEWS.items())
            + ". The last is what the HTTP router saw before it counted its requests.\n\n")
    write_atomic(str(out_dir / "sim_router_view.md"),
                 (head + "\n".join(sections)).encode())
    write_atomic(str(out_dir / "sim_router_view.json"),
                 (json.dumps(everything, indent=1, default=str) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
