"""Trace loading, SLO-mix assignment, rate scaling and synthetic arrivals (sim/workload.py)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest

from hyperflexis_sglang.core.slo import DEFAULT_CLASSES, SLOCatalog
from hyperflexis_sglang.sim.workload import (DEFAULT_MIX, TraceError, TraceRow, build, load_trace, parse_mix,
                                             synthetic)

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"  # shared/ sits beside the clone
AZURE_REAL = TRACES / "azure_conv_2023.csv"
MOONCAKE_REAL = TRACES / "mooncake_conversation.jsonl"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
CAT = SLOCatalog()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def jsonl(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def mc(ts=0, inp=100, out=10, **kw) -> dict:
    return {"timestamp": ts, "input_length": inp, "output_length": out, **kw}


# ---- loading ------------------------------------------------------------------------
def test_azure_csv_rebased_to_first_row(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_HEADER
                 + "2023-11-16 18:15:46.6805900,374,44\n"
                 + "2023-11-16 18:15:50.9951690,396,109\n"
                 + "2023-11-16 18:16:46.6805900,1,1\n")
    rows = load_trace(path)
    assert [(r.input_len, r.output_len) for r in rows] == [(374, 44), (396, 109), (1, 1)]
    assert [r.t for r in rows] == pytest.approx([0.0, 4.314579, 60.0])
    assert all(r.hash_ids == () and r.slo is None for r in rows)


def test_azure_limit(tmp_path):
    lines = "".join(f"2023-11-16 18:15:{s:02d}.000,{s + 1},{s + 2}\n" for s in range(10))
    rows = load_trace(write(tmp_path, "a.csv", AZURE_HEADER + lines), limit=3)
    assert [r.input_len for r in rows] == [1, 2, 3] and rows[-1].t == pytest.approx(2.0)


def test_mooncake_jsonl(tmp_path):
    path = write(tmp_path, "m.jsonl", jsonl(mc(0, 6758, 500, hash_ids=[0, 1, 2]), "",
                                         mc(1500, 7322, 490, hash_ids=[0, 14]), mc(3000, 20, 1)))
    rows = load_trace(path)
    assert [(r.t, r.input_len, r.output_len, r.hash_ids) for r in rows] == [
        (0.0, 6758, 500, (0, 1, 2)), (1.5, 7322, 490, (0, 14)), (3.0, 20, 1, ())]
    assert load_trace(path, limit=2)[-1].t == 1.5


def test_jsonl_out_of_order_rows_are_sorted(tmp_path):
    rows = load_trace(write(tmp_path, "m.jsonl", jsonl(mc(2000, 1), mc(1000, 2), mc(3000, 3))))
    assert [(r.t, r.input_len) for r in rows] == [(0.0, 2), (1.0, 1), (2.0, 3)]  # sorted, then rebased


def test_jsonl_rebased_to_first_row(tmp_path):
    rows = load_trace(write(tmp_path, "m.jsonl", jsonl(mc(5000), mc(6000))))
    assert [r.t for r in rows] == [0.0, 1.0]


def test_generic_jsonl_per_line_slo(tmp_path):
    path = write(tmp_path, "g.jsonl", jsonl(mc(0, slo_class="interactive", ttft_ms=300), mc(10, priority=7), mc(20)))
    rows = load_trace(path)
    assert rows[0].slo == {"slo_class": "interactive", "ttft_ms": 300}
    assert rows[1].slo == {"priority": 7} and rows[2].slo is None
    wl = build(rows, "batch:1", seed=0)
    assert (wl.slos[0].cls, wl.slos[0].ttft_ms, wl.slos[0].tpot_ms) == ("interactive", 300, 40)
    assert (wl.slos[1].cls, wl.slos[1].priority) == ("batch", 7)
    assert wl.slos[2] == DEFAULT_CLASSES["batch"]


def test_per_line_slo_error_names_source_and_request(tmp_path):
    rows = load_trace(write(tmp_path, "g.jsonl", jsonl(mc(0), mc(10, slo_class="gold"))))
    with pytest.raises(TraceError, match=r"g.jsonl: request 2: unknown SLO class 'gold'"):
        build(rows, source=str(tmp_path / "g.jsonl"))


BAD_JSONL = [
    (jsonl(mc(), "{not json"), 2, "not valid JSON"),
    (jsonl(mc(), "[1, 2]"), 2, "expected a JSON object"),
    (jsonl({"timestamp": 0, "input_length": 5}), 1, "missing field 'output_length'"),
    (jsonl(mc(), {"input_length": 5, "output_length": 5}), 2, "missing field 'timestamp'"),
    (jsonl(mc(inp=-5)), 1, "input_length must be > 0"),
    (jsonl(mc(inp=0)), 1, "input_length must be > 0"),
    (jsonl(mc(out=0)), 1, "output_length must be > 0"),
    (jsonl(mc(out="ten")), 1, "output_length must be an integer"),
    (jsonl(mc(), mc(), mc(ts="noon")), 3, "timestamp must be a number"),
    (jsonl(mc(ts=-1)), 1, "timestamp must be a number"),
    (jsonl(mc(ts=True)), 1, "timestamp must be a number"),
    (jsonl(mc(hash_ids="abc")), 1, "hash_ids must be a list"),
    (jsonl(mc(), "", mc(out=0)), 3, "output_length"),  # blank lines still count
]


@pytest.mark.parametrize("text, line, match", BAD_JSONL)
def test_malformed_jsonl_names_file_and_line(tmp_path, text, line, match):
    path = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(TraceError, match=match) as e:
        load_trace(path)
    assert str(e.value).startswith(f"{path}:{line}:")


BAD_CSV = [
    ("ts,in,out\n2023-11-16 18:15:46.68,1,1\n", 1, "expected header"),
    ("", 1, "expected header"),
    (AZURE_HEADER + "2023-11-16 18:15:46.68,1,1\nyesterday,1,1\n", 3, "bad TIMESTAMP"),
    (AZURE_HEADER + "2023-11-16 18:15:46.68,-4,1\n", 2, "ContextTokens must be > 0"),
    (AZURE_HEADER + "2023-11-16 18:15:46.68,4,0\n", 2, "GeneratedTokens must be > 0"),
    (AZURE_HEADER + "2023-11-16 18:15:46.68,4.5,1\n", 2, "ContextTokens must be an integer"),
    (AZURE_HEADER + "2023-11-16 18:15:46.68,4\n", 2, "expected 3 columns"),
    (AZURE_HEADER + "2023-11-16 18:15:46.68,4,1\n2023-11-16 18:15:40.00,4,1\n", 3, "backwards"),
]


@pytest.mark.parametrize("text, line, match", BAD_CSV)
def test_malformed_csv_names_file_and_line(tmp_path, text, line, match):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError, match=match) as e:
        load_trace(path)
    assert str(e.value).startswith(f"{path}:{line}:")


@pytest.mark.parametrize("value", [1.5, True])
def test_jsonl_non_integer_length_rejected(tmp_path, value):
    with pytest.raises(TraceError, match="input_length"):
        load_trace(write(tmp_path, "bad.jsonl", jsonl(mc(inp=value))))


def test_missing_trace_file(tmp_path):
    with pytest.raises(TraceError, match="no such trace file") as e:
        load_trace(tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in str(e.value)


@pytest.mark.skipif(not AZURE_REAL.is_file(), reason=f"{AZURE_REAL} not present")
def test_real_azure_trace_with_limit():
    rows = load_trace(AZURE_REAL, limit=500)
    assert len(rows) == 500 and rows[0].t == 0.0
    assert all(b.t >= a.t for a, b in zip(rows, rows[1:]))
    assert all(r.input_len > 0 and r.output_len > 0 for r in rows)
    assert rows[0].input_len == 374 and rows[0].output_len == 44
    assert 10 < rows[-1].t < 3600  # a few minutes of a conversation service


@pytest.mark.skipif(not MOONCAKE_REAL.is_file(), reason=f"{MOONCAKE_REAL} not present")
def test_real_mooncake_trace_with_limit():
    rows = load_trace(MOONCAKE_REAL, limit=500)
    assert len(rows) == 500 and rows[0].t == 0.0
    assert all(b.t >= a.t for a, b in zip(rows, rows[1:]))
    assert all(r.input_len > 0 and r.output_len > 0 and r.hash_ids for r in rows)
    # one hash id per 512-token block
    assert all(len(r.hash_ids) == -(-r.input_len // 512) for r in rows[:50])


# ---- SLO mix ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("interactive:0.2,standard:0.5,batch:0.3", [("interactive", 0.2), ("standard", 0.5), ("batch", 0.3)]),
    ("interactive:1,batch:3", [("interactive", 0.25), ("batch", 0.75)]),
    ("batch:7", [("batch", 1.0)]),
    ("interactive:0,batch:2", [("interactive", 0.0), ("batch", 1.0)]),
    (" interactive:2 , standard:2 ", [("interactive", 0.5), ("standard", 0.5)]),
])
def test_parse_mix_normalises(spec, expected):
    got = parse_mix(spec, CAT)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@pytest.mark.parametrize("spec, match", [
    ("interactive", "expected CLASS:WEIGHT"),
    ("", "expected CLASS:WEIGHT"),
    ("interactive:0.5,", "expected CLASS:WEIGHT"),
    ("gold:1", "unknown SLO class 'gold'.*batch, interactive, standard"),
    ("batch:lots", "weight of 'batch' must be a number"),
    ("batch:-1", "must be >= 0"),
    ("batch:inf", "must be >= 0"),
    ("batch:nan", "must be >= 0"),
    ("batch:0,standard:0", "must not all be zero"),
])
def test_parse_mix_errors_name_the_flag(spec, match):
    with pytest.raises(TraceError, match=match) as e:
        parse_mix(spec, CAT)
    assert str(e.value).startswith("--slo-mix")


def rows_n(n: int) -> list[TraceRow]:
    return [TraceRow(float(i), 100, 10) for i in range(n)]


def test_slo_assignment_deterministic_by_seed():
    rows = rows_n(2000)
    a, b, c = build(rows, seed=1), build(rows, seed=1), build(rows, seed=2)
    assert a == b
    assert [s.cls for s in a.slos] != [s.cls for s in c.slos]


def test_slo_assignment_matches_mix():
    wl = build(rows_n(10_000), DEFAULT_MIX, seed=3)
    share = Counter(s.cls for s in wl.slos)
    assert set(share) == {"interactive", "standard", "batch"}
    for cls, w in [("interactive", 0.2), ("standard", 0.5), ("batch", 0.3)]:
        assert share[cls] / 10_000 == pytest.approx(w, abs=0.02), share


def test_per_line_slo_does_not_shift_other_assignments():
    rows = rows_n(200)
    pinned = list(rows)
    pinned[10] = TraceRow(10.0, 100, 10, slo={"slo_class": "batch"})
    a, b = build(rows, seed=5), build(pinned, seed=5)
    assert [s.cls for i, s in enumerate(a.slos) if i != 10] == [s.cls for i, s in enumerate(b.slos) if i != 10]


def test_custom_catalog_classes_in_mix():
    cat = SLOCatalog({**DEFAULT_CLASSES, "gold": DEFAULT_CLASSES["interactive"].__class__(100, 10, cls="gold")})
    wl = build(rows_n(50), "gold:1", catalog=cat)
    assert {s.cls for s in wl.slos} == {"gold"}


# ---- rate scaling, workload shape --------------------------------------------------------------
@pytest.mark.parametrize("scale", [2.0, 0.5, 4.0])
def test_rate_scale_divides_times(scale):
    rows = rows_n(20)
    base, scaled = build(rows, seed=0), build(rows, seed=0, rate_scale=scale)
    assert scaled.arrivals == pytest.approx([t / scale for t in base.arrivals])
    assert scaled.slos == base.slos and scaled.input_lens == base.input_lens


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_rate_scale(scale):
    with pytest.raises(TraceError, match="--rate-scale"):
        build(rows_n(3), rate_scale=scale)


def test_workload_fields():
    rows = [TraceRow(0.0, 10, 2, (1, 2)), TraceRow(1.0, 20, 3)]
    wl = build(rows, "batch:1")
    assert len(wl) == 2 and wl.input_lens == (10, 20) and wl.output_lens == (2, 3)
    assert wl.blocks == ((1, 2), ()) and wl.arrivals == (0.0, 1.0)


# ---- synthetic ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [2.0, 10.0, 50.0])
def test_synthetic_poisson_mean_rate(rate):
    rows = synthetic(5000, rate, seed=11)
    assert len(rows) == 5000
    assert all(b.t > a.t for a, b in zip(rows, rows[1:]))
    assert len(rows) / rows[-1].t == pytest.approx(rate, rel=0.10)
    gaps = [b.t - a.t for a, b in zip(rows, rows[1:])]
    assert statistics.pstdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.1)  # exponential: CV 1


def test_synthetic_gamma_cv():
    rows = synthetic(5000, 10.0, seed=11, cv=3.0)
    gaps = [b.t - a.t for a, b in zip(rows, rows[1:])]
    assert statistics.pstdev(gaps) / statistics.mean(gaps) == pytest.approx(3.0, rel=0.2)
    assert len(rows) / rows[-1].t == pytest.approx(10.0, rel=0.15)


def test_synthetic_deterministic_and_lengths():
    assert synthetic(100, 5.0, seed=1) == synthetic(100, 5.0, seed=1) != synthetic(100, 5.0, seed=2)
    fixed = synthetic(10, 5.0, input_len=333, output_len=44)
    assert {(r.input_len, r.output_len) for r in fixed} == {(333, 44)}
    src = [TraceRow(0, 7, 3, (9,)), TraceRow(0, 70, 30)]
    drawn = synthetic(200, 5.0, seed=4, lengths=src)
    assert {(r.input_len, r.output_len, r.hash_ids) for r in drawn} == {(7, 3, (9,)), (70, 30, ())}


@pytest.mark.parametrize("kwargs", [dict(n=0, rate=1.0), dict(n=5, rate=0.0), dict(n=5, rate=-1.0),
                                    dict(n=5, rate=1.0, cv=0.0)])
def test_synthetic_errors(kwargs):
    with pytest.raises(TraceError):
        synthetic(**kwargs)
