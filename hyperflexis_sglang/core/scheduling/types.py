"""Boundary types between an engine (SGLang, the simulator) and a scheduling policy.

Per-request views are Protocols, not dataclasses: the shell hands the policy
its own request objects (the simulator's, or adapters over SGLang's ``Req``)
so that a decision costs no copying. The snapshot, plan and verdicts are
frozen dataclasses. Times are seconds on the caller's clock (``now``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Protocol, Sequence

from ..perf_model import PerfModel
from ..slo import SLO

MODES = ("collocated", "prefill", "decode")


class RequestView(Protocol):
    rid: Hashable  # request id
    arrival: float  # arrival time at this engine (or the router), seconds
    slo: SLO  # the request's objectives
    input_len: int  # prompt tokens
    output_len: int  # output tokens generated so far (> 0 for running or retracted requests)
    max_new_tokens: int  # generation limit
    first_token_time: float | None  # when the first output token was produced (None before)
    best_effort: bool  # demoted: its SLO is lost, serve it only with spare capacity
    enqueue_time: float  # when it (re-)entered the waiting queue (retraction re-stamps it)


class WaitingView(RequestView, Protocol):
    cached_len: int  # tokens already in KV: prefix-cache hit plus chunks already prefilled


class RunningView(RequestView, Protocol):
    pass


@dataclass(frozen=True)
class EngineSnapshot:
    """What one engine instance looks like before an iteration."""

    now: float  # current time, seconds
    waiting: Sequence[WaitingView]  # waiting queue, already in the policy's order (see Scheduler.key)
    running: Sequence[RunningView]  # requests in the decode batch
    kv_free_tokens: int  # KV slots free or evictable (prefix cache not in use)
    perf: PerfModel  # iteration-time model of this engine
    chunked: WaitingView | None = None  # request mid chunked prefill; it continues first (SGLang chunked_req)
    new_token_ratio: float = 0.7  # SGLang's estimate of the share of max_new_tokens still to come
    mode: str = "collocated"  # "collocated", "prefill" (P/D prefill server) or "decode" (P/D decode server)
    running_kv_tokens: int = -1  # total context of the running batch; -1: the policy sums it
    perf_trusted: bool = True  # False: ``perf`` is a guess (a young or noisy fit): order by it, do not throttle by it
    reserved_kv_tokens: float = -1.0  # KV the engine holds back for running requests' future tokens (SGLang's
    # PrefillAdder offset); -1: the policy estimates it from ``new_token_ratio``
    handoff_s: float = 0.0  # P/D prefill server: expected time from a request's prefill completing here to its
    # first token on the decode server (KV transfer latency, decode admission) is ``handoff_s +
    handoff_s_per_token: float = 0.0  # handoff_s_per_token x prompt tokens``; 0 on other servers

    def handoff(self, req: RequestView) -> float:
        """Seconds between ``req``'s prefill completing here and its first token reaching the client."""
        return self.handoff_s + self.handoff_s_per_token * req.input_len


@dataclass(frozen=True)
class PrefillItem:
    rid: Hashable  # request to (partly) prefill
    tokens: int  # new tokens computed this iteration
    completes: bool  # True when this chunk finishes the prompt (the first token comes out)


@dataclass(frozen=True)
class Verdict:
    rid: Hashable  # request concerned
    action: str  # "reject" or "demote"
    reason: str  # why, for logs, metrics and the client's error message


@dataclass(frozen=True)
class IterationPlan:
    """The policy's decision for the next iteration, with its reason."""

    prefill: tuple[PrefillItem, ...] = ()  # chunks to prefill, in queue order
    decode: bool = False  # running requests take a decode step in this iteration
    admit: tuple[Hashable, ...] = ()  # decode mode: waiting (transferred) requests joining the batch
    verdicts: tuple[Verdict, ...] = ()  # waiting requests rejected or demoted
    retract: tuple[Hashable, ...] = ()  # running requests to retract first (KV shortage or preemption)
    reason: str = ""  # why this iteration looks the way it does
    budget_s: float = float("inf")  # prefill time the policy allowed (inf: unconstrained)
    predicted_s: float = 0.0  # predicted iteration duration
    kv_full: bool = False  # the walk stopped because the KV pool cannot hold the next request (no victim frees it)

    @property
    def idle(self) -> bool:
        return not (self.prefill or self.decode or self.admit)


@dataclass(frozen=True)
class SchedulerConfig:
    """Engine limits the walk respects; defaults are SGLang 0.5.23's."""

    chunk_size: int = 8192  # --chunked-prefill-size: new prefill tokens per iteration
    max_prefill_tokens: int = 16384  # --max-prefill-tokens
    max_running: int = 1024  # --max-running-requests (SGLang derives it from the KV pool)
    mixed: bool = False  # --enable-mixed-chunk: decode rides along prefill iterations
    clip_max_new_tokens: int = 4096  # SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION
    page_size: int = 1  # --page-size; chunk boundaries are multiples of it
    preemption: bool = True  # the engine retracts running requests the policy's ``preempt`` picks for a waiting one
    extra: dict = field(default_factory=dict)  # policy-specific knobs (documented per policy)
