"""The simulated engine mirrors SGLang 0.5.23's KV reservation details that the live fidelity run exposed."""

from __future__ import annotations

from hyperflexis_sglang.core.perf_model import PerfModel
from hyperflexis_sglang.core.slo import SLO
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig
from hyperflexis_sglang.sim.engine import INIT_NEW_TOKEN_RATIO
from hyperflexis_sglang.sim.workload import Workload

PERF = PerfModel(base=0.01, per_prefill_token=1e-5, per_attn_pair=0.0, per_prefill_seq=0.0, per_decode_req=1e-3,
                 per_kv_token=0.0, kv_capacity_tokens=1000)


def _run(n, inp, out, gap, policy="sglang-fcfs", priorities=None, **cfg):
    slos = tuple(SLO(1e6, 1e6, priorities[i] if priorities else 1, "c") for i in range(n))
    wl = Workload(tuple(i * gap for i in range(n)), (inp,) * n, (out,) * n, ((),) * n, slos)
    cluster = Cluster(ClusterConfig(policy=policy, replicas=1, **cfg), PERF)
    cluster.run(wl)
    assert len(cluster.ended) == n
    return cluster.replicas[0]


def test_ignore_eos_reserves_every_remaining_token_so_nothing_is_retracted():
    assert _run(12, 100, 300, 0.05).retractions > 0  # new_token_ratio under-reserves long outputs
    assert _run(12, 100, 300, 0.05, ignore_eos=True).retractions == 0


def test_no_preemption_when_the_engine_cannot_preempt():
    prios = [0, 0, 0, 2, 2, 2]
    assert _run(6, 300, 200, 0.3, "hfx", prios).retractions > 0
    assert _run(6, 300, 200, 0.3, "hfx", prios, scheduler_overrides=(("preemption", False),)).retractions == 0


def test_new_token_ratio_is_back_to_its_initial_value_once_idle():
    assert _run(12, 100, 300, 0.05).ratio == INIT_NEW_TOKEN_RATIO
