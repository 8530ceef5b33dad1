"""Hook overhead of the HFX plugin at a given number of running requests (real SGLang, CPU, tiny model).

Starts an HFX server (room for the target number of running requests, KV pool
large enough that nobody is retracted), sends ``--running`` long greedy
requests at once, waits until the server reports them all running, then
takes the plugin's raw totals (time inside HFX hooks, time of the engine's
iterations) at the start and end of a ``--window``-second steady window:
overhead = delta hook time / delta iteration time. Repeats ``--repeats``
windows and reports the median. Writes ``bench/results/live_overhead.{md,json}``.

    python bench/live/overhead.py [--running 64] [--window 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.controller.local import SGLangServer  # noqa: E402
from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402


def running(server: SGLangServer) -> int:
    loads = server.get("/v1/loads?include=core")
    ranks = loads.get("loads") or loads.get("ranks") or [loads]
    return sum(int(r.get("num_running_reqs", 0)) for r in ranks if isinstance(r, dict))


def totals(server: SGLangServer) -> tuple[float, float, int]:
    st = server.hfx_state()
    return st["hook_s"], st["iteration_s"], st["iterations"]


def window(server: SGLangServer, seconds: float, target: int) -> dict:
    h0, i0, n0 = totals(server)
    r0 = running(server)
    time.sleep(seconds)
    h1, i1, n1 = totals(server)
    r1 = running(server)
    if min(r0, r1) < target:
        raise RuntimeError(f"only {min(r0, r1)} of {target} requests running during the window; "
                           "raise --tokens so requests outlive the measurement")
    iters = n1 - n0
    return {"overhead": (h1 - h0) / (i1 - i0), "iterations": iters, "running": [r0, r1],
            "iteration_ms": 1e3 * (i1 - i0) / iters, "hook_us_per_iteration": 1e6 * (h1 - h0) / iters}


def send(server: SGLangServer, body: dict) -> None:
    try:
        server.post("/generate", body, timeout=3600)
    except OSError:  # the server is stopped under the request at the end of the measurement
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--running", type=int, default=64, help="running requests to hold (default 64)")
    ap.add_argument("--tokens", type=int, default=1500, help="output tokens per request (default 1500)")
    ap.add_argument("--window", type=float, default=10.0, help="seconds per measurement window")
    ap.add_argument("--repeats", type=int, default=3, help="measurement windows (median reported)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    if args.running < 1 or args.window <= 0 or args.repeats < 1 or args.tokens < 16:
        ap.error("--running, --repeats >= 1, --window > 0, --tokens >= 16")
    kv = args.running * (args.tokens + 64) + 1024
    server = SGLangServer(ensure_tiny_model(), hfx=True, name="overhead", extra_args=[
        "--enable-mixed-chunk", "--max-running-requests", str(args.running + 8), "--max-total-tokens", str(kv)])
    body = {"sampling_params": {"max_new_tokens": args.tokens, "temperature": 0, "ignore_eos": True,
                                "custom_params": {"slo": {"class": "batch"}}}}
    threads = [threading.Thread(target=send, args=(server, {**body, "text": f"request {i} says hi"}), daemon=True)
               for i in range(args.running)]
    try:
        server.start()
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while running(server) < args.running:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {running(server)} of {args.running} requests running after 120 s")
            time.sleep(0.5)
        time.sleep(2.0)  # past the admission burst: a steady decode batch
        windows = [window(server, args.window, args.running) for _ in range(args.repeats)]
    finally:
        server.stop()
    med = statistics.median(w["overhead"] for w in windows)
    md = ["# HFX hook overhead at a fixed number of running requests (real SGLang, CPU)\n",
          f"Produced by `python bench/live/overhead.py --running {args.running} --tokens {args.tokens} "
          f"--window {args.window:g} --repeats {args.repeats}` on a 2-core CPU machine, tiny generated Llama "
          "model, SGLang 0.5.23 with the HFX plugin (`--enable-mixed-chunk`). Overhead = time inside HFX hooks / "
          "engine iteration time over a steady window with every request running.\n",
          "| window | running (start, end) | iterations | iteration ms | hook us / iteration | overhead |",
          "|---|---|---|---|---|---|"]
    for k, w in enumerate(windows):
        md.append(f"| {k + 1} | {w['running'][0]}, {w['running'][1]} | {w['iterations']} | "
                  f"{w['iteration_ms']:.1f} | {w['hook_us_per_iteration']:.0f} | {w['overhead'] * 100:.2f}% |")
    md += ["", f"Median overhead at {args.running} running requests: **{med * 100:.2f}%** "
           f"(target <= 2%: {'met' if med <= 0.02 else 'NOT met'})."]
    text = "\n".join(md) + "\n"
    print(text)
    out = Path(args.out)
    write_atomic(str(out / "live_overhead.md"), text.encode())
    write_atomic(str(out / "live_overhead.json"), (json.dumps(
        {"args": vars(args), "windows": windows, "median_overhead": med}, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
