"""KV-deep burst on live CPU SGLang: drain time and tight-request TTFT per server configuration.

Each configuration serves the generated tiny model alone (one at a time). A
burst of ``--loose`` batch-class requests (``--words`` prompt words, ~3.4
tokens each, ``--out`` output tokens, several times the 4096-token KV pool) is
sent at once and ``--tight`` interactive requests 0.1 s later (the same
``burst()`` as the plugin's live test); ``--reps`` bursts per configuration
after a small warm-up. Drain = first send to last token; the tight requests'
median TTFT shows the SLO order. Configurations: stock SGLang, stock with
``--enable-mixed-chunk``, the plugin scheduling like stock (``HFX_POLICY=sglang-fcfs``,
mixed chunk), HFX with and without mixed chunk. Writes
``bench/results/live_burst.{md,json}``.

    python bench/live/burst.py [--reps 3] [--configs stock,hfx]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from run import ROOT

from hyperflexis_sglang.controller.local import SGLangServer  # noqa: E402
from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402
from hyperflexis_sglang.testing.classes import CPU_CLASSES  # noqa: E402
from hyperflexis_sglang.testing.client import burst  # noqa: E402

MIXED = ["--enable-mixed-chunk"]
CONFIGS = {  # name -> (plugin on, extra server args, extra env)
    "stock": (False, [], {}),
    "stock-mixed": (False, MIXED, {}),
    "fcfs-plugin-mixed": (True, MIXED, {"HFX_POLICY": "sglang-fcfs"}),
    "hfx-mixed": (True, MIXED, {}),
    "hfx": (True, [], {}),
}


def measure(name: str, model, classes: str, args) -> dict:
    hfx, extra, env = CONFIGS[name]
    server = SGLangServer(model, hfx=hfx, extra_args=extra, env={"HFX_SLO_CLASSES": classes, **env}, name=name)
    server.start()
    try:
        burst(server, loose=8, tight=1, gap_s=0.1, prompt_words=50, out_tokens=8)  # warm-up
        drains, tight_ttft = [], []
        for _ in range(args.reps):
            r = burst(server, loose=args.loose, tight=args.tight, gap_s=0.1, prompt_words=args.words,
                      out_tokens=args.out_tokens)
            every = [t for ts in r.values() for t in ts]
            drains.append(max(t.done or t.sent for t in every) - min(t.sent for t in every))
            tight_ttft.append(statistics.median(t.ttft for t in r["interactive"] if t.ttft is not None))
        st = server.hfx_state() or {}
        return {"drain_s": drains, "tight_ttft_s": tight_ttft,
                "state": {k: st.get(k) for k in ("hook_overhead", "fit_median_rel_error", "model_trusted",
                                                 "plan_reasons", "idle_fallbacks")}}
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default="live_burst", help="result file stem (default live_burst)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--loose", type=int, default=64)
    ap.add_argument("--tight", type=int, default=6)
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--out-tokens", type=int, default=32)
    args = ap.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"--configs: unknown {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(CPU_CLASSES, f)
    model = ensure_tiny_model()
    results = {n: measure(n, model, f.name, args) for n in names}
    lines = ["# KV-deep burst on live CPU SGLang: drain time and tight TTFT\n",
             f"`python bench/live/burst.py --configs {args.configs} --reps {args.reps}` on a 2-core CPU machine "
             f"(load average before: {load}), tiny generated model, KV pool 4096 tokens. Burst: {args.loose} "
             f"batch requests of {args.words} words, {args.out_tokens} tokens out, then {args.tight} interactive "
             f"ones 0.1 s later.\n",
             "| config | drain s (each burst) | median drain s | tight TTFT s (each) | median tight TTFT s |",
             "|---|---|---|---|---|"]
    for n, r in results.items():
        lines.append(f"| {n} | {', '.join(f'{x:.2f}' for x in r['drain_s'])} | "
                     f"{statistics.median(r['drain_s']):.2f} | {', '.join(f'{x:.2f}' for x in r['tight_ttft_s'])} | "
                     f"{statistics.median(r['tight_ttft_s']):.2f} |")
    lines += ["", "Plugin state after each run: " + "; ".join(f"{n}: {r['state']}" for n, r in results.items()
                                                             if r["state"]["hook_overhead"] is not None)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_atomic(os.path.join(args.out, f"{args.name}.md"), text.encode())
    write_atomic(os.path.join(args.out, f"{args.name}.json"),
                 (json.dumps({"args": vars(args), "results": results}, indent=1, default=str) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
