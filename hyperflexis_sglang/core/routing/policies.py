"""Instance selection policies (collocated workers, and P/D pairing).

Baselines follow sglang-router 0.3.2: ``random``, ``round_robin``,
``power_of_two`` (two random candidates, the less loaded wins) and
``cache_aware`` (if the fleet is imbalanced, the least loaded instance;
otherwise the instance with the longest prefix match when the match rate
exceeds ``cache_threshold``, else the instance with the smallest prefix
tree). Load = queued + running requests.

``hfx`` predicts, for every candidate, the request's TTFT (prefill work
ahead of it: in flight, plus queued work at its priority or higher when the
instance reports it per priority, else all queued work; minus the predicted
prefix-cache hit; through the instance's performance model, stretched by
the share of time the instance spends decoding) and TPOT (decode step time
with the request added). Among instances predicted to meet both targets it
prefers those with a comfortable margin (half the TTFT target), then the
largest margin (spread). A collocated instance also needs KV room: its free
KV minus the prefill work queued on it must hold the request's prompt and
generation limit (else it is KV-bound and the TTFT prediction, which counts
compute only, is optimistic). If no instance can meet the SLO, it takes the
smallest predicted TTFT and says so. Prefix affinity needs no extra rule: a
cache hit shortens the predicted TTFT.

TPOT-class packing (collocated): a request whose TPOT target is below
``tight_tpot_s`` (0.1 s) makes every iteration of its instance short, which
costs that instance prefill throughput and decode batching for all its
requests. So tight requests are packed: each goes to the first instance (in
the fleet's order) that meets its SLO and either already runs tight requests
or is nearly idle (its whole queue, a decode step and the request's own
prefill fit in the comfortable margin); if none does, to the tight host with
the least predicted TTFT (its scheduler rejects or demotes it if it cannot
make it). Tight requests thus occupy as few instances as their load needs.
Loose requests prefer, among instances with a comfortable margin, those
running no tight request (their TTFT prediction already charges tight
instances for their short iterations). ``tight_tpot_s`` 0 turns packing
off. Option ``bin_pack_ttft_s``: requests at least that loose take the
smallest margin instead (packing, for scale-in). ``min_running_tpot_s``:
the simulator reports its running batch's; the live router counts its own
requests on the worker that decodes them (SGLang does not report its
requests' SLOs): streams from their first chunk, non-streamed requests
from sending, which the simulator finds as good (``bench/sim/router_view.py``).

Randomness is passed in (``rand`` in [0, 1)).
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

from .prefix import PrefixTracker
from .types import InstanceView, RouteDecision, RouteRequest, require


TIGHT_TPOT_S = 0.1  # TPOT targets below this are tight (default classes: interactive 40 ms vs 200 ms)


def load(inst: InstanceView) -> int:
    return inst.num_waiting + inst.num_running


class RoutingPolicy:
    name = "random"

    def __init__(self, **opts):
        self.opts = opts
        self.prefix = PrefixTracker()

    def pick(self, req: RouteRequest, instances: Sequence[InstanceView], rand: float) -> RouteDecision:
        require(instances)
        return RouteDecision(instances[int(rand * len(instances)) % len(instances)].iid, "random")

    def pick_decode(self, req: RouteRequest, instances: Sequence[InstanceView], rand: float) -> RouteDecision:
        """Decode server for a P/D request (same rule as ``pick`` unless a policy knows better)."""
        return self.pick(req, instances, rand)

    def observe(self, req: RouteRequest, iid: Hashable) -> None:
        """The request was sent to ``iid`` (updates router-side prefix state)."""
        if req.prefix_blocks:
            self.prefix.record(iid, req.prefix_blocks)


class RoundRobin(RoutingPolicy):
    name = "round_robin"

    def __init__(self, **opts):
        super().__init__(**opts)
        self._next = 0

    def pick(self, req, instances, rand):
        require(instances)
        inst = instances[self._next % len(instances)]
        self._next += 1
        return RouteDecision(inst.iid, "round robin")


class PowerOfTwo(RoutingPolicy):
    name = "power_of_two"

    def pick(self, req, instances, rand):
        require(instances)
        n = len(instances)
        if n == 1:
            return RouteDecision(instances[0].iid, "only instance")
        i = int(rand * n) % n
        j = (i + 1 + int(rand * n * (n - 1)) % (n - 1)) % n
        a, b = instances[i], instances[j]
        win = a if load(a) <= load(b) else b
        return RouteDecision(win.iid, f"less loaded of two ({load(a)} vs {load(b)})")


class CacheAware(RoutingPolicy):
    name = "cache_aware"

    def pick(self, req, instances, rand):
        require(instances)
        loads = [load(i) for i in instances]
        lo, hi = min(loads), max(loads)
        abs_t = self.opts.get("balance_abs_threshold", 64)
        rel_t = self.opts.get("balance_rel_threshold", 1.5)
        if hi - lo > abs_t and hi > lo * rel_t:
            return RouteDecision(instances[loads.index(lo)].iid, "imbalanced: shortest queue")
        if req.prefix_blocks:
            matches = [self.prefix.match(i.iid, req.prefix_blocks) for i in instances]
            best = max(range(len(instances)), key=lambda k: (matches[k], -loads[k]))
            if matches[best] / len(req.prefix_blocks) > self.opts.get("cache_threshold", 0.3):
                return RouteDecision(instances[best].iid, f"prefix match {matches[best]}/{len(req.prefix_blocks)}")
        small = min(range(len(instances)), key=lambda k: (self.prefix.size(instances[k].iid), loads[k]))
        return RouteDecision(instances[small].iid, "low match: smallest tree")


class HFXRouting(RoutingPolicy):
    name = "hfx"

    def predict(self, req: RouteRequest, inst: InstanceView) -> tuple[float, float]:
        perf = inst.perf
        hit = min(self.prefix.match(inst.iid, req.prefix_blocks) * req.block_tokens, max(req.input_len - 1, 0))
        own = req.input_len - hit
        ahead_fn = getattr(inst, "tokens_ahead", None)  # priority-aware when the instance can tell
        ahead = ahead_fn(req.slo.priority) if ahead_fn is not None else inst.waiting_tokens
        td = perf.decode_time(inst.num_running, inst.running_kv) if inst.num_running else 0.0
        decode_share = min(td / inst.min_running_tpot_s, 0.9) if inst.role != "prefill" and td else 0.0
        chunks = 1 + (ahead + own) // 8192
        work = chunks * perf.base + perf.per_prefill_token * ahead + perf.chunk_time(own, hit)
        ttft = work / (1.0 - decode_share)
        tpot = perf.decode_time(inst.num_running + 1, inst.running_kv + req.input_len)
        return ttft, tpot

    def pick(self, req, instances, rand):
        require(instances)
        slo = req.slo
        scored = []
        for inst in instances:
            if inst.kv_free < req.input_len:
                continue
            ttft, tpot = self.predict(req, inst)
            ok = inst.role == "prefill" or (tpot <= slo.tpot_s and _kv_room(req, inst))
            scored.append((slo.ttft_s - ttft, ok, ttft, tpot, inst))
        if not scored:
            best = max(instances, key=lambda i: i.kv_free)
            return RouteDecision(best.iid, "no instance has KV room: most free KV")
        ok = [s for s in scored if s[0] >= 0 and s[1]]
        comfy = self.opts.get("comfortable_margin", 0.5) * slo.ttft_s
        tight = self.opts.get("tight_tpot_s", TIGHT_TPOT_S)
        if slo.tpot_s < tight and scored[0][4].role == "collocated":
            return self._pack_tight(req, ok, scored, comfy, tight)
        if ok:
            loose = slo.ttft_s >= self.opts.get("bin_pack_ttft_s", math.inf)
            sign = 1.0 if loose else -1.0
            # among comfortable instances, loose requests keep off tight hosts (their iterations are short)
            margin, _, ttft, tpot, inst = min(ok, key=lambda s: (s[0] < comfy, s[4].min_running_tpot_s < tight,
                                                                 sign * s[0]))
            how = "bin-pack (loose SLO)" if loose else "spread (largest margin)"
            return RouteDecision(inst.iid, f"{how}: predicted TTFT {ttft * 1e3:.0f} ms",
                                 ttft, tpot)
        margin, _, ttft, tpot, inst = max(scored, key=_first)
        return RouteDecision(inst.iid, f"no instance meets the SLO: least predicted TTFT {ttft * 1e3:.0f} ms",
                             ttft, tpot)

    def _pack_tight(self, req, ok, scored, comfy: float, tight: float) -> RouteDecision:
        """First fit of a tight-TPOT request: a tight host, or an instance idle enough to become one."""
        for margin, _, ttft, tpot, inst in ok:
            if inst.min_running_tpot_s < tight:
                return RouteDecision(inst.iid, f"tight host (first fit): predicted TTFT {ttft * 1e3:.0f} ms",
                                     ttft, tpot)
            if margin >= comfy and self._idle_enough(req, inst, comfy):
                return RouteDecision(inst.iid, f"new tight host (nearly idle): predicted TTFT {ttft * 1e3:.0f} ms",
                                     ttft, tpot)
        hosts = [s for s in scored if s[4].min_running_tpot_s < tight] or scored
        margin, _, ttft, tpot, inst = max(hosts, key=_first)
        why = "no tight host or nearly idle instance" if ok else "no instance meets the SLO"
        return RouteDecision(inst.iid, f"{why}: least predicted TTFT {ttft * 1e3:.0f} ms"
                             + (" among tight hosts" if hosts is not scored else ""), ttft, tpot)

    @staticmethod
    def _idle_enough(req: RouteRequest, inst: InstanceView, within_s: float) -> bool:
        """All queued prefill work (every priority), one decode step and the request's prefill fit in ``within_s``."""
        perf = inst.perf
        td = perf.decode_time(inst.num_running, inst.running_kv) if inst.num_running else 0.0
        work = perf.base + perf.per_prefill_token * inst.waiting_tokens + perf.chunk_time(req.input_len, 0)
        return work + td <= within_s

    def pick_decode(self, req, instances, rand):
        require(instances)
        best, best_key, best_t = None, None, math.inf
        limit = req.slo.tpot_s * self.opts.get("tpot_safety", 0.9)
        for inst in instances:
            if inst.kv_free < req.input_len + req.max_new_tokens:
                continue
            t = inst.perf.decode_time(inst.num_running + inst.num_waiting + 1,
                                      inst.running_kv + req.input_len + inst.waiting_tokens)
            key = (t,)  # fastest predicted decode step
            if best_key is None or key < best_key:
                best, best_key, best_t = inst, key, t
        if best is None:
            best = max(instances, key=lambda i: i.kv_free)
            return RouteDecision(best.iid, "no decode instance has KV room: most free KV")
        return RouteDecision(best.iid, f"decode step {best_t * 1e3:.1f} ms with it", predicted_tpot_s=best_t)


def _first(s):
    return s[0]


def _kv_room(req: RouteRequest, inst: InstanceView) -> bool:
    """A collocated instance has KV for the queued prompts plus this request's prompt and generation limit."""
    return inst.role != "collocated" or inst.kv_free - inst.waiting_tokens >= req.input_len + req.max_new_tokens


ROUTERS: dict[str, type[RoutingPolicy]] = {
    "random": RoutingPolicy,
    "round_robin": RoundRobin,
    "power_of_two": PowerOfTwo,
    "cache_aware": CacheAware,
    "hfx": HFXRouting,
}


class UnknownRouter(ValueError):
    pass


def make_router(name: str, **opts) -> RoutingPolicy:
    try:
        return ROUTERS[name](**opts)
    except KeyError:
        raise UnknownRouter(f"unknown routing policy {name!r}; known: {', '.join(ROUTERS)}") from None
