"""Per-iteration scheduling policies (pure; shared by the SGLang plugin and the simulator)."""

from .base import Scheduler
from .registry import POLICIES, UnknownPolicy, make_scheduler
from .types import EngineSnapshot, IterationPlan, PrefillItem, SchedulerConfig, Verdict

__all__ = ["Scheduler", "POLICIES", "UnknownPolicy", "make_scheduler", "EngineSnapshot", "IterationPlan",
           "PrefillItem", "SchedulerConfig", "Verdict"]
