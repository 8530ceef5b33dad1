"""The plugin's prefix-cache fix for SGLang's runtime P/D role switch (sglang_ext/role_switch.py).

The scheduler here is a stand-in holding only what the fix touches (``tree_cache.disable``,
``flush_cache``); the real switch on real SGLang servers is
``tests/integration/test_controller_live.py::test_role_switch_in_place_both_ways``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hyperflexis_sglang.sglang_ext import role_switch
from hyperflexis_sglang.sglang_ext.config import PluginConfig


@pytest.mark.parametrize("env, wanted", [
    ({}, False),
    ({"HFX_ENABLE": "1"}, True),
    ({"HFX_ENABLE": "1", "HFX_ROLE_SWITCH_FIX": "0"}, False),
    ({"HFX_ROLE_SWITCH_FIX": "1"}, True),  # also for a stock-scheduling fleet
    ({"HFX_ROLE_SWITCH_FIX": "no"}, False),
])
def test_fix_asked_for(env, wanted):
    assert role_switch.wanted(PluginConfig.from_env(env)) is wanted


class Scheduler:
    def __init__(self, disabled: bool, idle: bool = True):
        self.tree_cache = SimpleNamespace(disable=disabled, tokens=30)
        self.idle, self.flushes = idle, 0

    def flush_cache(self, empty_cache: bool = True) -> bool:
        self.flushes += 1
        if self.idle:
            self.tree_cache.tokens = 0
        return self.idle


def reply(ok: bool, old: str, new: str) -> SimpleNamespace:
    return SimpleNamespace(success=ok, old_role=old, new_role=new)


def switch(sched: Scheduler, new: str, ok: bool = True, prepare_only: bool = False, old: str | None = None):
    old = old or ("prefill" if new == "decode" else "decode")
    return role_switch.around_switch(lambda self, req: reply(ok, old, new), sched,
                                     SimpleNamespace(new_role=new, prepare_only=prepare_only))


# started as | switches (new role, succeeded, prepare only) | tree disabled after each | flushes
@pytest.mark.parametrize("start_disabled, steps, disabled_after, flushes", [
    (False, [("decode", True, False)], [True], 1),  # prefill launch -> decode: emptied, disabled
    (False, [("decode", True, False), ("prefill", True, False)], [True, False], 1),  # and back: enabled again
    (False, [("decode", True, True)], [False], 0),  # prepare_only: nothing switched yet
    (False, [("decode", False, False)], [False], 0),  # refused (busy, no flag...): untouched
    (True, [("prefill", True, False)], [True], 0),  # decode launch -> prefill: SGLang built no eviction policy
    (True, [("prefill", True, False), ("decode", True, False)], [True, True], 0),
])
def test_prefix_cache_follows_the_role(start_disabled, steps, disabled_after, flushes):
    s = Scheduler(disabled=start_disabled)
    for (new, ok, prep), want in zip(steps, disabled_after):
        out = switch(s, new, ok, prep)
        assert out.success is ok  # SGLang's reply passes through unchanged
        assert s.tree_cache.disable is want
    assert s.flushes == flushes
    if flushes:
        assert s.tree_cache.tokens == 0  # nothing stays behind in a tree that can no longer evict


def test_same_role_is_a_no_op():
    s = Scheduler(disabled=False)
    switch(s, "prefill", old="prefill")
    assert s.tree_cache.disable is False and s.flushes == 0


def test_the_hooked_method_exists_in_the_pinned_sglang():
    import importlib
    module, cls, meth = role_switch.TARGET.rsplit(".", 2)
    assert callable(getattr(getattr(importlib.import_module(module), cls), meth))
