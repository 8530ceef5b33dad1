"""A child process in its own session (process group), reached over HTTP, stopped by its own PID.

Shared by ``SGLangServer`` and ``RouterProcess``: stopping the group also
stops what the child spawned (SGLang's scheduler and detokenizer); SIGTERM
first (graceful: SGLang and the router drain), SIGKILL after ``grace_s``.
Children run from a neutral directory: a folder named like the package would
shadow the installed one. The log file is kept for error messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


class ChildProcess:
    url: str  # base URL of the child's HTTP server
    name: str  # for messages

    def __init__(self, url: str, name: str):
        self.url, self.name = url, name
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"hfx-{name}-", suffix=".log")[1])

    def spawn(self, cmd: list[str], env: dict | None = None) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=tempfile.gettempdir(), start_new_session=True)

    def wait_url(self, path: str, timeout_s: float, error: type[Exception], poll_s: float = 0.5) -> None:
        """Until ``GET url+path`` answers 200; ``error`` (after stopping the child) if it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise error(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(poll_s)
        self.stop()
        raise error(f"{self.name} not answering {path} after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children left behind in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def post(self, path: str, body: dict, timeout: float = 120.0) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str, timeout: float = 30.0) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())
