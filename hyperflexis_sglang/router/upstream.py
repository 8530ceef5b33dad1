"""The router's one HTTP client to its workers: a keep-alive aiohttp pool, and the errors the router acts on.

aiohttp rather than httpx: on the 2-core benchmark machine a keep-alive POST
to an echo backend takes 0.17 ms through aiohttp and 0.47 ms through httpx
(``bench/router/client_cost.py``), and the router's whole budget is 1 ms
added latency (issue 4). The session is created on first use, inside the running
event loop (aiohttp binds it to that loop), so the app can be built before
its loop exists.

Every transport failure is mapped to one of two exceptions:

* ``Unreachable``: no answer was received (connection refused or reset,
  connect timeout, pool wait timeout, connection closed before or while
  reading the answer). Safe to retry before any byte reached the client.
* ``UpstreamTimeout``: connected, but no byte within the read timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

CONNECT_TIMEOUT_S = 10.0  # connect, including the wait for a free pooled connection


class UpstreamError(Exception):
    pass


class Unreachable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def upstream_error(e: BaseException, url: str) -> UpstreamError:
    """The router's view of an aiohttp/asyncio failure while talking to ``url``."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):  # a ServerTimeoutError, checked first
        return Unreachable(f"{url}: connect timeout")
    if isinstance(e, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout(f"{url}: no answer within the read timeout")
    return Unreachable(f"{url}: {type(e).__name__}: {e}")


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Upstream:
    def __init__(self, max_connections: int = 4096, keepalive_s: float = 60.0):
        self.max_connections, self.keepalive_s = max_connections, keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=self.keepalive_s,
                                        ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=conn, skip_auto_headers=("User-Agent",))
        return self._session

    def _timeout(self, read_s: float) -> aiohttp.ClientTimeout:
        t = self._timeouts.get(read_s)
        if t is None:
            t = self._timeouts[read_s] = aiohttp.ClientTimeout(total=None, connect=min(CONNECT_TIMEOUT_S, read_s),
                                                                sock_read=read_s)
        return t

    async def open(self, method: str, url: str, payload: bytes | None, headers: dict | None,
                   timeout: float) -> aiohttp.ClientResponse:
        """Send and return the response with its body unread (the caller releases it)."""
        try:
            return await self.session.request(method, url, data=payload, headers=headers,
                                              timeout=self._timeout(timeout), allow_redirects=False)
        except TRANSPORT_ERRORS as e:
            raise upstream_error(e, url) from None

    async def request(self, method: str, url: str, payload: bytes | None = None, headers: dict | None = None,
                      timeout: float = 30.0) -> Answer:
        """Send and read the whole answer."""
        resp = await self.open(method, url, payload, headers, timeout)
        return Answer(resp.status, await read_body(resp, url), resp.headers.get("content-type", "application/json"))

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


async def read_body(resp: aiohttp.ClientResponse, url: str) -> bytes:
    """The whole body; the connection goes back to the pool (or is closed on failure)."""
    try:
        return await resp.read()
    except TRANSPORT_ERRORS as e:
        resp.close()
        raise upstream_error(e, url) from None
    finally:
        resp.release()
