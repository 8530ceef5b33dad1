"""Echo backend: answers like an SGLang worker at once, to measure a router, not SGLang.

A minimal asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) that
returns a fixed small JSON for ``/generate``, ``/v1/completions`` and
``/v1/chat/completions`` (non-streaming) and what routers probe at start-up
and while running: ``/health``, ``/health_generate``, ``/v1/loads``,
``/server_info`` (``/get_server_info``), ``/model_info``
(``/get_model_info``), ``/v1/models``, ``/flush_cache``. It does no model
work, so latency through a router minus latency to this backend directly
is the router's own cost.

    python bench/router/echo_backend.py --port 31000
"""

from __future__ import annotations

import argparse
import asyncio
import json

_GEN = {"text": "ok", "meta_info": {"id": "echo", "prompt_tokens": 1, "completion_tokens": 1,
                                    "finish_reason": {"type": "length", "length": 1}}}
_CMPL = {"id": "echo", "object": "text_completion", "model": "echo", "created": 0,
         "choices": [{"index": 0, "text": "ok", "finish_reason": "length"}],
         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
_CHAT = {**_CMPL, "object": "chat.completion",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}]}
_LOADS = {"loads": [{"dp_rank": 0, "num_running_reqs": 0, "num_waiting_reqs": 0, "num_used_tokens": 0,
                     "max_total_num_tokens": 4096, "token_usage": 0.0}]}
_INFO = {"model_path": "echo", "served_model_name": "echo", "internal_states": [{}], "version": "echo"}
_MODEL = {"model_path": "echo", "is_generation": True, "tokenizer_path": "echo"}
_MODELS = {"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "echo"}]}
ROUTES = {"/generate": _GEN, "/v1/completions": _CMPL, "/v1/chat/completions": _CHAT, "/v1/loads": _LOADS,
          "/server_info": _INFO, "/get_server_info": _INFO, "/model_info": _MODEL, "/get_model_info": _MODEL,
          "/v1/models": _MODELS, "/health": None, "/health_generate": None, "/flush_cache": None,
          "/get_load": {"load": 0}}


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"\r\n").encode() + body


RESPONSES = {path: _response(200, json.dumps(b).encode() if b is not None else b"") for path, b in ROUTES.items()}
NOT_FOUND = _response(404, b'{"error": {"message": "not found", "type": "not_found", "param": null, "code": 404}}')


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, _, rest = head.partition(b"\r\n")
            length = 0
            for h in rest.split(b"\r\n"):
                name, _, value = h.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            parts = line.split(b" ")
            path = parts[1].split(b"?")[0].decode() if len(parts) > 1 else ""
            writer.write(RESPONSES.get(path, NOT_FOUND))
            if b"connection: close" in rest.lower():
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
