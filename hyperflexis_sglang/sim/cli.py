"""``python -m hyperflexis_sglang.sim run|sweep``.

Defaults describe a realistic deployment: Llama-3-8B on H100 (TP 1), four
collocated replicas, round-robin routing, SLO mix
``interactive:0.2,standard:0.5,batch:0.3``, seed 0. Bad input (trace line,
SLO, class, policy, flag) exits with code 2 and a message naming the file and
line or the flag; JSON/PNG outputs are written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from ..core.perf_model import GPUS, MODELS, PerfModelError, preset
from ..core.routing import ROUTERS
from ..core.scaling import SCALERS, WEIGHT_SOURCES, ScalingConfigError
from ..core.scheduling import POLICIES
from ..core.slo import SLOCatalog, SLOError
from .autoscale import AutoscaleConfig
from .cluster import ClusterConfig
from .runner import simulate
from .workload import DEFAULT_MIX, TraceError, build, burst, load_trace


class UsageError(Exception):
    pass


def _pd(spec: str) -> tuple[int, int]:
    p, sep, d = spec.partition(":")
    try:
        pd = (int(p), int(d))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected P:D, e.g. 2:2, got {spec!r}") from None
    if not sep or min(pd) < 1:
        raise argparse.ArgumentTypeError(f"expected P:D with P, D >= 1, got {spec!r}")
    return pd


def _positive(kind, allow_zero: bool = False):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (v >= 0 if allow_zero else v > 0) or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0 and finite, got {text!r}")
        return v
    return parse


def _burst(spec: str) -> tuple[float, ...]:
    parts = spec.split(":")
    try:
        vals = tuple(float(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:DURATION:FACTOR[:RAMP] in seconds, got {spec!r}") from None
    if len(vals) not in (3, 4) or any(not (v >= 0 and v != float("inf")) for v in vals) or vals[2] <= 0:
        raise argparse.ArgumentTypeError(f"expected START:DURATION:FACTOR[:RAMP], all >= 0, FACTOR > 0, got {spec!r}")
    return vals


def _add_autoscale(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("autoscaling (off unless --autoscaler is given; --replicas/--pd is the initial fleet)")
    g.add_argument("--autoscaler", default=None, choices=sorted(SCALERS), help="scaling policy")
    g.add_argument("--min-replicas", type=_positive(int), default=1, help="per role (default 1)")
    g.add_argument("--max-replicas", type=_positive(int), default=16, help="per role (default 16)")
    g.add_argument("--weight-source", default="peer", choices=WEIGHT_SOURCES,
                   help="new replicas load weights from a ready peer (D2D) or from disk (default peer)")
    g.add_argument("--tick-s", type=_positive(float), default=5.0, help="seconds between scaling decisions")
    p.add_argument("--burst", type=_burst, default=None, metavar="START:DURATION:FACTOR[:RAMP]",
                   help="multiply the arrival rate by FACTOR from START for DURATION s (simulated), ramps of RAMP s")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", required=True, help="Azure CSV, Mooncake JSONL or generic JSONL trace")
    p.add_argument("--replicas", type=_positive(int), default=4, help="collocated replicas (default 4)")
    p.add_argument("--pd", type=_pd, default=None, metavar="P:D", help="P/D disaggregation: P prefill, D decode")
    p.add_argument("--router", default=None, choices=sorted(ROUTERS),
                   help="routing policy (default: hfx for --policy hfx, else round_robin)")
    p.add_argument("--model", default="llama-3-8b", choices=sorted(MODELS), help="model preset (default llama-3-8b)")
    p.add_argument("--gpu", default="h100", choices=sorted(GPUS), help="GPU preset (default h100)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size per replica (default 1)")
    p.add_argument("--slo-mix", default=DEFAULT_MIX, help=f"class mix (default {DEFAULT_MIX})")
    p.add_argument("--slo-classes", default=None, help="JSON/TOML file of SLO classes")
    p.add_argument("--seed", type=int, default=0, help="seed for SLO assignment and routing (default 0)")
    p.add_argument("--limit", type=_positive(int), default=None, help="use the first N trace rows")
    p.add_argument("--link-gbps", type=_positive(float), default=200.0, help="P/D KV link bandwidth (default 200)")
    p.add_argument("--hicache-ratio", type=_positive(float, allow_zero=True), default=0.0,
                   help="host-memory KV tier per prefill/collocated replica, x its GPU KV pool, as SGLang's "
                        "--enable-hierarchical-cache --hicache-ratio (default 0: off, SGLang's default)")
    p.add_argument("--hicache-gbps", type=_positive(float), default=200.0,
                   help="host-to-GPU KV load bandwidth in Gbit/s (default 200, i.e. 25 GB/s)")
    _add_autoscale(p)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hyperflexis_sglang.sim", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="simulate one policy at one load")
    _add_common(run)
    run.add_argument("--policy", default="hfx", help=f"scheduling policy: {', '.join(POLICIES)} (default hfx)")
    run.add_argument("--rate-scale", type=_positive(float), default=1.0, help="request-rate multiplier (default 1)")
    run.add_argument("--json", default=None, help="write the summary JSON here")
    sw = sub.add_parser("sweep", help="several policies over several loads; table + PNG")
    _add_common(sw)
    sw.add_argument("--policies", default="sglang-fcfs,sglang-priority,edf,sarathi,hfx",
                    help="comma-separated policies")
    sw.add_argument("--rate-scales", default="0.5,1,2,4", help="comma-separated rate multipliers")
    sw.add_argument("--json", default=None, help="write all results as JSON here")
    sw.add_argument("--png", default=None, help="plot attainment vs load here")
    return ap


def _config(args, policy: str) -> tuple[ClusterConfig, object]:
    if policy not in POLICIES:
        raise UsageError(f"--policy: unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    try:
        perf = preset(args.model, args.gpu, args.tp)
    except PerfModelError as e:
        raise UsageError(f"--model/--gpu/--tp: {e}") from None
    router = args.router or ("hfx" if policy == "hfx" else "round_robin")
    auto = None
    if args.autoscaler:
        if args.min_replicas > args.max_replicas:
            raise UsageError(f"--min-replicas {args.min_replicas} is above --max-replicas {args.max_replicas}")
        start = args.pd or (args.replicas,)
        if max(start) > args.max_replicas or min(start) < args.min_replicas:
            raise UsageError(f"the initial fleet (--replicas/--pd) must lie within --min-replicas "
                             f"{args.min_replicas} and --max-replicas {args.max_replicas} per role")
        auto = AutoscaleConfig(scaler=args.autoscaler, min_replicas=args.min_replicas,
                               max_replicas=args.max_replicas, weight_source=args.weight_source, tick_s=args.tick_s)
    return ClusterConfig(policy=policy, router=router, replicas=args.replicas, pd=args.pd, seed=args.seed,
                         link_gbps=args.link_gbps, hicache_ratio=args.hicache_ratio, hicache_gbps=args.hicache_gbps,
                         autoscale=auto), perf


def _catalog(args) -> SLOCatalog:
    if args.slo_classes is None:
        return SLOCatalog()
    try:
        return SLOCatalog.from_file(args.slo_classes)
    except SLOError as e:
        raise UsageError(f"--slo-classes: {e}") from None


def run_one(args, policy: str, rate_scale: float, rows, catalog) -> dict:
    cfg, perf = _config(args, policy)
    wl = build(rows, args.slo_mix, args.seed, rate_scale, catalog, source=args.trace)
    if args.burst:
        wl = burst(wl, *args.burst)
    t0 = time.perf_counter()
    out = simulate(wl, cfg, perf)
    out["rate_scale"] = rate_scale
    out["trace"] = Path(args.trace).name
    return out | {"_wall_s": time.perf_counter() - t0}


def write_atomic(path: str, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-" + target.name)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be read
    os.replace(tmp, target)


def dump(result) -> bytes:
    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if not k.startswith("_")}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        if isinstance(obj, float) and obj != obj:
            return None
        return obj
    return (json.dumps(clean(result), indent=2, sort_keys=True) + "\n").encode()


def table(results: list[dict]) -> str:
    classes = sorted({c for r in results for c in r["slo_attainment"] if c != "overall"})
    head = ["policy", "deploy", "rate", "attain"] + classes + ["goodput", "ttft_p50", "ttft_p99", "tpot_p50",
                                                                "tpot_p99", "rejected", "gpu_s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        a = r["slo_attainment"]
        cells = [r["policy"], r["deployment"], f"{r['rate_scale']:g}", f"{a['overall']:.3f}"]
        cells += [f"{a.get(c, float('nan')):.3f}" for c in classes]
        cells += [f"{r['goodput_rps']:.2f}", _ms(r["ttft_p50"]), _ms(r["ttft_p99"]), _ms(r["tpot_p50"]),
                  _ms(r["tpot_p99"]), str(r["rejected"]), f"{r['gpu_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1e3:.0f}ms"


def plot(results: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in dict.fromkeys(r["policy"] for r in results):
        pts = sorted((r["rate_scale"], r["slo_attainment"]["overall"]) for r in results if r["policy"] == policy)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy)
    ax.set_xlabel("request rate scale")
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".tmp-" + target.name)
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        catalog = _catalog(args)
        rows = load_trace(args.trace, args.limit)
        if args.cmd == "run":
            result = run_one(args, args.policy, args.rate_scale, rows, catalog)
            print(table([result]))
            print(f"simulated {result['requests']} requests in {result['_wall_s']:.2f} s wall")
            if "autoscaler" in result:
                print(f"autoscaler {result['autoscaler']}: {result['gpu_seconds']:.0f} GPU-seconds, peak "
                      f"{result['peak_replicas']} replicas, events {result['scale_events']}")
            if args.json:
                write_atomic(args.json, dump(result))
            return 0
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        for p in policies:
            if p not in POLICIES:
                raise UsageError(f"--policies: unknown policy {p!r}; known: {', '.join(POLICIES)}")
        try:
            scales = [float(x) for x in args.rate_scales.split(",")]
        except ValueError:
            raise UsageError(f"--rate-scales: expected comma-separated numbers, got {args.rate_scales!r}") from None
        if any(not s > 0 for s in scales):
            raise UsageError("--rate-scales: every scale must be > 0")
        results = [run_one(args, p, s, rows, catalog) for p in policies for s in scales]
        print(table(results))
        if args.json:
            write_atomic(args.json, dump(results))
        if args.png:
            plot(results, args.png, f"{Path(args.trace).name}")
        return 0
    except (UsageError, TraceError, SLOError, ScalingConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
