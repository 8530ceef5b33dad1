"""Processes of the router benchmark: echo backends, sglang-router, the HFX router, a client.

Each runs in its own process group on a free port and is stopped by its PID
(``SGLangServer``'s start/health/stop machinery, with another command line).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.controller.local import SGLangServer, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent


class Service(SGLangServer):
    """A non-SGLang process managed like an SGLang server (free port, /health, stop by process group)."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict | None = None):
        super().__init__(model="", env=env, port=port, name=name, cpu=False)
        self.argv = argv

    def command(self) -> list[str]:
        return self.argv


def echo_backend() -> Service:
    port = free_port()
    return Service("echo", [sys.executable, str(HERE / "echo_backend.py"), "--port", str(port)], port)


ROUTERS = {  # router kind -> module run with python -m
    "sglang-router": "sglang_router.launch_router",
    "hfx-router": "hyperflexis_sglang.router",
}


def router(kind: str, policy: str, workers: list[str], extra: list[str] | None = None) -> Service:
    """A router of ``kind`` over ``workers``; logs at warn level (no per-request log line)."""
    port = free_port()
    argv = [sys.executable, "-m", ROUTERS[kind], "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *workers, "--policy", policy, "--log-level", "warn",
            "--prometheus-port", str(free_port()), *(extra or [])]
    return Service(f"{kind}-{policy}", argv, port)


def run_client(url: str, *args: str, timeout: float = 300) -> dict:
    """Run the load client (bench/router/httpclient.py) in its own process; its JSON result."""
    cmd = [sys.executable, str(HERE / "httpclient.py"), "--url", url, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"client failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])
