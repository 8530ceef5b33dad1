"""Router request parsing: SLO headers composed into custom_params.slo, hand validation, estimates."""

from __future__ import annotations

import orjson
import pytest

from hyperflexis_sglang.core.slo import SLOCatalog
from hyperflexis_sglang.router.errors import RouterHTTPError
from hyperflexis_sglang.router.request import blocks, compose_slo, parse

CAT = SLOCatalog()


def p(kind, body, headers=None):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse(kind, raw, headers or {}, CAT, "rid", 4.0, 64)


@pytest.mark.parametrize("spec, headers, expected", [
    (None, {}, None),
    ({"class": "batch"}, {}, {"class": "batch"}),
    (None, {"x-slo-class": "interactive"}, {"class": "interactive"}),
    ({"class": "batch", "ttft_ms": 900}, {"x-slo-ttft-ms": "300"}, {"class": "batch", "ttft_ms": 300.0}),
    (None, {"x-slo-tpot-ms": "25.5", "x-priority": "3"}, {"tpot_ms": 25.5, "priority": 3}),
])
def test_compose_slo(spec, headers, expected):
    assert compose_slo(spec, headers) == expected


@pytest.mark.parametrize("headers, param", [
    ({"x-slo-ttft-ms": "fast"}, "x-slo-ttft-ms"), ({"x-priority": "high"}, "x-priority"),
    ({"x-slo-ttft-ms": "inf"}, "x-slo-ttft-ms"),
])
def test_bad_slo_header_is_400(headers, param):
    with pytest.raises(RouterHTTPError) as e:
        compose_slo(None, headers)
    assert e.value.status == 400 and e.value.param == param


def test_generate_slo_goes_to_sampling_params():
    out = p("generate", {"text": "hi", "sampling_params": {"max_new_tokens": 5}}, {"x-slo-class": "batch"})
    assert out.body["sampling_params"]["custom_params"] == {"slo": {"class": "batch"}}
    assert out.route.slo.cls == "batch" and out.route.max_new_tokens == 5


def test_openai_slo_is_top_level_and_header_wins():
    out = p("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7,
                     "custom_params": '{"slo": {"class": "batch", "ttft_ms": 5000}}'},
            {"x-slo-ttft-ms": "800", "x-priority": "4"})
    assert out.body["custom_params"] == {"slo": {"class": "batch", "ttft_ms": 800.0, "priority": 4}}
    assert out.body["priority"] == 4
    assert out.route.slo.ttft_ms == 800 and out.route.slo.priority == 4 and out.route.max_new_tokens == 7


def test_no_slo_given_body_untouched_default_class():
    body = {"prompt": "hello", "max_tokens": 3}
    out = p("completions", dict(body))
    assert out.body == body and out.route.slo.cls == "standard"


@pytest.mark.parametrize("kind, body, param", [
    ("generate", {"sampling_params": {}}, "text"),
    ("generate", {"text": "x", "sampling_params": {"max_new_tokens": -1}}, "sampling_params.max_new_tokens"),
    ("generate", {"text": "x", "sampling_params": []}, "sampling_params"),
    ("generate", {"text": 5}, "text"),
    ("completions", {"prompt": "x", "max_tokens": -3}, "max_tokens"),
    ("completions", {"prompt": "x", "max_tokens": "10"}, "max_tokens"),
    ("completions", {"max_tokens": 3}, "prompt"),
    ("completions", {"prompt": "x", "stream": "yes"}, "stream"),
    ("completions", {"prompt": "x", "priority": 1.5}, "priority"),
    ("completions", {"prompt": "x", "custom_params": {"slo": {"class": "nope"}}}, "custom_params.slo"),
    ("completions", {"prompt": "x", "custom_params": {"slo": {"ttft_ms": -5}}}, "custom_params.slo"),
    ("completions", {"prompt": "x", "custom_params": "{not json"}, "custom_params"),
    ("completions", {"prompt": "x", "custom_params": {"slo": "fast"}}, "custom_params.slo"),
    ("chat", {"messages": []}, "messages"),
    ("chat", {"messages": [{"content": "x"}]}, "messages[0]"),
    ("chat", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "model": 3}, "model"),
])
def test_bad_body_is_400_naming_the_field(kind, body, param):
    with pytest.raises(RouterHTTPError) as e:
        p(kind, body)
    assert e.value.status == 400 and e.value.param == param, e.value.message


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"\xff\xfe", b""])
def test_not_a_json_object_is_400(raw):
    with pytest.raises(RouterHTTPError) as e:
        p("generate", raw)
    assert e.value.status == 400 and e.value.code == "invalid_json"


def test_length_estimate_and_prefix_blocks():
    text = "a" * 600
    out = p("generate", {"text": text})
    assert out.route.input_len == 150  # 4 characters per token
    assert len(out.route.prefix_blocks) == 3  # 256-character blocks, the partial last one included
    same = p("generate", {"text": text[:512] + "b" * 88})
    assert same.route.prefix_blocks[:2] == out.route.prefix_blocks[:2]
    assert same.route.prefix_blocks[2] != out.route.prefix_blocks[2]
    ids = p("generate", {"input_ids": list(range(130))})
    assert ids.route.input_len == 130 and len(ids.route.prefix_blocks) == 3


def test_batch_prompt_counts():
    assert p("generate", {"text": ["a", "b", "c"]}).batch == 3
    assert p("completions", {"prompt": [[1, 2], [3]]}).batch == 2
    assert p("completions", {"prompt": [1, 2, 3]}).batch == 0


def test_blocks_chain_identity():
    assert blocks("abcd", 2, 2) != blocks("cdab", 2, 2)
    assert blocks("abcd", 2, 2)[0] == blocks("abxx", 2, 2)[0]


def test_manual_headers_reach_route():
    out = p("generate", {"text": "x"}, {"x-smg-routing-key": "user-1", "x-smg-target-worker": "http://w:1"})
    assert out.route.routing_key == "user-1" and out.route.target == "http://w:1"
