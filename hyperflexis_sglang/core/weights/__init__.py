"""Pure planning of device-to-device weight loading: buckets, who sends what to whom and when, and how long it takes."""

from .plan import (Bucket, LinkModel, ParamSpec, Piece, PlanConfig, PlanEstimate, Transfer, TransferPlan,
                   WeightPlanError, estimate, estimate_load_seconds, make_buckets, per_param_seconds,
                   plan_transfers)

__all__ = ["Bucket", "LinkModel", "ParamSpec", "Piece", "PlanConfig", "PlanEstimate", "Transfer", "TransferPlan",
           "WeightPlanError", "estimate", "estimate_load_seconds", "make_buckets", "per_param_seconds",
           "plan_transfers"]
