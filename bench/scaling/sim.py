"""Autoscaling in simulation: attainment, GPU-seconds and scale events per autoscaler, on rate bursts.

For each scenario (Azure conversation 2023, Mooncake conversation, and a
held-out variant of each) the trace is rate-scaled and given a burst
(``sim/workload.py: burst``: the rate ramps up to FACTOR x, holds, ramps
down). Every run uses the HFX scheduler and router on Llama-3-8B/H100
replicas (TP 1); only the autoscaler differs:

* static N: a fixed fleet of N replicas, N swept. *Static peak* = the
  smallest N that reaches (within 0.002) the best attainment of the sweep,
  i.e. the fleet provisioned for the burst;
* hfx: the HFX autoscaler (``core/scaling/hfx.py``), D2D weight loading from
  a ready peer; ``hfx-disk`` loads from disk instead (slower cold start);
* queue: Kubernetes-HPA-style on waiting requests per instance (target 4;
  ``queue-t2``/``queue-t8``: targets 2 and 8);
* planner: Dynamo-SLA-planner-style, predicted rate / per-replica rate at
  SLO, its default 180 s interval; ``planner-60s``/``planner-30s`` faster
  variants with a linear-trend predictor.

Fairness: besides the literal check (HFX more attainment at no more
GPU-seconds than each baseline at its default knob), each baseline's knob
sweep forms a cost-attainment curve and HFX must lie above it at HFX's own
GPU-seconds (``at_cost``); the static sweep is such a curve too. The
held-out scenarios (Azure: SLO seed 1, burst at 650 s; Mooncake: rows
6000-12000, SLO seed 1, burst at 1500 s) were not used while choosing the
HFX defaults; they run the static sweep, hfx, queue and planner-30s.

Autoscaled fleets start at ``start`` replicas and may grow to the largest
static N. Cost = GPU-seconds (starting replicas count). Writes
``bench/results/scaling_sim.{md,json,png}`` and checks the targets:
hfx >= static peak's attainment with <= 60% of its GPU-seconds, and hfx
above queue and planner on attainment at equal or lower GPU-seconds.

    python bench/scaling/sim.py [--quick] [--jobs 2] [--traces-dir ../shared/traces]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.core.perf_model import preset  # noqa: E402
from hyperflexis_sglang.sim.autoscale import AutoscaleConfig  # noqa: E402
from hyperflexis_sglang.sim.cli import dump, write_atomic  # noqa: E402
from hyperflexis_sglang.sim.cluster import ClusterConfig  # noqa: E402
from hyperflexis_sglang.sim.runner import simulate  # noqa: E402
from hyperflexis_sglang.sim.workload import build, burst, load_trace  # noqa: E402

# Per scenario: trace file, rate scale (base load), rows used (skip, limit), burst (start s, hold s, factor, ramp s),
# SLO-assignment seed, static sweep, initial fleet, autoscaler labels. The "held-out" scenarios were never used
# while choosing the HFX defaults: another SLO seed and another burst position (Azure), another slice (Mooncake).
SCENARIOS = {
    "azure": dict(trace="azure_conv_2023.csv", rate_scale=2.0, skip=0, limit=None, burst=(300.0, 120.0, 4.0, 90.0),
                  seed=0, static=[3, 4, 5, 6], start=2, labels="main"),
    "mooncake": dict(trace="mooncake_conversation.jsonl", rate_scale=0.5, skip=0, limit=6000,
                     burst=(600.0, 120.0, 3.5, 90.0), seed=0, static=[5, 6, 8, 10, 12], start=3, labels="main"),
    "azure-heldout": dict(trace="azure_conv_2023.csv", rate_scale=2.0, skip=0, limit=None,
                          burst=(650.0, 120.0, 4.0, 90.0), seed=1, static=[3, 4, 5, 6], start=2, labels="heldout"),
    "mooncake-heldout": dict(trace="mooncake_conversation.jsonl", rate_scale=0.5, skip=6000, limit=6000,
                             burst=(1500.0, 120.0, 3.5, 90.0), seed=1, static=[5, 6, 8, 10, 12], start=3,
                             labels="heldout"),
}
# label -> (scaler, options, weight source)
AUTOSCALERS = {
    "hfx": ("hfx", (), "peer"),
    "hfx-disk": ("hfx", (), "disk"),
    "queue": ("queue", (("target_waiting", 4.0),), "peer"),
    "queue-t2": ("queue", (("target_waiting", 2.0),), "peer"),
    "queue-t8": ("queue", (("target_waiting", 8.0),), "peer"),
    "planner": ("planner", (("interval_s", 180.0),), "peer"),
    "planner-60s": ("planner", (("interval_s", 60.0), ("predictor", "linear")), "peer"),
    "planner-30s": ("planner", (("interval_s", 30.0), ("predictor", "linear")), "peer"),
}
LABELS = {"main": tuple(AUTOSCALERS), "heldout": ("hfx", "queue", "planner-30s")}
BASELINES = ("queue", "planner", "planner-30s")
# Each baseline's knob sweep: its cost-attainment curve (HFX must lie above it at HFX's cost).
FAMILIES = {"queue (HPA target 2/4/8)": ("queue-t2", "queue", "queue-t8"),
            "planner (180 s / 60 s / 30 s)": ("planner", "planner-60s", "planner-30s")}


def run_one(job: tuple) -> dict:
    trace_path, scen, label, n = job
    perf = preset("llama-3-8b", "h100", 1)
    wl = burst(build(_rows(trace_path, scen), seed=scen["seed"], rate_scale=scen["rate_scale"]), *scen["burst"][:2],
               scen["burst"][2], scen["burst"][3])
    if label.startswith("static"):
        cfg = ClusterConfig(policy="hfx", router="hfx", replicas=n)
    else:
        scaler, opts, source = AUTOSCALERS[label]
        auto = AutoscaleConfig(scaler=scaler, options=opts, weight_source=source, min_replicas=1,
                               max_replicas=max(scen["static"]))
        cfg = ClusterConfig(policy="hfx", router="hfx", replicas=n, autoscale=auto)
    t0 = time.perf_counter()
    r = simulate(wl, cfg, perf, window=burst_window(scen))
    r.update(label=label, trace=scen["name"], wall_s=time.perf_counter() - t0,
             arrivals_per_10s=_rate_series(wl.arrivals))
    if "replica_timeline" not in r:
        r["replica_timeline"] = [[wl.arrivals[0], n, n], [r["duration_s"] + wl.arrivals[0], n, n]]
        r["scale_events"], r["peak_replicas"] = {"add": 0, "remove": 0, "switch_role": 0, "refused": 0}, n
    return r


def burst_window(scen: dict) -> tuple[float, float]:
    """Arrival times reported as "burst": the ramps and the hold, plus a minute after (queues drain)."""
    start, hold, _, ramp = scen["burst"]
    return start, start + 2 * ramp + hold + 60.0


def _rows(trace_path: str, scen: dict) -> list:
    """The scenario's rows: ``limit`` rows after ``skip``, re-timed to start at 0."""
    limit = None if scen["limit"] is None else scen["skip"] + scen["limit"]
    rows = load_trace(trace_path, limit)[scen["skip"]:]
    t0 = rows[0].t if rows else 0.0
    return [replace(r, t=r.t - t0) for r in rows]


def _rate_series(arrivals) -> list:
    counts: dict[int, int] = {}
    for t in arrivals:
        counts[int(t // 10)] = counts.get(int(t // 10), 0) + 1
    return [[k * 10, counts.get(k, 0) / 10] for k in range(max(counts) + 1)] if counts else []


def static_peak(results: list[dict]) -> dict:
    static = sorted((r for r in results if r["label"].startswith("static")), key=lambda r: r["peak_replicas"])
    best = max(r["slo_attainment"]["overall"] for r in static)
    return next(r for r in static if r["slo_attainment"]["overall"] >= best - 0.002)


def at_cost(points: list[tuple[float, float]], cost: float) -> float:
    """Attainment of a (cost, attainment) curve at ``cost``: linear between its frontier points (a point
    is raised to the best attainment of any cheaper point); below the cheapest point the cheapest point's
    attainment (the baseline then gets more GPU-seconds than HFX), above the dearest the best."""
    pts, best = [], -1.0
    for c, a in sorted(points):
        best = max(best, a)
        pts.append((c, best))
    if cost <= pts[0][0]:
        return pts[0][1]
    for (c0, a0), (c1, a1) in zip(pts, pts[1:]):
        if cost <= c1:
            return a0 + (a1 - a0) * (cost - c0) / (c1 - c0) if c1 > c0 else a1
    return pts[-1][1]


def check(results: list[dict]) -> dict:
    peak = static_peak(results)
    by = {r["label"]: r for r in results}
    hfx = by["hfx"]
    att = lambda r: r["slo_attainment"]["overall"]  # noqa: E731
    out = {"static_peak": peak["label"], "hfx_attainment": att(hfx), "static_peak_attainment": att(peak),
           "hfx_gpu_ratio_to_static_peak": hfx["gpu_seconds"] / peak["gpu_seconds"], "matched_cost": {}}
    targets = {"hfx >= static peak attainment": att(hfx) >= att(peak) - 1e-12,
               "hfx <= 60% of static peak GPU-s": out["hfx_gpu_ratio_to_static_peak"] <= 0.6}
    for b in BASELINES:
        if b in by:
            targets[f"hfx beats {b} (higher attainment, <= GPU-s)"] = (att(hfx) > att(by[b])
                                                                       and hfx["gpu_seconds"] <= by[b]["gpu_seconds"])
    families = dict(FAMILIES, static=tuple(r["label"] for r in results if r["label"].startswith("static")))
    for fam, labels in families.items():
        if all(lb in by for lb in labels):
            ref = at_cost([(by[lb]["gpu_seconds"], att(by[lb])) for lb in labels], hfx["gpu_seconds"])
            out["matched_cost"][fam] = ref
            targets[f"hfx above the {fam} curve at its GPU-s"] = att(hfx) > ref
    out["targets_met"] = targets
    return out


def table(results: list[dict], peak: dict) -> str:
    classes = sorted(c for c in results[0]["slo_attainment"] if c != "overall")
    head = ["autoscaler", "attain"] + classes + ["base", "burst", "GPU-s", "vs static peak", "peak replicas", "adds",
                                                 "removes", "refused"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        a, ev = r["slo_attainment"], r["scale_events"]
        cells = [r["label"] + (" (static peak)" if r is peak else ""), f"{a['overall']:.4f}"]
        cells += [f"{a[c]:.3f}" for c in classes]
        cells += [f"{r['by_window'][k]['slo_attainment']['overall']:.3f}" for k in ("outside", "inside")]
        cells += [f"{r['gpu_seconds']:.0f}", f"{r['gpu_seconds'] / peak['gpu_seconds']:.2f}", str(r["peak_replicas"]),
                  str(ev["add"]), str(ev["remove"]), str(ev["refused"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(by_trace: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(by_trace), 1, figsize=(9, 3.6 * len(by_trace)), squeeze=False)
    for ax, (trace, results) in zip(axes[:, 0], by_trace.items()):
        peak = static_peak(results)
        for r in results:
            if r is not peak and r["label"] not in ("hfx", "queue", "planner", "planner-30s"):
                continue
            pts = r["replica_timeline"]
            xs = [p[0] for p in pts] + [pts[0][0] + r["duration_s"]]
            ys = [p[1] for p in pts] + [pts[-1][1]]
            ax.step(xs, ys, where="post", label=f"{r['label']} ({r['gpu_seconds']:.0f} GPU-s)")
        rate = results[0]["arrivals_per_10s"]
        twin = ax.twinx()
        twin.plot([p[0] for p in rate], [p[1] for p in rate], color="grey", alpha=0.35, lw=1)
        twin.set_ylabel("arrivals/s (grey)")
        ax.set_title(trace)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("replicas held")
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)
    path.chmod(0o644)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--jobs", type=int, default=2, help="parallel simulations (default 2)")
    ap.add_argument("--quick", action="store_true", help="3000 rows of each scenario (smoke run)")
    args = ap.parse_args()
    jobs = []
    for name, scen in SCENARIOS.items():
        scen = dict(scen, name=name, limit=3000 if args.quick else scen["limit"])
        path = str(Path(args.traces_dir) / scen["trace"])
        jobs += [(path, scen, f"static-{n}", n) for n in scen["static"]]
        jobs += [(path, scen, label, scen["start"]) for label in LABELS[scen["labels"]]]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        results = list(pool.map(run_one, jobs))
    by_trace: dict[str, list] = {}
    for r in results:
        by_trace.setdefault(r["trace"], []).append(r)
    md = [f"# Autoscaling in simulation\n\n`python bench/scaling/sim.py{' --quick' if args.quick else ''}` "
          f"({time.perf_counter() - t0:.0f} s wall on this machine). HFX scheduler and router on every replica "
          f"(Llama-3-8B/H100 preset, TP 1); D2D start {_start('peer'):.1f} s, disk start {_start('disk'):.1f} s. "
          "Cost = GPU-seconds (starting replicas count). *Static peak* = the smallest static fleet of the sweep "
          "whose attainment is within 0.002 of the sweep's best. *Matched cost*: each baseline is run with "
          "three settings of its knob (HPA target 2/4/8 waiting per instance; planner 180 s constant, 60 s and "
          "30 s linear), and HFX must beat that cost-attainment curve (linear between its points, a point raised "
          "to the best of any cheaper one) at HFX's own GPU-seconds. Held-out scenarios (another SLO seed and "
          "burst position, another trace slice) were not used while choosing HFX's defaults. *base* / *burst*: "
          "attainment of the requests that arrived outside / inside the burst (its ramps and hold plus 60 s). "
          "See the script's docstring for the setup.\n"]
    verdicts = {}
    for name, res in by_trace.items():
        scen = SCENARIOS[name]
        peak = static_peak(res)
        verdicts[name] = check(res)
        b = scen["burst"]
        rows = f"rows {scen['skip']}..{scen['skip'] + (scen['limit'] or res[0]['requests'])}"
        md.append(f"## {name} ({scen['trace']})\n\nrate x{scen['rate_scale']:g}, {rows}, SLO seed {scen['seed']}, "
                  f"{res[0]['requests']} requests over {res[0]['duration_s']:.0f} s; burst x{b[2]:g} from {b[0]:g} s, "
                  f"{b[3]:g} s ramps, {b[1]:g} s hold; autoscalers start at {scen['start']} replicas, max "
                  f"{max(scen['static'])}.\n")
        md.append(table(res, peak) + "\n")
        mc = verdicts[name]["matched_cost"]
        if mc:
            md.append("Attainment of each curve at HFX's GPU-seconds: " + ", ".join(
                f"{k} {v:.4f}" for k, v in mc.items()) + f" (hfx {verdicts[name]['hfx_attainment']:.4f}).\n")
        md.append("Targets: " + ", ".join(f"{k}: **{'met' if v else 'not met'}**"
                                          for k, v in verdicts[name]["targets_met"].items()) + "\n")
        print(f"\n{name}\n{table(res, peak)}\n{json.dumps(verdicts[name], indent=1)}")
    out = Path(args.out)
    write_atomic(str(out / "scaling_sim.md"), ("\n".join(md) + "\n").encode())
    write_atomic(str(out / "scaling_sim.json"), dump({"results": results, "verdicts": verdicts,
                                                      "scenarios": SCENARIOS}))
    plot(by_trace, out / "scaling_sim.png")
    print(f"\nwrote {out / 'scaling_sim.md'}, .json, .png in {time.perf_counter() - t0:.0f} s")
    return 0


def _start(source: str) -> float:
    from hyperflexis_sglang.core.scaling import ColdStartModel
    return ColdStartModel.for_perf(preset()).start_s(source)


if __name__ == "__main__":
    sys.exit(main())
