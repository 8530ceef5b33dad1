"""``manual`` routing (sglang-router 0.3.2's manual policy) and the HTTP router's policy registry.

The client steers placement: a request naming a target instance
(sglang-router's ``x-smg-target-worker`` header) goes there when that
instance is a candidate; a request with a routing key (``x-smg-routing-key``)
sticks to the instance its key was first assigned to, and a new key is
assigned by ``assignment_mode``: ``random``, ``min_load`` (fewest queued +
running requests) or ``min_group`` (fewest routing keys). Anything else is
placed at random. The key map is an LRU bounded by ``max_keys`` (sglang-router
evicts by idle time; the core has no clock, so the bound is a count).

``manual`` is not in ``ROUTERS``: it needs client headers, which only the
HTTP router has (the simulator's requests carry none).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Hashable

from .policies import ROUTERS, RoutingPolicy, UnknownRouter, load
from .types import RouteDecision, require

ASSIGNMENT_MODES = ("random", "min_load", "min_group")


class ManualRouting(RoutingPolicy):
    name = "manual"

    def __init__(self, **opts):
        super().__init__(**opts)
        mode = opts.get("assignment_mode", "random")
        if mode not in ASSIGNMENT_MODES:
            raise ValueError(f"assignment_mode must be one of {ASSIGNMENT_MODES}, got {mode!r}")
        self.mode = mode
        self.max_keys = int(opts.get("max_keys", 1_000_000))
        self.keys: OrderedDict[str, Hashable] = OrderedDict()
        self.groups: Counter = Counter()

    def pick(self, req, instances, rand):
        require(instances)
        if req.target is not None:
            for inst in instances:
                if inst.iid == req.target:
                    return RouteDecision(inst.iid, "target worker hit")
        if req.routing_key is None:
            return RouteDecision(instances[int(rand * len(instances)) % len(instances)].iid, "random (no routing key)")
        iid = self.keys.get(req.routing_key)
        for inst in instances:
            if inst.iid == iid:
                return RouteDecision(iid, "routing key hit")
        return RouteDecision(self._assign(instances, rand), f"new routing key ({self.mode})")

    def _assign(self, instances, rand) -> Hashable:
        if self.mode == "min_load":
            return min(instances, key=load).iid
        if self.mode == "min_group":
            return min(instances, key=lambda i: self.groups[i.iid]).iid
        return instances[int(rand * len(instances)) % len(instances)].iid

    def observe(self, req, iid) -> None:
        super().observe(req, iid)
        key = req.routing_key
        if key is None or self.keys.get(key) == iid:
            if key is not None:
                self.keys.move_to_end(key)
            return
        old = self.keys.pop(key, None)
        if old is not None:
            self.groups[old] -= 1
        self.keys[key] = iid
        self.groups[iid] += 1
        while len(self.keys) > self.max_keys:
            _, evicted = self.keys.popitem(last=False)
            self.groups[evicted] -= 1


HTTP_ROUTERS: dict[str, type[RoutingPolicy]] = {**ROUTERS, "manual": ManualRouting}


def make_http_router(name: str, **opts) -> RoutingPolicy:
    """A policy for the HTTP router: every core policy plus ``manual``."""
    try:
        cls = HTTP_ROUTERS[name]
    except KeyError:
        raise UnknownRouter(f"unknown routing policy {name!r}; known: {', '.join(HTTP_ROUTERS)}") from None
    return cls(**opts)
