"""The launcher's settings: flags, config files (JSON/TOML), and bad input naming the flag or file field."""

from __future__ import annotations

import json

import pytest

from hyperflexis_sglang.launch import LaunchConfig, LaunchError, main, resolve


def cfg_of(argv):
    return resolve(argv)[0]


@pytest.mark.parametrize("argv, want", [
    ([], {"servers": 1, "prefill": 0, "policy": "hfx", "router_policy": "hfx", "port": 30000}),
    (["--servers", "3", "--router-policy", "cache_aware"], {"servers": 3, "router_policy": "cache_aware"}),
    (["--prefill", "1", "--decode", "2"], {"prefill": 1, "decode": 2}),
    (["--policy", "off", "--port", "0"], {"policy": "off", "port": 0}),
    (["--autoscaler", "hfx", "--max-replicas", "6"], {"autoscaler": "hfx", "max_replicas": 6}),
    (["--", "--chunked-prefill-size", "512"], {"server_args": ["--chunked-prefill-size", "512"]}),
])
def test_flags(argv, want):
    cfg = cfg_of(argv)
    for k, v in want.items():
        assert getattr(cfg, k) == v, k


def test_fleet_by_mode():
    assert cfg_of(["--servers", "2"]).fleet == {"collocated": 2}
    assert cfg_of(["--prefill", "1", "--decode", "1"]).fleet == {"prefill": 1, "decode": 1}


@pytest.mark.parametrize("suffix, text", [
    (".json", json.dumps({"servers": 2, "router_policy": "round_robin", "server_args": ["--mem-fraction-static", "0.5"]})),
    (".toml", 'servers = 2\nrouter_policy = "round_robin"\nserver_args = ["--mem-fraction-static", "0.5"]\n'),
])
def test_config_file_and_flags_win(tmp_path, suffix, text):
    path = tmp_path / f"launch{suffix}"
    path.write_text(text)
    cfg = cfg_of(["--config", str(path), "--servers", "3", "--", "--log-level", "warning"])
    assert cfg.servers == 3  # the flag wins
    assert cfg.router_policy == "round_robin"  # from the file
    assert cfg.server_args == ["--mem-fraction-static", "0.5", "--log-level", "warning"]


@pytest.mark.parametrize("argv, message", [
    (["--servers", "0"], "--servers"),
    (["--prefill", "1"], "--prefill/--decode"),
    (["--decode", "2"], "--prefill/--decode"),
    (["--policy", "fifo"], "--policy: must be one of"),
    (["--router-policy", "least_load"], "--router-policy: must be one of"),
    (["--autoscaler", "keda"], "--autoscaler: must be one of"),
    (["--port", "70000"], "--port"),
    (["--timeout-s", "0"], "--timeout-s"),
])
def test_bad_flags_name_the_flag(argv, message):
    with pytest.raises(LaunchError, match=message):
        resolve(argv)


@pytest.mark.parametrize("text, message", [
    ('{"servers": "two"}', "field 'servers'"),
    ('{"bogus": 1}', "field 'bogus'"),
    ('{"policy": "fifo"}', "field 'policy'"),
    ('[1, 2]', "top level must be an object"),
    ('{"servers": ', "cannot read"),
])
def test_bad_config_file_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(LaunchError, match=message) as e:
        resolve(["--config", str(path)])
    assert str(path) in str(e.value)


def test_main_exits_2_on_bad_input_and_starts_nothing(tmp_path, capsys):
    assert main(["--servers", "0"]) == 2
    assert "error: --servers" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_model_fields_are_documented():
    assert all(f.description for f in LaunchConfig.model_fields.values())
