"""Streaming HTTP client of the load generator: one request, its token times and its SLO verdict.

Times are ``time.perf_counter()`` seconds. A request's arrival is its
*scheduled* send time, so time a request spends waiting in the client (a
concurrency limit, a late event loop) counts against its TTFT, as it would
for a real user. Every failure (HTTP status, timeout, connection error, an
abort or error inside the stream) becomes an error string on the result;
nothing raises out of :func:`send`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass

import httpx

from ..core.slo import SLO, meets_slo
from .plan import PlannedRequest, request_body, slo_headers


@dataclass(frozen=True)
class Outcome:
    """What happened to one request."""

    index: int  # the request's position in the trace
    cls: str  # SLO class
    arrival: float  # scheduled send time (perf_counter s); TTFT is measured from here
    send_lag: float  # actual send time minus arrival (s)
    status: int  # HTTP status (0: no response)
    error: str  # "" on success, else a short reason ("http 429: ...", "timeout", "connection: ...")
    token_times: tuple  # ((seconds since arrival, tokens received so far), ...) per streamed chunk
    tokens: int  # output tokens (the server's count when it reports one)
    met: bool  # TTFT and average TPOT met (core/slo.py meets_slo, the project's definition)
    met_per_token: bool  # every token within its per-token deadline (arrival + TTFT + (i-1) x TPOT)

    @property
    def ttft(self) -> float | None:
        return self.token_times[0][0] if self.token_times else None

    @property
    def e2e(self) -> float | None:
        return self.token_times[-1][0] if self.token_times and not self.error else None

    @property
    def tpot(self) -> float | None:
        if not self.token_times or self.error or self.tokens <= 1:
            return None
        return (self.token_times[-1][0] - self.token_times[0][0]) / (self.tokens - 1)


class _Stream:
    """Accumulates one response stream; knows the three endpoints' chunk shapes."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.times: list[tuple[float, int]] = []  # (perf_counter, cumulative tokens)
        self.tokens = 0
        self.reported: int | None = None  # completion_tokens the server reported last
        self.error = ""

    def feed(self, data: str, now: float) -> None:
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            err = chunk["error"]
            self.error = "stream error: " + str(err.get("message", err) if isinstance(err, dict) else err)[:200]
            return
        usage = chunk.get("usage") or chunk.get("meta_info") or {}
        if usage.get("completion_tokens") is not None:
            self.reported = int(usage["completion_tokens"])
        count = self._count(chunk)
        if count > self.tokens:
            self.tokens = count
            self.times.append((now, count))

    def finish(self) -> int:
        """Output tokens. OpenAI-style chunks may carry several tokens (or none visible), so counting chunks
        can fall short of the server's count: the missing tokens arrived by the last chunk."""
        tokens = self.reported if self.reported is not None else self.tokens
        if self.times and self.times[-1][1] < tokens:
            self.times[-1] = (self.times[-1][0], tokens)
        return tokens

    def _count(self, chunk: dict) -> int:
        if self.endpoint == "generate":
            reason = chunk.get("meta_info", {}).get("finish_reason") or {}
            if isinstance(reason, dict) and reason.get("type") == "abort":
                self.error = "aborted: " + str(reason.get("message", ""))[:200]
            return self.reported or 0
        choices = chunk.get("choices") or []
        if not choices:
            return self.tokens
        piece = choices[0].get("text") if self.endpoint == "completions" else (choices[0].get("delta") or {}).get(
            "content")
        return self.tokens + 1 if piece else self.tokens


def _verdicts(slo: SLO, arrival: float, times: list[tuple[float, int]], tokens: int, error: str) -> tuple[bool, bool]:
    if error or not times:
        return False, False
    met = meets_slo(slo, arrival, times[0][0], times[-1][0], tokens)
    per_token = dataclasses.replace(slo, tpot_mode="per_token")
    prev, late = 0, False
    for t, count in times:  # tokens prev+1..count arrived at t; the earliest deadline is token prev+1's
        late |= t > per_token.token_deadline(prev + 1, arrival, times[0][0]) + 1e-6
        prev = count
    return met, met and not late


async def send(client: httpx.AsyncClient, base_url: str, endpoint: str, req: PlannedRequest, arrival: float,
               model: str = "default", timeout: float = 600.0, headers: bool = True) -> Outcome:
    """Stream one request; never raises (errors are recorded on the outcome)."""
    path, body = request_body(endpoint, req, model)
    hdrs = slo_headers(req.slo) if headers else {}
    acc, status = _Stream(endpoint), 0
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", base_url + path, json=body, headers=hdrs) as resp:
                status = resp.status_code
                if status != 200:
                    acc.error = f"http {status}: {(await resp.aread()).decode(errors='replace')[:200]}"
                else:
                    async for line in resp.aiter_lines():
                        if line.startswith("data:"):
                            acc.feed(line[5:].strip(), time.perf_counter())
    except TimeoutError:
        acc.error = f"timeout after {timeout:g} s"
    except httpx.HTTPError as e:
        acc.error = f"connection: {type(e).__name__}: {e}"[:200]
    except (json.JSONDecodeError, ValueError) as e:
        acc.error = f"bad stream: {e}"[:200]
    tokens = acc.finish()
    if not acc.error and tokens != req.max_tokens:
        acc.error = f"incomplete: {tokens} of {req.max_tokens} tokens"
    met, met_tok = _verdicts(req.slo, arrival, acc.times, tokens, acc.error)
    rel = tuple((round(t - arrival, 6), n) for t, n in acc.times)
    return Outcome(req.index, req.slo.cls, arrival, sent - arrival, status, acc.error, rel, tokens, met, met_tok)
