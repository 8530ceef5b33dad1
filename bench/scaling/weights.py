"""Weight load time on the CPU: disk vs R-Fork-style per-parameter broadcast vs HFX bucketed multi-seed, and fan-out.

One run, on a generated Llama-shaped model (random weights, safetensors,
default ~620 MB of float32 parameters), with every instance a separate
process (standalone weight agents, torch.distributed gloo over localhost TCP):

* ``disk``: a fresh process reads the safetensors file into memory, once
  with the file in the page cache (warm) and once after evicting this file's
  pages (``posix_fadvise DONTNEED``; cold-ish: the device may still cache);
* ``rfork``: 1 seed -> 1 new instance, one synchronous broadcast per
  parameter (SGLang's ``/send_weights_to_remote_instance`` loop);
* ``hfx_1seed``: 1 seed -> 1, bucketed (isolates the effect of buckets);
* ``hfx_2seeds``: 2 seeds -> 1, buckets split across the seeds in parallel;
* ``fanout3``: 2 seeds -> 3 new instances at once, receivers forward buckets;
* ``nofanout3``: the same without forwarding (only the seeds send).

Transfer times are the controller's wall clock of the session (group set-up
included, checksums excluded); every transfer is verified bit-exact
(BLAKE2b of every parameter) before it counts. Medians over ``--repeats``,
interleaved. Writes ``bench/results/scaling_weights.{md,json,png}``.

    python bench/scaling/weights.py [--repeats 3] [--hidden 1024 --layers 8 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.sglang_ext.tiny_model import TinyLlamaSpec, ensure_tiny_model  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402
from hyperflexis_sglang.weights.orchestrate import load_from_peers, load_per_param  # noqa: E402
from hyperflexis_sglang.weights.standalone import AgentProcess  # noqa: E402

OUT = ROOT / "bench" / "results" / "scaling_weights"
CASES = ("disk_warm", "disk_cold", "rfork", "hfx_1seed", "hfx_2seeds", "fanout3", "nofanout3")
LABELS = {"disk_warm": "disk (safetensors, page cache warm)", "disk_cold": "disk (file pages evicted)",
          "rfork": "R-Fork style: per-parameter broadcast, 1 seed -> 1",
          "hfx_1seed": "HFX buckets, 1 seed -> 1", "hfx_2seeds": "HFX buckets, 2 seeds -> 1",
          "fanout3": "HFX 2 seeds -> 3 at once (fan-out)", "nofanout3": "HFX 2 seeds -> 3, no fan-out"}


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_load(model: Path, cold: bool) -> float:
    if cold:
        evict(model / "model.safetensors")
    a = AgentProcess(model).start()
    a.stop()
    return a.load_s


def transfer(kind: str, seeds: list[AgentProcess], news: list[AgentProcess], bucket_mb: int) -> float:
    s, n = [a.url for a in seeds], [a.url for a in news]
    if kind == "rfork":
        report = load_per_param(n[:1], s[0])
    else:
        targets = n if kind in ("fanout3", "nofanout3") else n[:1]
        sources = s[:1] if kind == "hfx_1seed" else s
        report = load_from_peers(targets, sources, bucket_mb=bucket_mb, fanout=kind != "nofanout3",
                                 fallback_disk=False)
    if not report.ok or len(report.attempts) != 1:
        raise RuntimeError(f"{kind}: transfer not verified: {report}")
    return report.transfer_seconds


def run(spec: TinyLlamaSpec, repeats: int, bucket_mb: int, cache: Path) -> dict:
    model = ensure_tiny_model(cache, spec)
    size = (model / "model.safetensors").stat().st_size
    times: dict[str, list[float]] = {c: [] for c in CASES}
    load_before = os.getloadavg()
    seeds = [AgentProcess(model).launch() for _ in range(2)]
    news = [AgentProcess(model, dummy=True).launch() for _ in range(3)]
    try:
        for a in seeds + news:
            a.wait_ready()
        for rep in range(repeats):
            for case in CASES:
                t = disk_load(model, case == "disk_cold") if case.startswith("disk") \
                    else transfer(case, seeds, news, bucket_mb)
                times[case].append(t)
                print(f"repeat {rep + 1}/{repeats} {case:<11} {t:7.3f} s", flush=True)
    finally:
        for a in seeds + news:
            a.stop()
    return summarise(spec, size, bucket_mb, times, load_before, os.getloadavg())


def summarise(spec, size: int, bucket_mb: int, times: dict, load_before, load_after) -> dict:
    med = {c: statistics.median(v) for c, v in times.items()}
    ratios = {"rfork_over_hfx_2seeds": med["rfork"] / med["hfx_2seeds"],
              "rfork_over_hfx_1seed": med["rfork"] / med["hfx_1seed"],
              "fanout3_over_one": med["fanout3"] / med["hfx_2seeds"],
              "nofanout3_over_one": med["nofanout3"] / med["hfx_2seeds"],
              "disk_warm_over_hfx_2seeds": med["disk_warm"] / med["hfx_2seeds"]}
    return {"model": dataclasses.asdict(spec), "weight_bytes": size, "bucket_mb": bucket_mb,
            "cpu_cores": os.cpu_count(), "loadavg_before": list(load_before), "loadavg_after": list(load_after),
            "backend": "gloo (TCP, localhost)", "times_s": times, "median_s": med, "ratios": ratios,
            "targets": {"rfork_over_hfx_2seeds >= 3": ratios["rfork_over_hfx_2seeds"] >= 3,
                        "fanout3_over_one <= 1.5": ratios["fanout3_over_one"] <= 1.5}}


def table(res: dict) -> str:
    mb = res["weight_bytes"] / 1e6
    lines = [f"Model: Llama-shaped, {mb:.0f} MB float32 ({res['model']['layers']} layers, hidden "
             f"{res['model']['hidden']}, vocab {res['model']['vocab']}); {res['cpu_cores']} CPU cores shared "
             f"with other work (load average {res['loadavg_before'][0]:.1f} before, "
             f"{res['loadavg_after'][0]:.1f} after); {res['backend']}; buckets <= {res['bucket_mb']} MiB.",
             "", "| case | median s | GB/s per new instance | runs (s) |", "|---|---|---|---|"]
    for case in CASES:
        runs = ", ".join(f"{t:.2f}" for t in res["times_s"][case])
        lines.append(f"| {LABELS[case]} | {res['median_s'][case]:.3f} | "
                     f"{res['weight_bytes'] / 1e9 / res['median_s'][case]:.2f} | {runs} |")
    r = res["ratios"]
    lines += ["", "| ratio | value | target |", "|---|---|---|",
              f"| R-Fork per-parameter / HFX 2 seeds | {r['rfork_over_hfx_2seeds']:.2f}x | >= 3x |",
              f"| R-Fork per-parameter / HFX 1 seed | {r['rfork_over_hfx_1seed']:.2f}x | |",
              f"| fan-out to 3 / one instance (2 seeds) | {r['fanout3_over_one']:.2f}x | <= 1.5x |",
              f"| no fan-out to 3 / one instance | {r['nofanout3_over_one']:.2f}x | |",
              f"| disk (warm) / HFX 2 seeds | {r['disk_warm_over_hfx_2seeds']:.2f}x | |"]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.barh([LABELS[c] for c in CASES][::-1], [res["median_s"][c] for c in CASES][::-1], color="#4c72b0")
    ax.set_xlabel("seconds (median)")
    ax.set_title(f"Weight load, {res['weight_bytes'] / 1e6:.0f} MB, CPU gloo ({res['cpu_cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    os.chmod(path, 0o644)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bucket-mb", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--cache", type=Path, default=Path("~/.cache/hyperflexis/bench-llama").expanduser())
    p.add_argument("--out", type=Path, default=OUT, help="output path without extension")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.bucket_mb < 1:
        p.error("--repeats and --bucket-mb must be >= 1")
    spec = TinyLlamaSpec(layers=args.layers, hidden=args.hidden, heads=16, kv_heads=4,
                         intermediate=args.intermediate, vocab=args.vocab)
    if spec.problems():
        p.error("; ".join(f"{f} {m}" for f, m in spec.problems()))
    t0 = time.time()
    res = run(spec, args.repeats, args.bucket_mb, args.cache)
    res["wall_s"] = time.time() - t0
    text = table(res)
    print(text)
    write_atomic(str(args.out) + ".json", (json.dumps(res, indent=2) + "\n").encode())
    write_atomic(str(args.out) + ".md", ("# Weight loading on the CPU (issue 5, benchmark 7b)\n\n"
                                        "`python bench/scaling/weights.py`\n\n" + text).encode())
    plot(res, Path(str(args.out) + ".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
