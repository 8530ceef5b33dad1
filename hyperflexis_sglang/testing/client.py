"""A small streaming client that measures TTFT and TPOT of one request (SSE from /generate)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass
class Timing:
    sent: float  # perf_counter when the request was sent
    first: float | None  # first output chunk
    done: float | None  # last chunk
    tokens: int  # completion tokens reported by the server
    status: int  # HTTP status
    error: str = ""  # error message, if any
    output_ids: tuple = ()

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent

    @property
    def tpot(self) -> float | None:
        if self.first is None or self.done is None or self.tokens <= 1:
            return None
        return (self.done - self.first) / (self.tokens - 1)


def stream_generate(url: str, body: dict, timeout: float = 300.0) -> Timing:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    payload = json.dumps({**body, "stream": True}).encode()
    sent = time.perf_counter()
    conn.request("POST", "/generate", body=payload, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    t = Timing(sent, None, None, 0, resp.status)
    if resp.status != 200:
        t.error = resp.read().decode(errors="replace")
        conn.close()
        return t
    buf = b""
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        now = time.perf_counter()
        meta = chunk.get("meta_info", {})
        if t.first is None and (chunk.get("text") or chunk.get("output_ids")):
            t.first = now
        t.done = now
        t.tokens = meta.get("completion_tokens", t.tokens)
        if chunk.get("output_ids"):
            t.output_ids = tuple(chunk["output_ids"])
        reason = meta.get("finish_reason") or {}
        if isinstance(reason, dict) and reason.get("type") == "abort":
            t.error = reason.get("message", "aborted")
    del buf
    conn.close()
    return t
