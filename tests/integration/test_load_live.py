"""The load generator against real SGLang CPU servers (the session's stock and HFX servers).

A 10-request Mooncake-style trace (shared prefix blocks, 1 s of arrivals) is
replayed open-loop through ``/generate`` on the HFX server (SLOs in
``custom_params`` and headers, accepted by the plugin) and through
``/v1/completions`` on the stock server; the JSON must account for every
request with real token timings.
"""

from __future__ import annotations

import json

import pytest

from hyperflexis_sglang.bench.load import main

pytestmark = pytest.mark.integration

N = 10


@pytest.fixture
def trace(tmp_path):
    lines = [{"timestamp": 100 * i, "input_length": 256 + 64 * (i % 4), "output_length": 24 + 8 * (i % 3),
              "hash_ids": [0, 1 + i % 3]} for i in range(N)]
    p = tmp_path / "small.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


@pytest.mark.parametrize("which, endpoint", [(1, "generate"), (0, "completions")])
def test_every_request_is_measured(servers, cpu_classes, trace, tmp_path, which, endpoint):
    server = servers[which]
    out = tmp_path / endpoint
    rc = main(["--url", server.url, "--endpoint", endpoint, "--trace", str(trace), "--requests", str(N),
               "--len-scale", "4", "--slo-classes", str(cpu_classes), "--timeout", "120", "--no-progress",
               "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    reqs = doc["requests"]
    assert sorted(r["index"] for r in reqs) == list(range(N))
    assert [r["error"] for r in reqs] == [""] * N and all(r["status"] == 200 for r in reqs)
    expected = [max(2, round((24 + 8 * (i % 3)) / 4)) for i in range(N)]
    assert [r["tokens"] for r in sorted(reqs, key=lambda r: r["index"])] == expected
    for r in reqs:
        times = [t for t, _ in r["token_times"]]
        assert 0 < r["ttft"] == times[0] <= r["e2e"] == times[-1]
        assert times == sorted(times) and r["token_times"][-1][1] == r["tokens"]
    summary = doc["summary"]["classes"]
    assert summary["overall"]["n"] == N
    assert sum(v["n"] for c, v in summary.items() if c != "overall") == N
    assert summary["overall"]["errors"] == 0 and summary["overall"]["ttft_p50"] > 0
    assert out.with_suffix(".png").stat().st_size > 0
