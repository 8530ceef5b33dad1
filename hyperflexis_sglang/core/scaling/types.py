"""Boundary types of the scaling policy: what the controller (or the simulator) observes, what it is told to do.

The policy is pure: ``tick(snapshot, now) -> ScaleDecision``. The controller
executes the actions through a provisioner and reports the fleet back in the
next snapshot (an added instance appears with phase ``starting`` until it is
healthy and linked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Protocol

ROLES = ("collocated", "prefill", "decode")
PHASES = ("starting", "ready", "draining", "switching")
ACTIONS = ("add", "remove", "switch_role")
WEIGHT_SOURCES = ("peer", "disk")


@dataclass(frozen=True)
class InstanceState:
    iid: Hashable  # instance id (worker URL live, index in the simulator)
    role: str  # one of ROLES
    phase: str  # one of PHASES
    since: float  # time (s) it entered this phase
    num_gpus: int = 1  # GPUs it holds (cost = num_gpus x seconds alive)
    num_waiting: int = 0  # queued requests
    num_running: int = 0  # requests in its decode batch
    waiting_tokens: int = 0  # prefill tokens still to compute
    running_kv: int = 0  # context tokens of its running batch
    kv_capacity: int = 0  # KV pool size in tokens


@dataclass(frozen=True)
class ClassLoad:
    name: str  # SLO class
    arrival_rate: float  # requests/s over the recent window
    mean_input: float  # mean prompt tokens of recent requests
    mean_output: float  # mean output tokens of recent requests
    ttft_s: float  # the class's TTFT target
    tpot_s: float  # the class's TPOT target
    attainment: float = float("nan")  # measured attainment over the recent window (nan: unknown)
    target: float = 0.9  # attainment the class must keep
    p90_input: float = float("nan")  # 90th percentile of recent prompt tokens (nan: unknown -> no spread)
    attainment_n: int = 0  # requests the measured attainment is taken over (0: unknown)


@dataclass(frozen=True)
class FleetSnapshot:
    instances: tuple[InstanceState, ...]  # every instance the controller manages
    classes: tuple[ClassLoad, ...]  # per-class recent load
    disaggregated: bool = False  # P/D fleet (roles prefill/decode) vs collocated


@dataclass(frozen=True)
class ScaleAction:
    kind: str  # one of ACTIONS
    role: str  # role to add or remove, or the role to switch *to*
    iid: Hashable | None = None  # instance to remove or switch (None for add)
    weight_source: str = "peer"  # add: where the new instance gets its weights (one of WEIGHT_SOURCES)
    reason: str = ""  # why


@dataclass(frozen=True)
class ScaleDecision:
    actions: tuple[ScaleAction, ...]  # empty: do nothing
    reason: str  # why (also when doing nothing: cool-down, within target, ...)
    predicted: dict = field(default_factory=dict)  # class -> predicted attainment after the actions


class ScalingPolicy(Protocol):
    name: str

    def tick(self, snapshot: FleetSnapshot, now: float) -> ScaleDecision: ...
