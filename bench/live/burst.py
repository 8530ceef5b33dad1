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

import statistics
import sys

from run import configs_parser, measure_configs, write_report

from hyperflexis_sglang.controller.local import SGLangServer  # noqa: E402
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
    ap = configs_parser(__doc__, "live_burst", CONFIGS)
    ap.add_argument("--loose", type=int, default=64)
    ap.add_argument("--tight", type=int, default=6)
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--out-tokens", type=int, default=32)
    args = ap.parse_args()
    load, results = measure_configs(ap, args, CONFIGS, measure)
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
    write_report(args.out, args.name, "\n".join(lines) + "\n", {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
