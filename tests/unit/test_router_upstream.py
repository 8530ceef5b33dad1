"""The router's worker client (router/upstream.py) against tiny local TCP servers: answers and failure mapping."""

import asyncio
import socket

import pytest

from hyperflexis_sglang.router.upstream import Unreachable, Upstream, UpstreamTimeout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(behaviour):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await behaviour(writer)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _run(behaviour, call):
    async def main():
        server, url = await _serve(behaviour)
        up = Upstream()
        try:
            return await call(up, url)
        finally:
            await up.close()
            server.close()
    return asyncio.run(main())


def test_answer_is_read_whole():
    async def answer(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    async def call(up, url):
        return await up.request("POST", url + "/generate", b"{}", {"content-type": "application/json"}, 5)
    a = _run(answer, call)
    assert (a.status, a.body, a.content_type) == (200, b"{}", "application/json")


def test_refused_connection_is_unreachable():
    async def main():
        up = Upstream()
        try:
            with pytest.raises(Unreachable):
                await up.request("GET", f"http://127.0.0.1:{_free_port()}/health", timeout=5)
        finally:
            await up.close()
    asyncio.run(main())


def test_connection_closed_before_answer_is_unreachable():
    async def close(writer):
        writer.close()

    async def call(up, url):
        with pytest.raises(Unreachable):
            await up.request("POST", url + "/generate", b"{}", None, 5)
    _run(close, call)


def test_silent_worker_is_a_timeout_not_unreachable():
    async def silent(writer):
        await asyncio.sleep(5)

    async def call(up, url):
        with pytest.raises(UpstreamTimeout):
            await up.request("POST", url + "/generate", b"{}", None, 0.2)
    _run(silent, call)
