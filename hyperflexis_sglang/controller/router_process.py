"""The HFX router as a child process (``python -m hyperflexis_sglang.router``), stopped by its own PID.

Used by the launcher and by tests. ``stop()`` sends SIGTERM first: the router
then stops taking requests and lets the ones in flight finish (graceful
drain), and is killed only if it has not exited within ``grace_s``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .process import ChildProcess


class RouterProcessError(RuntimeError):
    pass


class RouterProcess(ChildProcess):
    def __init__(self, host: str, port: int, policy: str = "hfx", pd: bool = False, slo_classes: str | None = None,
                 extra_args: list[str] | None = None):
        connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        super().__init__(f"http://{connect}:{port}", "router")
        self.host, self.port = host, port
        self.args = ["--host", host, "--port", str(port), "--policy", policy]
        if pd:
            self.args += ["--pd-disaggregation", "--prefill-policy", policy, "--decode-policy", policy]
        if slo_classes:
            self.args += ["--hfx-slo-classes", str(Path(slo_classes).resolve())]
        self.args += list(extra_args or [])

    def start(self, timeout_s: float = 60.0) -> "RouterProcess":
        self.spawn([sys.executable, "-m", "hyperflexis_sglang.router", *self.args])
        self.wait_url("/liveness", timeout_s, RouterProcessError, poll_s=0.2)
        return self

    def stop(self, grace_s: float = 30.0) -> None:
        super().stop(grace_s)
