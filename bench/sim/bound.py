"""How much SLO attainment any scheduler could reach: upper bounds beside the simulated policies.

For each setup of ``bench/sim/attainment.py`` this computes, from the same
workloads and performance model (``hyperflexis_sglang/sim/bounds.py`` says
why each is a bound):

* utilisation: the requests' least work over the deployment's capacity;
* the steady-state bound: the most attainment any scheduler can hold if the
  load lasts (the trace standing for a stationary stream);
* the finite-run bound: the most any scheduler can reach on the finite run
  as simulated, where replicas may drain after the last arrival;

and puts them beside the measured curves in ``sim_attainment.json`` (run
that first). It then answers issue 2's targets against the bound: the
highest load at which *any* scheduler can hold 90% in steady state, as a
multiple of sglang-fcfs's sustained load, and the bound at fcfs's 50% load.

    python bench/sim/bound.py [--traces-dir ../shared/traces] [--results bench/results/sim_attainment.json]

Writes ``bench/results/sim_bound.{md,json,png}``.
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

from attainment import BASELINES, SETUPS, attainment_at  # noqa: E402

from hyperflexis_sglang.core.perf_model import preset  # noqa: E402
from hyperflexis_sglang.sim.bounds import finite_run_bound, steady_state_bound  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402
from hyperflexis_sglang.sim.workload import build, load_trace  # noqa: E402

LEVEL = 0.9


def highest_load(bound_at, lo: float, hi: float, level: float = LEVEL, rel_tol: float = 0.002) -> float | None:
    """Largest rate scale in [lo, hi] whose bound is >= ``level`` (the bound never rises with load);
    None if even ``lo`` is below it, ``hi`` if ``hi`` still reaches it."""
    if bound_at(lo) < level:
        return None
    if bound_at(hi) >= level:
        return hi
    while hi - lo > rel_tol * lo:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if bound_at(mid) >= level else (lo, mid)
    return lo


def analyse(rows, setup: dict, measured: dict, perf) -> dict:
    replicas, pd = setup.get("replicas", 4), setup.get("pd")
    cache: dict = {}

    def steady(scale: float) -> dict:
        if scale not in cache:
            cache[scale] = steady_state_bound(build(rows, seed=0, rate_scale=scale), perf, replicas, pd)
        return cache[scale]

    curves: dict = {}
    for r in measured["results"]:
        curves.setdefault(r["policy"], []).append((r["rate_scale"], r["slo_attainment"]["overall"]))
    grid = []
    for scale in setup["scales"]:
        wl = build(rows, seed=0, rate_scale=scale)
        st = steady(scale)
        grid.append({"rate_scale": scale, "utilisation": st["utilisation"], "steady_state_bound": st["bound"],
                     "finite_run_bound": finite_run_bound(wl, perf, replicas, pd),
                     **{p: attainment_at(c, scale) for p, c in curves.items()}})
    checks = measured["checks"]
    sus = checks["sustained_load_at_90pct"]
    fcfs_sus, x50, hfx_sus = sus["sglang-fcfs"], checks["fcfs_50pct_load"], sus["hfx"]
    best = max(sus[p] for p in BASELINES)
    top = highest_load(lambda s: steady(s)["bound"], min(setup["scales"]) / 8, max(setup["scales"]) * 4)
    key = {}
    for label, scale in (("fcfs sustained", fcfs_sus), ("hfx sustained", hfx_sus), ("2x fcfs sustained", 2 * fcfs_sus),
                         ("1.3x best baseline sustained", 1.3 * best), ("fcfs 50% load", x50)):
        if scale:
            key[label] = {"rate_scale": scale, **steady(scale)}
    return {
        "grid": grid, "key_loads": key,
        "highest_load_any_scheduler_holds_90pct": top,
        "vs_fcfs_sustained": top / fcfs_sus if top and fcfs_sus else None,
        "hfx_sustained_share_of_it": hfx_sus / top if top and hfx_sus else None,
        "hfx_at_fcfs_50pct": checks.get("hfx_attainment_at_fcfs_50pct"),
    }


def _md(name: str, deployment: str, a: dict) -> str:
    pols = [k for k in a["grid"][0] if k not in ("rate_scale", "utilisation", "steady_state_bound", "finite_run_bound")]
    head = ["rate", "utilisation", "steady-state bound", "finite-run bound", *pols]
    lines = [f"## {name} ({deployment})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in a["grid"]:
        lines.append(f"| {g['rate_scale']:g} | {g['utilisation']:.2f} | {g['steady_state_bound']:.3f} | "
                     f"{g['finite_run_bound']:.3f} | " + " | ".join(f"{g[p]:.3f}" for p in pols) + " |")
    lines.append("")
    top = a["highest_load_any_scheduler_holds_90pct"]
    if top is None:
        lines.append("- no load lets any scheduler hold 90% (the bound is below 0.9 even at the lightest load)")
    else:
        vs = (f" = {a['vs_fcfs_sustained']:.2f}x sglang-fcfs's sustained load" if a["vs_fcfs_sustained"]
              else " (sglang-fcfs never holds 90%)")
        share = (f"; hfx sustains {a['hfx_sustained_share_of_it']:.0%} of it" if a["hfx_sustained_share_of_it"]
                 else "; hfx never holds 90%")
        lines.append(f"- highest load at which any scheduler can hold 90% in steady state: x{top:.2f}{vs}{share}")
    for label, k in a["key_loads"].items():
        lines.append(f"- at {label} (x{k['rate_scale']:.2f}): utilisation {k['utilisation']:.2f}, "
                     f"steady-state bound {k['bound']:.3f}")
    return "\n".join(lines) + "\n"


def _plot(analyses: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(analyses), figsize=(5 * len(analyses), 4), squeeze=False)
    for ax, (name, a) in zip(axes[0], analyses.items()):
        xs = [g["rate_scale"] for g in a["grid"]]
        ax.plot(xs, [g["steady_state_bound"] for g in a["grid"]], "k--", label="steady-state bound")
        ax.plot(xs, [g["finite_run_bound"] for g in a["grid"]], "k:", label="finite-run bound")
        for p in ("sglang-fcfs", "hfx"):
            ax.plot(xs, [g[p] for g in a["grid"]], marker="o", label=p)
        ax.axhline(LEVEL, color="grey", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("rate scale")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("SLO attainment")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "sim_attainment.json"),
                    help="output of bench/sim/attainment.py")
    ap.add_argument("--limit", type=int, default=3000, help="first N requests of each trace (as attainment.py)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    try:
        measured = json.loads(Path(args.results).read_text())
    except (OSError, ValueError) as e:
        print(f"error: --results {args.results}: {e} (run bench/sim/attainment.py first)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    perf = preset("llama-3-8b", "h100", 1)
    analyses, report = {}, []
    for (trace, deploy), setup in SETUPS.items():
        name = f"{Path(trace).stem}_{deploy}"
        if name not in measured:
            print(f"error: --results {args.results} has no setup {name!r}", file=sys.stderr)
            return 2
        rows = load_trace(Path(args.traces_dir) / trace, args.limit)
        analyses[name] = analyse(rows, setup, measured[name], perf)
        report.append(_md(f"{trace}, {deploy}", measured[name]["results"][0]["deployment"], analyses[name]))
        print(report[-1], flush=True)
    out = Path(args.out)
    head = ("# Upper bounds on SLO attainment beside the simulated policies\n\n"
            f"Produced by `python bench/sim/bound.py` ({time.perf_counter() - t0:.0f} s) from the workloads of "
            "`bench/sim/attainment.py` (first 3000 requests, seed 0, Llama-3-8B on H100 preset) and its measured "
            "curves (`sim_attainment.json`). Each bound holds for every scheduler in the simulator's model "
            "(`hyperflexis_sglang/sim/bounds.py`): the steady-state bound if the load lasts, the finite-run "
            "bound for the run as simulated (replicas may drain after the trace ends). Both assume an "
            "unbounded prefix cache, so on Mooncake, where KV capacity is the limit, they are loose.\n\n")
    write_atomic(str(out / "sim_bound.md"), (head + "\n".join(report)).encode())
    write_atomic(str(out / "sim_bound.json"), (json.dumps(analyses, indent=1) + "\n").encode())
    _plot(analyses, out / "sim_bound.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
