"""Local provisioner: start and stop real SGLang servers (CPU tiny model or GPU) as child processes.

Each server runs in its own session (process group) so that stopping it by
its PID also stops the scheduler/detokenizer processes SGLang spawns. Ports
are chosen free by the OS. The log file is kept for error messages.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CPU_ARGS = ["--device", "cpu", "--model-impl", "transformers", "--max-total-tokens", "4096"]
# An idle SGLang scheduler busy-polls a core; on a small CPU machine running several servers that core is
# taken from the busy ones. Collocated CPU servers sleep while idle (woken by the next request); P/D
# servers keep polling (KV transfers arrive outside the sockets the idle sleeper watches).
CPU_IDLE_ARGS = ["--sleep-on-idle"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    pass


class SGLangServer:
    def __init__(self, model: str | Path, hfx: bool = False, extra_args: list[str] | None = None,
                 env: dict | None = None, port: int | None = None, name: str = "sglang", cpu: bool = True):
        self.model = str(model)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hfx = hfx
        self.args = list(extra_args or [])
        self.env = dict(env or {})
        self.name = name
        self.cpu = cpu  # add the CPU flags (torch-native attention, small KV pool)
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"hfx-{name}-", suffix=".log")[1])

    def command(self) -> list[str]:
        idle = CPU_IDLE_ARGS if self.cpu and "--disaggregation-mode" not in self.args else []
        return [sys.executable, "-m", "sglang.launch_server", "--model-path", self.model, *(CPU_ARGS if self.cpu else []),
                *idle,
                "--host", "127.0.0.1", "--port", str(self.port), *self.args]

    def start(self, timeout: float = 240.0) -> "SGLangServer":
        self.start_async()
        return self.wait_healthy(timeout)

    def start_async(self) -> None:
        env = {**os.environ, **self.env}
        env.pop("HFX_ENABLE", None)
        if self.hfx:
            env["HFX_ENABLE"] = "1"
        log = open(self.log_path, "wb")
        # Run from a neutral directory: a folder named like the plugin package would shadow it.
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=tempfile.gettempdir(), start_new_session=True)
        log.close()

    def wait_healthy(self, timeout: float = 240.0) -> "SGLangServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
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

    def hfx_state(self) -> dict | None:
        info = self.get("/server_info")
        states = info.get("internal_states") or [{}]
        return states[0].get("hfx")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
