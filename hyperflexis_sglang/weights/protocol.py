"""Wire format of a load session between the controller and a weight agent (no torch: the controller imports it).

Body of ``POST /hfx/weights/session``::

    {"session": "id", "me": "node", "nodes": ["seed0", "new0"],   # rank = position in nodes
     "backend": "gloo" | "nccl", "timeout_s": 120,
     "store": null | ["host", port],                             # null on rank 0 (it hosts the store)
     "buckets": [[index, dtype, [[name, offset, nbytes], ...], nbytes], ...],  # buckets this node touches
     "ops": [[round, bucket, src, dst], ...],                     # this node's transfers
     "mode": "buckets" | "per_param"}                             # per_param: R-Fork's loop (baseline)

``per_param`` ignores buckets and ops: rank 0 broadcasts every parameter,
one synchronous broadcast each, to all other ranks (what SGLang's
``/send_weights_to_remote_instance`` does); benchmarks compare against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.weights import Bucket, Piece, Transfer, TransferPlan

BACKENDS = ("gloo", "nccl")
MODES = ("buckets", "per_param")


class ProtocolError(ValueError):
    def __init__(self, message: str, param: str | None, status: int = 400):
        super().__init__(message)
        self.param = param  # the offending field (OpenAI error "param")
        self.status = status  # HTTP status to answer


@dataclass(frozen=True)
class SessionRequest:
    session: str  # session id (unique per agent)
    me: str  # this node's id in the plan
    rank: int  # this node's rank in the session's group
    world: int  # group size
    ranks: dict  # node id -> rank
    backend: str  # "gloo" or "nccl"
    timeout_s: float  # per-operation timeout of the group
    store_addr: tuple[str, int] | None  # where rank 0's store listens (None on rank 0)
    buckets: dict  # bucket index -> Bucket (those this node sends or receives)
    ops: tuple[Transfer, ...]  # this node's transfers
    mode: str = "buckets"  # "buckets" (the plan) or "per_param" (R-Fork baseline from rank 0)

    @staticmethod
    def parse(body: dict) -> "SessionRequest":
        try:
            return _parse(body)
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ProtocolError(f"malformed session request: {type(e).__name__}: {e}", None) from None


def _parse(body: dict) -> SessionRequest:
    for key in ("session", "me", "nodes", "backend", "buckets", "ops"):
        if key not in body:
            raise ProtocolError(f"missing field {key!r}", key)
    nodes = [str(n) for n in body["nodes"]]
    if body["me"] not in nodes or len(set(nodes)) != len(nodes):
        raise ProtocolError("'me' must be one of 'nodes', which must be distinct", "me")
    if body["backend"] not in BACKENDS:
        raise ProtocolError(f"backend must be one of {BACKENDS}", "backend")
    mode = body.get("mode", "buckets")
    if mode not in MODES:
        raise ProtocolError(f"mode must be one of {MODES}", "mode")
    rank = nodes.index(body["me"])
    store = body.get("store")
    if (rank == 0) != (store is None):
        raise ProtocolError("'store' must be null exactly on rank 0", "store")
    timeout = float(body.get("timeout_s", 120))
    if not 0 < timeout <= 3600:
        raise ProtocolError("timeout_s must be in (0, 3600]", "timeout_s")
    buckets = {int(i): Bucket(int(i), str(d), tuple(Piece(str(n), int(o), int(k)) for n, o, k in pieces), int(nb))
               for i, d, pieces, nb in body["buckets"]}
    ops = tuple(Transfer(int(r), int(b), str(s), str(d), "") for r, b, s, d in body["ops"])
    for t in ops:
        if t.bucket not in buckets or t.src not in nodes or t.dst not in nodes or body["me"] not in (t.src, t.dst):
            raise ProtocolError(f"op {[t.round, t.bucket, t.src, t.dst]} does not fit the session", "ops")
    return SessionRequest(str(body["session"]), body["me"], rank, len(nodes), {n: i for i, n in enumerate(nodes)},
                          body["backend"], timeout, None if store is None else (str(store[0]), int(store[1])),
                          buckets, ops, mode)


def per_param_body(nodes: list[str], node: str, session: str, backend: str, timeout_s: float,
                   store: tuple[str, int] | None) -> dict:
    """R-Fork baseline session: nodes[0] broadcasts parameter by parameter to the others."""
    return {"session": session, "me": node, "nodes": list(nodes), "backend": backend, "timeout_s": timeout_s,
            "store": None if store is None else list(store), "buckets": [], "ops": [], "mode": "per_param"}


def session_body(plan: TransferPlan, node: str, session: str, backend: str, timeout_s: float,
                 store: tuple[str, int] | None) -> dict:
    """The session request for ``node`` (its transfers and the buckets they carry)."""
    ops = plan.ops_for(node)
    used = sorted({t.bucket for t in ops})
    return {"session": session, "me": node, "nodes": list(plan.nodes), "backend": backend, "timeout_s": timeout_s,
            "store": None if store is None else list(store),
            "buckets": [[i, plan.buckets[i].dtype, [[p.name, p.offset, p.nbytes] for p in plan.buckets[i].pieces],
                         plan.buckets[i].nbytes] for i in used],
            "ops": [[t.round, t.bucket, t.src, t.dst] for t in ops]}
