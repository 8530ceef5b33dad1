"""SLO attainment on Mooncake with a host-memory KV tier (SGLang's hierarchical cache).

``sim_prefix_reuse.md`` shows that Mooncake's prefix reuse is capacity-bound:
four replicas' GPU KV pools keep 6.5% of its prefix blocks. SGLang extends the
GPU prefix cache into host memory with ``--enable-hierarchical-cache`` (host
pool ``--hicache-ratio`` x the GPU pool, 2.0 by default once enabled; a hit in
host memory is loaded back over PCIe instead of prefilled again). This runs
the Mooncake setups of ``attainment.py`` (first 3000 requests, seed 0,
Llama-3-8B on H100, collocated x4 and P/D 2:2) for each policy with the tier
off (SGLang's default, as in ``sim_attainment.md``) and at ratios 2 and 4,
every policy on the same deployment, and reports attainment, the share of
prompt tokens served from the cache, and the issue-2 targets per ratio; a
last row runs hfx at the largest ratio with an unlimited host link, to show
what the tier could give if loading took no time.
The Azure trace carries no prefix blocks, so the tier changes nothing there.

    python bench/sim/hicache.py [--traces-dir ../shared/traces] [--limit 3000] [--ratios 0,2,4]

Writes ``bench/results/sim_hicache.{md,json}`` and one PNG per deployment.
The model charges the whole host-to-GPU load (25 GB/s) before the iteration
that uses it; SGLang overlaps it layer by layer, so the tier's gain is if
anything understated.
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

from attainment import SETUPS, check  # noqa: E402

from hyperflexis_sglang.core.perf_model import preset  # noqa: E402
from hyperflexis_sglang.sim.cli import plot, write_atomic  # noqa: E402
from hyperflexis_sglang.sim.cluster import ClusterConfig  # noqa: E402
from hyperflexis_sglang.sim.runner import simulate  # noqa: E402
from hyperflexis_sglang.sim.workload import build, load_trace  # noqa: E402

TRACE = "mooncake_conversation.jsonl"
UNLIMITED_GBPS = 1e9  # a host link so fast that loads take no time
VARIANTS = [("sglang-fcfs", "sglang-fcfs", "round_robin"), ("sglang-priority", "sglang-priority", "round_robin"),
            ("edf", "edf", "round_robin"), ("hfx", "hfx", "hfx")]


def hit_share(r: dict) -> float:
    h = r["prefix_hit_tokens"]
    return (h["gpu"] + h["host"]) / h["of_prompt_tokens"] if h["of_prompt_tokens"] else 0.0


def _cells(results: list, scales: list[float]) -> str:
    """One table row's cells: overall attainment (share of prompt tokens from the prefix cache) per rate."""
    row = {r["rate_scale"]: r for r in results}
    return " | ".join(f"{row[s]['slo_attainment']['overall']:.3f} ({hit_share(row[s]):.2f})" for s in scales)


def run_setup(rows, setup: dict, ratios: list[float], perf) -> tuple[dict, list]:
    """Every policy at every tier size; then hfx at the largest size with an unlimited host link (what the
    tier could give if loading were free)."""
    def runs(variants, ratio: float, gbps: float) -> list:
        results = []
        for label, policy, router in variants:
            cfg = ClusterConfig(policy=policy, router=router, replicas=setup.get("replicas", 4), pd=setup.get("pd"),
                                hicache_ratio=ratio, hicache_gbps=gbps)
            for s in setup["scales"]:
                r = simulate(build(rows, seed=0, rate_scale=s), cfg, perf)
                r["rate_scale"], r["policy"], r["hicache_ratio"], r["hicache_gbps"] = s, label, ratio, gbps
                results.append(r)
        return results
    out = {}
    for ratio in ratios:
        results = runs(VARIANTS, ratio, ClusterConfig.hicache_gbps)
        out[ratio] = {"results": results, "checks": check(results)}
    ideal = runs([v for v in VARIANTS if v[0] == "hfx"], max(ratios), UNLIMITED_GBPS) if max(ratios) else []
    return out, ideal


def report(deploy: str, by_ratio: dict, ideal: list, scales: list[float]) -> str:
    lines = [f"## {TRACE}, {deploy}", "", "Overall attainment (prompt tokens served from the prefix cache) per rate:",
             "", "| policy | host tier | " + " | ".join(f"x{s:g}" for s in scales) + " |",
             "|---|---|" + "---|" * len(scales)]
    for label, _, _ in VARIANTS:
        for ratio, res in by_ratio.items():
            mine = [r for r in res["results"] if r["policy"] == label]
            lines.append(f"| {label} | {_tier(ratio)} | {_cells(mine, scales)} |")
    if ideal:
        lines.append(f"| hfx | {_tier(ideal[0]['hicache_ratio'])}, unlimited host link | {_cells(ideal, scales)} |")
    lines += ["", "| host tier | sglang-fcfs 50% load | hfx there | interactive there (fcfs / hfx) | "
              "load held at 90%: best baseline / hfx | targets met |", "|---|---|---|---|---|---|"]
    for ratio, res in by_ratio.items():
        v = res["checks"]
        x50 = v["fcfs_50pct_load"]
        near = min((r for r in res["results"]), key=lambda r: abs(r["rate_scale"] - x50))["rate_scale"]
        inter = {r["policy"]: r["slo_attainment"].get("interactive", 0.0) for r in res["results"]
                 if r["rate_scale"] == near}
        sus = v["sustained_load_at_90pct"]
        best = max(x for p, x in sus.items() if p in ("sglang-fcfs", "sglang-priority", "edf"))
        met = ", ".join(k for k, ok in v["targets_met"].items() if ok) or "none"
        lines.append(f"| {_tier(ratio)} | x{x50:.2f} | {(v['hfx_attainment_at_fcfs_50pct'] or 0):.3f} | "
                     f"{inter['sglang-fcfs']:.3f} / {inter['hfx']:.3f} (at x{near:g}) | "
                     f"x{best:.2f} / x{sus['hfx']:.2f} | {met} |")
    return "\n".join(lines)


def _tier(ratio: float) -> str:
    return "off" if not ratio else f"{ratio:g}x GPU pool"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--limit", type=int, default=3000, help="first N requests of the trace")
    ap.add_argument("--ratios", default="0,2,4", help="host tier sizes, x the GPU KV pool (0: off)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    ratios = [float(x) for x in args.ratios.split(",")]
    perf = preset("llama-3-8b", "h100", 1)
    rows = load_trace(Path(args.traces_dir) / TRACE, args.limit)
    out_dir = Path(args.out)
    t0 = time.perf_counter()
    sections, everything = [], {}
    for (trace, deploy), setup in SETUPS.items():
        if trace != TRACE:
            continue
        by_ratio, ideal = run_setup(rows, setup, ratios, perf)
        plot([dict(r, policy=f"{r['policy']} ({_tier(ratio)})") for ratio, res in by_ratio.items()
              for r in res["results"] if r["policy"] in ("sglang-fcfs", "hfx")],
             str(out_dir / f"sim_hicache_{deploy}.png"), f"Mooncake {deploy}: host KV tier")
        everything[deploy] = {**{str(k): v for k, v in by_ratio.items()}, "hfx_unlimited_host_link": ideal}
        sections.append(report(deploy, by_ratio, ideal, setup["scales"]) + f"\n\n![attainment](sim_hicache_{deploy}.png)\n")
        print(sections[-1], flush=True)
    head = (f"# SLO attainment with a host-memory KV tier (SGLang HiCache)\n\nProduced by `python bench/sim/hicache.py"
            f" --limit {args.limit} --ratios {args.ratios}` ({time.perf_counter() - t0:.0f} s on a 2-core machine; "
            "the results are deterministic). Mooncake conversation trace, first "
            f"{len(rows)} requests, Llama-3-8B on H100 preset, SLO mix interactive:0.2, standard:0.5, batch:0.3 "
            "(seed 0); baselines route round robin, `hfx` uses the HFX router. `host tier` is SGLang's "
            "`--enable-hierarchical-cache --hicache-ratio R` (write-through; host-to-GPU loads at 25 GB/s, charged "
            "in full before the iteration). Every policy runs on the same deployment at each tier size.\n\n")
    write_atomic(str(out_dir / "sim_hicache.md"), (head + "\n".join(sections)).encode())
    write_atomic(str(out_dir / "sim_hicache.json"), (json.dumps(everything, indent=1, default=str) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
