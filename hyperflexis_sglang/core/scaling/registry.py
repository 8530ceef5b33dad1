"""Scaling policies by name; the one place that maps a name to a class and its config."""

from __future__ import annotations

import dataclasses

from .baselines import PlannerConfig, PlannerScaler, QueueConfig, QueueScaler, StaticConfig, StaticScaler
from .coldstart import ScalingConfigError
from .hfx import HFXScaler, HFXScalerConfig
from .types import ScalingPolicy

SCALERS: dict[str, tuple[type, type]] = {
    "static": (StaticScaler, StaticConfig),
    "queue": (QueueScaler, QueueConfig),
    "planner": (PlannerScaler, PlannerConfig),
    "hfx": (HFXScaler, HFXScalerConfig),
}


def scaler_options(name: str) -> tuple[str, ...]:
    """Option names ``make_scaler(name, ...)`` accepts."""
    return tuple(f.name for f in dataclasses.fields(_lookup(name)[1]))


def make_scaler(name: str, **opts) -> ScalingPolicy:
    """A fresh scaling policy; ``opts`` are its config fields (``perf`` for planner and hfx).

    Unknown names or options and bad values raise :class:`ScalingConfigError` naming them.
    Options a policy does not take are an error too, except ``perf``, ``min_replicas``,
    ``max_replicas`` and ``weight_source``, which callers pass to every policy alike.
    """
    cls, cfg_cls = _lookup(name)
    known = set(scaler_options(name))
    shared = {"perf", "min_replicas", "max_replicas", "weight_source"}
    unknown = sorted(set(opts) - known - shared)
    if unknown:
        raise ScalingConfigError(f"scaler {name!r}: unknown option(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
    try:
        cfg = cfg_cls(**{k: v for k, v in opts.items() if k in known})
    except TypeError as e:
        raise ScalingConfigError(f"scaler {name!r}: {e}") from None
    return cls(cfg)


def _lookup(name: str) -> tuple[type, type]:
    try:
        return SCALERS[name]
    except KeyError:
        raise ScalingConfigError(f"unknown scaler {name!r}; known: {', '.join(SCALERS)}") from None
