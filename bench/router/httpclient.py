"""A lean HTTP/1.1 keep-alive load client for the router overhead benchmark (run as its own process).

    python bench/router/httpclient.py --url http://127.0.0.1:P open --rate 200 --n 2000
    python bench/router/httpclient.py --url http://127.0.0.1:P closed --concurrency 16 --duration 5

Sends non-streaming ``POST /generate`` requests (64 distinct prompts of ~100
words, ``max_new_tokens`` 1) on raw asyncio connections (uvloop when
installed): far less client CPU per request than a general HTTP library,
so more of the 2 cores are left to the router. ``open``: requests start at
a fixed rate whether or not earlier ones finished (a free connection is
reused, else a new one opened). ``closed``: ``--concurrency`` connections
each send the next request when the previous answer arrives. Latency is
from writing the request to reading the whole answer. Prints one JSON line:
counts, rate, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hyperflexis_sglang.bench.plan import synth_prompt  # noqa: E402
from hyperflexis_sglang.sim.metrics import percentile  # noqa: E402

PROMPTS = 64


class Conn:
    """One keep-alive connection that sends a request and reads its whole answer."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, payload: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            i = headers.find(b"content-length:")
            length = int(headers[i + 15:headers.index(b"\r\n", i)]) if i >= 0 else 0
            await self.reader.readexactly(length)
        if b"connection: close" in headers:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def payloads(url: str) -> list[bytes]:
    u = urlparse(url)
    out = []
    for i in range(PROMPTS):
        body = json.dumps({"text": synth_prompt(i, 100), "sampling_params": {"max_new_tokens": 1}}).encode()
        out.append(f"POST /generate HTTP/1.1\r\nhost: {u.hostname}:{u.port}\r\ncontent-type: application/json\r\n"
                   f"content-length: {len(body)}\r\n\r\n".encode() + body)
    return out


async def _timed(conn: Conn, payload: bytes, lat: list, errors: list) -> None:
    t = time.perf_counter()
    try:
        status = await conn.request(payload)
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        conn.close()
        errors.append(type(e).__name__)
        return
    lat.append(time.perf_counter() - t)
    if status != 200:
        errors.append(f"http {status}")


async def closed(url: str, concurrency: int, duration: float) -> dict:
    u, pl = urlparse(url), payloads(url)
    lat, errors = [], []

    async def worker(k: int) -> None:
        conn, i = Conn(u.hostname, u.port), k
        while time.perf_counter() < end:
            await _timed(conn, pl[i % PROMPTS], lat, errors)
            i += concurrency
        conn.close()

    end = time.perf_counter() + duration
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return _stats(lat, errors, time.perf_counter() - t0)


async def open_loop(url: str, rate: float, n: int) -> dict:
    u, pl = urlparse(url), payloads(url)
    lat, errors, lag, idle = [], [], [], []

    async def one(i: int) -> None:
        conn = idle.pop() if idle else Conn(u.hostname, u.port)
        await _timed(conn, pl[i % PROMPTS], lat, errors)
        idle.append(conn)

    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lag.append(time.perf_counter() - (t0 + i / rate))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    out = _stats(lat, errors, time.perf_counter() - t0)
    out["send_lag_p99_ms"] = percentile(lag, 99) * 1e3
    out["connections"] = len(idle)
    return out


def _stats(lat: list, errors: list, duration: float) -> dict:
    ok = len(lat) - sum(1 for e in errors if e.startswith("http"))
    return {"sent": len(lat) + sum(1 for e in errors if not e.startswith("http")), "ok": ok, "errors": len(errors),
            "error_kinds": sorted(set(errors)), "duration_s": duration, "rps": ok / duration,
            "p50_ms": percentile(lat, 50) * 1e3, "p90_ms": percentile(lat, 90) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3, "max_ms": max(lat, default=float("nan")) * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--warmup", type=int, default=200, help="closed-loop requests before measuring")
    sub = ap.add_subparsers(dest="mode", required=True)
    o = sub.add_parser("open")
    o.add_argument("--rate", type=float, required=True)
    o.add_argument("--n", type=int, required=True)
    c = sub.add_parser("closed")
    c.add_argument("--concurrency", type=int, required=True)
    c.add_argument("--duration", type=float, required=True)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    async def run() -> dict:
        if args.warmup:
            await closed(args.url, 4, 0.0 + max(0.5, args.warmup / 2000))
        if args.mode == "open":
            return await open_loop(args.url, args.rate, args.n)
        return await closed(args.url, args.concurrency, args.duration)

    print(json.dumps(asyncio.run(run())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
