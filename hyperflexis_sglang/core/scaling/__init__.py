"""Scaling policies (pure): autoscaling, role switches, cold-start model."""

from .types import (ACTIONS, PHASES, ROLES, WEIGHT_SOURCES, ClassLoad, FleetSnapshot, InstanceState, ScaleAction,
                    ScaleDecision, ScalingPolicy)

__all__ = ["ACTIONS", "PHASES", "ROLES", "WEIGHT_SOURCES", "ClassLoad", "FleetSnapshot", "InstanceState",
           "ScaleAction", "ScaleDecision", "ScalingPolicy"]
