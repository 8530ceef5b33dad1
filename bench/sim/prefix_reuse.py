"""How much of a trace's prefix reuse a KV cache of a given size can keep.

Replays the first ``--limit`` requests of a Mooncake-style trace (``hash_ids``
prefix blocks of 512 tokens) through one prefix cache that evicts least
recently used leaves first (as SGLang's radix cache and the simulator do,
``touch_prefix``), for cache sizes that are multiples of one replica's KV
pool (Llama-3-8B on H100 preset), and reports the share of prefix blocks that
hit. One cache of N pools is what N replicas could hold together with
perfect routing, so this bounds what routing or eviction order can recover;
the unbounded row is the bound ``sim_bound.md`` and the "feasible alone"
counts assume. No timing: arrival order only.

    python bench/sim/prefix_reuse.py [--traces-dir ../shared/traces] [--limit 3000]

Writes ``bench/results/sim_prefix_reuse.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.core.perf_model import preset  # noqa: E402
from hyperflexis_sglang.core.routing.prefix import held_prefix, touch_prefix  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402
from hyperflexis_sglang.sim.engine import BLOCK_TOKENS  # noqa: E402
from hyperflexis_sglang.sim.workload import load_trace  # noqa: E402

POOLS = [1, 2, 4, 8, 16, None]  # cache size in replica KV pools; None: unbounded


def hit_fraction(prefixes: list[tuple], cap: int | None) -> float:
    lru: OrderedDict = OrderedDict()
    hit = total = 0
    for blocks in prefixes:
        hit += held_prefix(lru, blocks)
        total += len(blocks)
        touch_prefix(lru, blocks, cap)
    return hit / total if total else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces-dir", default=str(ROOT.parent / "shared" / "traces"))
    ap.add_argument("--trace", default="mooncake_conversation.jsonl")
    ap.add_argument("--limit", type=int, default=3000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    rows = load_trace(Path(args.traces_dir) / args.trace, args.limit)
    prefixes = [tuple(r.hash_ids) for r in rows]
    pool = preset("llama-3-8b", "h100", 1).kv_capacity_tokens // BLOCK_TOKENS
    res = [{"pools": n, "blocks": None if n is None else n * pool,
            "hit_fraction": hit_fraction(prefixes, None if n is None else n * pool)} for n in POOLS]
    md = ["# Prefix reuse a cache of a given size keeps", "",
          f"`python bench/sim/prefix_reuse.py --trace {args.trace} --limit {args.limit}`: first {len(rows)} "
          f"requests, {sum(map(len, prefixes))} prefix blocks of {BLOCK_TOKENS} tokens, one leaf-first LRU cache; "
          f"one replica's KV pool (Llama-3-8B/H100 preset) = {pool} blocks. Deterministic (arrival order only).", "",
          "| cache size (replica KV pools) | blocks | prefix blocks hit |", "|---|---|---|"]
    md += [f"| {'unbounded' if r['pools'] is None else r['pools']} | {r['blocks'] or '-'} | {r['hit_fraction']:.3f} |"
           for r in res]
    text = "\n".join(md) + "\n"
    print(text)
    out = Path(args.out)
    write_atomic(str(out / "sim_prefix_reuse.md"), text.encode())
    write_atomic(str(out / "sim_prefix_reuse.json"), (json.dumps(res, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
