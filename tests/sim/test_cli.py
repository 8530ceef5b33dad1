"""``python -m hyperflexis_sglang.sim run|sweep``: outputs, determinism and input errors (sim/cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperflexis_sglang.sim.cli import main
from hyperflexis_sglang.sim.workload import synthetic

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUMMARY_KEYS = {"slo_attainment", "goodput_rps", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p50",
                "e2e_p99", "rejected", "gpu_seconds"}


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    """A small Mooncake-format trace (150 requests at ~30 req/s, with shared prefixes)."""
    path = tmp_path_factory.mktemp("traces") / "small.jsonl"
    rows = synthetic(150, 30.0, seed=3, input_len=1200, output_len=60)
    with path.open("w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"timestamp": round(r.t * 1000, 3), "input_length": r.input_len + 7 * (i % 5),
                                "output_length": r.output_len + (i % 3), "hash_ids": [0, 1 + i % 4]}) + "\n")
    return path


def run_args(trace: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--trace", str(trace), "--replicas", "2", "--json", str(out), *extra]


def check_summary(d: dict) -> None:
    assert SUMMARY_KEYS <= set(d), SUMMARY_KEYS - set(d)
    att = d["slo_attainment"]
    assert {"overall", "interactive", "standard", "batch"} <= set(att)
    assert all(0.0 <= v <= 1.0 for v in att.values())
    for k in ("goodput_rps", "gpu_seconds"):
        assert d[k] > 0
    for k in ("ttft", "tpot", "e2e"):
        assert 0 < d[f"{k}_p50"] <= d[f"{k}_p99"]
    assert isinstance(d["rejected"], int) and d["rejected"] >= 0


# ---- run --------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--policy", "sglang-fcfs"], ["--policy", "edf", "--pd", "1:1"],
                                   ["--policy", "sarathi", "--router", "cache_aware", "--rate-scale", "2"]])
def test_run_writes_summary_json(trace, tmp_path, capsys, extra):
    out = tmp_path / "sub" / "run.json"  # parent created on demand
    assert main(run_args(trace, out, *extra)) == 0
    d = json.loads(out.read_text())
    check_summary(d)
    assert d["requests"] == 150 and d["trace"] == "small.jsonl"
    assert not any(k.startswith("_") for k in d)
    stdout = capsys.readouterr().out
    assert "| policy |" in stdout and "simulated 150 requests" in stdout
    assert [p.name for p in out.parent.iterdir()] == ["run.json"]  # no temp files left behind


def test_run_same_seed_same_bytes_in_process_and_subprocess(trace, tmp_path):
    a, b, c = (tmp_path / f"{n}.json" for n in ("a", "b", "c"))
    assert main(run_args(trace, a, "--seed", "7")) == 0
    assert main(run_args(trace, b, "--seed", "7")) == 0
    assert a.read_bytes() == b.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONHASHSEED": "12345"}  # a different hash seed than this process: no hash-order dependence
    proc = subprocess.run([sys.executable, "-m", "hyperflexis_sglang.sim", *run_args(trace, c, "--seed", "7")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "simulated 150 requests" in proc.stdout
    assert c.read_bytes() == a.read_bytes()


def test_run_with_slo_classes_file(trace, tmp_path):
    classes = tmp_path / "classes.toml"
    classes.write_text('[classes.gold]\nttft_ms = 300\ntpot_ms = 30\npriority = 3\n')
    out = tmp_path / "gold.json"
    assert main(run_args(trace, out, "--slo-classes", str(classes), "--slo-mix", "gold:1,batch:1")) == 0
    assert set(json.loads(out.read_text())["slo_attainment"]) == {"overall", "gold", "batch"}


AZURE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "azure_conv_2023.csv"


@pytest.mark.skipif(not AZURE.is_file(), reason="real trace missing (shared/ beside the clone)")
def test_run_on_real_trace_with_limit(tmp_path):
    out = tmp_path / "azure.json"
    assert main(["run", "--trace", str(AZURE), "--limit", "200", "--replicas", "1",
                 "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    check_summary(d)
    assert d["requests"] == 200


# ---- errors -------------------------------------------------------------------------------------
def bad_trace(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 10, "output_length": 5}\n'
                    '{"timestamp": 5, "input_length": -3, "output_length": 5}\n')
    return path


def test_malformed_trace_exit_2_names_file_and_line(tmp_path, capsys):
    path, out = bad_trace(tmp_path), tmp_path / "out.json"
    assert main(run_args(path, out)) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and "input_length" in err
    assert not out.exists()


@pytest.mark.parametrize("extra, needle", [
    (["--policy", "fifo"], "--policy"),
    (["--slo-mix", "interactive:0.5,gold:0.5"], "--slo-mix"),
    (["--slo-mix", "interactive"], "--slo-mix"),
    (["--slo-mix", "batch:-1"], "--slo-mix"),
    (["--model", "llama-3-70b", "--tp", "1"], "--model/--gpu/--tp"),
    (["--tp", "3"], "--tp"),
    (["--slo-classes", "/nonexistent/classes.toml"], "/nonexistent/classes.toml"),
])
def test_usage_errors_exit_2_without_output(trace, tmp_path, capsys, extra, needle):
    out = tmp_path / "out.json"
    assert main(run_args(trace, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, needle", [
    (["--pd", "2"], "--pd"),
    (["--pd", "0:1"], "--pd"),
    (["--pd", "a:b"], "--pd"),
    (["--rate-scale", "-1"], "--rate-scale"),
    (["--rate-scale", "0"], "--rate-scale"),
    (["--rate-scale", "fast"], "--rate-scale"),
    (["--replicas", "0"], "--replicas"),
    (["--limit", "-5"], "--limit"),
    (["--router", "least_load"], "--router"),
])
def test_bad_flags_exit_2_naming_the_flag(trace, tmp_path, capsys, extra, needle):
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as e:
        main(run_args(trace, out, *extra))
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_missing_trace_file_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(run_args(missing, tmp_path / "out.json")) == 2
    assert str(missing) in capsys.readouterr().err


# ---- sweep ----------------------------------------------------------------------------------------
def test_sweep_writes_json_and_png(trace, tmp_path, capsys):
    out, png = tmp_path / "sweep.json", tmp_path / "plots" / "sweep.png"
    argv = ["sweep", "--trace", str(trace), "--replicas", "2", "--policies", "sglang-fcfs,hfx",
            "--rate-scales", "0.5,2", "--json", str(out), "--png", str(png)]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert [(r["policy"], r["rate_scale"]) for r in results] == [("sglang-fcfs", 0.5), ("sglang-fcfs", 2.0),
                                                                   ("hfx", 0.5), ("hfx", 2.0)]
    for r in results:
        check_summary(r)
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    assert sorted(p.name for p in png.parent.iterdir()) == ["sweep.png"]
    assert capsys.readouterr().out.count("| sglang-fcfs |") == 2


@pytest.mark.parametrize("extra, needle", [
    (["--policies", "hfx,fifo"], "--policies"),
    (["--rate-scales", "1,x"], "--rate-scales"),
    (["--rate-scales", "1,-2"], "--rate-scales"),
    (["--rate-scales", "0"], "--rate-scales"),
])
def test_sweep_bad_inputs(trace, tmp_path, capsys, extra, needle):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    assert main(["sweep", "--trace", str(trace), "--json", str(out), "--png", str(png), *extra]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() and not png.exists()
