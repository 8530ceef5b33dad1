"""Part (b): per-class SLO attainment of routers in front of the same two real SGLang CPU servers.

Two HFX-enabled SGLang servers (tiny model, CPU-scaled SLO classes,
``--enable-mixed-chunk --sleep-on-idle``, one torch thread each) are
started once. A warm-up
stream goes to each server directly, to both at once (the plugin's
performance model calibrates on it); then, for each router in turn: the servers' caches are flushed, the router is
started, the load generator (``python -m hyperflexis_sglang.bench.load``,
its own process) replays the same mixed-SLO stream through it, and the
router is stopped. Servers and stream are identical for every router;
only the routing differs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from procs import ROOT, router

from hyperflexis_sglang.controller.local import SGLangServer
from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model
from hyperflexis_sglang.testing.classes import CPU_CLASSES


def load_run(url: str, args, classes: str, out: str, requests: int | None = None) -> dict:
    """One load-generator run (its own process); the JSON it wrote."""
    cmd = [sys.executable, "-m", "hyperflexis_sglang.bench.load", "--url", url, "--trace", args.trace,
           "--requests", str(requests or args.requests), "--rate-scale", f"{args.rate_scale:g}",
           "--len-scale", f"{args.len_scale:g}", "--max-input", str(args.max_input), "--max-output",
           str(args.max_output), "--slo-classes", classes, "--seed", str(args.seed), "--no-progress", "--out", out]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"load generator failed ({p.returncode}): {p.stderr[-2000:]}")
    print(p.stdout, flush=True)
    return json.loads(Path(out + ".json").read_text())


def flush_cache(url: str) -> None:
    """Empty a server's prefix cache (SGLang answers in plain text)."""
    with urllib.request.urlopen(urllib.request.Request(url + "/flush_cache", method="POST"), timeout=60) as r:
        r.read()


def _servers(classes: str) -> list[SGLangServer]:
    model = ensure_tiny_model()
    # One core each: --sleep-on-idle (an idle scheduler otherwise spins on a core the other needs) and one
    # torch thread (two servers with a thread per core each oversubscribe the 2 cores).
    return [SGLangServer(model, hfx=True, extra_args=["--enable-mixed-chunk", "--sleep-on-idle"],
                         env={"HFX_SLO_CLASSES": classes, "OMP_NUM_THREADS": "1"}, name=f"hfx{i}")
            for i in range(2)]


def run(configs: list[tuple[str, str]], args, results_dir: Path, log=print) -> dict:
    """{"kind/policy": load-generator JSON summary, ...} plus the servers' HFX state."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(CPU_CLASSES, f)
    servers = _servers(f.name)
    out, tmp = {}, tempfile.mkdtemp(prefix="hfx-router-bench-")
    try:
        for s in servers:
            s.start_async()
        for s in servers:
            s.wait_healthy(300)
        with ThreadPoolExecutor(2) as pool:  # warm-up (both at once): calibrate each server's performance model
            list(pool.map(lambda i: load_run(servers[i].url, args, f.name, f"{tmp}/warmup{i}", args.warmup), (0, 1)))
        for kind, policy in configs:
            for s in servers:
                flush_cache(s.url)
            r = router(kind, policy, [s.url for s in servers])
            try:
                r.start(180)
                name = f"load_router_{kind.replace('-', '_')}_{policy}"
                log(f"== {kind}/{policy}")
                doc = load_run(r.url, args, f.name, str(results_dir / name))
                out[f"{kind}/{policy}"] = {"summary": doc["summary"], "file": f"{name}.json"}
            finally:
                r.stop()
        hfx_state = [s.hfx_state() for s in servers]
    finally:
        for s in servers:
            s.stop()
    return {"runs": out, "servers_hfx_state": [{k: (st or {}).get(k) for k in (
        "iterations", "fits", "fit_median_rel_error", "model_trusted", "rejected", "demoted")} for st in hfx_state]}
