"""The plugin's guard behind a chunk that yielded room (sglang_ext/hooks.py: ``one_chunked_at_a_time``).

When HFX shrinks the chunk of a long prompt mid chunked prefill, the requests admitted beside it must
prefill whole: SGLang's scheduler tracks one chunked request and asserts it never gets a second. The
guard makes SGLang's own admission refuse a truncation there (the refusal it applies under its
``shortest-prefill-first`` policy). These tests use SGLang's real ``schedule_policy`` module; the
admission itself on a real server is ``tests/integration/test_plugin_live.py::
test_long_prompt_yields_to_tight_requests_without_breaking_sglang``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

sp = pytest.importorskip("sglang.srt.managers.schedule_policy", reason="SGLang is not installed")

from hyperflexis_sglang.sglang_ext.hooks import one_chunked_at_a_time  # noqa: E402


def test_admission_sees_the_single_chunk_policy_and_everything_else_unchanged(monkeypatch):
    # outside a server SGLang publishes no settings: the server's are stood in by a namespace
    real = SimpleNamespace(schedule_policy="fcfs", schedule_low_priority_values_first=True)
    monkeypatch.setattr(sp, "get_schedule", lambda: real)
    seen = one_chunked_at_a_time(lambda: (sp.get_schedule().schedule_policy,
                                          sp.get_schedule().schedule_low_priority_values_first))
    assert seen == ("shortest-prefill-first", True)
    assert sp.get_schedule() is real and real.schedule_policy == "fcfs"


def test_the_real_settings_come_back_when_admission_raises():
    before = sp.get_schedule

    def boom():
        raise RuntimeError("admission failed")

    with pytest.raises(RuntimeError, match="admission failed"):
        one_chunked_at_a_time(boom)
    assert sp.get_schedule is before


def test_the_guarded_check_is_in_the_pinned_sglang():
    """The refusal the guard relies on: SGLang 0.5.23 reads the policy from ``get_schedule()`` inside
    ``PrefillAdder._select_prefill_admission`` and returns ``AddReqResult.OTHER`` for a request it would
    truncate while a chunked request is open."""
    import inspect
    src = inspect.getsource(sp.PrefillAdder._select_prefill_admission)
    assert "has_chunked_req" in src and 'get_schedule().schedule_policy == "shortest-prefill-first"' in src
    assert "return AddReqResult.OTHER" in src
