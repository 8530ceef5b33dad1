"""One simulation run: workload + cluster config + performance model -> summary dict."""

from __future__ import annotations

from ..core.perf_model import PerfModel
from .cluster import Cluster, ClusterConfig
from .metrics import summarize
from .workload import Workload


def simulate(workload: Workload, cfg: ClusterConfig, perf: PerfModel, true_perf: PerfModel | None = None,
             window: tuple[float, float] | None = None) -> dict:
    """``window`` = (start, end) in trace seconds: the result also carries ``by_window``, the attainment of
    the requests that arrived inside [start, end) and of the rest (e.g. a burst and the base load)."""
    if window is not None and not window[0] < window[1]:
        raise ValueError(f"window: need start < end, got {window!r}")
    cluster = Cluster(cfg, perf, true_perf)
    cluster.run(workload)
    ended = {r.rid for r in cluster.ended}
    if len(ended) != len(cluster.ended):
        raise AssertionError("a request ended twice")
    span = cluster.now - (workload.arrivals[0] if len(workload) else 0.0)
    gpus = len(cluster.replicas) * perf.num_gpus
    scaled = cluster.autoscale.summary() if cluster.autoscale else {}
    if window is not None:
        scaled["by_window"] = _by_window(cluster.requests.values(), window)
    return summarize(cluster.requests.values(), gpu_seconds=scaled.pop("gpu_seconds", gpus * span), extra={
        "policy": cfg.policy, "router": cfg.router,
        "deployment": f"pd {cfg.pd[0]}:{cfg.pd[1]}" if cfg.pd else f"collocated x{cfg.replicas}",
        "perf_model": perf.name,
        "ended": len(ended),
        "iterations": sum(r.iterations for r in cluster.replicas),
        "retractions": sum(r.retractions for r in cluster.replicas),
        "prefix_hit_tokens": {"gpu": sum(r.hit_tokens[0] for r in cluster.replicas),
                              "host": sum(r.hit_tokens[1] for r in cluster.replicas),
                              "of_prompt_tokens": sum(workload.input_lens)},
        "busy_fraction": sum(r.busy_s for r in cluster.replicas) / max(span * len(cluster.replicas), 1e-9),
        **scaled,
    })


def _by_window(requests, window: tuple[float, float]) -> dict:
    """Attainment (overall and per class) and request count inside and outside ``window``."""
    groups: dict[str, list] = {"inside": [], "outside": []}
    for r in requests:
        groups["inside" if window[0] <= r.arrival < window[1] else "outside"].append(r)
    return {k: {"requests": len(v), "slo_attainment": summarize(v, gpu_seconds=0.0)["slo_attainment"]}
            for k, v in groups.items()}
