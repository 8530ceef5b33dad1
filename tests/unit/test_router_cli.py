"""The router's command line: sglang_router.launch_router's flags, table-driven."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hyperflexis_sglang.router.cli import ACCEPTED_IGNORED, build_parser, parse_args


@pytest.mark.parametrize("argv, field, expected", [
    (["--worker-urls", "http://a:1", "http://b:2"], "worker_urls", ["http://a:1", "http://b:2"]),
    (["--policy", "round_robin"], "policy", "round_robin"),
    (["--policy", "hfx"], "policy", "hfx"),
    ([], "policy", "cache_aware"),
    (["--pd-disaggregation", "--prefill", "http://p:1", "9000", "--prefill", "http://q:1", "none",
      "--prefill", "http://r:1", "--decode", "http://d:1"], "prefill_urls",
     [("http://p:1", 9000), ("http://q:1", None), ("http://r:1", None)]),
    (["--pd-disaggregation", "--prefill", "http://p:1", "--decode", "http://d:1", "--decode", "http://e:1"],
     "decode_urls", ["http://d:1", "http://e:1"]),
    (["--retry-max-retries", "3"], "attempts", 3),
    (["--retry-max-retries", "3", "--disable-retries"], "attempts", 1),
    (["--cb-failure-threshold", "2"], "cb_failure_threshold", 2),
    (["--request-timeout-secs", "30"], "request_timeout_secs", 30.0),
    (["--api-key", "k"], "api_key", "k"),
    (["--log-level", "warn"], "log_level", "warn"),
    (["--max-concurrent-requests", "8", "--queue-size", "4", "--queue-timeout-secs", "2"], "queue_size", 4),
    (["--prometheus-port", "29001"], "prometheus_port", 29001),
    (["--request-id-headers", "x-trace"], "request_id_headers", ["x-trace"]),
    (["--hfx-slo-classes", "c.json", "--hfx-load-poll-interval-ms", "100"], "hfx_load_poll_interval_ms", 100.0),
    (["--pd-disaggregation", "--prefill", "http://p:1", "--decode", "http://d:1", "--prefill-policy", "bucket"],
     "prefill_policy", "cache_aware"),
])
def test_flag_sets_field(argv, field, expected):
    cfg, _ = parse_args(argv)
    assert getattr(cfg, field) == expected


@pytest.mark.parametrize("argv, flag", [
    (["--dp-aware"], "--dp-aware"),
    (["--model-path", "/m", "--tokenizer-path", "/t"], "--model-path"),
    (["--selector", "app=sglang", "tier=gpu"], "--selector"),
    (["--ca-cert-paths"], "--ca-cert-paths"),
    (["--rate-limit-tokens-per-second", "100"], "--rate-limit-tokens-per-second"),
])
def test_accepted_but_ignored_flags_warn_by_name(argv, flag):
    _, warnings = parse_args(argv)
    assert any(w.startswith(flag + " ") and "no effect" in w for w in warnings), warnings


def test_no_warning_without_ignored_flags():
    assert parse_args(["--worker-urls", "http://a:1", "--policy", "random"])[1] == []


@pytest.mark.parametrize("argv, needle", [
    (["--bogus-flag"], "--bogus-flag"),
    (["--worker"], "--worker"),  # an abbreviation is not silently taken for --worker-urls
    (["--policy", "least_load"], "least_load"),
    (["--prefill", "http://p:1", "abc"], "bootstrap port"),
    (["--retry-max-retries", "0"], "--retry-max-retries"),
    (["--worker-urls", "localhost:8000"], "http://"),
    (["--pd-disaggregation", "--prefill", "http://p:1"], "--decode"),
    (["--port", "x"], "--port"),
])
def test_bad_command_line_exits_2_naming_it(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_every_sglang_router_flag_is_known():
    """Every option of the installed sglang_router's own parser is accepted (implemented or warned)."""
    router_args = pytest.importorskip("sglang_router.router_args")
    import argparse
    theirs = argparse.ArgumentParser()
    router_args.RouterArgs.add_cli_args(theirs)
    ours = build_parser()
    known = {s for a in ours._actions for s in a.option_strings}
    missing = sorted(s for a in theirs._actions for s in a.option_strings if s not in known)
    assert not missing, missing


def test_ignored_list_has_no_implemented_flag():
    implemented = {s for a in build_parser()._actions for s in a.option_strings if a.dest and
                   not a.dest.startswith("ignored_")}
    ignored = {"--" + n for names in ACCEPTED_IGNORED.values() for n in names}
    assert not implemented & ignored


def test_module_cli_exits_2_on_unknown_flag():
    r = subprocess.run([sys.executable, "-m", "hyperflexis_sglang.router", "--worker-urls", "http://a:1", "--nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--nope" in r.stderr
