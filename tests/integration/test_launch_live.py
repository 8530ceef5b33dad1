"""``python -m hyperflexis_sglang.launch`` end to end: router + a P/D pair (Mooncake TCP) of real SGLang CPU servers.

The launcher runs as a user runs it (a subprocess, no model given: the
generated tiny model on the CPU). The test waits for its status lines, sends
a streaming and an OpenAI request through the printed router URL, then
presses Ctrl-C (SIGINT) and checks that every process it printed is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from hyperflexis_sglang.testing.client import stream_generate

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of the (already reaped) launcher counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_launch_pd_serves_through_router_and_stops_on_ctrl_c(tiny_model, cpu_classes):
    cmd = [sys.executable, "-m", "hyperflexis_sglang.launch", "--prefill", "1", "--decode", "1", "--port", "0",
           "--model-path", str(tiny_model), "--slo-classes", str(cpu_classes)]
    env = {**os.environ, "HFX_CPU_PLATFORM": os.environ.get("HFX_CPU_PLATFORM", "0")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=tempfile.gettempdir(), start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("serving;"):
                break
        out = "\n".join(lines)
        assert lines and lines[-1].startswith("serving;"), out
        router = re.search(r"router (http://\S+)", out).group(1)
        pids = [int(p) for p in re.findall(r"pid (\d+)", out)]
        roles = re.findall(r"local-\d+: (\w+)", out)
        assert sorted(roles) == ["decode", "prefill"] and len(pids) == 2, out

        body = {"text": "The launcher", "sampling_params": {"max_new_tokens": 8, "temperature": 0,
                                                             "custom_params": {"slo": {"class": "interactive"}}}}
        t = stream_generate(router, body)
        assert t.status == 200 and not t.error and t.tokens == 8, (t.status, t.error)
        req = urllib.request.Request(router + "/v1/completions", data=json.dumps(
            {"model": "tiny", "prompt": "Hi", "max_tokens": 4, "temperature": 0}).encode(),
            headers={"Content-Type": "application/json", "x-slo-class": "batch"})
        with urllib.request.urlopen(req, timeout=300) as r:
            assert r.status == 200 and json.loads(r.read())["choices"][0]["text"]
        with urllib.request.urlopen(router + "/workers", timeout=10) as r:
            kinds = sorted(w["worker_type"] for w in json.loads(r.read())["workers"])
        assert kinds == ["decode", "prefill"]

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, rest
        assert "router and all servers stopped" in rest
        assert not [p for p in pids if alive(p)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
