"""Simulator and policy speed.

1. Simulate 20,000 requests (Azure 2023 conversation lengths, Poisson
   arrivals at 70 req/s) on 8 collocated replicas, per policy; wall time.
2. One scheduling decision with 1,000 waiting and 256 running requests:
   median and p99 of ``plan()`` over 2,000 calls, per policy.

Writes ``bench/results/sim_speed.{md,json}``. Targets (issue 2): 20,000
requests on 8 replicas in <= 20 s on 2 cores; decision median <= 200 us.

    python bench/sim/speed.py [--traces-dir ../shared/traces]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.core.perf_model import preset  # noqa: E402
from hyperflexis_sglang.core.scheduling import EngineSnapshot, make_scheduler  # noqa: E402
from hyperflexis_sglang.core.slo import DEFAULT_CLASSES  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402
from hyperflexis_sglang.sim.cluster import ClusterConfig  # noqa: E402
from hyperflexis_sglang.sim.engine import SimRequest, _QueueView  # noqa: E402
from hyperflexis_sglang.sim.runner import simulate  # noqa: E402
from hyperflexis_sglang.sim.workload import build, load_trace, synthetic  # noqa: E402

POLICIES = ["sglang-fcfs", "hfx"]


def sim_speed(traces: Path) -> list[dict]:
    rows = synthetic(20_000, rate=70.0, seed=1, lengths=load_trace(traces / "azure_conv_2023.csv"))
    wl = build(rows, seed=0)
    out = []
    for policy in POLICIES:
        cfg = ClusterConfig(policy=policy, router="hfx" if policy == "hfx" else "round_robin", replicas=8)
        t0 = time.perf_counter()
        res = simulate(wl, cfg, preset())
        out.append({"policy": policy, "requests": len(wl), "replicas": 8, "wall_s": time.perf_counter() - t0,
                    "iterations": res["iterations"], "attainment": res["slo_attainment"]["overall"]})
    return out


def decision_speed() -> list[dict]:
    perf = preset()
    classes = list(DEFAULT_CLASSES.values())
    out = []
    for policy in POLICIES:
        sched = make_scheduler(policy)
        waiting, running = [], []
        for i in range(1000):
            r = SimRequest(i, 109.8 + i * 0.0002, classes[i % 3], 800 + (i * 37) % 1500, 200)
            waiting.append((sched.key(r, perf), i, r))
        waiting.sort()
        for i in range(256):
            r = SimRequest(10_000 + i, 90.0 + i * 0.01, classes[i % 3], 600 + (i * 53) % 1200, 400)
            r.output_len, r.first_token_time = 20 + i % 50, 95.0 + i * 0.01
            running.append(r)
        kv = sum(r.input_len + r.output_len for r in running)
        snap = EngineSnapshot(110.0, _QueueView(waiting), running, perf.kv_capacity_tokens - kv, perf,
                              running_kv_tokens=kv)
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            sched.plan(snap)
            times.append(time.perf_counter() - t0)
        times.sort()
        out.append({"policy": policy, "waiting": 1000, "running": 256,
                    "median_us": statistics.median(times) * 1e6, "p99_us": times[int(0.99 * len(times))] * 1e6})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    dec = decision_speed()
    sim = sim_speed(Path(args.traces_dir))
    md = ["# Simulator and policy speed", "",
          "Produced by `python bench/sim/speed.py` on a 2-core machine (other work may share it; rerun to check).",
          "", "| policy | requests | replicas | wall s | iterations | attainment |", "|---|---|---|---|---|---|"]
    md += [f"| {r['policy']} | {r['requests']} | {r['replicas']} | {r['wall_s']:.1f} | {r['iterations']} | "
           f"{r['attainment']:.3f} |" for r in sim]
    md += ["", "| policy | waiting | running | plan() median us | p99 us |", "|---|---|---|---|---|"]
    md += [f"| {r['policy']} | {r['waiting']} | {r['running']} | {r['median_us']:.0f} | {r['p99_us']:.0f} |"
           for r in dec]
    md += ["", "Targets: 20,000 requests on 8 replicas <= 20 s: "
           + ", ".join(f"{r['policy']} {'met' if r['wall_s'] <= 20 else 'NOT met'}" for r in sim)
           + "; decision median <= 200 us: "
           + ", ".join(f"{r['policy']} {'met' if r['median_us'] <= 200 else 'NOT met'}" for r in dec)]
    text = "\n".join(md) + "\n"
    print(text)
    write_atomic(str(Path(args.out) / "sim_speed.md"), text.encode())
    write_atomic(str(Path(args.out) / "sim_speed.json"),
                 (json.dumps({"simulation": sim, "decision": dec}, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
