"""Simulator fidelity: the live CPU request stream, measured on SGLang and replayed in the simulator.

The stream of ``run.py`` (same arrivals, lengths and SLO classes) runs on
three servers, one at a time (``run.py``'s ``replay``): stock SGLang, the
same engine with the plugin calibrating but scheduling as stock
(``HFX_POLICY=sglang-fcfs``), and HFX (``--enable-mixed-chunk``). Then the
identical stream runs in the simulator: one replica with the live engine's
settings read from ``/server_info`` (chunked prefill size, max prefill
tokens, max running requests, mixed chunk, page size, KV pool size), the
same policy objects (``sglang-fcfs``, ``hfx``) from the plugin's registry
(preemption as each server has it: the plugin's servers preempt, stock
SGLang without ``--enable-priority-preemption`` does not), prompt lengths counted by
the model's own tokenizer, and the performance model the plugin fitted
online on that engine configuration (stock SGLang fits none: it gets the
calibrating stock-scheduled server's). Simulated TTFTs include the request
path outside the engine (HTTP, tokenizer, IPC, streaming), measured on the
idle server by lone probe requests before the stream. The simulated engine's
iterations take the fitted model times the fit's measured / predicted total
time (``fit_mean_ratio``: the relative-error fit weighs the slow iterations of
a noisy machine little, and queueing delays add them up); the policy plans with
the fitted model itself, as it does live. Reports measured vs simulated
TTFT/TPOT p50/p99 and attainment per class with relative errors, and the
targets (p50 within 15%, p99 within 25%). Writes ``bench/results/NAME.{md,json,png}``.

A 2-core machine is noisy: the same server on the same stream differs from
run to run by about as much as the targets allow. ``--repeats N`` runs the
three servers N times, interleaved, simulates each run with the model that run
fitted, and compares the median of every metric over the live runs with the
median over the simulated ones; the report also gives the live run-to-run spread.

    python bench/live/fidelity.py [--requests 120] [--rate-scale 20] [--len-scale 2] [--repeats 3] [--name fidelity]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (cpu_classes_file, median_summary, prompt, replay, stream, stream_parser, summarize,  # noqa: E402
                 write_report)

from hyperflexis_sglang.controller.local import SGLangServer  # noqa: E402
from hyperflexis_sglang.core.perf_model import FEATURES, PerfModel  # noqa: E402
from hyperflexis_sglang.core.slo import avg_tpot, meets_slo  # noqa: E402
from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model  # noqa: E402
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig  # noqa: E402
from hyperflexis_sglang.sim.workload import Workload, load_trace  # noqa: E402
from hyperflexis_sglang.testing.client import stream_generate  # noqa: E402

TARGETS = (("p50", ("ttft_p50", "tpot_p50"), 0.15), ("p99", ("ttft_p99", "tpot_p99"), 0.25))
METRICS = ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99")
# server -> (plugin policy or None for stock SGLang, --enable-mixed-chunk, simulated policy, whose fitted model).
# Stock SGLang fits no model; "fcfs-plugin" is the same engine with the plugin calibrating and scheduling as stock
# (a model fitted on HFX's mixed iterations does not transfer: CPU mixed steps cost differently).
PROBES, PROBE_WORDS = 5, 8  # lone requests on the idle server that measure the path outside the engine
SERVERS = {"stock": (None, False, "sglang-fcfs", "fcfs-plugin"),  # stock SGLang: no preemption (its default)
           "fcfs-plugin": ("sglang-fcfs", False, "sglang-fcfs", "fcfs-plugin"),
           "hfx": ("hfx", True, "hfx", "hfx")}


def prompt_tokens(texts: list[str], model_dir: str) -> list[int]:
    """Token count of every prompt under the served model's tokenizer (BOS included, as SGLang counts)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    return [len(tok(text)["input_ids"]) for text in texts]


def frontend_latency(ttfts: list[float], tokens: list[int], perf: PerfModel) -> float:
    """Median TTFT of lone requests on an idle server beyond their predicted prefill iteration: the HTTP,
    tokenizer, IPC, detokenizer and streaming path, which the simulator's engine does not see."""
    extra = sorted(t - perf.prefill_time(n) for t, n in zip(ttfts, tokens))
    return max(0.0, extra[len(extra) // 2]) if extra else 0.0


def sim_workload(reqs: list[dict], tokens: list[int]) -> Workload:
    """The live stream as a simulator workload: same arrivals, SLOs and output lengths; prompts in tokens."""
    if len(tokens) != len(reqs):
        raise ValueError(f"{len(tokens)} token counts for {len(reqs)} requests")
    return Workload(tuple(r["t"] for r in reqs), tuple(tokens), tuple(r["out"] for r in reqs),
                    tuple(() for _ in reqs), tuple(r["slo"] for r in reqs))


def engine_settings(info: dict) -> dict:
    """The scheduler limits and KV pool size of a live server, from its ``/server_info``."""
    state = (info.get("internal_states") or [{}])[0]
    return {"chunk_size": int(info["chunked_prefill_size"]), "max_prefill_tokens": int(info["max_prefill_tokens"]),
            "max_running": int(state["effective_max_running_requests_per_dp"]),
            "mixed": bool(info.get("enable_mixed_chunk")), "page_size": int(info.get("page_size") or 1),
            "kv_capacity": int(state["memory_usage"]["token_capacity"])}


def simulate_stream(wl: Workload, policy: str, settings: dict, perf: PerfModel,
                    frontend_s: float = 0.0, preemption: bool = False, mean_ratio: float = 1.0) -> list[dict]:
    """Run ``wl`` on one simulated replica like the live engine; per-request results as ``replay`` gives them,
    TTFT including ``frontend_s`` of request path outside the engine. The policy plans with ``perf`` (the
    plugin's fit, as live); the simulated engine's iterations take ``perf`` x ``mean_ratio`` (the fit's
    measured / predicted total time: the slow iterations the relative-error fit weighs little)."""
    overrides = tuple((k, settings[k]) for k in ("chunk_size", "max_prefill_tokens", "max_running", "mixed",
                                                    "page_size")) + (("preemption", preemption),)
    cfg = ClusterConfig(policy=policy, router="round_robin", replicas=1, scheduler_overrides=overrides,
                        ignore_eos=True)  # run.py sends ignore_eos
    model = replace(perf, kv_capacity_tokens=settings["kv_capacity"])
    truth = replace(model, **{f: getattr(model, f) * mean_ratio for f in FEATURES})
    cluster = Cluster(cfg, model, truth)
    cluster.run(wl)
    out = []
    for i in range(len(wl)):
        r = cluster.requests[i]
        done = r.finish_time is not None
        sent = r.arrival - frontend_s
        out.append({"cls": r.slo.cls, "met": meets_slo(r.slo, sent, r.first_token_time, r.finish_time, r.output_len),
                    "ttft": None if r.first_token_time is None else r.first_token_time - sent,
                    "tpot": avg_tpot(r.first_token_time, r.finish_time, r.output_len)
                    if done and r.output_len > 1 else None,
                    "error": r.reason if r.rejected else ("" if done else "unfinished")})
    return out


def spread(summaries: list[dict]) -> dict:
    """Live run-to-run spread of the overall metrics: (max - min) / median over the runs."""
    return {k: (max(v) - min(v)) / statistics.median(v) if statistics.median(v) else 0.0
            for k in METRICS for v in [[s["overall"][k] for s in summaries]]}


def rel_err(sim: float, meas: float) -> float:
    """Signed relative error of a simulated value against the measured one."""
    return (sim - meas) / meas if meas else (0.0 if sim == meas else float("inf"))


def compare(measured: dict, simulated: dict) -> dict:
    """Per class: measured and simulated value of every metric, relative errors, attainment difference."""
    out = {}
    for cls, m in measured.items():
        s = simulated[cls]
        out[cls] = {"n": m["n"], "measured": {k: m[k] for k in (*METRICS, "attainment")},
                    "simulated": {k: s[k] for k in (*METRICS, "attainment")},
                    "rel_err": {k: rel_err(s[k], m[k]) for k in METRICS},
                    "attainment_diff": s["attainment"] - m["attainment"]}
    return out


def verdicts(comparisons: dict) -> list[dict]:
    """Each target on the overall rows of every server, and on all rows (per class too)."""
    out = []
    for name, metrics, tol in TARGETS:
        for scope in ("overall", "every class"):
            errs = [abs(c["rel_err"][k]) for cmp in comparisons.values() for cls, c in cmp.items()
                    if scope != "overall" or cls == "overall" for k in metrics]
            out.append({"target": f"{name} within {tol:.0%}", "scope": scope, "met": max(errs) <= tol,
                        "worst": max(errs), "within": sum(e <= tol for e in errs), "of": len(errs)})
    return out


def run_server(name: str, reqs: list[dict], model: str, classes: str) -> dict:
    """Start one server, warm it up, replay the stream; its results, settings and plugin state."""
    policy, mixed = SERVERS[name][:2]
    server = SGLangServer(model, hfx=policy is not None, extra_args=["--enable-mixed-chunk"] if mixed else [],
                          env={"HFX_SLO_CLASSES": classes, "HFX_POLICY": policy or "hfx"}, name=name)
    try:
        server.start()
        replay(server, reqs[:4])  # warm-up (and a first calibration) outside the measurement
        probes = [stream_generate(server.url, {"text": prompt(i, PROBE_WORDS), "sampling_params": {
            "max_new_tokens": 2, "temperature": 0, "ignore_eos": True}}).ttft for i in range(PROBES)]
        load_before = os.getloadavg()
        results = replay(server, reqs)
        _, one = server.post("/generate", {"text": prompt(0, reqs[0]["words"]),
                                           "sampling_params": {"max_new_tokens": 1}})
        return {"results": results, "settings": engine_settings(server.get("/server_info")),
                "hfx_state": server.hfx_state() if policy else None, "probe_ttft": probes,
                "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                "prompt0_tokens": one.get("meta_info", {}).get("prompt_tokens")}
    finally:
        server.stop()


def _pct(e: float) -> str:
    return f"{e:+.0%}"


def table(comparisons: dict) -> list[str]:
    md = ["| server | class | n | TTFT p50 meas / sim (err) | TTFT p99 meas / sim (err) | "
          "TPOT p50 meas / sim (err) | TPOT p99 meas / sim (err) | attainment meas / sim |",
          "|---|---|---|---|---|---|---|---|"]
    for name, cmp in comparisons.items():
        for cls, c in cmp.items():
            m, s, e = c["measured"], c["simulated"], c["rel_err"]
            cells = [f"{m[k]:.3f}s / {s[k]:.3f}s ({_pct(e[k])})" if k.startswith("ttft") else
                     f"{m[k] * 1e3:.1f}ms / {s[k] * 1e3:.1f}ms ({_pct(e[k])})" for k in METRICS]
            md.append(f"| {name} | {cls} | {c['n']} | {' | '.join(cells)} | "
                      f"{m['attainment']:.3f} / {s['attainment']:.3f} |")
    return md


def plot_cdfs(live: dict, sims: dict, path: Path) -> None:
    """Measured vs simulated CDFs of TTFT and TPOT (all runs pooled), one row per server."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(sims), 2, figsize=(9, 3.2 * len(sims)), squeeze=False)
    for row, name in enumerate(sims):
        for col, metric in enumerate(("ttft", "tpot")):
            ax = axes[row][col]
            for label, runs, style in (("measured", [r["results"] for r in live[name]], "-"),
                                       ("simulated", sims[name], "--")):
                xs = sorted(r[metric] for rs in runs for r in rs if r[metric] is not None and not r["error"])
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], style, label=label)
            ax.set_xscale("log")
            ax.set_xlabel(f"{metric.upper()} (s)")
            ax.set_title(f"{name}: {metric.upper()}")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def load_measured(path: str) -> tuple[dict, str]:
    """The live runs and command of an earlier report (one run per server in reports before ``--repeats``)."""
    saved = json.loads(Path(path).read_text())
    return {n: runs if isinstance(runs, list) else [runs] for n, runs in saved["live"].items()}, saved["command"]


def main() -> int:
    ap = stream_parser(__doc__, 120, 20.0, 2, "fidelity")
    ap.add_argument("--repeats", type=int, default=1, help="live runs per server, interleaved (default 1)")
    ap.add_argument("--measured", help="re-simulate the live results of an earlier NAME.json (same stream "
                                       "flags) instead of running the servers")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    rows = load_trace(Path(args.traces_dir) / "azure_conv_2023.csv", args.requests)
    reqs = stream(rows, args)
    model = str(ensure_tiny_model())
    tokens = prompt_tokens([prompt(i, r["words"]) for i, r in enumerate(reqs)], model)
    probe_tokens = prompt_tokens([prompt(i, PROBE_WORDS) for i in range(PROBES)], model)
    cmd = (f"python bench/live/fidelity.py --requests {args.requests} --rate-scale {args.rate_scale:g} "
           f"--len-scale {args.len_scale} --repeats {args.repeats} --name {args.name}")
    if args.measured:
        live, cmd = load_measured(args.measured)
    else:
        classes = cpu_classes_file()
        live = {name: [] for name in SERVERS}
        for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every server
            for name in SERVERS:
                live[name].append(run_server(name, reqs, model, classes))
    runs = len(live["hfx"])
    wl = sim_workload(reqs, tokens)
    sims: dict = {name: [] for name in SERVERS}
    frontend: dict = {name: [] for name in SERVERS}
    mean_ratios: dict = {name: [] for name in SERVERS}
    for i in range(runs):  # each run simulated with the model fitted in that round
        for name, (policy, _, sim_policy, fitted) in SERVERS.items():
            state = live[fitted][i]["hfx_state"]
            perf = PerfModel.from_dict(state["perf_model"])
            fe = frontend_latency(live[name][i]["probe_ttft"], probe_tokens, perf)
            frontend[name].append(fe)
            ratio = state.get("fit_mean_ratio") or 1.0  # reports before it: unscaled
            mean_ratios[name].append(ratio)
            sims[name].append(simulate_stream(wl, sim_policy, live[name][i]["settings"], perf, fe,
                                              preemption=policy is not None, mean_ratio=ratio))
    measured = {name: [summarize(r["results"]) for r in live[name]] for name in SERVERS}
    comparisons = {name: compare(median_summary(measured[name]), median_summary([summarize(s) for s in sims[name]]))
                   for name in SERVERS}
    checks = verdicts(comparisons)
    noise = compare(median_summary(measured["stock"]), median_summary(measured["fcfs-plugin"]))["overall"]
    load = " / ".join(f"{n} " + ", ".join(f"{r['loadavg_before'][0]:.2f}" for r in live[n]) for n in SERVERS)
    how = (f"the median of each metric over {runs} interleaved live runs per server against the median over "
           f"{runs} simulations (each with the model its run fitted)" if runs > 1 else "one live run per server")
    md = ["# Simulator fidelity: live CPU SGLang vs the simulator on the same stream\n",
          f"Live runs: `{cmd}` on a 2-core CPU machine (1-minute load average before each measurement: {load}), "
          f"tiny generated Llama model, SGLang 0.5.23; Azure 2023 conversation trace, first {args.requests} "
          f"requests, arrivals x{args.rate_scale:g}, lengths /{args.len_scale}, classes {args.mix} (CPU targets). "
          "Servers: `stock` (plain SGLang), `fcfs-plugin` (the same with the plugin calibrating, "
          "`HFX_POLICY=sglang-fcfs`), `hfx` (plugin, `--enable-mixed-chunk`). Simulated with each server's engine "
          "settings and the model fitted online by the plugin on the same engine configuration (stock: "
          "fcfs-plugin's); policy `sglang-fcfs` or `hfx`, preemption as the live server (plugin: on; stock: off), "
          "KV reserved for every remaining token (`ignore_eos`, as SGLang does for such requests). The policy "
          "plans with the fitted model, as live; the simulated engine's iterations take that model times its "
          "measured / predicted total iteration time on the fit's samples (the relative-error fit weighs the "
          "slow iterations of a noisy machine little): "
          + ", ".join(f"{n} " + "/".join(f"{v:.3f}" for v in r) for n, r in mean_ratios.items()) + ". Compared: "
          f"{how}. Prompt tokens from the model's tokenizer ({sum(tokens) / sum(r['words'] for r in reqs):.2f} "
          f"tokens/word; the server counted {live['hfx'][0]['prompt0_tokens']} for request 0, the tokenizer "
          f"{tokens[0]}).\n",
          "| fitted on | run | fits | iterations | median rel. error | base | per prefill token | per attn pair | "
          "per prefill seq | per decode req | per KV token |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in dict.fromkeys(v[3] for v in SERVERS.values()):
        for i, run in enumerate(live[n]):
            st = run["hfx_state"]
            pm = st["perf_model"]
            md.append(f"| {n} | {i + 1} | {st['fits']} | {st['samples']} | {st['fit_median_rel_error']:.3f} | "
                      + " | ".join(f"{pm[k]:.3g}" for k in FEATURES) + " |")
    md += ["", f"Engine settings: {json.dumps({n: live[n][0]['settings'] for n in SERVERS})}\n",
           "Request path outside the engine (median TTFT of 5 lone idle-server requests of "
           f"{PROBE_WORDS} words beyond the model's prefill time), added to every simulated TTFT: "
           + ", ".join(f"{n} " + "/".join(f"{v * 1e3:.1f}" for v in fe) + " ms" for n, fe in frontend.items())
           + ".\n", *table(comparisons), "",
           "Errors are (simulated - measured) / measured. Live noise floor (measured fcfs-plugin vs measured "
           "stock: the same engine and scheduling): " + ", ".join(f"{k} {_pct(v)}" for k, v in
                                                                    noise["rel_err"].items()) + "."]
    if runs > 1:
        md += ["Live run-to-run spread of the overall metrics ((max - min) / median over the runs): "
               + "; ".join(f"{n}: " + ", ".join(f"{k} {v:.0%}" for k, v in spread(measured[n]).items())
                           for n in SERVERS) + "."]
    md += ["", "Targets:", ""]
    md += [f"- {c['target']} ({c['scope']}): {'met' if c['met'] else 'NOT met'} "
           f"({c['within']}/{c['of']} within, worst {c['worst']:.0%})" for c in checks]
    write_report(args.out, args.name, "\n".join(md) + "\n",
                 {"args": vars(args), "command": cmd, "tokens": tokens, "frontend_s": frontend, "noise": noise,
                  "spread": {n: spread(measured[n]) for n in SERVERS}, "comparisons": comparisons,
                  "targets": checks, "live": live, "simulated": sims})
    plot_cdfs(live, sims, Path(args.out) / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
