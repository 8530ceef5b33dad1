"""What the simulated router sees as each replica's tightest TPOT (``ClusterConfig.router_view``)."""

from __future__ import annotations

import math

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig
from hyperflexis_sglang.sim.workload import build, synthetic

PERF = preset("llama-3-8b", "h100", 1)
MIX = "interactive:0.3,standard:0.4,batch:0.3"


def run(view: str, **kw) -> Cluster:
    wl = build(synthetic(200, 30.0, seed=3, input_len=2048, output_len=96), MIX, seed=3)
    cluster = Cluster(ClusterConfig(policy="hfx", router="hfx", router_view=view, **kw), PERF, PERF)
    seen = []
    pick = cluster.router.pick

    def spy(req, instances, rand):  # the view the router had at each arrival
        seen.append([inst.min_running_tpot_s for inst in instances])
        return pick(req, instances, rand)

    cluster.router.pick = spy
    seen_decode = []
    pick_decode = cluster.decode_router.pick_decode

    def spy_decode(req, instances, rand):
        seen_decode.append([inst.min_running_tpot_s for inst in instances])
        return pick_decode(req, instances, rand)

    cluster.decode_router.pick_decode = spy_decode
    cluster.run(wl)
    cluster.seen, cluster.seen_decode = seen, seen_decode
    return cluster


@pytest.mark.parametrize("view", ["inflight", "streamed"])
@pytest.mark.parametrize("kw", [dict(replicas=3), dict(pd=(1, 2))])
def test_router_views_count_routed_requests_until_they_end(view, kw):
    cluster = run(view, **kw)
    assert len(cluster.ended) == 200
    if cluster.decode:  # counted where it decodes: the prefill router sees no TPOT on prefill servers
        assert all(v == [math.inf] for v in cluster.seen)
        assert any(min(v) == 0.04 for v in cluster.seen_decode)
    else:
        assert any(min(v) == 0.04 for v in cluster.seen)  # interactive (40 ms) work was seen in flight
    for rep in cluster.replicas:
        assert rep.routed_tpots == {} and rep.min_running_tpot_s == math.inf  # every count released


def test_none_view_sees_nothing_and_running_view_follows_the_batch():
    assert all(v == math.inf for views in run("none", replicas=3).seen for v in views)
    running = run("running", replicas=3)
    assert any(min(v) == 0.04 for v in running.seen)
    assert all(rep.routed_tpots == {} for rep in running.replicas)  # only the router's views count routing


def test_streamed_view_counts_from_the_first_token_inflight_from_routing():
    # one replica: at each arrival the in-flight view has seen every earlier unfinished request, the
    # streamed view only those past their first token, so it is never tighter
    streamed, inflight = run("streamed", replicas=1).seen, run("inflight", replicas=1).seen
    assert all(s[0] >= i[0] for s, i in zip(streamed, inflight))
    assert sum(s[0] > i[0] for s, i in zip(streamed, inflight)) > 0


def test_unknown_router_view_is_an_error():
    with pytest.raises(ValueError, match="router_view must be one of running, streamed, inflight, none"):
        Cluster(ClusterConfig(router_view="exact"), PERF, PERF)
