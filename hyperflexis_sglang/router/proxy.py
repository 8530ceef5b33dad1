"""Forwarding to workers: one request, SSE pass-through, P/D dual send, retry backoff.

Retryable (``Retryable``): the worker could not be reached, closed the
connection, or answered 500/502/503/504 - always before any byte reached
the client (a non-streaming answer is read whole first; a stream is
returned only once its status is 200). 4xx answers (bad input, the
plugin's SLO rejections) are passed through, never retried. A stream that
breaks after its first byte ends with an SSE error event (``data:
{"error": ...}`` then ``data: [DONE]``): the client always learns why.

P/D: the body gets ``bootstrap_host`` (the prefill worker's host),
``bootstrap_port`` (its bootstrap port, or null), ``bootstrap_room`` (a
random 63-bit integer; lists for a batch) and an ``rid``; it is POSTed to
both workers at once (the prefill copy with ``stream: false``) and the
decode worker's answer is returned. If the prefill request fails, the
decode request is aborted (``POST /abort_request``) and the prefill error is
returned (or ends the stream).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

import orjson
from starlette.responses import StreamingResponse

from .errors import sse_error
from .upstream import TRANSPORT_ERRORS, Unreachable, Upstream, UpstreamError, read_body, upstream_error

log = logging.getLogger("hyperflexis_sglang.router")
RETRY_STATUS = frozenset({500, 502, 503, 504})
PASS_HEADERS = ("authorization", "x-api-key")


class Retryable(Exception):
    """The attempt failed before any byte reached the client."""


def upstream_headers(headers, rid: str) -> dict:
    out = {"content-type": "application/json", "x-request-id": rid}
    for h in PASS_HEADERS:
        v = headers.get(h)
        if v is not None:
            out[h] = v
    return out


def backoff_s(attempt: int, initial_ms: float, max_ms: float, multiplier: float, jitter: float,
              rand: float) -> float:
    """Delay before retry ``attempt`` (1-based): exponential, capped, +-jitter (rand in [0, 1))."""
    base = min(initial_ms * multiplier ** (attempt - 1), max_ms)
    return max(base * (1.0 + jitter * (2.0 * rand - 1.0)), 0.0) / 1000.0


async def open_stream(up: Upstream, url: str, payload: bytes, headers: dict, timeout: float):
    """POST and return the response with its body unread; Retryable when unreachable or on a 5xx,
    ``UpstreamTimeout`` when the worker does not answer in time."""
    try:
        resp = await up.open("POST", url, payload, headers, timeout)
    except Unreachable as e:
        raise Retryable(str(e)) from None
    if resp.status in RETRY_STATUS:
        try:
            body = await read_body(resp, url)
        except Unreachable as e:
            raise Retryable(f"{e} (while reading its {resp.status} answer)") from None
        raise Retryable(f"{url} answered {resp.status}: {body[:200].decode(errors='replace')}")
    return resp


async def read_whole(resp, url: str) -> bytes:
    """The whole answer; Retryable if the connection is lost while reading it."""
    try:
        return await read_body(resp, url)
    except Unreachable as e:
        raise Retryable(f"{e} (connection lost while reading the answer)") from None


class Relay:
    """The worker's stream relayed to the client, ended exactly once.

    ``chunks()`` yields the worker's bytes as they arrive and ends with an SSE
    error if the worker fails mid-stream; ``on_first()`` (optional) runs as the
    first chunk arrives; ``tail()`` (optional, async) may
    return extra bytes to append (a P/D prefill error). ``close()`` runs after
    the response, however it ended: if the client went away before the first
    chunk (the generator never ran, so its ``finally`` never would), the
    worker's answer is closed and ``on_done(False)`` still releases the
    request's slot and the worker's in-flight count.
    """

    def __init__(self, resp, url: str, on_done, tail=None, on_first=None):
        self.resp, self.url, self.on_done, self.tail, self.on_first = resp, url, on_done, tail, on_first
        self.ended = False

    async def chunks(self):
        ok = True
        try:
            async for chunk in self.resp.content.iter_any():
                if self.on_first is not None and chunk:
                    self.on_first()
                    self.on_first = None
                yield chunk
        except TRANSPORT_ERRORS as e:
            ok = False
            log.warning("stream from %s broke: %r", self.url, e)
            name = type(upstream_error(e, self.url)).__name__
            yield sse_error(f"worker {self.url} failed mid-stream ({name}); the output above is incomplete")
        else:
            if self.tail is not None:
                extra = await self.tail()
                if extra:
                    ok = False
                    yield extra
        finally:
            self._end(ok)

    def close(self) -> None:
        self._end(False)

    def _end(self, ok: bool) -> None:
        if self.ended:
            return
        self.ended = True
        if ok:
            self.resp.release()
        else:
            self.resp.close()
        self.on_done(ok)


class RelayResponse(StreamingResponse):
    """A ``StreamingResponse`` of a ``Relay`` that closes it once the response is over."""

    def __init__(self, relay: Relay, **kw):
        super().__init__(relay.chunks(), **kw)
        self.relay = relay

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.relay.close()


def pd_body(body: dict, host: str, port: int | None, batch: int) -> dict:
    rnd = random.SystemRandom()
    out = dict(body)
    if batch:
        out.update(bootstrap_host=[host] * batch, bootstrap_port=[port] * batch,
                   bootstrap_room=[rnd.getrandbits(63) for _ in range(batch)])
        out.setdefault("rid", [uuid.uuid4().hex for _ in range(batch)])
    else:
        out.update(bootstrap_host=host, bootstrap_port=port, bootstrap_room=rnd.getrandbits(63))
        out.setdefault("rid", uuid.uuid4().hex)
    return out


class PrefillCall:
    """The prefill half of a P/D request, running beside the decode half."""

    def __init__(self, up: Upstream, url: str, payload: bytes, headers: dict, timeout: float,
                 decode_url: str, rid, abort_headers: dict):
        self.up, self.url, self.decode_url, self.rid = up, url, decode_url, rid
        self.abort_headers = abort_headers
        self.status: int | None = None
        self.error: bytes = b""
        self.task = asyncio.get_running_loop().create_task(self._run(payload, headers, timeout))

    async def _run(self, payload, headers, timeout) -> None:
        try:
            r = await self.up.request("POST", self.url, payload, headers, timeout)
            self.status = r.status
            if r.status != 200:
                self.error = r.body
        except UpstreamError as e:
            self.status, self.error = 0, f"prefill worker {e}".encode()
        if self.status != 200:
            await self.abort_decode()

    async def abort_decode(self) -> None:
        rids = self.rid if isinstance(self.rid, list) else [self.rid]
        for rid in rids:
            try:
                await self.up.request("POST", self.decode_url + "/abort_request", orjson.dumps({"rid": rid}),
                                      self.abort_headers, 10)
            except UpstreamError:
                pass

    async def tail(self) -> bytes:
        """After the decode stream: the prefill failure as an SSE error event, if it failed."""
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 5)
        except asyncio.TimeoutError:
            return b""
        if self.status == 200:
            return b""
        return sse_error(f"prefill failed ({self.status}): {self.error[:300].decode(errors='replace')}",
                         "prefill_failed")
