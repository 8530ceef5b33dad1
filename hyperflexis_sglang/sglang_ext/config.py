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
| ``HFX_PREEMPTION`` | ``1`` | ``0``: never evict a running request for a waiting one (the policy's ``preempt``; retraction when KV runs out during decode is SGLang's and stays on) |
| ``HFX_PD_HANDOFF_MS`` | ``25`` | P/D prefill server: ms a request needs after its KV transfer to get its first token out of the decode server (about one decode iteration there); the prefill finishes this much plus the measured transfer time before the TTFT deadline |
| ``HFX_CPU_PD`` | unset | P/D on a CPU (see ``cpu_pd``): ``1`` applies the fix even with ``HFX_ENABLE=0`` (a stock-scheduling baseline pair), ``0`` never; unset: with ``HFX_ENABLE=1``. Never on a machine with a CUDA device |
| ``HFX_ROLE_SWITCH_FIX`` | unset | ``/pd_role_switch`` (see ``role_switch``): a switch to decode empties and disables the prefix cache, as a decode launch has it, and a prefill server switched back keeps its KV endpoint and registered decode peers; ``1`` also with ``HFX_ENABLE=0``, ``0`` never; unset: with ``HFX_ENABLE=1`` |
"""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, Field, field_validator

from ..core.scheduling import POLICIES


class PluginConfigError(ValueError):
    pass


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class PluginConfig(BaseModel):
    enable: bool = Field(False, description="HFX_ENABLE: turn the plugin on")
    policy: str = Field("hfx", description="HFX_POLICY: scheduling policy name")
    slo_classes: str | None = Field(None, description="HFX_SLO_CLASSES: SLO class file")
    extra: dict = Field(default_factory=dict, description="HFX_POLICY_EXTRA: policy knobs")
    perf_model: str = Field("fit", description="HFX_PERF_MODEL: 'fit' or MODEL/GPU/TP preset")
    fit_every: int = Field(64, ge=1, description="HFX_FIT_EVERY: iterations between refits")
    preemption: bool = Field(True, description="HFX_PREEMPTION: evict running requests the policy picks for a "
                                               "waiting one")
    pd_handoff_ms: float = Field(25.0, ge=0, le=60_000, description="HFX_PD_HANDOFF_MS: decode-side share of a P/D "
                                                                     "handoff (ms)")
    cpu_pd: bool | None = Field(None, description="HFX_CPU_PD: CPU P/D fix (None: follow HFX_ENABLE)")
    role_switch_fix: bool | None = Field(None, description="HFX_ROLE_SWITCH_FIX: prefix cache and KV endpoint "
                                                           "survive a runtime P/D role switch (None: follow "
                                                           "HFX_ENABLE)")

    @property
    def cpu_pd_wanted(self) -> bool:
        """Whether the CPU P/D fix is asked for (it still needs a machine without CUDA)."""
        return self.enable if self.cpu_pd is None else self.cpu_pd

    @property
    def role_switch_fix_wanted(self) -> bool:
        return self.enable if self.role_switch_fix is None else self.role_switch_fix

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
        cpu_pd = env.get("HFX_CPU_PD", "").strip().lower()
        switch_fix = env.get("HFX_ROLE_SWITCH_FIX", "").strip().lower()
        try:
            return cls(enable=_truthy(env.get("HFX_ENABLE", "0")),
                       cpu_pd=None if cpu_pd == "" else _truthy(cpu_pd),
                       role_switch_fix=None if switch_fix == "" else _truthy(switch_fix),
                       policy=env.get("HFX_POLICY", "hfx"), slo_classes=env.get("HFX_SLO_CLASSES") or None,
                       extra=extra, perf_model=env.get("HFX_PERF_MODEL", "fit"),
                       fit_every=int(env.get("HFX_FIT_EVERY", "64")),
                       preemption=_truthy(env.get("HFX_PREEMPTION", "1")),
                       pd_handoff_ms=float(env.get("HFX_PD_HANDOFF_MS", "25")))
        except (ValueError, TypeError) as e:
            raise PluginConfigError(f"bad HFX_* environment: {e}") from None
