"""Boundary types for routing: instance views, the request to place, the decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Protocol, Sequence

from ..perf_model import PerfModel
from ..slo import SLO


def tally(counts: dict, key, delta: int) -> None:
    """Add ``delta`` to a multiset kept as key -> count; a key whose count reaches 0 (or would go below) is
    removed. Instances keep their requests' TPOT targets this way for ``min_running_tpot_s``
    (``min(counts)``)."""
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


class InstanceView(Protocol):
    iid: Hashable  # instance id (URL in the router, index in the simulator)
    role: str  # "collocated", "prefill" or "decode"
    num_waiting: int  # requests queued, not yet prefilling
    num_running: int  # requests in the decode batch
    waiting_tokens: int  # prefill tokens still to compute for queued requests
    running_kv: int  # total context tokens of the running batch
    kv_free: int  # free KV slots (tokens)
    perf: PerfModel  # the instance's iteration-time model
    min_running_tpot_s: float  # tightest TPOT among its running requests (inf if none)


@dataclass(frozen=True)
class RouteRequest:
    """What the router knows about a request when placing it."""

    rid: Hashable  # request id
    input_len: int  # prompt tokens (estimated from text length in the HTTP router)
    max_new_tokens: int  # generation limit
    slo: SLO  # resolved SLO
    prefix_blocks: tuple = ()  # hashes of consecutive prompt blocks (prefix-cache identity)
    block_tokens: int = 512  # tokens per prefix block
    routing_key: str | None = None  # manual policy: sticky routing key (sglang-router's x-smg-routing-key)
    target: Hashable | None = None  # manual policy: the instance the client asked for (x-smg-target-worker)


@dataclass(frozen=True)
class RouteDecision:
    iid: Hashable | None  # chosen instance; None: no instance (reject or queue at the router)
    reason: str  # why
    predicted_ttft_s: float = float("nan")  # HFX only: prediction on the chosen instance
    predicted_tpot_s: float = float("nan")


class RoutingError(ValueError):
    pass


def require(instances: Sequence[InstanceView]) -> None:
    if not instances:
        raise RoutingError("no instance available to route to")
