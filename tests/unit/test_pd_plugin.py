"""P/D pieces of the plugin without a server: the CPU P/D fix gate, engine mode, decode admission order."""

import contextlib
from types import SimpleNamespace

import pytest

from hyperflexis_sglang.core.slo import SLOCatalog
from hyperflexis_sglang.sglang_ext import cpu_pd, hooks
from hyperflexis_sglang.sglang_ext.config import PluginConfig
from hyperflexis_sglang.sglang_ext.state import PluginState, engine_mode
from hyperflexis_sglang.sglang_ext.views import ReqView


@pytest.mark.parametrize("env, wanted", [
    ({}, False),  # a stock server: nothing changes
    ({"HFX_ENABLE": "1"}, True),
    ({"HFX_ENABLE": "1", "HFX_CPU_PD": "0"}, False),
    ({"HFX_CPU_PD": "1"}, True),  # stock-scheduling baseline pair on a CPU
    ({"HFX_CPU_PD": "0"}, False),
])
def test_cpu_pd_asked_for(env, wanted):
    assert PluginConfig.from_env(env).cpu_pd_wanted is wanted


def test_cpu_pd_never_with_cuda(monkeypatch):
    cfg = PluginConfig.from_env({"HFX_CPU_PD": "1"})
    monkeypatch.setattr(cpu_pd, "_has_cuda", lambda: True)
    assert not cpu_pd.wanted(cfg)
    monkeypatch.setattr(cpu_pd, "_has_cuda", lambda: False)
    assert cpu_pd.wanted(cfg)


@pytest.mark.parametrize("raw, mode", [("null", "collocated"), (None, "collocated"), ("prefill", "prefill"),
                                       ("decode", "decode"), (SimpleNamespace(value="decode"), "decode"),
                                       ("DisaggregationMode.PREFILL", "prefill")])
def test_engine_mode(raw, mode):
    assert engine_mode(raw) == mode


def _req(rid, recv):
    return SimpleNamespace(rid=rid, origin_input_ids=[1] * 10, output_ids=[], prefix_len=0,
                           sampling_params=SimpleNamespace(max_new_tokens=8, custom_params=None), priority=None,
                           time_stats=SimpleNamespace(scheduler_recv_time=recv, wait_queue_entry_time=None))


def test_decode_prealloc_queue_sorted_by_decode_key(monkeypatch):
    catalog = SLOCatalog()  # built-in: interactive 450 ms, standard 2 s, batch 15 s TTFT
    cfg = PluginConfig(enable=True)
    st = PluginState(cfg, SimpleNamespace(disaggregation_mode="decode"), 4096, 8)
    st.catalog = catalog
    monkeypatch.setattr(hooks, "STATE", st)
    monkeypatch.setattr(hooks, "CFG", cfg)
    reqs = []
    for i, cls in enumerate(["batch", "batch", "standard", "interactive"]):
        r = _req(f"r{i}", recv=float(i))
        r._hfx = ReqView(r, catalog.resolve({"class": cls}), float(i))
        reqs.append(SimpleNamespace(req=r))
    queue = SimpleNamespace(queue=list(reqs), scheduler=SimpleNamespace())
    assert hooks.decode_prealloc_order(queue) is None  # BEFORE hook: arguments unchanged
    assert [d.req.rid for d in queue.queue] == ["r3", "r2", "r0", "r1"]
    assert st.fired["decode_order"] == 1
    empty = SimpleNamespace(queue=[], scheduler=SimpleNamespace())
    hooks.decode_prealloc_order(empty)
    assert st.fired["decode_order"] == 1  # an empty queue is not counted


def test_plans_are_counted_and_the_recent_ones_reported_as_json():
    import json

    from hyperflexis_sglang.core.scheduling.types import IterationPlan, PrefillItem
    from hyperflexis_sglang.sglang_ext.state import RECENT_PLANS
    st = PluginState(PluginConfig(enable=True), SimpleNamespace(disaggregation_mode="null"), 4096, 8)
    st.planned(1.0, IterationPlan(prefill=(PrefillItem("a", 100, True), PrefillItem("b", 28, False)),
                                  reason="chunked"), waiting=5, running=2)
    for i in range(RECENT_PLANS + 3):
        st.planned(2.0 + i, IterationPlan(decode=True, reason="decode (KV cache full)", budget_s=0.05), 4, 3)
    rep = json.loads(json.dumps(st.report(), allow_nan=False))  # no Infinity: strict JSON
    assert rep["plan_reasons"] == {"chunked": 1, "decode (KV cache full)": RECENT_PLANS + 3}
    assert len(rep["recent_plans"]) == RECENT_PLANS and rep["last_plan_reason"] == "decode (KV cache full)"
    assert rep["recent_plans"][-1]["budget_s"] == 0.05 and rep["recent_plans"][-1]["running"] == 3
    st.planned(99.0, IterationPlan(prefill=(PrefillItem("c", 7, True),), reason="queue empty"), 0, 0)
    last = st.report()["recent_plans"][-1]
    assert (last["prefill_reqs"], last["prefill_tokens"], last["budget_s"]) == (1, 7, None)


@pytest.mark.parametrize("mode, enabled, expected", [
    ("null", True, True),  # collocated: the adder evicts the planned victims
    ("null", False, False),  # HFX_PREEMPTION=0
    ("prefill", True, False),  # a P/D prefill server has no decode batch to evict from
    ("decode", True, False),  # a P/D decode server admits transferred requests; SGLang retracts on its own
])
def test_plugin_plans_preemption_only_where_the_adder_applies_it(mode, enabled, expected):
    st = PluginState(PluginConfig(enable=True, policy="sglang-priority", preemption=enabled),
                     SimpleNamespace(disaggregation_mode=mode), 4096, 8)
    assert st.sched_cfg.preemption is expected and st.policy.cfg.preemption is expected
    assert st.report()["preemption"] is expected and st.report()["preempted"] == 0


def test_waiting_queue_sort_caches_keys_and_rekeys_on_change(monkeypatch):
    from dataclasses import replace
    catalog = SLOCatalog()
    st = PluginState(PluginConfig(enable=True), SimpleNamespace(disaggregation_mode="null"), 4096, 8)
    st.catalog = catalog
    reqs = []
    for i, cls in enumerate(["batch", "standard", "interactive"]):
        r = _req(f"r{i}", recv=float(i))
        r._hfx = ReqView(r, catalog.resolve({"class": cls}), float(i))
        reqs.append(r)
    queue = list(reqs)
    hooks.sort_waiting(queue, st)
    assert [r.rid for r in queue] == ["r2", "r1", "r0"]
    calls = []
    real_key = st.policy.key
    monkeypatch.setattr(st.policy, "key", lambda v, perf: calls.append(v.rid) or real_key(v, perf))
    hooks.sort_waiting(queue, st)
    assert calls == [] and [r.rid for r in queue] == ["r2", "r1", "r0"]  # nothing changed: cached keys
    reqs[2]._hfx.best_effort = True  # demoted: re-keyed, goes last
    hooks.sort_waiting(queue, st)
    assert calls == ["r2"] and [r.rid for r in queue] == ["r1", "r0", "r2"]
    st.perf = replace(st.perf, base=st.perf.base * 2)  # a refit: every key is recomputed
    hooks.sort_waiting(queue, st)
    assert sorted(calls[1:]) == ["r0", "r1", "r2"]


def test_calibration_fits_the_most_recent_iterations_only():
    """The ring buffer keeps the last MAX_SAMPLES iterations: once an engine changes speed, the old
    samples are overwritten and the fit follows the new speed."""
    from hyperflexis_sglang.sglang_ext.state import MAX_SAMPLES
    st = PluginState(PluginConfig(enable=True), SimpleNamespace(disaggregation_mode="null"), 4096, 8)
    now = 0.0

    def run(n: int, per_req: float) -> None:
        nonlocal now
        for i in range(n):
            dec, ctx = 1 + i % 32, 50 + (i * 7) % 200  # KV varies apart from the request count
            st.iteration_started(now, (0, 0.0, 0, dec, dec * ctx))
            now += 2e-3 + per_req * dec + 1e-7 * dec * ctx
    run(MAX_SAMPLES + 1, 1e-3)  # a call closes the iteration the previous one started
    assert st.sample_count == MAX_SAMPLES and st.perf.per_decode_req == pytest.approx(1e-3, rel=1e-3)
    run(MAX_SAMPLES + 1, 4e-4)  # the first of these still closes an iteration of the old speed
    assert st.iterations == 2 * MAX_SAMPLES + 1 and st.sample_count == MAX_SAMPLES
    st._refit()
    assert st.perf.per_decode_req == pytest.approx(4e-4, rel=1e-3) and st.fit_error < 1e-6
    assert st.report()["samples"] == MAX_SAMPLES


def test_prefill_server_times_kv_transfers_into_the_handoff(monkeypatch):
    # the AROUND hook stamps requests in the inflight queue and times the ones SGLang's poll returns as done;
    # an aborted transfer is not a sample. Collocated and decode servers have no handoff.
    cfg = PluginConfig(enable=True, pd_handoff_ms=30)
    st = PluginState(cfg, SimpleNamespace(disaggregation_mode="prefill"), 4096, 8)
    monkeypatch.setattr(hooks, "STATE", st)
    assert st.handoff_s == pytest.approx(0.030) and st.transfers == 0

    class FINISH_ABORT:  # noqa: N801 - the name SGLang's abort reason has
        pass
    ok, aborted, pending = (SimpleNamespace(rid=r, finished_reason=None) for r in ("ok", "ab", "pend"))
    aborted.finished_reason = FINISH_ABORT()
    server = SimpleNamespace(disagg_prefill_inflight_queue=[ok, aborted, pending])
    clock = iter([100.0, 100.2])  # stamp, then the poll returns
    monkeypatch.setattr(hooks, "timed", lambda st, name: contextlib.nullcontext())  # its own clock reads aside
    monkeypatch.setattr(hooks.time, "perf_counter", lambda: next(clock))
    done = hooks.prefill_inflight(lambda self: [ok, aborted], server)
    assert done == [ok, aborted]
    assert st.transfers == 1 and st.transfer_s == pytest.approx(0.2)
    assert st.handoff_s == pytest.approx(0.2 + 0.030) and st.report()["handoff_s"] == pytest.approx(0.23)
    assert pending._hfx_sent == 100.0  # stamped once, kept for its own poll
    st.transfer_done(0.4)
    assert st.transfer_s == pytest.approx(0.2 + 0.1 * 0.2)  # moving average
    for mode in ("null", "decode"):
        assert PluginState(cfg, SimpleNamespace(disaggregation_mode=mode), 4096, 8).handoff_s == 0.0


def test_pd_handoff_ms_from_the_environment():
    assert PluginConfig.from_env({}).pd_handoff_ms == 25.0
    assert PluginConfig.from_env({"HFX_PD_HANDOFF_MS": "40"}).pd_handoff_ms == 40.0
    from hyperflexis_sglang.sglang_ext.config import PluginConfigError
    with pytest.raises(PluginConfigError, match="pd_handoff_ms"):
        PluginConfig.from_env({"HFX_PD_HANDOFF_MS": "-1"})
