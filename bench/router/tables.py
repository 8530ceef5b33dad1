"""router.md and router.png from router.json: tables, the targets and whether they are met."""

from __future__ import annotations

import io

TARGET_P50_MS, TARGET_P99_MS, TARGET_RPS = 1.0, 5.0, 1000.0
PAIRS = (("hfx-router/round_robin", "sglang-router/round_robin"), ("hfx-router/hfx", "sglang-router/cache_aware"))


def _f(v, fmt=".3f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def overhead_md(o: dict) -> list[str]:
    d = o["direct"]
    md = ["## (a) Router overhead over echo backends", "",
          f"Command: `{o['command']}` (load average before: {', '.join(f'{x:.2f}' for x in o['loadavg_before'])}). "
          f"Two echo backends (`bench/router/echo_backend.py`: fixed JSON at once, no model); the client "
          f"(`bench/router/httpclient.py`, raw asyncio HTTP/1.1 keep-alive, its own process) sends non-streaming "
          f"`/generate`. Added latency = client latency through the router minus directly to a backend at "
          f"{o['rate']:g} req/s open loop ({o['n']} requests; the direct baseline is the mean of direct runs "
          f"just before and after each router's run). Sustained = best closed-loop rate over concurrency "
          f"{o['concurrencies']} ({o['duration_s']:g} s each) with every answer 200 and p99 <= "
          f"{o['sane_p99_ms']:g} ms. Client, router and backends share the machine's 2 cores.", "",
          "| path | p50 ms | p99 ms | direct p50 / p99 ms | added p50 ms | added p99 ms | sustained req/s | "
          "sweep req/s (p99 ms) |", "|---|---|---|---|---|---|---|---|",
          f"| direct to backend | {_f(d['open']['p50_ms'])} | {_f(d['open']['p99_ms'])} | - | - | - | "
          f"{d['sustained_rps']:.0f} | {_sweep(d['sweep'])} |"]
    for name, m in o["routers"].items():
        base = f"{_f(m.get('baseline_p50_ms'))} / {_f(m.get('baseline_p99_ms'))}"
        md.append(f"| {name} | {_f(m['open']['p50_ms'])} | {_f(m['open']['p99_ms'])} | {base} | "
                  f"{_f(m['added_p50_ms'])} | {_f(m['added_p99_ms'])} | {m['sustained_rps']:.0f} | "
                  f"{_sweep(m['sweep'])} |")
    md += ["", "A negative added p99 means the router's tail cost is below this shared machine's p99 noise "
           "(the direct baseline's p99 moves by milliseconds between runs).", "",
           "Targets (added p50 <= 1 ms and p99 <= 5 ms at 200 req/s; sustained >= 1,000 req/s):", ""]
    for name, m in o["routers"].items():
        ok = (m["added_p50_ms"] <= TARGET_P50_MS, m["added_p99_ms"] <= TARGET_P99_MS, m["sustained_rps"] >= TARGET_RPS)
        md.append(f"- {name}: p50 {'met' if ok[0] else 'NOT met'}, p99 {'met' if ok[1] else 'NOT met'}, "
                  f"throughput {'met' if ok[2] else 'NOT met'}")
    for hfx, ref in PAIRS:
        if hfx in o["routers"] and ref in o["routers"]:
            a, b = o["routers"][hfx], o["routers"][ref]
            md.append(f"- {hfx} / {ref}: sustained {a['sustained_rps'] / max(b['sustained_rps'], 1e-9):.2f}x, "
                      f"added p50 {_f(a['added_p50_ms'])} vs {_f(b['added_p50_ms'])} ms, "
                      f"added p99 {_f(a['added_p99_ms'])} vs {_f(b['added_p99_ms'])} ms")
    return md


def _sweep(points: list[dict]) -> str:
    return ", ".join(f"c{p['concurrency']}: {p['rps']:.0f} ({p['p99_ms']:.1f}"
                     f"{', ' + str(p['errors']) + ' err' if p['errors'] else ''})" for p in points)


def slo_md(s: dict) -> list[str]:
    a, runs = s["args"], s["runs"]
    names = list(runs)
    classes = list(next(iter(runs.values()))["summary"]["classes"]) if runs else []
    md = ["## (b) SLO attainment behind each router", "",
          f"Command: `{s['command']}`. Two HFX-enabled SGLang 0.5.23 CPU servers (tiny model, "
          f"`--enable-mixed-chunk`, CPU-scaled classes of `hyperflexis_sglang/testing/classes.py`), warmed up with "
          f"{a['warmup']} requests each, caches flushed before each router. Stream: first {a['requests']} requests "
          f"of `{a['trace'].split('/')[-1]}`, arrivals x{a['rate_scale']:g}, lengths /{a['len_scale']:g} (caps "
          f"{a['max_input']} words in, {a['max_output']} tokens out), SLO mix seed {a['seed']}, streamed `/generate` "
          f"through the router by `python -m hyperflexis_sglang.bench.load` (per-router files "
          f"`load_router_*.json`).", "",
          "| class | " + " | ".join(f"{n} attainment (TTFT p50 / p99)" for n in names) + " |",
          "|---|" + "---|" * len(names)]
    for c in classes:
        cells = []
        for n in names:
            v = runs[n]["summary"]["classes"][c]
            cells.append(f"{v['attainment']:.3f} ({_f(v['ttft_p50'], '.2f')} / {_f(v['ttft_p99'], '.2f')} s"
                         f"{', ' + str(v['errors']) + ' err' if v['errors'] else ''})")
        md.append(f"| {c} (n={runs[names[0]]['summary']['classes'][c]['n']}) | " + " | ".join(cells) + " |")
    hfx, ref = "hfx-router/hfx", "sglang-router/cache_aware"
    if hfx in runs and ref in runs:
        h, r = runs[hfx]["summary"]["classes"], runs[ref]["summary"]["classes"]
        worse = [c for c in r if h.get(c, {}).get("attainment", 0) < r[c]["attainment"]]
        md += ["", f"Target (HFX router `hfx` >= sglang-router `cache_aware` overall and in every class): "
               f"overall {h['overall']['attainment']:.3f} vs {r['overall']['attainment']:.3f}; "
               + ("**met**." if not worse else f"**NOT met** (lower in: {', '.join(worse)}).")]
    md += ["", "Read with care: sglang-router 0.3.2 re-serializes `/generate` bodies and drops "
           "`sampling_params.custom_params` (the SLO) and the `x-slo-*` headers (seen with a body-logging echo "
           "backend), so behind it the HFX servers treat every request as their default class; the HFX router "
           "forwards the SLO. `hfx-router/cache_aware` (same routing idea as sglang-router's, SLOs forwarded) "
           "separates the two effects: where it matches `hfx-router/hfx`, the gain comes from carrying the SLO "
           "to the servers' HFX scheduling, not from the routing decision."]
    md += ["", f"Servers' HFX state after the runs: {s.get('servers_hfx_state')}"]
    return md


def markdown(doc: dict) -> str:
    md = ["# Router benchmark: sglang-router 0.3.2 vs HFX router", "",
          "Produced by `bench/router/run.py` on a 2-core CPU machine shared with other work; single runs, "
          "so differences of a few percent are noise.", ""]
    if "overhead" in doc:
        md += overhead_md(doc["overhead"]) + [""]
    if "slo" in doc:
        md += slo_md(doc["slo"]) + [""]
    return "\n".join(md)


def png(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyperflexis_sglang.sim.cli import write_atomic

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    if "overhead" in doc:
        o = doc["overhead"]
        names = ["direct", *o["routers"]]
        vals = [o["direct"]["sustained_rps"], *(m["sustained_rps"] for m in o["routers"].values())]
        axes[0].barh(names, vals, color="tab:gray")
        axes[0].axvline(TARGET_RPS, color="red", linestyle="--", label="target 1,000 req/s")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("sustained req/s (closed loop, echo backends, log scale)")
        axes[0].legend(fontsize=8)
    if "slo" in doc:
        runs = doc["slo"]["runs"]
        classes = list(next(iter(runs.values()))["summary"]["classes"])
        width = 0.8 / max(len(runs), 1)
        for k, (name, r) in enumerate(runs.items()):
            axes[1].bar([i + k * width for i in range(len(classes))],
                        [r["summary"]["classes"][c]["attainment"] for c in classes], width, label=name)
        axes[1].set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes)
        axes[1].set_ylim(0, 1.05)
        axes[1].set_ylabel("SLO attainment")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
