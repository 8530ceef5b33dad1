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
* ``hfx_3seeds``: 3 seeds -> 1 (three streams into the new instance);
* ``hfx_4seeds``: 4 seeds -> 1 (on a link-limited network the speed-up over
  one seed is bounded by the number of seeds: each seed's link is the limit);
* ``fanout3``: 2 seeds -> 3 new instances at once, receivers forward buckets;
* ``nofanout3``: the same without forwarding (only the seeds send).

Transfer times are the controller's wall clock of the session (group set-up
included, checksums excluded); every transfer is verified bit-exact
(BLAKE2b of every parameter) before it counts. Medians over ``--repeats``,
interleaved. The transfer cases run twice: on the plain CPU (the 2 cores
are the limit for every process at once) and with an emulated per-node
link (``--link-gbs``: each instance's sending is paced to that rate, as a
NIC would cap it; the CPU is then not the limit). Writes
``bench/results/scaling_weights.{md,json,png}``.

    python bench/scaling/weights.py [--repeats 3] [--link-gbs 0.1] [--hidden 1024 --layers 8 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
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
CASES = ("disk_warm", "disk_cold", "rfork", "hfx_1seed", "hfx_2seeds", "hfx_3seeds", "hfx_4seeds", "fanout3",
         "nofanout3")
LABELS = {"disk_warm": "disk (safetensors, page cache warm)", "disk_cold": "disk (file pages evicted)",
          "rfork": "R-Fork style: per-parameter broadcast, 1 seed -> 1",
          "hfx_1seed": "HFX buckets, 1 seed -> 1", "hfx_2seeds": "HFX buckets, 2 seeds -> 1",
          "hfx_3seeds": "HFX buckets, 3 seeds -> 1", "hfx_4seeds": "HFX buckets, 4 seeds -> 1",
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
        sources = {"hfx_1seed": s[:1], "hfx_3seeds": s[:3], "hfx_4seeds": s[:4]}.get(kind, s[:2])
        report = load_from_peers(targets, sources, bucket_mb=bucket_mb, fanout=kind != "nofanout3",
                                 max_recv_streams=len(sources), fallback_disk=False)
    if not report.ok or len(report.attempts) != 1:
        raise RuntimeError(f"{kind}: transfer not verified: {report}")
    return report.transfer_seconds


def measure(model: Path, repeats: int, bucket_mb: int, pace_gbs: float, disk: bool) -> dict[str, list[float]]:
    """Times of every case (disk ones only when ``disk``), interleaved over repeats."""
    cases = [c for c in CASES if disk or not c.startswith("disk")]
    times: dict[str, list[float]] = {c: [] for c in cases}
    extra = ["--pace-gbs", str(pace_gbs)] if pace_gbs else []
    seeds = [AgentProcess(model, extra=extra).launch() for _ in range(4)]
    news = [AgentProcess(model, dummy=True, extra=extra).launch() for _ in range(3)]
    try:
        for a in seeds + news:
            a.wait_ready()
        for rep in range(repeats):
            for case in cases:
                t = disk_load(model, case == "disk_cold") if case.startswith("disk") \
                    else transfer(case, seeds, news, bucket_mb)
                times[case].append(t)
                print(f"[{'link ' + str(pace_gbs) + ' GB/s' if pace_gbs else 'cpu'}] repeat {rep + 1}/{repeats} "
                      f"{case:<11} {t:7.3f} s", flush=True)
    finally:
        for a in seeds + news:
            a.stop()
    return times


def run(spec: TinyLlamaSpec, repeats: int, bucket_mb: int, cache: Path, link_gbs: float) -> dict:
    model = ensure_tiny_model(cache, spec)
    size = (model / "model.safetensors").stat().st_size
    load_before = os.getloadavg()
    setups = {"cpu": measure(model, repeats, bucket_mb, 0.0, True)}
    if link_gbs > 0:
        setups[f"link_{link_gbs:g}"] = measure(model, repeats, bucket_mb, link_gbs, False)
    return {"model": dataclasses.asdict(spec), "weight_bytes": size, "bucket_mb": bucket_mb,
            "cpu_cores": os.cpu_count(), "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
            "backend": "gloo (TCP, localhost)", "link_gbs": link_gbs,
            "setups": {name: summarise(times) for name, times in setups.items()}}


def summarise(times: dict) -> dict:
    med = {c: statistics.median(v) for c, v in times.items()}
    ratios = {"rfork_over_hfx_2seeds": med["rfork"] / med["hfx_2seeds"],
              "rfork_over_hfx_3seeds": med["rfork"] / med["hfx_3seeds"],
              "rfork_over_hfx_4seeds": med["rfork"] / med["hfx_4seeds"],
              "rfork_over_hfx_1seed": med["rfork"] / med["hfx_1seed"],
              "fanout3_over_one": med["fanout3"] / med["hfx_2seeds"],
              "nofanout3_over_one": med["nofanout3"] / med["hfx_2seeds"]}
    if "disk_warm" in med:
        ratios["disk_warm_over_hfx_2seeds"] = med["disk_warm"] / med["hfx_2seeds"]
    return {"times_s": times, "median_s": med, "ratios": ratios,
            "targets_met": {"rfork_over_hfx_2seeds >= 3": ratios["rfork_over_hfx_2seeds"] >= 3,
                            "fanout3_over_one <= 1.5": ratios["fanout3_over_one"] <= 1.5},
            "seeds_for_3x": seeds_for(med, 3.0)}


def seeds_for(med: dict, speedup: float) -> int | None:
    """Fewest seeds at which HFX loads ``speedup`` times faster than R-Fork's per-parameter broadcast (None: never)."""
    counts = {"hfx_1seed": 1, "hfx_2seeds": 2, "hfx_3seeds": 3, "hfx_4seeds": 4}
    return min((n for c, n in counts.items() if c in med and med["rfork"] / med[c] >= speedup), default=None)


def table(res: dict) -> str:
    mb = res["weight_bytes"] / 1e6
    m = res["model"]
    lines = [f"Model: Llama-shaped, {mb:.0f} MB float32 ({m['layers']} layers, hidden {m['hidden']}, "
             f"intermediate {m['intermediate']}, vocab {m['vocab']}); every instance a separate process; "
             f"{res['backend']}; buckets <= {res['bucket_mb']} MiB (at least 16 per model). "
             f"{res['cpu_cores']} CPU cores shared with other work (load average {res['loadavg_before'][0]:.1f} "
             f"before, {res['loadavg_after'][0]:.1f} after)."]
    for name, setup in res["setups"].items():
        title = ("Plain CPU: every transfer is a memory copy through the kernel on the same 2 cores"
                 if name == "cpu" else f"Emulated per-node link: each instance sends at most "
                 f"{res['link_gbs']:g} GB/s (paced in the sender, like a NIC); the CPU is no longer the limit")
        lines += ["", f"### {title}", "", "| case | median s | GB/s per new instance | runs (s) |",
                  "|---|---|---|---|"]
        for case, med in setup["median_s"].items():
            runs = ", ".join(f"{t:.2f}" for t in setup["times_s"][case])
            lines.append(f"| {LABELS[case]} | {med:.3f} | {res['weight_bytes'] / 1e9 / med:.2f} | {runs} |")
        r = setup["ratios"]
        lines += ["", "| ratio | value | target |", "|---|---|---|",
                  f"| R-Fork per-parameter / HFX 2 seeds | {r['rfork_over_hfx_2seeds']:.2f}x | >= 3x |",
                  f"| R-Fork per-parameter / HFX 3 seeds | {r['rfork_over_hfx_3seeds']:.2f}x | |",
                  f"| R-Fork per-parameter / HFX 4 seeds | {r['rfork_over_hfx_4seeds']:.2f}x | |",
                  f"| R-Fork per-parameter / HFX 1 seed | {r['rfork_over_hfx_1seed']:.2f}x | |",
                  f"| fan-out to 3 / one instance (2 seeds) | {r['fanout3_over_one']:.2f}x | <= 1.5x |",
                  f"| no fan-out to 3 / one instance | {r['nofanout3_over_one']:.2f}x | |"]
        if "disk_warm_over_hfx_2seeds" in r:
            lines.append(f"| disk (warm) / HFX 2 seeds | {r['disk_warm_over_hfx_2seeds']:.2f}x | |")
        need = setup["seeds_for_3x"]
        lines += ["", f"R-Fork per-parameter / HFX >= 3x: {f'from {need} seeds on' if need else 'with none of 1-4 seeds'}."]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    setups = res["setups"]
    fig, axes = plt.subplots(1, len(setups), figsize=(7 * len(setups), 3.8), squeeze=False)
    for ax, (name, setup) in zip(axes[0], setups.items()):
        cases = list(setup["median_s"])
        ax.barh([LABELS[c] for c in cases][::-1], [setup["median_s"][c] for c in cases][::-1], color="#4c72b0")
        ax.set_xlabel("seconds (median)")
        ax.set_title("plain CPU" if name == "cpu" else f"emulated link {res['link_gbs']:g} GB/s per node")
    fig.suptitle(f"Weight load, {res['weight_bytes'] / 1e6:.0f} MB, gloo, {res['cpu_cores']} cores")
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
    p.add_argument("--link-gbs", type=float, default=0.1,
                   help="second setup: each instance sends at most this many GB/s (0: skip)")
    p.add_argument("--cache", type=Path, default=Path("~/.cache/hyperflexis/bench-llama").expanduser())
    p.add_argument("--out", type=Path, default=OUT, help="output path without extension")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.bucket_mb < 1 or args.link_gbs < 0:
        p.error("--repeats and --bucket-mb must be >= 1, --link-gbs >= 0")
    spec = TinyLlamaSpec(layers=args.layers, hidden=args.hidden, heads=16, kv_heads=4,
                         intermediate=args.intermediate, vocab=args.vocab)
    if spec.problems():
        p.error("; ".join(f"{f} {m}" for f, m in spec.problems()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the agents (finally) when terminated
    t0 = time.time()
    res = run(spec, args.repeats, args.bucket_mb, args.cache, args.link_gbs)
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
