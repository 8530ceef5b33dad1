"""The load generator's measurements: stream parsing, SLO verdicts, per-class summary, outputs."""

from __future__ import annotations

import json
import math

import pytest

from hyperflexis_sglang.bench.client import Outcome, _Stream, _verdicts
from hyperflexis_sglang.bench.load import Progress
from hyperflexis_sglang.bench.report import class_stats, summarize, table, write_json, write_png
from hyperflexis_sglang.core.slo import SLO

SLO_1S = SLO(ttft_ms=1000, tpot_ms=100, cls="standard")


def _outcome(cls="standard", times=((0.5, 1), (0.6, 2), (0.7, 3)), error="", met=True, tokens=3):
    return Outcome(0, cls, 10.0, 0.0, 200 if not error else 429, error, times, tokens, met, met)


@pytest.mark.parametrize("endpoint, chunks, tokens", [
    ("generate", [{"text": "a", "meta_info": {"completion_tokens": 1}},
                  {"text": "a b", "meta_info": {"completion_tokens": 2}}, "[DONE]"], [1, 2]),
    ("completions", [{"choices": [{"text": "a"}]}, {"choices": [{"text": " b"}]},
                     {"choices": [], "usage": {"completion_tokens": 2}}, "[DONE]"], [1, 2]),
    ("chat", [{"choices": [{"delta": {"role": "assistant", "content": ""}}]},
              {"choices": [{"delta": {"content": "a"}}]}, {"choices": [{"delta": {"content": " b"}}]}], [1, 2]),
])
def test_stream_counts_tokens_per_chunk(endpoint, chunks, tokens):
    s = _Stream(endpoint)
    for k, c in enumerate(chunks):
        s.feed(c if isinstance(c, str) else json.dumps(c), float(k))
    assert [n for _, n in s.times] == tokens and not s.error


def test_stream_records_aborts_and_errors():
    s = _Stream("generate")
    s.feed(json.dumps({"text": "", "meta_info": {"completion_tokens": 0,
                                                 "finish_reason": {"type": "abort", "message": "SLO infeasible"}}}), 0)
    assert s.error.startswith("aborted: SLO infeasible")
    s = _Stream("chat")
    s.feed(json.dumps({"error": {"message": "boom"}}), 0)
    assert s.error == "stream error: boom"


@pytest.mark.parametrize("times, tokens, met, per_token", [
    ([(10.5, 1), (10.6, 2), (10.7, 3)], 3, True, True),  # on time
    ([(11.2, 1), (11.3, 2)], 2, False, False),  # TTFT 1.2 s > 1 s
    ([(10.9, 1), (11.0, 2), (11.1, 3)], 3, True, True),  # per-token deadlines 11.0, 11.1, 11.2
    ([(10.1, 1), (10.5, 2), (10.52, 3)], 3, False, False),  # average TPOT 210 ms > 100 ms
])
def test_verdicts_average_and_per_token(times, tokens, met, per_token):
    assert _verdicts(SLO_1S, 10.0, times, tokens, "") == (met, per_token)


def test_verdicts_per_token_catches_a_late_token_the_average_hides():
    slo = SLO(ttft_ms=1000, tpot_ms=100, cls="x")
    # token 2 at 1.15 s is past arrival + TTFT + TPOT = 1.1 s; the average after the
    # first token is (1.16 - 0.1) / 11 = 96 ms <= 100 ms
    times = [(10.1, 1), (11.15, 2)] + [(11.15 + 0.001 * k, 2 + k) for k in range(1, 11)]
    met, per_token = _verdicts(slo, 10.0, times, 12, "")
    assert met and not per_token


def test_verdicts_error_is_a_miss():
    assert _verdicts(SLO_1S, 10.0, [(10.1, 1)], 1, "http 429: busy") == (False, False)


def test_outcome_latencies():
    o = _outcome()
    assert (o.ttft, o.e2e) == (0.5, 0.7) and o.tpot == pytest.approx(0.1)
    bad = _outcome(error="timeout after 5 s", times=((0.5, 1),), met=False, tokens=1)
    assert bad.ttft == 0.5 and bad.e2e is None and bad.tpot is None


def test_summary_counts_every_request_and_errors_as_misses():
    outs = [_outcome(), _outcome(met=False), _outcome("interactive"),
            _outcome("interactive", error="http 429: busy", times=(), met=False, tokens=0),
            _outcome("interactive", error="timeout after 5 s", times=(), met=False, tokens=0)]
    s = summarize(outs, duration=2.0)
    c = s["classes"]
    assert c["overall"]["n"] == 5 and c["overall"]["met"] == 2
    assert c["standard"]["attainment"] == 0.5 and c["interactive"]["attainment"] == pytest.approx(1 / 3)
    assert c["interactive"]["errors"] == 2 and c["interactive"]["error_kinds"] == {"http 429": 1, "timeout": 1}
    assert s["goodput_rps"] == 1.0 and s["throughput_rps"] == 1.5
    assert "| interactive | 3 | 0.333 |" in table(s)


def test_percentiles_of_no_values_are_nan_in_stats_and_null_in_json(tmp_path):
    stats = class_stats([_outcome(error="timeout after 1 s", times=(), met=False, tokens=0)])
    assert math.isnan(stats["ttft_p50"])
    outs = [_outcome(error="connection: ConnectError: NaN", times=(), met=False, tokens=0)]
    write_json(str(tmp_path / "r.json"), summarize(outs, 1.0), outs, {"command": "x"})
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["summary"]["classes"]["overall"]["ttft_p50"] is None
    assert doc["requests"][0]["error"] == "connection: ConnectError: NaN"
    assert doc["requests"][0]["arrival"] == 0.0


def test_png_is_written(tmp_path):
    outs = [_outcome(), _outcome("batch")]
    write_png(str(tmp_path / "r.png"), summarize(outs, 1.0), outs, "t")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_line():
    import io
    buf = io.StringIO()
    p = Progress(4, stream=buf, width=8)
    for o in (_outcome(), _outcome(error="x", met=False)):
        p.update(o)
    assert p.line(p.start + 1.0) == "[####....] 2/4 met 1 errors 1 1.0s"
    assert "2/4" in buf.getvalue() or "1/4" in buf.getvalue()
