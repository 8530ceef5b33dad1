"""Helpers every scaling policy shares: counting the fleet, picking instances, building actions."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from .types import ClassLoad, FleetSnapshot, InstanceState, ScaleAction

SERVING = ("starting", "ready")  # phases that count as capacity (now or after the cold start)


def serving(snapshot: FleetSnapshot, role: str) -> list[InstanceState]:
    """Instances of ``role`` that are or will be serving (not draining or switching away)."""
    return [i for i in snapshot.instances if i.role == role and i.phase in SERVING]


def roles(snapshot: FleetSnapshot) -> tuple[str, ...]:
    return ("prefill", "decode") if snapshot.disaggregated else ("collocated",)


def drain_cost(inst: InstanceState) -> tuple:
    """Cheapest to drain first: a starting instance (nothing to drain, its cold start is saved),
    then the least work in flight (KV of running requests + queued prefill), then the newest."""
    return (inst.phase != "starting", inst.running_kv + inst.waiting_tokens, inst.num_running + inst.num_waiting,
            -inst.since)


def pick_victims(candidates: Sequence[InstanceState], k: int, keep_ready: int = 1) -> list[InstanceState]:
    """Up to ``k`` instances to drain, cheapest first, keeping at least ``keep_ready`` ready ones."""
    out: list[InstanceState] = []
    ready_left = sum(1 for i in candidates if i.phase == "ready")
    for inst in sorted(candidates, key=drain_cost):
        if len(out) >= k:
            break
        if inst.phase == "ready":
            if ready_left <= keep_ready:
                continue
            ready_left -= 1
        out.append(inst)
    return out


def add_actions(role: str, k: int, snapshot: FleetSnapshot, prefer: str, reason: str) -> list[ScaleAction]:
    """``k`` add actions; weights from a peer when one is ready and ``prefer`` is "peer", else disk."""
    has_peer = any(i.phase == "ready" for i in snapshot.instances)
    source = "peer" if prefer == "peer" and has_peer else "disk"
    return [ScaleAction("add", role, None, source, reason) for _ in range(max(k, 0))]


def remove_actions(victims: Sequence[InstanceState], reason: str) -> list[ScaleAction]:
    return [ScaleAction("remove", v.role, v.iid, reason=reason) for v in victims]


def total_rate(classes: Sequence[ClassLoad]) -> float:
    return sum(c.arrival_rate for c in classes)


def with_rates(classes: Sequence[ClassLoad], rates: dict) -> tuple[ClassLoad, ...]:
    """The classes with their arrival rates replaced (forecast or peak-hold)."""
    return tuple(replace(c, arrival_rate=rates.get(c.name, c.arrival_rate)) for c in classes)


def backlog_tokens(snapshot: FleetSnapshot, role: str) -> int:
    return sum(i.waiting_tokens for i in snapshot.instances if i.role == role and i.phase != "starting")
