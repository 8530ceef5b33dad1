"""The load generator's CLI: bad flags and bad input files exit 2 with a message naming them."""

from __future__ import annotations

import pytest

from hyperflexis_sglang.bench.load import main

URL = "http://127.0.0.1:9"


@pytest.fixture
def trace(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 100, "output_length": 10}\n'
                 '{"timestamp": 500, "input_length": 200, "output_length": 20}\n')
    return p


@pytest.mark.parametrize("flags, message", [
    (["--requests", "0"], "--requests must be > 0"),
    (["--rate-scale", "-1"], "--rate-scale must be a positive number"),
    (["--rate-scale", "nan"], "--rate-scale must be a positive number"),
    (["--len-scale", "0.5"], "--len-scale must be a number >= 1"),
    (["--max-output", "1"], "--max-output must be > 1"),
    (["--concurrency-limit", "-2"], "--concurrency-limit must be >= 0"),
    (["--timeout", "0"], "--timeout must be a positive number"),
    (["--endpoint", "embed"], "--endpoint: invalid choice"),
    (["--requests", "many"], "--requests: invalid int value"),
])
def test_bad_flags_exit_2_naming_the_flag(trace, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        main(["--url", URL, "--trace", str(trace), *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_url_exits_2(trace, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--url", "localhost:30000", "--trace", str(trace)])
    assert e.value.code == 2 and "--url must start with http://" in capsys.readouterr().err


def test_unwritable_out_exits_2(trace, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["--url", URL, "--trace", str(trace), "--out", str(blocker / "sub" / "name")])
    assert e.value.code == 2 and "--out: cannot create" in capsys.readouterr().err


@pytest.mark.parametrize("content, flags, message", [
    ('{"timestamp": 0, "input_length": 100, "output_length": 10}\n{"timestamp": 1, "input_length": -3, '
     '"output_length": 1}\n', [], "t.jsonl:2: input_length must be > 0"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,12,x\n", [],
     "t.jsonl:2: GeneratedTokens must be an integer"),
    ('{"timestamp": 0, "input_length": 100, "output_length": 10}\n', ["--format", "azure"],
     "--format azure: "),
    ('{"timestamp": 0, "input_length": 100, "output_length": 10}\n', ["--slo-mix", "gold:1"],
     "--slo-mix: unknown SLO class 'gold'"),
    ('{"timestamp": 0, "input_length": 100, "output_length": 10, "slo_class": "nope"}\n', [],
     "request 1: unknown SLO class 'nope'"),
])
def test_bad_traces_exit_2_naming_file_and_line(tmp_path, capsys, content, flags, message):
    p = tmp_path / "t.jsonl"
    p.write_text(content)
    assert main(["--url", URL, "--trace", str(p), *flags]) == 2
    assert message in capsys.readouterr().err


def test_bad_slo_class_file_exits_2(trace, tmp_path, capsys):
    bad = tmp_path / "classes.json"
    bad.write_text('{"classes": {"gold": {"ttft_ms": -1}}}')
    assert main(["--url", URL, "--trace", str(trace), "--slo-classes", str(bad)]) == 2
    assert "classes.json: class 'gold'" in capsys.readouterr().err


def test_unreachable_server_counts_errors_and_writes_results(trace, tmp_path, capsys):
    """Port 9 (discard) is closed here: every request fails to connect, the run still completes."""
    import json
    out = tmp_path / "res" / "run"
    assert main(["--url", URL, "--trace", str(trace), "--rate-scale", "100", "--no-progress",
                 "--out", str(out)]) == 0
    doc = json.loads((tmp_path / "res" / "run.json").read_text())
    assert doc["summary"]["classes"]["overall"]["n"] == 2
    assert doc["summary"]["classes"]["overall"]["errors"] == 2
    assert all(r["error"].startswith("connection:") for r in doc["requests"])
    assert (tmp_path / "res" / "run.png").exists()
