"""Live CPU benchmark: stock SGLang vs SGLang with the HFX plugin, same request stream.

Both servers serve the generated tiny model on the CPU. The stream is
open-loop: the first ``--requests`` rows of the Azure 2023 conversation
trace, arrival times compressed by ``--rate-scale``, prompt and output
lengths scaled down by ``--len-scale`` (CPU-sized), SLO classes drawn from
the mix with the CPU-scaled targets of ``hyperflexis_sglang/testing/classes.py``
(seed 0). Each request streams from ``/generate``; TTFT and TPOT are measured
by the client. The servers run one at a time (the other idle) so they do not
share the 2 cores. Writes ``bench/results/NAME.{md,json}`` (``--name``, default ``live_cpu``).

    python bench/live/run.py [--requests 80] [--rate-scale 8] [--len-scale 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.controller.local import SGLangServer  # noqa: E402
from hyperflexis_sglang.core.slo import SLOCatalog  # noqa: E402
from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402
from hyperflexis_sglang.sim.metrics import percentile  # noqa: E402
from hyperflexis_sglang.sim.workload import build, load_trace  # noqa: E402
from hyperflexis_sglang.testing.classes import CPU_CLASSES  # noqa: E402
from hyperflexis_sglang.testing.client import stream_generate  # noqa: E402


def cpu_classes_file() -> str:
    """The CPU-scaled SLO classes as a JSON file (the servers' ``HFX_SLO_CLASSES``, the stream's catalog)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(CPU_CLASSES, f)
    return f.name


def write_report(out: str | Path, name: str, text: str, payload: dict) -> None:
    """Print the markdown report and write ``name``.md and ``name``.json (whole or not at all) under ``out``."""
    print(text)
    write_atomic(str(Path(out) / f"{name}.md"), text.encode())
    write_atomic(str(Path(out) / f"{name}.json"), (json.dumps(payload, indent=1, default=str) + "\n").encode())


def configs_parser(doc: str, name: str, configs: dict) -> argparse.ArgumentParser:
    """Options shared by the benchmarks that compare server configurations one at a time."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default=name, help=f"result file stem (default {name})")
    ap.add_argument("--configs", default=",".join(configs))
    ap.add_argument("--reps", type=int, default=3)
    return ap


def measure_configs(ap: argparse.ArgumentParser, args, configs: dict, measure) -> tuple[str, dict]:
    """``measure(name, model, classes_file, args)`` for each of ``--configs`` (exit 2 naming an unknown one);
    returns the load average before, as text, and the results by configuration."""
    names = args.configs.split(",")
    unknown = [n for n in names if n not in configs]
    if unknown:
        ap.error(f"--configs: unknown {', '.join(unknown)}; known: {', '.join(configs)}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    model, classes = ensure_tiny_model(), cpu_classes_file()
    return load, {n: measure(n, model, classes, args) for n in names}


def stream(rows, args) -> list[dict]:
    catalog = SLOCatalog.from_file(cpu_classes_file())
    wl = build(rows, args.mix, seed=0, rate_scale=args.rate_scale, catalog=catalog)
    out = []
    for i in range(len(wl)):
        words = max(4, min(400, wl.input_lens[i] // args.len_scale))
        out.append({"t": wl.arrivals[i], "cls": wl.slos[i].cls, "slo": wl.slos[i], "words": words,
                    "out": max(2, min(64, wl.output_lens[i] // args.len_scale))})
    return out


def prompt(i: int, words: int) -> str:
    """Request ``i``'s prompt: ``words`` words "w<n>", starting at a different word per request."""
    return " ".join(f"w{(i * 13 + k) % 211}" for k in range(words))


def replay(server: SGLangServer, reqs: list[dict]) -> list[dict]:
    results: list[dict] = [None] * len(reqs)  # type: ignore[list-item]
    t0 = time.perf_counter() + 0.5

    def one(i, r):
        delay = t0 + r["t"] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = stream_generate(server.url, {"text": prompt(i, r["words"]), "sampling_params": {
            "max_new_tokens": r["out"], "temperature": 0, "ignore_eos": True,
            "custom_params": {"slo": {"class": r["cls"]}}}})
        slo = r["slo"]
        ok = (not t.error and t.ttft is not None and t.ttft <= slo.ttft_s and (t.tpot or 0.0) <= slo.tpot_s)
        results[i] = {"cls": r["cls"], "ttft": t.ttft, "tpot": t.tpot, "met": ok, "error": t.error[:120],
                      "status": t.status}

    threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(reqs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(900)
    return results


def summarize(results: list[dict]) -> dict:
    out = {}
    for cls in ["overall", *sorted({r["cls"] for r in results})]:
        rs = [r for r in results if cls == "overall" or r["cls"] == cls]
        ttft = [r["ttft"] for r in rs if r["ttft"] is not None and not r["error"]]
        tpot = [r["tpot"] for r in rs if r["tpot"] is not None and not r["error"]]
        out[cls] = {"n": len(rs), "attainment": sum(r["met"] for r in rs) / len(rs),
                    "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
                    "tpot_p50": percentile(tpot, 50), "tpot_p99": percentile(tpot, 99),
                    "rejected": sum(1 for r in rs if r["error"])}
    return out


def stream_parser(doc: str, requests: int, rate_scale: float, len_scale: int, name: str) -> argparse.ArgumentParser:
    """The stream and output flags shared by the live benchmarks, with their defaults."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--requests", type=int, default=requests)
    ap.add_argument("--rate-scale", type=float, default=rate_scale)
    ap.add_argument("--len-scale", type=int, default=len_scale)
    ap.add_argument("--mix", default="interactive:0.2,standard:0.5,batch:0.3")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default=name, help=f"result file stem (default {name})")
    return ap


def median_summary(summaries: list[dict]) -> dict:
    """Per class and metric, the median over runs of ``summarize`` results (one run: that run)."""
    return {cls: {k: statistics.median(s[cls][k] for s in summaries) if isinstance(v, (int, float)) else v
                  for k, v in first.items()} for cls, first in summaries[0].items()}


def measure_server(name: str, hfx: bool, reqs: list[dict], model, classes: str, args) -> tuple[dict, dict | None]:
    """One server started, warmed up, fed the stream and stopped: its summary and (HFX) scheduler state."""
    server = SGLangServer(model, hfx=hfx, extra_args=["--enable-mixed-chunk"] if hfx and not args.no_mixed_chunk
                          else [], env={"HFX_SLO_CLASSES": classes}, name=name)
    try:
        server.start()
        replay(server, reqs[:4])  # warm-up (and a first calibration) outside the measurement
        summary = summarize(replay(server, reqs))
        state = None
        if hfx:
            st = server.hfx_state()
            state = {k: st.get(k) for k in ("hook_overhead", "iterations", "fits", "fit_median_rel_error",
                                            "model_trusted", "rejected", "demoted", "preempted", "plan_reasons",
                                            "hook_s_by_hook")}
        return summary, state
    finally:
        server.stop()


def main() -> int:
    ap = stream_parser(__doc__, 80, 8.0, 8, "live_cpu")
    ap.add_argument("--no-mixed-chunk", action="store_true",
                    help="run the HFX server without --enable-mixed-chunk (on this CPU backend mixed steps are "
                         "costlier than separate ones)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of stock then HFX; the table gives the median of each metric over the rounds")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    rows = load_trace(Path(args.traces_dir) / "azure_conv_2023.csv", args.requests)
    reqs = stream(rows, args)
    model = ensure_tiny_model()
    classes = cpu_classes_file()
    rounds = []
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine does not hit one server only
        stock, _ = measure_server("stock", False, reqs, model, classes, args)
        hfx, state = measure_server("hfx", True, reqs, model, classes, args)
        rounds.append({"stock": stock, "hfx": hfx, "hfx_state": state})
    runs = {name: median_summary([r[name] for r in rounds]) for name in ("stock", "hfx")}

    def ratio(h: dict, s: dict) -> float:
        return h["overall"]["attainment"] / s["overall"]["attainment"] if s["overall"]["attainment"] else math.inf

    def every_class(h: dict, s: dict) -> bool:
        return all(h[c]["attainment"] >= s[c]["attainment"] for c in h)

    reps = f" --repeats {args.repeats}" if args.repeats > 1 else ""
    md = [f"# Live CPU benchmark: stock SGLang vs HFX plugin\n",
          f"Produced by `python bench/live/run.py --requests {args.requests} --rate-scale {args.rate_scale:g} "
          f"--len-scale {args.len_scale} --name {args.name}{' --no-mixed-chunk' if args.no_mixed_chunk else ''}"
          f"{reps}` on a 2-core CPU machine (load average before: {load_before}), tiny generated Llama model, "
          f"SGLang 0.5.23 (HFX {'without' if args.no_mixed_chunk else 'with'} `--enable-mixed-chunk`). Azure 2023 "
          f"conversation trace, first {args.requests} requests, arrivals x{args.rate_scale:g}, lengths "
          f"/{args.len_scale}; classes {args.mix} with CPU-scaled targets (`hyperflexis_sglang/testing/classes.py`)."
          + (f" {args.repeats} rounds of stock then HFX; each cell is the median over the rounds." if reps else "")
          + "\n",
          "| server | class | n | attainment | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | rejected |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, s in runs.items():
        for cls, v in s.items():
            md.append(f"| {name} | {cls} | {int(v['n'])} | {v['attainment']:.3f} | {v['ttft_p50']:.2f}s | "
                      f"{v['ttft_p99']:.2f}s | {v['tpot_p50'] * 1e3:.0f}ms | {v['tpot_p99'] * 1e3:.0f}ms | "
                      f"{v['rejected']:g} |")
    md += ["", f"Overall attainment HFX / stock: {ratio(runs['hfx'], runs['stock']):.2f}x. Every class HFX >= stock: "
           f"{every_class(runs['hfx'], runs['stock'])}."]
    if reps:
        md += ["", "| round | stock overall | HFX overall | HFX / stock | every class HFX >= stock | hook overhead |",
               "|---|---|---|---|---|---|"]
        md += [f"| {i + 1} | {r['stock']['overall']['attainment']:.3f} | {r['hfx']['overall']['attainment']:.3f} | "
               f"{ratio(r['hfx'], r['stock']):.2f}x | {every_class(r['hfx'], r['stock'])} | "
               f"{r['hfx_state']['hook_overhead']:.2%} |" for i, r in enumerate(rounds)]
    md += ["", f"HFX scheduler state after the last run: {rounds[-1]['hfx_state']} (hook_overhead = time in HFX "
           "hooks / iteration time)."]
    write_report(args.out, args.name, "\n".join(md) + "\n",
                 {"args": vars(args), "runs": runs, "hfx_state": rounds[-1]["hfx_state"], "rounds": rounds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
