"""Scaling policies (pure): autoscaling, role switches, cold-start model."""

from .capacity import Prediction, achievable, predict_collocated, predict_pd, replica_rate_limit, stage_rate_limits
from .coldstart import ColdStartModel, ScalingConfigError
from .registry import SCALERS, make_scaler, scaler_options
from .types import (ACTIONS, PHASES, ROLES, WEIGHT_SOURCES, ClassLoad, FleetSnapshot, InstanceState, ScaleAction,
                    ScaleDecision, ScalingPolicy)

__all__ = ["ACTIONS", "PHASES", "ROLES", "WEIGHT_SOURCES", "ClassLoad", "FleetSnapshot", "InstanceState",
           "ScaleAction", "ScaleDecision", "ScalingPolicy", "ColdStartModel", "ScalingConfigError", "SCALERS",
           "make_scaler", "scaler_options", "Prediction", "achievable", "predict_collocated", "predict_pd",
           "replica_rate_limit", "stage_rate_limits"]
