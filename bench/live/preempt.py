"""Preemption on live CPU SGLang: an interactive request that does not fit beside batch requests holding the KV pool.

Each configuration serves the generated tiny model alone (one at a time), with
``--enable-mixed-chunk`` and a 4096-token KV pool. Per repetition (the same
``hold_pool_then_cut_in()`` as the plugin's live test): ``--holders`` batch
requests of ~200 prompt tokens and ``--hold-tokens`` output tokens (four fit,
the rest wait), then, 1 s later, one interactive request of ``--cut-tokens``
output tokens that fits only where a batch request ran. Reported: its TTFT,
whether its first token came before any batch request finished, and (HFX)
how many requests were evicted. Configurations: stock SGLang, HFX with
preemption, HFX with ``HFX_PREEMPTION=0``. Writes
``bench/results/live_preempt.{md,json}``.

    python bench/live/preempt.py [--reps 3] [--configs stock,hfx,hfx-no-preemption]
"""

from __future__ import annotations

import statistics
import sys

from run import configs_parser, measure_configs, write_report

from hyperflexis_sglang.controller.local import SGLangServer  # noqa: E402
from hyperflexis_sglang.testing.client import hold_pool_then_cut_in  # noqa: E402

CONFIGS = {  # name -> (plugin on, extra env)
    "stock": (False, {}),
    "hfx": (True, {}),
    "hfx-no-preemption": (True, {"HFX_PREEMPTION": "0"}),
}


def measure(name: str, model, classes: str, args) -> dict:
    hfx, env = CONFIGS[name]
    server = SGLangServer(model, hfx=hfx, extra_args=["--enable-mixed-chunk"],
                          env={"HFX_SLO_CLASSES": classes, **env}, name=name)
    server.start()
    try:
        ttft, before_any_finish, evicted = [], [], []
        for _ in range(args.reps):
            seen = (server.hfx_state() or {}).get("preempted", 0)
            outs, done, cut = hold_pool_then_cut_in(server, args.holders, args.hold_tokens, args.cut_tokens)
            if cut.status != 200 or cut.first is None or not all(isinstance(o, list) for o in outs.values()):
                raise RuntimeError(f"{name}: a request failed: {cut.status} {cut.error[:200]} {outs}")
            ttft.append(cut.ttft)
            before_any_finish.append(cut.first < min(done.values()))
            evicted.append((server.hfx_state() or {}).get("preempted", 0) - seen)
        return {"ttft_s": ttft, "first_token_before_any_batch_finished": before_any_finish, "evicted": evicted}
    finally:
        server.stop()


def main() -> int:
    ap = configs_parser(__doc__, "live_preempt", CONFIGS)
    ap.add_argument("--holders", type=int, default=6)
    ap.add_argument("--hold-tokens", type=int, default=680)
    ap.add_argument("--cut-tokens", type=int, default=700)
    args = ap.parse_args()
    load, results = measure_configs(ap, args, CONFIGS, measure)
    lines = ["# Preemption on live CPU SGLang: interactive TTFT behind batch requests holding the KV pool\n",
             f"`python bench/live/preempt.py --configs {args.configs} --reps {args.reps}` on a 2-core CPU machine "
             f"(load average before: {load}), tiny generated model, KV pool 4096 tokens, mixed chunk. "
             f"{args.holders} batch requests (~200 prompt tokens, {args.hold_tokens} out; four fit), then one "
             f"interactive request ({args.cut_tokens} out) 1 s later.\n",
             "| config | interactive TTFT s (each) | median TTFT s | first token before any batch request finished "
             "| requests evicted (each) |",
             "|---|---|---|---|---|"]
    for n, r in results.items():
        lines.append(f"| {n} | {', '.join(f'{x:.2f}' for x in r['ttft_s'])} | {statistics.median(r['ttft_s']):.2f} | "
                     f"{sum(r['first_token_before_any_batch_finished'])}/{args.reps} | "
                     f"{', '.join(map(str, r['evicted'])) if CONFIGS[n][0] else '-'} |")
    write_report(args.out, args.name, "\n".join(lines) + "\n", {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
