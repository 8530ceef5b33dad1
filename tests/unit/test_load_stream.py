"""The load generator's stream accounting when OpenAI-style chunks carry several tokens."""

from __future__ import annotations

import json

from hyperflexis_sglang.bench.client import _Stream


def test_tokens_beyond_the_visible_chunks_arrive_with_the_last_chunk():
    s = _Stream("completions")
    for t, text in ((1.0, "a"), (1.1, ""), (1.2, "bc"), (1.3, "d")):
        s.feed(json.dumps({"choices": [{"text": text}]}), t)
    s.feed(json.dumps({"choices": [], "usage": {"completion_tokens": 6}}), 1.4)
    s.feed("[DONE]", 1.4)
    assert s.finish() == 6
    assert s.times == [(1.0, 1), (1.2, 2), (1.3, 6)]


def test_generate_counts_come_from_the_server():
    s = _Stream("generate")
    for t, n in ((1.0, 1), (1.1, 3), (1.2, 4)):
        s.feed(json.dumps({"text": "x" * n, "meta_info": {"completion_tokens": n}}), t)
    assert s.finish() == 4 and s.times == [(1.0, 1), (1.1, 3), (1.2, 4)]
