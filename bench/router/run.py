"""Router benchmark: sglang-router 0.3.2 vs the HFX router on the same backends and the same streams.

    python bench/router/run.py                 # both parts (about 15 minutes on 2 cores)
    python bench/router/run.py --part overhead # (a) only: echo backends, no SGLang
    python bench/router/run.py --part slo      # (b) only: two real SGLang CPU servers

(a) ``overhead.py``: added latency at 200 req/s open loop and sustained
throughput (closed-loop concurrency sweep) over two echo backends.
(b) ``slo.py``: per-class SLO attainment behind each router, two HFX-enabled
SGLang CPU servers, a mixed-SLO Azure stream from the load generator.
Writes ``bench/results/router.{md,json,png}`` (a part run alone keeps the
other part's last results) and ``bench/results/load_router_*.{json,png}``.
Run it under the shared lock: ``flock /tmp/hfx-sglang.lock python bench/router/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # noqa: E402
import tables  # noqa: E402
import slo  # noqa: E402
from procs import ROOT  # noqa: E402

from hyperflexis_sglang.bench.report import json_safe  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402


def _configs(spec: str, flag: str, ap: argparse.ArgumentParser) -> list[tuple[str, str]]:
    out = []
    for item in spec.split(","):
        kind, sep, policy = item.strip().partition("/")
        if not sep or kind not in ("sglang-router", "hfx-router") or not policy:
            ap.error(f"{flag}: expected KIND/POLICY with KIND sglang-router or hfx-router, got {item!r}")
        out.append((kind, policy))
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "overhead", "slo", "report"), default="all",
                    help="report: only re-render router.md/png from router.json")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--overhead-routers", default="sglang-router/round_robin,sglang-router/cache_aware,"
                    "hfx-router/round_robin,hfx-router/hfx")
    ap.add_argument("--rate", type=float, default=200.0, help="(a) open-loop rate for added latency")
    ap.add_argument("--n", type=int, default=3000, help="(a) open-loop requests")
    ap.add_argument("--concurrency", default="1,4,16,64", help="(a) closed-loop sweep")
    ap.add_argument("--duration", type=float, default=4.0, help="(a) seconds per sweep point")
    ap.add_argument("--slo-routers", default="sglang-router/cache_aware,hfx-router/hfx,hfx-router/cache_aware")
    ap.add_argument("--trace", default=str(ROOT.parent / "shared" / "traces" / "azure_conv_2023.csv"))
    ap.add_argument("--requests", type=int, default=120, help="(b) requests in the stream")
    ap.add_argument("--rate-scale", type=float, default=40.0)
    ap.add_argument("--len-scale", type=float, default=2.0)
    ap.add_argument("--max-input", type=int, default=400)
    ap.add_argument("--max-output", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=40, help="(b) requests sent to each server before measuring")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    try:
        sweep = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        ap.error(f"--concurrency: expected comma-separated integers, got {args.concurrency!r}")
    out = Path(args.out)
    path = out / "router.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    load = os.getloadavg()
    if args.part in ("all", "overhead"):
        res = overhead.run(_configs(args.overhead_routers, "--overhead-routers", ap), args.rate, args.n, sweep,
                           args.duration)
        doc["overhead"] = {**res, "loadavg_before": load, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "command": "python bench/router/run.py " + shlex.join(argv or sys.argv[1:])}
    if args.part in ("all", "slo"):
        res = slo.run(_configs(args.slo_routers, "--slo-routers", ap), args, out)
        doc["slo"] = {**res, "args": {k: getattr(args, k) for k in (
            "trace", "requests", "rate_scale", "len_scale", "max_input", "max_output", "seed", "warmup")},
            "loadavg_before": load, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python bench/router/run.py " + shlex.join(argv or sys.argv[1:])}
    text = tables.markdown(doc)
    print(text)
    write_atomic(str(path), (json.dumps(json_safe(doc), indent=1) + "\n").encode())
    write_atomic(str(out / "router.md"), text.encode())
    tables.png(doc, str(out / "router.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
