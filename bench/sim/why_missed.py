"""Why requests that could meet their SLO alone still miss it under HFX (simulation).

``attainment.py`` reports an idle bound: the share of requests that could meet
their SLO at all, each served alone on an idle replica with every earlier-seen
prefix cached. This script runs HFX (its router and scheduler) on one trace,
deployment and load, and sorts every request that is feasible alone but misses
by what happened to it (rejected, first token late, TPOT missed, unfinished)
and by its prefix cache (GPU and, with ``--hicache-ratio``, host tier) when it
was routed: evicted from every replica (the
bound assumes an unbounded cache), on another replica than the one chosen, or
cached as in the bound. Writes ``bench/results/NAME.{md,json}``.

    python bench/sim/why_missed.py [--trace mooncake_conversation.jsonl] [--deploy collocated]
                                   [--rate-scale 0.2] [--limit 3000] [--hicache-ratio 0] [--name sim_why_missed]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attainment import SETUPS  # noqa: E402

from hyperflexis_sglang.core.perf_model import preset  # noqa: E402
from hyperflexis_sglang.core.slo import meets_slo  # noqa: E402
from hyperflexis_sglang.sim.bounds import idle_alone  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig  # noqa: E402
from hyperflexis_sglang.sim.workload import build, load_trace  # noqa: E402

OUTCOMES = ("rejected", "first token late", "TPOT missed", "unfinished")
CACHE = ("prefix evicted from every replica", "prefix on another replica", "prefix cached as in the bound")


class ProbedCluster(Cluster):
    """A cluster that records, for each request as it is routed, the prefix tokens each replica holds."""

    def run(self, workload) -> None:
        self.cached_at_route: dict[int, list[int]] = {}
        super().run(workload)

    def _arrive(self, now: float) -> None:
        req = self.requests[self._next_arrival]
        self.cached_at_route[req.rid] = [rep.cached_tokens(req.blocks, with_host=True) for rep in self.replicas]
        super()._arrive(now)


def outcome(r) -> str:
    if r.rejected:
        return "rejected"
    if meets_slo(r.slo, r.arrival, r.first_token_time, r.finish_time, r.output_len):
        return "met"
    if r.first_token_time is None or r.finish_time is None:
        return "unfinished"
    return "first token late" if r.first_token_time - r.arrival > r.slo.ttft_s else "TPOT missed"


def classify(cluster: ProbedCluster, wl, alone: list[tuple[int, bool]]) -> dict:
    """Per class: requests, feasible alone, met among those, and the misses by outcome x prefix cache."""
    out: dict = {}
    for i in range(len(wl)):
        r = cluster.requests[i]
        row = out.setdefault(r.slo.cls, {"requests": 0, "feasible alone": 0, "met": 0,
                                         "missed": collections.Counter()})
        row["requests"] += 1
        bound_cached, feasible = alone[i]
        if not feasible:
            continue
        row["feasible alone"] += 1
        what = outcome(r)
        if what == "met":
            row["met"] += 1
            continue
        held = cluster.cached_at_route[r.rid]
        chosen = min(held[r.prefill_iid], r.input_len - 1)
        if chosen >= bound_cached:
            cache = CACHE[2]
        else:
            cache = CACHE[1] if min(max(held), r.input_len - 1) > chosen else CACHE[0]
        row["missed"][f"{what} / {cache}"] += 1
    return out


def report(rows: dict, args, cmd: str) -> str:
    md = ["# Why feasible requests miss under HFX (simulation)\n",
          f"`{cmd}`: {args.trace}, {args.deploy}, first {args.limit} requests, x{args.rate_scale:g}, "
          + (f"host KV tier {args.hicache_ratio:g}x the GPU pool, " if getattr(args, "hicache_ratio", 0) else "") +
          "Llama-3-8B/H100 preset, HFX scheduler and router, seed 0. \"Feasible alone\": the request meets its "
          "SLO served alone on an idle replica with every earlier-seen prefix cached (`attainment.py`'s idle "
          "bound). Each missed feasible request is counted by what happened to it and by its prefix cache when "
          "it was routed.\n",
          "| class | requests | feasible alone | met | " + " | ".join(f"{o} ({c})" for o in OUTCOMES for c in
                                                               ("evicted", "other replica", "cached")) + " |",
          "|---|---|---|---|" + "---|" * (len(OUTCOMES) * len(CACHE))]
    for cls, row in sorted(rows.items()):
        cells = [str(row["missed"].get(f"{o} / {c}", 0)) for o in OUTCOMES for c in CACHE]
        md.append(f"| {cls} | {row['requests']} | {row['feasible alone']} | {row['met']} | " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--trace", default="mooncake_conversation.jsonl", help="a trace of bench/sim/attainment.py")
    ap.add_argument("--deploy", default="collocated", choices=("collocated", "pd"))
    ap.add_argument("--rate-scale", type=float, default=0.2)
    ap.add_argument("--limit", type=int, default=3000, help="first N requests of the trace")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--hicache-ratio", type=float, default=0.0, help="host KV tier, x the GPU pool (0: off)")
    ap.add_argument("--name", default="sim_why_missed")
    args = ap.parse_args()
    setup = SETUPS.get((args.trace, args.deploy))
    if setup is None:
        ap.error(f"--trace/--deploy: no setup {args.trace!r} {args.deploy!r}; "
                 f"choose from {sorted({t for t, _ in SETUPS})} and collocated/pd")
    if args.rate_scale <= 0 or args.limit < 1 or not args.hicache_ratio >= 0:
        ap.error("--rate-scale must be > 0, --limit >= 1 and --hicache-ratio >= 0")
    perf = preset("llama-3-8b", "h100", 1)
    wl = build(load_trace(Path(args.traces_dir) / args.trace, args.limit), seed=0, rate_scale=args.rate_scale)
    cluster = ProbedCluster(ClusterConfig(policy="hfx", router="hfx", replicas=setup.get("replicas", 4),
                                          pd=setup.get("pd"), hicache_ratio=args.hicache_ratio), perf, perf)
    cluster.run(wl)
    rows = classify(cluster, wl, idle_alone(wl, perf))
    cmd = (f"python bench/sim/why_missed.py --trace {args.trace} --deploy {args.deploy} "
           f"--rate-scale {args.rate_scale:g} --limit {args.limit}"
           + (f" --hicache-ratio {args.hicache_ratio:g}" if args.hicache_ratio else "") + f" --name {args.name}")
    text = report(rows, args, cmd)
    print(text)
    out = Path(args.out)
    write_atomic(str(out / f"{args.name}.md"), text.encode())
    write_atomic(str(out / f"{args.name}.json"), json.dumps(
        {"command": cmd, "args": vars(args), "classes": {c: {**r, "missed": dict(r["missed"])}
                                                         for c, r in rows.items()}}, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
