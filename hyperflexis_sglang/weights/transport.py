"""Run a node's part of a transfer plan over torch.distributed (gloo on CPU, NCCL on GPUs).

Each load session is its own process group, built directly from a TCP
store (``ProcessGroupGloo`` / ``ProcessGroupNCCL``), so it never touches
the process's default group (SGLang's scheduler has one) and works in a
plain process too. Rank 0 hosts the store on a free port.

A node runs its transfers round by round (see core/weights/plan.py): it
posts the round's sends and receives asynchronously, waits for them, then
unpacks what arrived. A bucket counts as received only once complete; on
gloo the bytes land directly in the parameters (zero-copy), so a failed
session can leave some parameters partly written: the instance is then
``failed`` and never ``ready`` until a later session or disk load
completes and its checksum matches. On
any error the group is aborted so that peers fail fast instead of waiting
for the timeout, and the error propagates with the buckets received so far
(``TransferFailed.received``), which a re-plan reuses.
"""

from __future__ import annotations

import datetime
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.distributed as dist

from ..core.weights import Bucket, Transfer
from .tensors import piece_view, unpack


class TransferFailed(RuntimeError):
    def __init__(self, message: str, received: Sequence[int]):
        super().__init__(message)
        self.received = list(received)  # buckets this node received completely before the failure


@dataclass
class Group:
    pg: object  # ProcessGroupGloo or ProcessGroupNCCL
    store: object  # the TCP store (kept alive with the group)
    backend: str  # "gloo" or "nccl"
    packed: bool = False  # gloo too sends packed buckets (always on with NCCL; tests use it on a CPU)
    pace_gbs: float = 0.0  # benchmarks only: cap this node's sending at this many GB/s (emulated NIC); 0: off


@dataclass
class NodeStats:
    sent_bytes: int = 0  # bytes this node sent
    received_bytes: int = 0  # bytes this node received
    received: list[int] = field(default_factory=list)  # complete buckets, in arrival order


def host_store(host: str) -> dist.TCPStore:
    """The session's store, on a free port of ``host`` (read it from ``.port``)."""
    return dist.TCPStore(host, 0, is_master=True, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=60))


def open_group(backend: str, rank: int, world: int, session: str, timeout_s: float,
               store: dist.TCPStore | None = None, store_addr: tuple[str, int] | None = None,
               local_host: str | None = None) -> Group:
    """Join the session's group (rank 0 passes the store it hosts, others its address)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if store is None:
        store = dist.TCPStore(store_addr[0], store_addr[1], is_master=False, timeout=timeout)
    prefixed = dist.PrefixStore(f"hfx-weights/{session}", store)
    if backend == "gloo":
        opts = dist.ProcessGroupGloo._Options()
        opts._timeout = timeout
        specific = local_host and local_host not in ("0.0.0.0", "::")  # a wildcard is not an address peers can use
        opts._devices = [dist.ProcessGroupGloo.create_device(hostname=local_host) if specific
                         else dist.ProcessGroupGloo.create_default_device()]
        pg = dist.ProcessGroupGloo(prefixed, rank, world, opts)
    elif backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        pg = dist.ProcessGroupNCCL(prefixed, rank, world, opts)
    else:
        raise ValueError(f"unknown backend {backend!r} (gloo or nccl)")
    return Group(pg, store, backend)


def abort(group: Group) -> None:
    """Tear the group down so peers blocked on it fail now (best effort)."""
    for name in ("abort", "shutdown"):
        fn = getattr(group.pg, name, None)
        if fn is not None:
            try:
                fn()
                return
            except Exception:
                continue


TAG_STRIDE = 1 << 20  # gloo tag of a bucket's i-th parameter: bucket * TAG_STRIDE + i


class _Pool:
    """Reusable bucket buffers (NCCL path): fresh memory per bucket costs a page fault per page."""

    def __init__(self) -> None:
        self.free: list[torch.Tensor] = []
        self.used: list[torch.Tensor] = []

    def take(self, nbytes: int, device: torch.device) -> torch.Tensor:
        for i, buf in enumerate(self.free):
            if buf.numel() >= nbytes and buf.device == device:
                self.used.append(self.free.pop(i))
                return self.used[-1][:nbytes]
        self.used.append(torch.empty(nbytes, dtype=torch.uint8, device=device))
        return self.used[-1]

    def release_all(self) -> None:
        self.free += self.used
        self.used = []


def run_node(group: Group, me: str, ranks: Mapping[str, int], ops: Sequence[Transfer],
             buckets: Mapping[int, Bucket], params: Mapping[str, torch.Tensor],
             on_received: Callable[[int], None] = lambda b: None,
             on_sent: Callable[[int], None] = lambda b: None) -> NodeStats:
    """Run ``me``'s transfers in round order; raise TransferFailed on any error.

    ``on_received`` / ``on_sent`` are called with each bucket index once its
    transfer completed (``on_sent`` lets tests inject a sender death).
    """
    stats, pool = NodeStats(), _Pool()
    try:
        if group.backend == "nccl":
            _connect_pairs(group, me, ranks, ops, next(iter(params.values())).device)
        for _, items in itertools.groupby(sorted(ops, key=lambda t: (t.round, t.bucket)), key=lambda t: t.round):
            step, t0, sent = list(items), time.perf_counter(), stats.sent_bytes
            _run_round(group, me, ranks, step, buckets, params, stats, pool)
            _pace(group, stats.sent_bytes - sent, t0)
            for t in step:
                (on_sent if t.src == me else on_received)(t.bucket)
        if group.backend == "nccl":
            torch.cuda.synchronize()
    except Exception as e:
        abort(group)
        raise TransferFailed(f"{me}: {type(e).__name__}: {e}", stats.received) from e
    return stats


def _connect_pairs(group: Group, me: str, ranks: Mapping[str, int], ops: Sequence[Transfer],
                   device: torch.device) -> None:
    """Create NCCL's per-pair communicators in one global order (lower rank pair first).

    NCCL creates a pair's communicator on its first operation and blocks
    until both sides arrive; created lazily in each node's own round order,
    a cycle (a -> b, b -> c, c -> a in one round) could wait forever.
    Every node walks its pairs in the same global order, so the smallest
    pair not yet connected always has both ends ready.
    """
    mine = ranks[me]
    peers = sorted({ranks[t.dst] if t.src == me else ranks[t.src] for t in ops})
    token = torch.zeros(1, device=device)
    for peer in peers:  # pairs (min, max) in increasing order, as every node sees them
        work = group.pg.send([token], peer, 0) if mine < peer else group.pg.recv([token], peer, 0)
        work.wait()


def _run_round(group: Group, me: str, ranks: Mapping[str, int], step: list[Transfer],
               buckets: Mapping[int, Bucket], params: Mapping[str, torch.Tensor], stats: NodeStats,
               pool: _Pool) -> None:
    """Post the round's transfers, wait for all, unpack what arrived.

    gloo (CPU): a bucket is its pieces' own memory (parameter byte ranges), one async op each,
    all posted before any wait (coalesced, zero-copy). NCCL: a bucket is
    packed into one contiguous buffer (one launch per bucket).
    """
    works, arriving = [], []
    for t in step:
        b = buckets[t.bucket]
        peer = ranks[t.dst] if t.src == me else ranks[t.src]
        if group.backend == "gloo" and not group.packed:
            views = [piece_view(piece, params) for piece in b.pieces]
            post = group.pg.send if t.src == me else group.pg.recv
            works += [post([v], peer, t.bucket * TAG_STRIDE + i) for i, v in enumerate(views)]
        elif t.src == me:
            works.append(group.pg.send([pack_into(b, params, pool)], peer, t.bucket))
        else:
            buf = pool.take(b.nbytes, params[b.names[0]].device)
            works.append(group.pg.recv([buf], peer, t.bucket))
            arriving.append((b, buf))
        if t.src == me:
            stats.sent_bytes += b.nbytes
    for w in works:
        w.wait()
    for b, buf in arriving:
        unpack(b, buf, params)
    for t in step:
        if t.dst == me:
            stats.received_bytes += buckets[t.bucket].nbytes
            stats.received.append(t.bucket)
    pool.release_all()


def pack_into(bucket: Bucket, params: Mapping[str, torch.Tensor], pool: _Pool) -> torch.Tensor:
    out = pool.take(bucket.nbytes, params[bucket.names[0]].device)
    at = 0
    for piece in bucket.pieces:
        out[at:at + piece.nbytes].copy_(piece_view(piece, params))
        at += piece.nbytes
    return out


def _pace(group: Group, sent_bytes: int, t0: float) -> None:
    """Emulated link (benchmarks): a step that sent ``sent_bytes`` since ``t0`` lasts at least bytes / rate."""
    if group.pace_gbs > 0 and sent_bytes:
        time.sleep(max(0.0, t0 + sent_bytes / (group.pace_gbs * 1e9) - time.perf_counter()))


def broadcast_per_param(group: Group, params: Sequence[torch.Tensor], root: int = 0) -> int:
    """R-Fork's seed/receiver loop (SGLang weight_exporter): one synchronous broadcast per parameter."""
    total = 0
    for p in params:
        opts, t0 = dist.BroadcastOptions(), time.perf_counter()
        opts.rootRank = root
        group.pg.broadcast([p.data], opts).wait()
        total += p.numel() * p.element_size()
        if group.pg.rank() == root:
            _pace(group, p.numel() * p.element_size(), t0)
    return total
