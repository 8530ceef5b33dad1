"""Run a node's part of a transfer plan over torch.distributed (gloo on CPU, NCCL on GPUs).

Each load session is its own process group, built directly from a TCP
store (``ProcessGroupGloo`` / ``ProcessGroupNCCL``), so it never touches
the process's default group (SGLang's scheduler has one) and works in a
plain process too. Rank 0 hosts the store on a free port.

A node runs its transfers round by round (see core/weights/plan.py): it
posts the round's sends and receives asynchronously, waits for them, then
unpacks what arrived. A bucket counts as received only once complete. On
any error the group is aborted so that peers fail fast instead of waiting
for the timeout, and the error propagates with the buckets received so far
(``TransferFailed.received``), which a re-plan reuses.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.distributed as dist

from ..core.weights import Bucket, Transfer
from .tensors import empty_buffer, pack, unpack


class TransferFailed(RuntimeError):
    def __init__(self, message: str, received: Sequence[int]):
        super().__init__(message)
        self.received = list(received)  # buckets this node received completely before the failure


@dataclass
class Group:
    pg: object  # ProcessGroupGloo or ProcessGroupNCCL
    store: object  # the TCP store (kept alive with the group)
    backend: str  # "gloo" or "nccl"


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
        opts._devices = [dist.ProcessGroupGloo.create_device(hostname=local_host) if local_host
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


def _direct(bucket: Bucket, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """A one-parameter bucket moves straight from/into the parameter (no copy)."""
    if len(bucket.names) != 1:
        return None
    t = params[bucket.names[0]]
    return t.detach().reshape(-1).view(torch.uint8) if t.is_contiguous() else None


def run_node(group: Group, me: str, ranks: Mapping[str, int], ops: Sequence[Transfer],
             buckets: Mapping[int, Bucket], params: Mapping[str, torch.Tensor],
             on_received: Callable[[int], None] = lambda b: None,
             on_sent: Callable[[int], None] = lambda b: None) -> NodeStats:
    """Run ``me``'s transfers in round order; raise TransferFailed on any error.

    ``on_received`` / ``on_sent`` are called with each bucket index once its
    transfer completed (``on_sent`` lets tests inject a sender death).
    """
    stats = NodeStats()
    try:
        for _, step in itertools.groupby(sorted(ops, key=lambda t: (t.round, t.bucket)), key=lambda t: t.round):
            _run_round(group, me, ranks, list(step), buckets, params, stats, on_received, on_sent)
        if group.backend == "nccl":
            torch.cuda.synchronize()
    except Exception as e:
        abort(group)
        raise TransferFailed(f"{me}: {type(e).__name__}: {e}", stats.received) from e
    return stats


def _run_round(group: Group, me: str, ranks: Mapping[str, int], step: list[Transfer],
               buckets: Mapping[int, Bucket], params: Mapping[str, torch.Tensor], stats: NodeStats,
               on_received: Callable[[int], None], on_sent: Callable[[int], None]) -> None:
    works, arriving, keep = [], [], []
    for t in step:
        b = buckets[t.bucket]
        if t.src == me:
            buf = _direct(b, params)
            buf = pack(b, params) if buf is None else buf
            keep.append(buf)
            works.append(group.pg.send([buf], ranks[t.dst], t.bucket))
            stats.sent_bytes += b.nbytes
        elif t.dst == me:
            direct = _direct(b, params)
            buf = empty_buffer(b, params) if direct is None else direct
            works.append(group.pg.recv([buf], ranks[t.src], t.bucket))
            arriving.append((b, buf, direct is not None))
    for w in works:
        w.wait()
    for t in step:
        if t.src == me:
            on_sent(t.bucket)
    for b, buf, direct in arriving:
        if not direct:
            unpack(b, buf, params)
        stats.received_bytes += b.nbytes
        stats.received.append(b.index)
        on_received(b.index)


def broadcast_per_param(group: Group, params: Sequence[torch.Tensor], root: int = 0) -> int:
    """R-Fork's seed/receiver loop (SGLang weight_exporter): one synchronous broadcast per parameter."""
    total = 0
    for p in params:
        opts = dist.BroadcastOptions()
        opts.rootRank = root
        group.pg.broadcast([p.data], opts).wait()
        total += p.numel() * p.element_size()
    return total
