"""The simulator's host-memory KV tier, as SGLang's hierarchical cache (--enable-hierarchical-cache)."""

from __future__ import annotations

import json

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.slo import SLOCatalog
from hyperflexis_sglang.sim.cli import main
from hyperflexis_sglang.sim.cluster import Cluster, ClusterConfig
from hyperflexis_sglang.sim.engine import BLOCK_TOKENS, SimRequest
from hyperflexis_sglang.sim.runner import simulate
from hyperflexis_sglang.sim.workload import Workload

PERF = preset("llama-3-8b", "h100", 1)


def replica(ratio: float, device_blocks: int, **cfg):
    rep = Cluster(ClusterConfig(policy="sglang-fcfs", replicas=1, hicache_ratio=ratio, **cfg), PERF, PERF).replicas[0]
    rep.cache_blocks, rep.host_blocks = device_blocks, int(device_blocks * ratio)
    return rep


def test_a_prefix_the_gpu_evicted_continues_in_the_host_tier_and_is_loaded_back():
    rep = replica(2.0, 3)
    rep._cache_insert((1, 2, 3))
    rep._cache_insert((7, 8, 9))  # the GPU cache (3 blocks) drops 1-2-3; the host tier (6) keeps both
    assert rep.cached_tokens((1, 2, 3)) == 0 and len(rep.host) == 6
    assert rep.cached_tokens((1, 2, 3, 4), with_host=True) == 3 * BLOCK_TOKENS  # a look that loads nothing
    assert rep.cached_tokens((1, 2, 3)) == 0
    assert rep._cache_hit((1, 2, 3, 4)) == (0, 3 * BLOCK_TOKENS)
    assert rep.cached_tokens((1, 2, 3)) == 3 * BLOCK_TOKENS  # loaded back: now on the GPU
    assert rep.cached_tokens((7, 8, 9)) == 0 and len(rep.cache) == 3  # the GPU cache stays within its size
    rep._cache_insert((7, 8))
    assert rep._cache_hit((7, 8, 9)) == (2 * BLOCK_TOKENS, BLOCK_TOKENS)  # GPU part first, then the host part


def test_the_host_tier_is_off_by_default_as_in_sglang():
    rep = Cluster(ClusterConfig(policy="sglang-fcfs", replicas=1), PERF, PERF).replicas[0]
    assert rep.host_blocks == 0
    rep.cache_blocks = 2
    rep._cache_insert((1, 2, 3))
    assert not rep.host and rep._cache_hit((1, 2, 3)) == (2 * BLOCK_TOKENS, 0)


def test_the_host_tier_evicts_leaves_first_within_its_size():
    rep = replica(1.0, 2)
    rep._cache_insert((1, 2))
    rep._cache_insert((1, 5))
    assert set(rep.host) == {1, 5} and len(rep.host) == 2


def test_decode_servers_keep_no_host_prefix_tier():
    cluster = Cluster(ClusterConfig(policy="sglang-fcfs", pd=(1, 1), hicache_ratio=2.0), PERF, PERF)
    dec = cluster.decode[0]
    dec._cache_insert((1, 2))
    assert dec.host_blocks and not dec.host


def one_prompt_twice(prefix_blocks: int):
    """The same long prompt twice, 60 s apart, with 4000 one-block requests in between that push it out of
    the GPU cache (and of the host tier when the tier is small)."""
    shared = tuple(range(1000, 1000 + prefix_blocks))
    arrivals, inputs, outputs, blocks = [0.0], [prefix_blocks * BLOCK_TOKENS + 10], [4], [shared]
    for i in range(400):
        arrivals.append(1.0 + i * 0.1)
        inputs.append(BLOCK_TOKENS * 4)
        outputs.append(2)
        blocks.append(tuple(range(10 * i, 10 * i + 4)))
    arrivals.append(60.0)
    inputs.append(prefix_blocks * BLOCK_TOKENS + 10)
    outputs.append(4)
    blocks.append(shared)
    slo = SLOCatalog().get("batch")
    return Workload(tuple(arrivals), tuple(inputs), tuple(outputs), tuple(blocks), (slo,) * len(arrivals))


def run(wl, **cfg):
    cluster = Cluster(ClusterConfig(policy="sglang-fcfs", replicas=1, **cfg), PERF, PERF)
    for rep in cluster.replicas:
        rep.cache_blocks, rep.host_blocks = 200, int(200 * cfg.get("hicache_ratio", 0.0))
    cluster.run(wl)
    return cluster


def test_a_host_hit_skips_recomputation_but_pays_the_load_from_host_memory():
    wl = one_prompt_twice(30)
    last = len(wl) - 1
    ttft = {}
    for name, cfg in {"off": {}, "host": {"hicache_ratio": 10.0}, "slow host": {"hicache_ratio": 10.0,
                                                                               "hicache_gbps": 1.0}}.items():
        cluster = run(wl, **cfg)
        req = cluster.requests[last]
        ttft[name] = req.first_token_time - req.arrival
        hits = cluster.replicas[0].hit_tokens
        if name == "off":
            assert hits[1] == 0
        else:
            assert hits[1] >= 30 * BLOCK_TOKENS  # the returning prompt came from the host tier
    assert ttft["host"] < ttft["off"]  # loading 15k tokens' KV beats prefilling them
    load_s = 30 * BLOCK_TOKENS * PERF.kv_bytes_per_token * 8 / 1e9  # the load at 1 Gbit/s
    assert ttft["slow host"] - ttft["host"] == pytest.approx(load_s * (1 - 1 / 200), rel=0.05)


def test_prefix_hit_tokens_are_reported_by_tier():
    wl = one_prompt_twice(8)
    out = simulate(wl, ClusterConfig(policy="sglang-fcfs", replicas=1, hicache_ratio=2.0), PERF)
    hits = out["prefix_hit_tokens"]
    assert hits["of_prompt_tokens"] == sum(wl.input_lens)
    assert 0 < hits["gpu"] + hits["host"] < hits["of_prompt_tokens"]


@pytest.mark.parametrize("flag,value", [("--hicache-ratio", "-1"), ("--hicache-ratio", "nan"),
                                        ("--hicache-gbps", "0"), ("--hicache-gbps", "x")])
def test_bad_hicache_flags_exit_2_naming_the_flag(tmp_path, capsys, flag, value):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 10, "output_length": 2}\n')
    with pytest.raises(SystemExit) as e:
        main(["run", "--trace", str(trace), "--policy", "hfx", flag, value, "--json", str(tmp_path / "o.json")])
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_cli_runs_with_a_host_tier(tmp_path):
    trace = tmp_path / "t.jsonl"
    rows = [{"timestamp": i * 500, "input_length": 1100, "output_length": 3, "hash_ids": [1, 2]} for i in range(6)]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.json"
    assert main(["run", "--trace", str(trace), "--policy", "hfx", "--replicas", "1", "--hicache-ratio", "2",
                 "--json", str(out)]) in (0, None)
    hits = json.loads(out.read_text())["prefix_hit_tokens"]
    assert hits["gpu"] == 5 * 2 * BLOCK_TOKENS and hits["host"] == 0


def test_hicache_bench_reports_every_policy_and_tier(tmp_path, monkeypatch):
    """bench/sim/hicache.py on a small synthetic Mooncake-format trace: one row per policy and tier, plus the
    unlimited-link row, and a verdict per tier."""
    import importlib.util
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parents[2] / "bench" / "sim"
    monkeypatch.syspath_prepend(str(bench))  # hicache.py imports attainment beside it
    spec = importlib.util.spec_from_file_location("sim_bench_hicache", bench / "hicache.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"timestamp": i * 300, "input_length": 2000 + 300 * (i % 5), "output_length": 20,
             "hash_ids": [0] + [100 + i % 7, 200 + i % 7, 300 + i % 7]} for i in range(40)]
    (tmp_path / "mooncake_conversation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(sys, "argv", ["hicache.py", "--traces-dir", str(tmp_path), "--limit", "40",
                                      "--ratios", "0,2", "--out", str(tmp_path / "out")])
    assert mod.main() == 0
    md = (tmp_path / "out" / "sim_hicache.md").read_text()
    for deploy in ("collocated", "pd"):
        assert f"mooncake_conversation.jsonl, {deploy}" in md
    for label, _, _ in mod.VARIANTS:
        assert md.count(f"| {label} | off |") == 2 and md.count(f"| {label} | 2x GPU pool |") == 2
    assert md.count("| hfx | 2x GPU pool, unlimited host link |") == 2
    data = json.loads((tmp_path / "out" / "sim_hicache.json").read_text())
    assert set(data["collocated"]) == {"0.0", "2.0", "hfx_unlimited_host_link"}
    host = [r for r in data["collocated"]["2.0"]["results"] if r["prefix_hit_tokens"]["host"]]
    assert all(r["hicache_ratio"] == 2.0 for r in host)


def test_the_gpu_prefix_cache_holds_only_what_running_requests_leave_free_of_the_pool():
    """SGLang's radix cache lives in the KV pool: running requests' KV is not evictable, so a busy replica keeps
    fewer cached prefixes; the cached prefixes running requests share count once."""
    rep = replica(0.0, 10)
    rep.capacity = 10 * BLOCK_TOKENS
    rep._cache_insert(tuple(range(8)))
    assert len(rep.cache) == 8
    rep.kv_used = 6 * BLOCK_TOKENS  # requests now hold 6 blocks of the pool ...
    assert rep.cache_cap() == 4
    rep.locked_tokens = 2 * BLOCK_TOKENS  # ... 2 of them cached prefixes they share
    assert rep.cache_cap() == 6
    rep._cache_insert((100,))
    assert len(rep.cache) == 6 and rep.cached_tokens(tuple(range(5))) == 5 * BLOCK_TOKENS  # leaves went first


@pytest.mark.parametrize("pd", [None, (1, 1)])
def test_locked_prefix_tokens_are_all_released_when_every_request_ends(pd):
    """Conservation of the cache's lock count through prefill, chunking, retraction, transfer and finish."""
    wl = one_prompt_twice(30)
    cfg = ClusterConfig(policy="hfx", router="hfx", replicas=1, pd=pd, hicache_ratio=1.0)
    cluster = Cluster(cfg, PERF, PERF)
    for rep in cluster.replicas:
        rep.capacity = 40 * BLOCK_TOKENS  # small pool: long prompts chunk, and the cache competes for room
    cluster.run(wl)
    assert len(cluster.ended) == len(wl)
    for rep in cluster.replicas:
        assert rep.locked_tokens == 0 and rep.kv_used == 0
    assert sum(r.hit_tokens[0] + r.hit_tokens[1] for r in cluster.replicas) > 0
