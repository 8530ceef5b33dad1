"""Keep a P/D instance's prefix cache consistent across SGLang's runtime role switch (``/pd_role_switch``).

Why: SGLang 0.5.23 builds the prefix cache (``scheduler.tree_cache``) once,
for the role an instance starts in: enabled on a prefill server, disabled on
a decode server (``disaggregation_decode_enable_radix_cache`` off, the
default). ``handle_pd_role_switch`` rebuilds only the disaggregation
queues, so an instance started as prefill and switched to decode keeps an
enabled tree: its finished decode requests go into it as if it were a
prefill server, and at the next idle poll the pool check (strict by default,
``SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE``) finds a KV token unaccounted
and kills the scheduler ("pool memory leak detected! ... evictable=30").
Found on CPU with Mooncake TCP; nothing in it is CPU-specific.

Fix (AROUND ``Scheduler.handle_pd_role_switch``): after a successful switch
to decode, empty the cache (the instance is idle: SGLang refuses the switch
otherwise) and disable the tree, as a decode launch has it; after a switch
back to prefill, enable it again if the instance started with it enabled.
An instance started as decode keeps its tree disabled when it becomes a
prefill server (no prefix reuse there; SGLang built that tree without an
eviction policy).

Gate: :func:`wanted`: ``HFX_ROLE_SWITCH_FIX=1``, or ``HFX_ENABLE=1`` without
``HFX_ROLE_SWITCH_FIX=0``. The hook runs only when ``/pd_role_switch`` is
called, which SGLang accepts only with ``--enable-pd-role-switch``.
"""

from __future__ import annotations

import logging

from .config import PluginConfig

log = logging.getLogger("hyperflexis_sglang")

TARGET = "sglang.srt.managers.scheduler.Scheduler.handle_pd_role_switch"
REGISTERED: list[str] = []


def wanted(cfg: PluginConfig) -> bool:
    return cfg.role_switch_fix_wanted


def register() -> None:
    if REGISTERED:
        return
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType
    HookRegistry.register(TARGET, around_switch, HookType.AROUND)
    REGISTERED.append(TARGET)


def around_switch(original, self, recv_req, *args, **kwargs):
    cache = getattr(self, "tree_cache", None)
    if cache is not None and not hasattr(self, "_hfx_tree_enabled_at_start"):
        self._hfx_tree_enabled_at_start = not getattr(cache, "disable", True)
    out = original(self, recv_req, *args, **kwargs)
    if cache is None or getattr(recv_req, "prepare_only", False) or not getattr(out, "success", False) \
            or getattr(out, "old_role", None) == getattr(out, "new_role", None):
        return out
    after_switch(self, out.new_role)
    return out


def after_switch(scheduler, new_role: str) -> None:
    """Give ``scheduler``'s prefix cache the state a fresh launch in ``new_role`` would have (see module doc)."""
    cache = scheduler.tree_cache
    if new_role == "decode" and not cache.disable:
        flushed = scheduler.flush_cache(empty_cache=False)
        cache.disable = True
        log.info("hyperflexis: role switch to decode: prefix cache %s and disabled, as on a decode launch",
                 "emptied" if flushed else "NOT emptied (instance busy)")
    elif new_role == "prefill" and getattr(scheduler, "_hfx_tree_enabled_at_start", False) and cache.disable:
        cache.disable = False
        log.info("hyperflexis: role switch to prefill: prefix cache enabled again")
