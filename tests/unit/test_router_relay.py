"""The stream relay ends exactly once: after a full stream, and when the client is gone before the first byte."""

import asyncio

import pytest
from starlette.requests import ClientDisconnect

from hyperflexis_sglang.router.proxy import Relay, RelayResponse


class FakeWorkerAnswer:
    """Stands in for an aiohttp response (the part the relay uses): two chunks, release/close recorded."""

    def __init__(self):
        self.calls = []
        self.content = self

    async def iter_any(self):
        for chunk in (b"data: 1\n\n", b"data: [DONE]\n\n"):
            yield chunk

    def release(self):
        self.calls.append("release")

    def close(self):
        self.calls.append("close")


async def _receive():
    await asyncio.sleep(10)
    return {"type": "http.disconnect"}


def _serve(send):
    answer, done = FakeWorkerAnswer(), []
    response = RelayResponse(Relay(answer, "http://w", done.append), media_type="text/event-stream")
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST", "path": "/generate", "headers": []}

    async def main():
        await response(scope, _receive, send)
    return answer, done, main


def test_full_stream_ends_once_ok():
    sent = []

    async def send(message):
        sent.append(message)
    answer, done, main = _serve(send)
    asyncio.run(main())
    assert b"".join(m.get("body", b"") for m in sent) == b"data: 1\n\ndata: [DONE]\n\n"
    assert done == [True] and answer.calls == ["release"]


def test_client_gone_before_first_byte_still_releases():
    async def send(message):
        raise OSError("client went away")
    answer, done, main = _serve(send)
    with pytest.raises((OSError, ClientDisconnect)):  # Starlette reports the failed send as a disconnect
        asyncio.run(main())
    assert done == [False] and answer.calls == ["close"]  # slot and worker count released, connection closed
