"""Client cost per request of the two HTTP clients the router could use to reach its workers.

Sequential keep-alive POSTs of a small ``/generate`` body to one echo backend
(``echo_backend.py``, its own process), timed in one client process:
httpx (``AsyncClient.send(stream=True)`` then ``aread``, as the router used
it) vs aiohttp (``session.request`` then ``read``, as ``router/upstream.py``
uses it), alternating rounds; the median per-request time of each is the
client's own CPU cost plus the echo round trip (the same for both). This is
why the router's worker client is aiohttp. Writes
``bench/results/router_client_cost.{md,json}``.

    python bench/router/client_cost.py [--n 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import aiohttp
import httpx

from procs import ROOT, echo_backend

from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402

PAYLOAD = json.dumps({"text": "hello world", "sampling_params": {"max_new_tokens": 1}}).encode()
HEADERS = {"content-type": "application/json", "x-request-id": "bench"}
WARMUP = 200


async def with_httpx(url: str, n: int) -> float:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=4096, max_keepalive_connections=1024)) as c:
        async def one():
            r = await c.send(c.build_request("POST", url, content=PAYLOAD, headers=HEADERS, timeout=30), stream=True)
            await r.aread()
            await r.aclose()
        return await _timed(one, n)


async def with_aiohttp(url: str, n: int) -> float:
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4096), timeout=timeout) as s:
        async def one():
            r = await s.request("POST", url, data=PAYLOAD, headers=HEADERS)
            await r.read()
            r.release()
        return await _timed(one, n)


async def _timed(one, n: int) -> float:
    """Mean milliseconds per request over ``n`` sequential requests, after a warm-up."""
    for _ in range(WARMUP):
        await one()
    t0 = time.perf_counter()
    for _ in range(n):
        await one()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    backend = echo_backend()
    backend.start()
    try:
        url = backend.url + "/generate"
        ms: dict[str, list[float]] = {"httpx": [], "aiohttp": []}
        for _ in range(args.rounds):
            ms["httpx"].append(run(with_httpx(url, args.n)))
            ms["aiohttp"].append(run(with_aiohttp(url, args.n)))
    finally:
        backend.stop()
    med = {k: statistics.median(v) for k, v in ms.items()}
    lines = ["# Router worker client: cost per request, httpx vs aiohttp\n",
             f"`python bench/router/client_cost.py --n {args.n} --rounds {args.rounds}` on a 2-core CPU machine "
             f"(load average before: {load}); sequential keep-alive POSTs to one echo backend, rounds alternating.\n",
             "| client | ms per request, each round | median |", "|---|---|---|"]
    for k, v in ms.items():
        lines.append(f"| {k} | {', '.join(f'{x:.3f}' for x in v)} | {med[k]:.3f} |")
    lines += ["", f"httpx / aiohttp: {med['httpx'] / med['aiohttp']:.1f}x."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_atomic(os.path.join(args.out, "router_client_cost.md"), text.encode())
    write_atomic(os.path.join(args.out, "router_client_cost.json"),
                 (json.dumps({"args": vars(args), "ms_per_request": ms, "median": med}, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
