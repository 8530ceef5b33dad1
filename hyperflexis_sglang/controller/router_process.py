"""The HFX router as a child process (``python -m hyperflexis_sglang.router``), stopped by its own PID.

Used by the launcher and by tests. ``stop()`` sends SIGTERM first: the router
then stops taking requests and lets the ones in flight finish (graceful
drain), and is killed only if it has not exited within ``grace_s``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


class RouterProcessError(RuntimeError):
    pass


class RouterProcess:
    def __init__(self, host: str, port: int, policy: str = "hfx", pd: bool = False, slo_classes: str | None = None,
                 extra_args: list[str] | None = None):
        self.host, self.port = host, port
        connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.url = f"http://{connect}:{port}"
        self.args = ["--host", host, "--port", str(port), "--policy", policy]
        if pd:
            self.args += ["--pd-disaggregation", "--prefill-policy", policy, "--decode-policy", policy]
        if slo_classes:
            self.args += ["--hfx-slo-classes", str(Path(slo_classes).resolve())]
        self.args += list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="hfx-router-", suffix=".log")[1])

    def start(self, timeout_s: float = 60.0) -> "RouterProcess":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "hyperflexis_sglang.router", *self.args], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(), start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RouterProcessError(f"router exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/liveness", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RouterProcessError(f"router not live on {self.url} after {timeout_s:.0f} s:\n{self.log_tail()}")

    def post(self, path: str, body: dict, timeout: float = 300.0) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self, grace_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
