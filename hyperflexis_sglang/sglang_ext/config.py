"""Plugin configuration, read from the environment in this one place.

SGLang starts its scheduler, detokenizer and HTTP processes with ``spawn``;
they inherit the environment, so every process sees the same settings.

| variable | default | meaning |
|---|---|---|
| ``HFX_ENABLE`` | ``0`` | ``1`` turns the plugin on; installing the package alone changes nothing |
| ``HFX_POLICY`` | ``hfx`` | scheduling policy (``core/scheduling`` registry name) |
| ``HFX_SLO_CLASSES`` | built-in | JSON/TOML file of SLO classes |
| ``HFX_POLICY_EXTRA`` | ``{}`` | JSON object of policy knobs (``SchedulerConfig.extra``) |
| ``HFX_PERF_MODEL`` | ``fit`` | ``fit``: learn online from this engine; or a preset ``MODEL/GPU/TP`` |
| ``HFX_FIT_EVERY`` | ``64`` | refit the performance model every N iterations |
"""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, Field, field_validator

from ..core.scheduling import POLICIES


class PluginConfigError(ValueError):
    pass


class PluginConfig(BaseModel):
    enable: bool = Field(False, description="HFX_ENABLE: turn the plugin on")
    policy: str = Field("hfx", description="HFX_POLICY: scheduling policy name")
    slo_classes: str | None = Field(None, description="HFX_SLO_CLASSES: SLO class file")
    extra: dict = Field(default_factory=dict, description="HFX_POLICY_EXTRA: policy knobs")
    perf_model: str = Field("fit", description="HFX_PERF_MODEL: 'fit' or MODEL/GPU/TP preset")
    fit_every: int = Field(64, ge=1, description="HFX_FIT_EVERY: iterations between refits")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; known: {', '.join(POLICIES)}")
        return v

    @classmethod
    def from_env(cls, env: dict | None = None) -> "PluginConfig":
        env = os.environ if env is None else env
        try:
            extra = json.loads(env.get("HFX_POLICY_EXTRA", "") or "{}")
        except json.JSONDecodeError as e:
            raise PluginConfigError(f"HFX_POLICY_EXTRA is not valid JSON: {e}") from None
        try:
            return cls(enable=env.get("HFX_ENABLE", "0").strip().lower() in ("1", "true", "yes", "on"),
                       policy=env.get("HFX_POLICY", "hfx"), slo_classes=env.get("HFX_SLO_CLASSES") or None,
                       extra=extra, perf_model=env.get("HFX_PERF_MODEL", "fit"),
                       fit_every=int(env.get("HFX_FIT_EVERY", "64")))
        except (ValueError, TypeError) as e:
            raise PluginConfigError(f"bad HFX_* environment: {e}") from None
