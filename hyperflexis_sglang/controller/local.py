"""Local provisioner: start and stop real SGLang servers (CPU tiny model or GPU) as child processes.

Each server is a ``ChildProcess`` (own process group, stopped by its PID with
the scheduler/detokenizer processes SGLang spawns; log kept for errors).
Ports are chosen free by the OS.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from .process import ChildProcess

CPU_ARGS = ["--device", "cpu", "--model-impl", "transformers", "--max-total-tokens", "4096"]
# An idle SGLang scheduler busy-polls a core; on a small CPU machine running several servers that core is
# taken from the busy ones (a P/D server starting beside three idle ones took ~160 s to answer /health on
# 2 cores). CPU servers sleep while fully idle (SGLang's IdleSleeper, woken by the next request or
# control call on the tokenizer/RPC sockets). A P/D server is fully idle only with its bootstrap,
# prealloc, transfer and in-flight queues empty and no deferred KV release pending
# (``Scheduler.is_fully_idle``), so a KV transfer never waits for the sleeper.
CPU_IDLE_ARGS = ["--sleep-on-idle"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    pass


class SGLangServer(ChildProcess):
    def __init__(self, model: str | Path, hfx: bool = False, extra_args: list[str] | None = None,
                 env: dict | None = None, port: int | None = None, name: str = "sglang", cpu: bool = True):
        self.model = str(model)
        self.port = port or free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", name)
        self.hfx = hfx
        self.args = list(extra_args or [])
        self.env = dict(env or {})
        self.cpu = cpu  # add the CPU flags (torch-native attention, small KV pool)

    def command(self) -> list[str]:
        idle = CPU_IDLE_ARGS if self.cpu else []
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
        self.spawn(self.command(), env)

    def wait_healthy(self, timeout: float = 240.0) -> "SGLangServer":
        self.wait_url("/health", timeout, ServerError)
        return self

    def hfx_state(self) -> dict | None:
        info = self.get("/server_info")
        states = info.get("internal_states") or [{}]
        return states[0].get("hfx")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
