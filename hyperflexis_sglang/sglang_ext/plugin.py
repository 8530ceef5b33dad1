"""Entry point of group ``sglang.srt.plugins`` (registered in pyproject.toml as ``hyperflexis``).

SGLang calls :func:`register` in every process it starts. Nothing happens
unless ``HFX_ENABLE=1``: installing the package never changes a stock server.
When enabled, it registers the hooks of :mod:`hooks` and logs once per
process what it hooked; the scheduler process reports the hooks that really
fired under ``internal_states[i]["hfx"]`` of ``/server_info``.

Separately, on a machine without a CUDA device the CPU P/D fix of
:mod:`cpu_pd` is applied when ``HFX_ENABLE=1`` or ``HFX_CPU_PD=1`` (the
latter lets a stock-scheduling P/D pair run on a CPU too). With
``HFX_WEIGHTS_AGENT=1`` the weight agent of :mod:`weights` (D2D weight
loading) starts in the scheduler process, with or without ``HFX_ENABLE``.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("hyperflexis_sglang")
REGISTERED: list[str] = []


def register() -> None:
    from .config import PluginConfig, PluginConfigError
    try:
        cfg = PluginConfig.from_env()
    except PluginConfigError as e:
        # A plugin failure is only logged by SGLang; fail loudly instead of serving without HFX.
        raise SystemExit(f"hyperflexis: {e}") from None
    from . import cpu_pd
    if cpu_pd.wanted(cfg):
        cpu_pd.apply()
    from . import role_switch
    if role_switch.wanted(cfg):
        role_switch.register()
    from . import weights  # D2D weight loading agent (HFX_WEIGHTS_AGENT=1), independent of HFX_ENABLE
    if weights.wanted():
        weights.register()
    if not cfg.enable:
        return
    if REGISTERED:
        return
    from sglang.srt.managers.schedule_policy import AddReqResult, PrefillAdder
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from . import hooks
    hooks.CFG = cfg
    adder = hooks.make_adder_class(PrefillAdder, AddReqResult)
    table = [
        ("enqueue", hooks.add_request_to_queue, HookType.AROUND),
        ("order", hooks.calc_priority, HookType.AROUND),
        ("prefill_batch", hooks.get_new_batch_prefill_raw, HookType.AROUND),
        ("adder", lambda self: adder, HookType.REPLACE),
        ("retraction", hooks.retraction_order, HookType.REPLACE),
        ("run_batch", hooks.run_batch, HookType.AROUND),
        ("idle", hooks.on_idle, HookType.BEFORE),
        ("decode_order", hooks.decode_prealloc_order, HookType.BEFORE),
        ("transfer", hooks.prefill_inflight, HookType.AROUND),
        ("server_info", hooks.get_internal_state, HookType.AFTER),
    ]
    for name, fn, kind in table:
        HookRegistry.register(hooks.TARGETS[name], fn, kind)
        REGISTERED.append(hooks.TARGETS[name])
    log.info("hyperflexis: HFX plugin enabled in pid %d (policy %s); hooked %s",
             os.getpid(), cfg.policy, ", ".join(REGISTERED))
