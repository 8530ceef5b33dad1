"""Load generator: replay a trace open-loop against an SGLang server or a router, streaming, with SLOs.

    python -m hyperflexis_sglang.bench.load --url http://127.0.0.1:30000 \\
        --trace ../shared/traces/azure_conv_2023.csv --requests 200 --rate-scale 8 --len-scale 8 \\
        --slo-classes classes.json --out bench/results/load_demo

Open loop: request i is sent at its (rate-scaled) trace time whether or not
earlier ones finished; a ``--concurrency-limit`` makes later requests wait
for a slot, and that wait counts against their TTFT. Each request streams;
the client records its token times, TTFT, TPOT and whether it met its SLO
(core/slo.py, as in the simulator). Errors are counted per class and never
stop the run. Prints a per-class table; ``--out DIR/NAME`` also writes
NAME.json (summary and every request) and NAME.png. Bad input exits 2 with
a message naming the flag or the file and line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys
import time
from pathlib import Path

import httpx

from ..core.slo import SLOCatalog, SLOError
from ..sim.workload import DEFAULT_MIX, TraceError, build, load_trace
from .client import Outcome, send
from .plan import ENDPOINTS, PlannedRequest, Scaling, make_plan
from .report import summarize, table, write_json, write_png

_FORMATS = ("auto", "azure", "jsonl", "mooncake")


class Progress:
    """A one-line progress bar on stderr (done/total, errors, SLOs met, elapsed)."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30, stream=sys.stderr):
        self.total, self.enabled, self.width, self.stream = total, enabled, width, stream
        self.done = self.errors = self.met = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, o: Outcome) -> None:
        self.done += 1
        self.errors += bool(o.error)
        self.met += o.met
        now = time.perf_counter()
        if self.enabled and (now - self._last >= 0.1 or self.done == self.total):
            self._last = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: float) -> str:
        fill = self.width * self.done // max(self.total, 1)
        return (f"[{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total} "
                f"met {self.met} errors {self.errors} {now - self.start:.1f}s")

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


async def replay(plan: list[PlannedRequest], url: str, endpoint: str, model: str = "default",
                 timeout: float = 600.0, concurrency: int = 0, headers: bool = True,
                 progress: Progress | None = None) -> tuple[list[Outcome], float]:
    """Send ``plan`` open-loop through one keep-alive client; (outcomes in plan order, duration s)."""
    limits = httpx.Limits(max_connections=concurrency or None, max_keepalive_connections=concurrency or None)
    sem = asyncio.Semaphore(concurrency) if concurrency else None
    async with httpx.AsyncClient(timeout=httpx.Timeout(None), limits=limits) as client:
        async def one(req: PlannedRequest, arrival: float) -> Outcome:
            if sem is None:
                out = await send(client, url, endpoint, req, arrival, model, timeout, headers)
            else:
                async with sem:
                    out = await send(client, url, endpoint, req, arrival, model, timeout, headers)
            if progress:
                progress.update(out)
            return out

        t0 = time.perf_counter() + 0.05
        tasks = []
        for req in plan:
            delay = t0 + req.t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(req, t0 + req.t)))
        outcomes = await asyncio.gather(*tasks)
    return list(outcomes), time.perf_counter() - t0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hyperflexis_sglang.bench.load",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="server or router base URL, e.g. http://127.0.0.1:30000")
    ap.add_argument("--endpoint", choices=ENDPOINTS, default="generate",
                    help="/generate, /v1/completions or /v1/chat/completions (all streamed)")
    ap.add_argument("--trace", required=True, help="Azure 2023 CSV, Mooncake JSONL or generic JSONL trace")
    ap.add_argument("--format", choices=_FORMATS, default="auto", help="trace format (default: detected)")
    ap.add_argument("--requests", type=int, default=100, help="replay the first N rows (default 100)")
    ap.add_argument("--rate-scale", type=float, default=1.0, help="multiply the trace's request rate")
    ap.add_argument("--len-scale", type=float, default=1.0, help="divide input and output lengths (CPU runs)")
    ap.add_argument("--max-input", type=int, help="cap prompt length (words ~ tokens) after scaling")
    ap.add_argument("--max-output", type=int, help="cap output tokens after scaling")
    ap.add_argument("--slo-mix", default=DEFAULT_MIX, help=f"class weights (default {DEFAULT_MIX})")
    ap.add_argument("--slo-classes", help="JSON/TOML SLO class file (as HFX_SLO_CLASSES)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the SLO class draw")
    ap.add_argument("--concurrency-limit", type=int, default=0, help="max requests in flight (0: none)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    ap.add_argument("--model", default="default", help="model name for the OpenAI endpoints")
    ap.add_argument("--no-slo-headers", action="store_true",
                    help="send the SLO only in custom_params, not also as x-slo-* headers")
    ap.add_argument("--out", help="DIR/NAME: write NAME.json and NAME.png there")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag values argparse cannot check; exits 2 naming the flag."""
    problems = [("--requests", args.requests > 0, "must be > 0"),
                ("--rate-scale", args.rate_scale > 0 and math.isfinite(args.rate_scale), "must be a positive number"),
                ("--len-scale", args.len_scale >= 1 and math.isfinite(args.len_scale), "must be a number >= 1"),
                ("--max-input", args.max_input is None or args.max_input > 0, "must be > 0"),
                ("--max-output", args.max_output is None or args.max_output > 1, "must be > 1"),
                ("--concurrency-limit", args.concurrency_limit >= 0, "must be >= 0"),
                ("--timeout", args.timeout > 0 and math.isfinite(args.timeout), "must be a positive number"),
                ("--url", args.url.startswith(("http://", "https://")), "must start with http:// or https://")]
    for flag, ok, msg in problems:
        if not ok:
            ap.error(f"{flag} {msg}")
    if args.out:
        parent = Path(args.out).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            ap.error(f"--out: cannot create {parent}: {e.strerror}")
        if not os.access(parent, os.W_OK):
            ap.error(f"--out: {parent} is not writable")


def load_plan(args: argparse.Namespace) -> list[PlannedRequest]:
    """The replay plan from the flags; raises TraceError / SLOError naming the file, line or flag."""
    rows = load_trace(args.trace, args.requests)
    with open(args.trace) as f:
        detected = "jsonl" if f.readline().lstrip().startswith("{") else "azure"
    if args.format not in ("auto", detected) and not (args.format == "mooncake" and detected == "jsonl"):
        raise TraceError(f"--format {args.format}: {args.trace} looks like a {detected} trace")
    if not rows:
        raise TraceError(f"{args.trace}: no requests")
    catalog = SLOCatalog.from_file(args.slo_classes) if args.slo_classes else SLOCatalog()
    wl = build(rows, args.slo_mix, seed=args.seed, rate_scale=args.rate_scale, catalog=catalog, source=args.trace)
    return make_plan(wl, Scaling(args.len_scale, args.max_input, args.max_output))


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    _check(ap, args)
    try:
        plan = load_plan(args)
    except (TraceError, SLOError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    progress = Progress(len(plan), enabled=not args.no_progress)
    outcomes, duration = asyncio.run(replay(plan, args.url.rstrip("/"), args.endpoint, args.model, args.timeout,
                                            args.concurrency_limit, not args.no_slo_headers, progress))
    progress.finish()
    summary = summarize(outcomes, duration)
    print(table(summary))
    print(f"{len(outcomes)} requests in {duration:.1f} s; goodput {summary['goodput_rps']:.2f} req/s, "
          f"throughput {summary['throughput_rps']:.2f} req/s")
    if args.out:
        out = str(args.out).removesuffix(".json")
        meta = {"command": shlex.join(["python", "-m", "hyperflexis_sglang.bench.load", *(argv or sys.argv[1:])]),
                "args": vars(args), "started": started}
        write_json(out + ".json", summary, outcomes, meta)
        write_png(out + ".png", summary, outcomes, f"{args.url} {Path(args.trace).name} x{args.rate_scale:g}")
        print(f"wrote {out}.json and {out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
