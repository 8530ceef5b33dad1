"""Part (a): a router's own cost, measured over echo backends (no model work behind the router).

Added latency = the client's latency through the router minus its latency
to an echo backend directly, at the same open-loop rate (p50 and p99 of
each, subtracted). The direct run is repeated right before and right after
each router's run (the router idle but up) and their mean is the baseline,
so a change in the machine's load between routers does not show up as
router cost. Sustained throughput: closed loop over a concurrency
sweep; the best rate among sweep points with every request answered 200
and p99 <= ``SANE_P99_MS``. The direct-to-backend numbers are the ceiling
this client reaches on this machine (client, router and backends share its
cores).
"""

from __future__ import annotations

from procs import echo_backend, router, run_client

SANE_P99_MS = 100.0  # a sweep point with a slower p99 is overload, not sustained throughput


def sustained(sweep: list[dict]) -> float:
    ok = [p["rps"] for p in sweep if p["errors"] == 0 and p["p99_ms"] <= SANE_P99_MS]
    return max(ok, default=0.0)


def _measure(url: str, rate: float, n: int, concurrencies: list[int], duration: float) -> dict:
    open_ = run_client(url, "open", "--rate", f"{rate:g}", "--n", str(n))
    sweep = [{"concurrency": c, **run_client(url, "closed", "--concurrency", str(c), "--duration", f"{duration:g}")}
             for c in concurrencies]
    return {"open": open_, "sweep": sweep, "sustained_rps": sustained(sweep)}


def run(configs: list[tuple[str, str]], rate: float, n: int, concurrencies: list[int], duration: float,
        log=print) -> dict:
    """{"direct": ..., "routers": {"kind/policy": {... "added_p50_ms", "added_p99_ms"}}}."""
    backends = [echo_backend(), echo_backend()]
    started = []
    try:
        for b in backends:
            b.start(60)
        direct = _measure(backends[0].url, rate, n, concurrencies, duration)
        log(f"direct: p50 {direct['open']['p50_ms']:.3f} ms, p99 {direct['open']['p99_ms']:.3f} ms, "
            f"sustained {direct['sustained_rps']:.0f} req/s")
        out = {}
        for kind, policy in configs:
            r = router(kind, policy, [b.url for b in backends])
            started.append(r)
            r.start(180)
            before = run_client(backends[0].url, "open", "--rate", f"{rate:g}", "--n", str(n))
            m = _measure(r.url, rate, n, concurrencies, duration)
            after = run_client(backends[0].url, "open", "--rate", f"{rate:g}", "--n", str(n))
            r.stop()
            m["direct_open"] = [before, after]
            for q in ("p50_ms", "p99_ms"):
                m["baseline_" + q] = (before[q] + after[q]) / 2
                m["added_" + q] = m["open"][q] - m["baseline_" + q]
            out[f"{kind}/{policy}"] = m
            log(f"{kind}/{policy}: added p50 {m['added_p50_ms']:.3f} ms, p99 {m['added_p99_ms']:.3f} ms, "
                f"sustained {m['sustained_rps']:.0f} req/s")
        return {"direct": direct, "routers": out, "rate": rate, "n": n, "concurrencies": concurrencies,
                "duration_s": duration, "sane_p99_ms": SANE_P99_MS}
    finally:
        for s in started + backends:
            s.stop()
