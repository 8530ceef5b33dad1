"""A simulated SGLang engine instance (one replica) that runs a core scheduling policy.

The replica keeps SGLang's state (waiting queue, chunked request, running
batch, KV pool with a prefix cache that evicts least recently used leaves first, as
SGLang's radix cache, and holds what the running requests leave free of the same
pool (SGLang counts the cache's evictable part as free), and optionally a host-memory tier behind it, as SGLang's
hierarchical cache, ``--enable-hierarchical-cache``) and, at every iteration, hands a
snapshot to the *same* policy object the SGLang plugin uses, applies the
plan and advances time by the iteration time predicted by its "true"
performance model (which may differ from the policy's, to study
mis-calibration). Continuous batching, chunked prefill, KV reservation and
retraction follow ``core/scheduling/base.py``.

Invariants (checked by tests): a request is in exactly one of waiting,
chunked, in-flight prefill, running or ended; ``kv_used`` equals the
context held by chunked/running requests.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..core.perf_model import PerfModel, attn_pairs
from ..core.routing.prefix import held_prefix, touch_prefix
from ..core.routing.types import tally
from ..core.scheduling import EngineSnapshot, IterationPlan, Scheduler
from ..core.slo import SLO

if TYPE_CHECKING:
    from .cluster import Cluster

INIT_NEW_TOKEN_RATIO = 0.7  # SGLang: SGLANG_INIT_NEW_TOKEN_RATIO x --schedule-conservativeness 1.0
MIN_NEW_TOKEN_RATIO = INIT_NEW_TOKEN_RATIO * 0.14  # SGLang: init x SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR
NEW_TOKEN_RATIO_DECAY = (INIT_NEW_TOKEN_RATIO - MIN_NEW_TOKEN_RATIO) / 600  # SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS
BLOCK_TOKENS = 512  # Mooncake hash_ids block size


class SimRequest:
    """One request's state; implements the policy's request views."""

    __slots__ = ("rid", "arrival", "slo", "input_len", "output_len", "max_new_tokens", "first_token_time",
                 "best_effort", "cached_len", "blocks", "finish_time", "rejected", "reason", "late_max",
                 "late_base", "retractions", "demoted", "prefill_iid", "decode_iid", "entry", "ended", "enqueue_time",
                 "host_len", "locked")

    def __init__(self, rid: int, arrival: float, slo: SLO, input_len: int, output_len: int, blocks: tuple = ()):
        self.rid = rid
        self.arrival = arrival
        self.slo = slo
        self.input_len = input_len
        self.output_len = 0  # generated so far
        self.max_new_tokens = output_len  # traces give the real output length; we generate exactly that
        self.first_token_time: float | None = None
        self.best_effort = False
        self.cached_len = 0
        self.blocks = blocks
        self.finish_time: float | None = None
        self.rejected = False
        self.reason = ""
        self.late_max = -math.inf  # worst per-token lateness (arrival-anchored deadlines)
        self.late_base = arrival + slo.ttft_s - slo.tpot_s  # deadline(n) = late_base + n * tpot
        self.retractions = 0
        self.demoted = False
        self.prefill_iid = None
        self.decode_iid = None
        self.entry = None  # (key, seq, self) while in a waiting queue
        self.ended = False
        self.enqueue_time = arrival
        self.host_len = 0  # prefix tokens matched in the host tier, loaded to the GPU at the first prefill chunk
        self.locked = 0  # prefix-hit tokens this request holds in its replica's cache while it holds KV there


class _QueueView:
    """Read-only, zero-copy view of a sorted waiting list as requests in order."""

    __slots__ = ("items",)

    def __init__(self, items: list):
        self.items = items

    def __iter__(self):
        for entry in self.items:
            yield entry[2]

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


class Replica:
    """One engine instance; also an ``InstanceView`` for routing."""

    def __init__(self, iid: int, role: str, policy: Scheduler, perf: PerfModel, cluster: "Cluster",
                 true_perf: PerfModel | None = None):
        self.iid = iid
        self.role = role  # "collocated", "prefill" or "decode"
        self.policy = policy
        self.perf = perf
        self.true_perf = true_perf or perf
        self.cluster = cluster
        self.capacity = perf.kv_capacity_tokens
        self.waiting: list = []  # sorted (key, seq, req)
        self.running: list[SimRequest] = []
        self.chunked: SimRequest | None = None
        self.kv_used = 0
        self.running_kv = 0
        self.queued_tokens = 0  # prefill tokens of requests in the waiting list
        self.queued_by_priority: dict[int, int] = {}  # the same, per SLO priority (best effort: -1)
        self.inflight_tokens = 0  # prefill tokens of the iteration now running
        self.tpot_counts: dict[float, int] = {}  # TPOT targets of the running batch -> count
        self.routed_tpots: dict[float, int] = {}  # TPOT targets of the requests routed here, not yet ended
        view = cluster.cfg.router_view  # what the router sees as min_running_tpot_s (ClusterConfig.router_view)
        self._tpot_view = (self.tpot_counts if view == "running" else {} if view == "none" else self.routed_tpots)
        self.cache: OrderedDict = OrderedDict()
        self.cache_blocks = max(self.capacity // BLOCK_TOKENS, 1)  # the whole pool, when nothing runs
        self.locked_tokens = 0  # cached prefix tokens that requests holding KV use (SGLang locks those tree nodes)
        # SGLang HiCache (write-through, the default policy): every cached block is also written to a host
        # pool of --hicache-ratio x the device pool; a prefix continues in the host tier where the device's ends
        self.host: OrderedDict = OrderedDict()
        self.host_blocks = int(self.cache_blocks * cluster.cfg.hicache_ratio)
        self.host_s_per_token = (self.true_perf.kv_bytes_per_token * 8 / (cluster.cfg.hicache_gbps * 1e9)
                                 if self.host_blocks else 0.0)
        self.hit_tokens = [0, 0]  # prompt tokens served from the prefix cache: [from the GPU, loaded from the host]
        self.loading_tokens = 0  # host-tier tokens the iteration now being planned loads before its prefill
        self.ratio = INIT_NEW_TOKEN_RATIO
        self.busy = False
        self.busy_s = 0.0
        self.iterations = 0
        self.retractions = 0
        self.seq = 0

    # ---- InstanceView ---------------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + (self.chunked is not None)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def waiting_tokens(self) -> int:
        """Prefill work not yet done: queued, in flight, and the chunked request's remainder."""
        return self.queued_tokens + self._started_tokens()

    def tokens_ahead(self, priority: int) -> int:
        """Prefill work a new request of ``priority`` waits for under a priority-aware policy."""
        return self._started_tokens() + sum(t for p, t in self.queued_by_priority.items() if p >= priority)

    def _started_tokens(self) -> int:
        """Prefill tokens of work already begun: this iteration's and the chunked request's rest."""
        c = self.chunked
        return self.inflight_tokens + (c.input_len + c.output_len - c.cached_len if c is not None else 0)

    @property
    def kv_free(self) -> int:
        return self.capacity - self.kv_used

    @property
    def min_running_tpot_s(self) -> float:
        view = self._tpot_view
        return min(view) if view else math.inf

    # ---- queue ----------------------------------------------------------
    def enqueue(self, req: SimRequest, now: float) -> None:
        if self.role != "decode" and req.blocks and req.output_len == 0:
            device, host = self._cache_hit(req.blocks)
            req.cached_len = min(device + host, req.input_len - 1)
            req.host_len = max(req.cached_len - device, 0)
            self.hit_tokens[0] += req.cached_len - req.host_len
            self.hit_tokens[1] += req.host_len
        self._insert(req, now)
        if not self.busy:
            self.busy = True
            self.cluster.at(now, self.step)

    def _insert(self, req: SimRequest, now: float) -> None:
        self.seq += 1
        req.enqueue_time = now
        key = self.policy.decode_key(req, self.perf) if self.role == "decode" else self.policy.key(req, self.perf)
        req.entry = (key, self.seq, req)
        bisect.insort(self.waiting, req.entry)
        todo = req.input_len + req.output_len - req.cached_len
        self.queued_tokens += todo
        prio = -1 if req.best_effort else req.slo.priority
        self.queued_by_priority[prio] = self.queued_by_priority.get(prio, 0) + todo

    def _remove(self, req: SimRequest) -> None:
        i = bisect.bisect_left(self.waiting, req.entry)
        del self.waiting[i]
        req.entry = None
        todo = req.input_len + req.output_len - req.cached_len
        self.queued_tokens -= todo
        self.queued_by_priority[-1 if req.best_effort else req.slo.priority] -= todo

    def cached_tokens(self, blocks: tuple, with_host: bool = False) -> int:
        """Prefix tokens of ``blocks`` this replica's GPU cache holds (``with_host``: or its host tier continues),
        without touching LRU order."""
        n = held_prefix(self.cache, blocks)
        if with_host and self.host_blocks:
            n = held_prefix(self.host, blocks, n)
        return n * BLOCK_TOKENS

    def _cache_hit(self, blocks: tuple) -> tuple[int, int]:
        """Match a prefix: (tokens on the GPU, tokens that continue it in the host tier). The host part is loaded
        back into the GPU cache (SGLang's load_back), so both parts become the most recently used."""
        device = held_prefix(self.cache, blocks)
        hit = device
        if self.host_blocks:
            hit = held_prefix(self.host, blocks, device)
            touch_prefix(self.host, blocks[:hit], self.host_blocks)
        touch_prefix(self.cache, blocks[:hit], self.cache_cap())
        return device * BLOCK_TOKENS, (hit - device) * BLOCK_TOKENS

    def cache_cap(self) -> int:
        """Blocks the GPU prefix cache may hold now: the pool less what requests hold in it, plus the cached
        prefixes they share (SGLang's radix cache lives in the KV pool; running requests' KV is not evictable)."""
        free = self.capacity - self.kv_used + self.locked_tokens
        return min(max(free, 0) // BLOCK_TOKENS, self.cache_blocks)

    def _cache_insert(self, blocks: tuple) -> None:
        touch_prefix(self.cache, blocks, self.cache_cap())
        if self.host_blocks and self.role != "decode":  # a decode server's host pool only backs up retractions
            touch_prefix(self.host, blocks, self.host_blocks)

    def clear_cache(self) -> None:
        self.cache.clear()
        self.host.clear()

    # ---- running batch bookkeeping ---------------------------------------
    def _join(self, req: SimRequest) -> None:
        self.running.append(req)
        self.running_kv += req.input_len + req.output_len
        if not req.best_effort:
            tally(self.tpot_counts, req.slo.tpot_s, 1)

    def _unlock(self, req: SimRequest) -> None:
        self.locked_tokens -= req.locked
        req.locked = 0

    def _leave(self, req: SimRequest) -> None:
        self.running_kv -= req.input_len + req.output_len
        self.kv_used -= req.input_len + req.output_len
        self._unlock(req)
        if not req.best_effort:
            tally(self.tpot_counts, req.slo.tpot_s, -1)

    # ---- one iteration ----------------------------------------------------
    def step(self, now: float) -> None:
        ratio = 1.0 if self.cluster.cfg.ignore_eos else self.ratio  # SGLang: no early-EOS estimate for those
        handoff = self.cluster.handoff() if self.role == "prefill" else (0.0, 0.0)
        snap = EngineSnapshot(now, _QueueView(self.waiting), self.running, self.capacity - self.kv_used, self.perf,
                              self.chunked, ratio, self.role, self.running_kv, handoff_s=handoff[0],
                              handoff_s_per_token=handoff[1])
        plan = self.policy.plan(snap)
        self.cluster.observe_plan(self, plan)
        self._apply_verdicts(plan, now)
        if plan.retract:
            self._retract(plan.retract, now)
        if plan.admit:
            self._admit(plan.admit, now)
        prefill = self._take_prefill(plan)
        decoding = list(self.running) if plan.decode and self._decode_fits(prefill) else []
        cap = self.cache_cap()
        if len(self.cache) > cap:
            touch_prefix(self.cache, (), cap)  # the step's allocations evict cached leaves
        if not prefill and not decoding:
            self.ratio = INIT_NEW_TOKEN_RATIO  # SGLang's on_idle resets the ratio
            self.busy = bool(self.waiting or self.chunked) and self._stuck_guard(now)
            return
        if decoding and not prefill and not plan.retract:
            self.ratio = max(self.ratio - NEW_TOKEN_RATIO_DECAY, MIN_NEW_TOKEN_RATIO)  # only decode steps decay
        dur = self._duration(prefill, decoding)
        if self.role == "decode":
            self.cluster.decode_step(dur)
        self.busy_s += dur
        self.iterations += 1
        self.cluster.at(now + dur, lambda t: self._finish(t, prefill, decoding))

    def _decode_fits(self, prefill: list) -> bool:
        """SGLang's mixed step: the running rows decode only if the pool holds their next tokens after the
        prefill was admitted; otherwise they sit out this step (no retraction)."""
        return not prefill or self.capacity - self.kv_used >= len(self.running)

    def _stuck_guard(self, now: float) -> bool:
        """Nothing runnable but requests wait (e.g. KV held by transfers): retry a bit later."""
        self.cluster.at(now + 0.005, self.step)
        return True

    def _apply_verdicts(self, plan: IterationPlan, now: float) -> None:
        for v in plan.verdicts:
            req = self.cluster.requests[v.rid]
            if req is self.chunked:
                continue
            self._remove(req)
            if v.action == "reject":
                req.rejected, req.reason = True, v.reason
                self.cluster.end(req, now)
            else:
                req.best_effort, req.demoted, req.reason = True, True, v.reason
                self._insert(req, now)

    def _retract(self, rids, now: float) -> None:
        requests = self.cluster.requests
        gone = {rid for rid in rids}
        for rid in rids:
            req = requests[rid]
            self._leave(req)
            req.cached_len = req.host_len = 0
            req.retractions += 1
            self.retractions += 1
            self._insert(req, now)
        self.running = [r for r in self.running if r.rid not in gone]
        total_max = sum(r.max_new_tokens for r in self.running)
        self.ratio = min(1.0, (sum(r.output_len for r in self.running) + 20 * len(self.running)) / (total_max + 1))

    def _admit(self, rids, now: float) -> None:
        requests = self.cluster.requests
        for rid in rids:
            req = requests[rid]
            self._remove(req)
            self.kv_used += req.input_len + req.output_len
            if req.first_token_time is None:
                req.first_token_time = now
                self.cluster.first_token(req)
                req.output_len = max(req.output_len, 1)
                self.kv_used += 1
                req.late_max = max(req.late_max, now - (req.late_base + req.slo.tpot_s))
            if req.output_len >= req.max_new_tokens:
                self.kv_used -= req.input_len + req.output_len
                self._unlock(req)
                self.cluster.end(req, now)
            else:
                self._join(req)

    def _take_prefill(self, plan: IterationPlan) -> list:
        out = []
        requests = self.cluster.requests
        for item in plan.prefill:
            req = requests[item.rid]
            if req is self.chunked:
                self.chunked = None
            else:
                self._remove(req)
                self.kv_used += req.cached_len
                req.locked = req.cached_len
                self.locked_tokens += req.locked
                self.loading_tokens += req.host_len
                req.host_len = 0
            self.kv_used += item.tokens
            self.inflight_tokens += item.tokens
            out.append((req, item.tokens, req.cached_len, item.completes))
        return out

    def _duration(self, prefill: list, decoding: list) -> float:
        tokens = sum(n for _, n, _, _ in prefill)
        pairs = sum(attn_pairs(n, c) for _, n, c, _ in prefill)
        kv = self.running_kv if decoding else 0
        load, self.loading_tokens = self.loading_tokens * self.host_s_per_token, 0
        # host-to-GPU loads counted in full before the forward (SGLang overlaps them layer by layer: conservative)
        return load + self.true_perf.iteration_time(tokens, pairs, len(prefill), len(decoding), kv)

    def _finish(self, now: float, prefill: list, decoding: list) -> None:
        if decoding:
            self._decode_done(now, decoding)
        for req, n, _, completes in prefill:
            req.cached_len += n
            self.inflight_tokens -= n
            if not completes:
                if self.chunked is not None:  # SGLang tracks one chunked request; a second would be lost
                    raise AssertionError(f"two chunked requests in one iteration: {self.chunked.rid}, {req.rid}")
                self.chunked = req
                continue
            self._prefill_done(req, now)
        self.step(now)

    def _decode_done(self, now: float, decoding: list) -> None:
        done = []
        for r in decoding:
            n = r.output_len + 1
            r.output_len = n
            late = now - r.late_base - n * r.slo.tpot_s
            if late > r.late_max:
                r.late_max = late
            if n >= r.max_new_tokens:
                done.append(r)
        self.running_kv += len(decoding)
        self.kv_used += len(decoding)
        if done:
            ended = set(id(r) for r in done)
            self.running = [r for r in self.running if id(r) not in ended]
            for r in done:
                self._leave(r)
                self._cache_insert(r.blocks)
                self.cluster.end(r, now)

    def _prefill_done(self, req: SimRequest, now: float) -> None:
        if self.role == "prefill":
            self._cache_insert(req.blocks)
            self.cluster.transfer(self, req, now)
            return
        n = req.output_len + 1
        req.output_len = n
        self.kv_used += 1
        if req.first_token_time is None:
            req.first_token_time = now
            self.cluster.first_token(req)
        late = now - req.late_base - n * req.slo.tpot_s
        if late > req.late_max:
            req.late_max = late
        if n >= req.max_new_tokens:
            self.kv_used -= req.input_len + n
            self._unlock(req)
            self._cache_insert(req.blocks)
            self.cluster.end(req, now)
        else:
            self._join(req)

    def release_transferred(self, req: SimRequest) -> None:
        """Prefill role: the request's KV has been sent; free it."""
        self.kv_used -= req.input_len
        self._unlock(req)
