"""The load generator's plan: arrival schedule, length scaling, deterministic prompts, request bodies."""

from __future__ import annotations

import pytest

from hyperflexis_sglang.bench.plan import Scaling, make_plan, request_body, slo_headers, synth_prompt, words
from hyperflexis_sglang.core.slo import SLOCatalog
from hyperflexis_sglang.sim.workload import TraceRow, build

ROWS = [TraceRow(0.0, 1000, 100, (1, 2)), TraceRow(2.0, 1200, 50, (1, 3)), TraceRow(5.0, 40, 3)]


def _plan(rate_scale=1.0, scaling=Scaling(), seed=0, rows=ROWS):
    return make_plan(build(rows, seed=seed, rate_scale=rate_scale), scaling)


@pytest.mark.parametrize("rate_scale, expected", [(1.0, [0.0, 2.0, 5.0]), (2.0, [0.0, 1.0, 2.5]),
                                                  (0.5, [0.0, 4.0, 10.0])])
def test_arrivals_follow_the_trace_divided_by_the_rate_scale(rate_scale, expected):
    assert [r.t for r in _plan(rate_scale)] == pytest.approx(expected)


@pytest.mark.parametrize("scaling, inputs, outputs", [
    (Scaling(), [1000, 1200, 40], [100, 50, 3]),
    (Scaling(len_scale=10), [100, 120, 4], [10, 5, 2]),  # floors: 4 words in, 2 tokens out
    (Scaling(len_scale=2, max_input=300, max_output=20), [300, 300, 20], [20, 20, 2]),
])
def test_lengths_are_scaled_capped_and_floored(scaling, inputs, outputs):
    plan = _plan(scaling=scaling)
    assert [r.input_words for r in plan] == inputs
    assert [len(r.prompt.split()) for r in plan] == inputs
    assert [r.max_tokens for r in plan] == outputs


def test_plan_is_deterministic_and_seed_changes_only_the_classes():
    a, b = _plan(), _plan()
    assert a == b
    rows = [TraceRow(float(i), 100, 10) for i in range(50)]
    c, d = _plan(rows=rows, seed=0), _plan(rows=rows, seed=1)
    assert [r.prompt for r in c] == [r.prompt for r in d]
    assert [r.slo.cls for r in c] != [r.slo.cls for r in d]


def test_equal_hash_blocks_give_equal_text_prefixes():
    plan = _plan(scaling=Scaling(len_scale=8))  # blocks of 512 / 8 = 64 words
    first, second = plan[0].prompt.split(), plan[1].prompt.split()
    assert first[:64] == second[:64]  # block 1 shared
    assert first[64:128] != second[64:128]  # blocks 2 and 3 differ


def test_prompts_without_blocks_differ_between_requests():
    a, b = synth_prompt(0, 50), synth_prompt(1, 50)
    assert a != b and a.split()[:5] != b.split()[:5]
    assert synth_prompt(7, 50) == synth_prompt(7, 50)
    assert words(3, 10) != words(3, 10, salt=1)


def test_block_text_is_truncated_to_the_prompt_length():
    assert len(synth_prompt(0, 10, hash_ids=(5, 6), block_words=64).split()) == 10
    assert synth_prompt(0, 10, hash_ids=(5,), block_words=64) == synth_prompt(9, 10, hash_ids=(5, 6), block_words=64)


@pytest.mark.parametrize("endpoint, path, key", [("generate", "/generate", "text"),
                                                 ("completions", "/v1/completions", "prompt"),
                                                 ("chat", "/v1/chat/completions", "messages")])
def test_request_bodies_stream_and_carry_the_slo(endpoint, path, key):
    req = _plan(scaling=Scaling(len_scale=10))[0]
    got_path, body = request_body(endpoint, req, "m")
    assert got_path == path and body["stream"] is True and key in body
    params = body["sampling_params"] if endpoint == "generate" else body
    assert params["custom_params"]["slo"] == {"class": req.slo.cls, "ttft_ms": req.slo.ttft_ms,
                                              "tpot_ms": req.slo.tpot_ms, "priority": req.slo.priority}
    assert params.get("max_new_tokens", params.get("max_tokens")) == req.max_tokens
    assert params["ignore_eos"] is True


def test_unknown_endpoint_is_refused():
    with pytest.raises(ValueError, match="endpoint"):
        request_body("embed", _plan()[0], "m")


def test_slo_headers_match_the_body():
    slo = SLOCatalog().get("interactive")
    assert slo_headers(slo) == {"x-slo-class": "interactive", "x-slo-ttft-ms": "450", "x-slo-tpot-ms": "40",
                                "x-priority": "2"}
