"""Scheduling policies by name; the one place that maps a name to a class."""

from __future__ import annotations

import dataclasses

from .base import Scheduler
from .baselines import EDFScheduler, SarathiScheduler, SGLangPriorityScheduler
from .hfx import HFXScheduler
from .types import SchedulerConfig

POLICIES: dict[str, tuple[type[Scheduler], dict]] = {
    "sglang-fcfs": (Scheduler, {}),
    "sglang-priority": (SGLangPriorityScheduler, {}),
    "edf": (EDFScheduler, {}),
    "sarathi": (SarathiScheduler, {"chunk_size": 512, "mixed": True}),
    "hfx": (HFXScheduler, {"mixed": True}),  # the plugin turns on --enable-mixed-chunk
}


class UnknownPolicy(ValueError):
    pass


def make_scheduler(name: str, **overrides) -> Scheduler:
    """A fresh scheduler; ``overrides`` replace :class:`SchedulerConfig` fields."""
    try:
        cls, defaults = POLICIES[name]
    except KeyError:
        raise UnknownPolicy(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
    cfg = dataclasses.replace(SchedulerConfig(), **{**defaults, **overrides})
    return cls(cfg)
