"""Weight agent: a small HTTP control port next to a model's parameters (an SGLang scheduler or a plain process).

The controller (``orchestrate.load_from_peers``) talks to the agents of the
seeds and of the new instances; the bytes move between the agents over
torch.distributed (``transport``), never through HTTP. Endpoints (JSON;
errors are OpenAI-style ``{"error": {"message", "type", "param", "code"}}``):

* ``GET  /hfx/weights/manifest``  parameters ``[name, dtype, shape, nbytes]``, state, backend
* ``GET  /hfx/weights/checksum``  per-parameter BLAKE2b and the total
* ``POST /hfx/weights/session``   join a load session (runs in a background thread;
  rank 0 hosts the group's store and answers its port)
* ``GET  /hfx/weights/session/<id>``  ``running | done | failed``, buckets received, bytes, error
* ``POST /hfx/weights/verify``  ``{"total": hex}``: recompute the checksum; ``ready`` only when equal
* ``POST /hfx/weights/load_disk``  reload from disk (plain-process agents that know their files)

State: ``ready`` (weights verified or loaded from disk), ``unloaded``
(dummy weights), ``loading`` (a session writes into the parameters),
``unverified`` (a session finished; weights not yet checked), ``failed``.
Only ``ready`` may serve; the SGLang plugin reports it in ``/server_info``.
A seed keeps serving while it sends (it only reads its parameters).
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

import torch

from ..core.weights import Bucket, Transfer
from . import tensors, transport
from .protocol import SessionRequest, ProtocolError

log = logging.getLogger("hyperflexis_sglang.weights")
PREFIX = "/hfx/weights"
KEEP_SESSIONS = 8  # finished sessions kept for status queries


@dataclass
class Session:
    req: SessionRequest  # what the controller asked for
    state: str = "running"  # running | done | failed
    received: list[int] = field(default_factory=list)  # buckets fully received
    sent_bytes: int = 0  # bytes sent
    received_bytes: int = 0  # bytes received
    seconds: float = 0.0  # wall time of the transfer part
    error: str = ""  # why it failed
    store: object = None  # TCP store hosted here (rank 0), kept alive for the peers

    def report(self) -> dict:
        return {"session": self.req.session, "state": self.state, "received": sorted(self.received),
                "sent_bytes": self.sent_bytes, "received_bytes": self.received_bytes,
                "seconds": round(self.seconds, 4), "error": self.error}


class WeightAgent:
    def __init__(self, get_params: Callable[[], Iterable[tuple[str, torch.Tensor]]], host: str = "127.0.0.1",
                 port: int = 0, state: str = "ready", load_disk: Callable[[], None] | None = None,
                 on_sent: Callable[[int], None] | None = None, pace_gbs: float = 0.0):
        self.get_params = get_params  # the model's named_parameters (called each time: never cached)
        self.host = host
        self.state = state
        self.load_disk = load_disk  # reload from disk (plain-process agents); None: the server does it
        self.on_sent = on_sent or (lambda b: None)  # called per bucket sent (fault injection in tests)
        self.pace_gbs = pace_gbs  # benchmarks: emulated egress link in GB/s (0: the real transport's speed)
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="hfx-weights-agent", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "WeightAgent":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def params(self) -> dict[str, torch.Tensor]:
        return {n: p.data for n, p in self.get_params()}

    def backend(self) -> str:
        first = next(iter(self.params().values()))
        return "nccl" if first.device.type == "cuda" else "gloo"

    # ---- operations behind the endpoints -------------------------------------------------
    def manifest(self) -> dict:
        specs = tensors.manifest(self.params().items())
        return {"params": [[p.name, p.dtype, list(p.shape), p.nbytes] for p in specs], "state": self.state,
                "backend": self.backend(), "total_bytes": sum(p.nbytes for p in specs)}

    def checksum(self) -> dict:
        per = tensors.checksums(self.params().items())
        return {"params": per, "total": tensors.total_checksum(per), "state": self.state}

    def verify(self, total: str) -> tuple[bool, str]:
        mine = tensors.total_checksum(tensors.checksums(self.params().items()))
        with self.lock:
            if any(s.state == "running" for s in self.sessions.values()):
                return False, "a load session is still running"
            self.state = "ready" if mine == total else "failed"
        return mine == total, mine

    def open_session(self, req: SessionRequest) -> dict:
        _check_pieces(req, self.params())
        with self.lock:
            if req.session in self.sessions:
                raise ProtocolError(f"session {req.session!r} exists", "session")
            sess = Session(req)
            if req.rank == 0:
                sess.store = transport.host_store(self.host)
            self.sessions[req.session] = sess
            for old in list(self.sessions)[:-KEEP_SESSIONS]:
                if self.sessions[old].state != "running":
                    del self.sessions[old]
            if _receives(req):
                self.state = "loading"
        threading.Thread(target=self._run, args=(sess,), name=f"hfx-weights-{req.session}", daemon=True).start()
        return {"session": req.session, "store_port": sess.store.port if sess.store is not None else None}

    def _run(self, sess: Session) -> None:
        req = sess.req
        t0 = time.perf_counter()
        try:
            params = self.params()
            if req.backend == "nccl":
                torch.cuda.set_device(next(iter(params.values())).device)
            group = transport.open_group(req.backend, req.rank, req.world, req.session, req.timeout_s,
                                         store=sess.store, store_addr=req.store_addr, local_host=self.host)
            group.pace_gbs = self.pace_gbs
            if req.mode == "per_param":
                moved = transport.broadcast_per_param(group, list(params.values()), root=0)
                sess.sent_bytes, sess.received_bytes = (moved, 0) if req.rank == 0 else (0, moved)
            else:
                stats = transport.run_node(group, req.me, req.ranks, req.ops, req.buckets, params,
                                           on_received=sess.received.append, on_sent=self.on_sent)
                sess.sent_bytes, sess.received_bytes = stats.sent_bytes, stats.received_bytes
            _finish_barrier(group, req)
            sess.state = "done"
        except Exception as e:  # noqa: BLE001 - any failure is reported, never raised into the server
            sess.state, sess.error = "failed", str(e)
            log.warning("hyperflexis: weight session %s failed on %s: %s", req.session, req.me, e)
        finally:
            sess.seconds = time.perf_counter() - t0
            with self.lock:
                if _receives(req):
                    self.state = "unverified" if sess.state == "done" else "failed"


def _check_pieces(req: SessionRequest, params: dict[str, torch.Tensor]) -> None:
    """Every piece names a parameter of this model, of the bucket's dtype, inside its bytes."""
    for b in req.buckets.values():
        for p in b.pieces:
            t = params.get(p.name)
            if t is None or tensors.dtype_name(t.dtype) != b.dtype:
                raise ProtocolError(f"bucket {b.index}: no {b.dtype} parameter {p.name!r} here", "buckets")
            if p.offset < 0 or p.nbytes <= 0 or p.offset + p.nbytes > t.numel() * t.element_size():
                raise ProtocolError(f"bucket {b.index}: bytes {p.offset}+{p.nbytes} outside {p.name!r}", "buckets")


def _receives(req: SessionRequest) -> bool:
    return req.rank != 0 if req.mode == "per_param" else any(t.dst == req.me for t in req.ops)


def _finish_barrier(group: transport.Group, req: SessionRequest) -> None:
    """Wait (bounded) until every rank finished, so no socket closes under a peer still reading."""
    store = group.store
    store.set(f"hfx-weights/{req.session}/done/{req.rank}", b"1")
    try:
        store.wait([f"hfx-weights/{req.session}/done/{r}" for r in range(req.world)],
                   datetime.timedelta(seconds=min(req.timeout_s, 60)))
    except Exception as e:  # a peer failed: its own report says why
        log.info("hyperflexis: weight session %s: not every peer finished (%s)", req.session, e)


def _handler(agent: WeightAgent):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: the scheduler's log is for serving
            log.debug("weights agent: " + fmt, *args)

        def _send(self, code: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _error(self, code: int, message: str, param: str | None = None) -> None:
            kind = "invalid_request_error" if code < 500 else "server_error"
            self._send(code, {"error": {"message": message, "type": kind, "param": param, "code": code}})

        def _body(self) -> dict:
            n = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
            except ValueError as e:
                raise ProtocolError(f"body is not JSON: {e}", None) from None
            if not isinstance(body, dict):
                raise ProtocolError("body must be a JSON object", None)
            return body

        def do_GET(self):  # noqa: N802
            self._route("GET")

        def do_POST(self):  # noqa: N802
            self._route("POST")

        def _route(self, method: str) -> None:
            try:
                self._send(200, _dispatch(agent, method, self.path, self._body if method == "POST" else dict))
            except ProtocolError as e:
                self._error(e.status, str(e), e.param)
            except Exception as e:  # noqa: BLE001 - never crash the serving process
                log.exception("hyperflexis: weights agent error")
                self._error(500, f"{type(e).__name__}: {e}")

    return Handler


def _dispatch(agent: WeightAgent, method: str, path: str, body: Callable[[], dict]) -> dict:
    path = path.split("?")[0].rstrip("/")
    if method == "GET" and path == PREFIX + "/manifest":
        return agent.manifest()
    if method == "GET" and path == PREFIX + "/checksum":
        return agent.checksum()
    if method == "GET" and path == PREFIX + "/status":
        return {"state": agent.state, "sessions": [s.report() for s in agent.sessions.values()]}
    if method == "GET" and path.startswith(PREFIX + "/session/"):
        sess = agent.sessions.get(path.rsplit("/", 1)[1])
        if sess is None:
            raise ProtocolError(f"no session {path.rsplit('/', 1)[1]!r}", "session", status=404)
        return sess.report()
    if method == "POST" and path == PREFIX + "/session":
        return agent.open_session(SessionRequest.parse(body()))
    if method == "POST" and path == PREFIX + "/verify":
        total = body().get("total")
        if not isinstance(total, str):
            raise ProtocolError("'total' (a hex checksum) is required", "total")
        ok, mine = agent.verify(total)
        if not ok:
            raise ProtocolError(f"checksum mismatch or busy: have {mine}, expected {total}", "total", status=409)
        return {"ready": True, "total": mine}
    if method == "POST" and path == PREFIX + "/load_disk":
        if agent.load_disk is None:
            raise ProtocolError("this agent cannot load from disk (use the server's /update_weights_from_disk)",
                                None, status=501)
        agent.load_disk()
        agent.state = "ready"
        return {"state": agent.state}
    raise ProtocolError(f"no route {method} {path}", None, status=404)


__all__ = ["WeightAgent", "Bucket", "Transfer"]
