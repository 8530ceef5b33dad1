"""A weight agent in a plain process holding a safetensors model's tensors (no SGLang): benchmarks and tests.

    python -m hyperflexis_sglang.weights.standalone --model DIR [--dummy] [--host 127.0.0.1] [--port 0]

Prints one JSON line ``{"agent_url": ..., "load_s": ...}`` when serving, then
serves until SIGTERM. ``--dummy`` allocates tensors of the right shapes with
random values instead of reading the file (like ``--load-format dummy``);
``POST /hfx/weights/load_disk`` then reads the file into them.
Bad flags or a missing model exit 2 with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SAFETENSORS = "model.safetensors"


def model_file(model: Path) -> Path:
    path = model / SAFETENSORS if model.is_dir() else model
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such safetensors file")
    return path


def load_tensors(path: Path, dummy: bool, device: str = "cpu") -> dict:
    """The file's tensors (read), or tensors of the same names/shapes/dtypes with random values (dummy)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    if not dummy:  # load_file maps the file; the copy reads it (as a server copies into its parameters)
        return {k: v.to(device, copy=True) for k, v in load_file(str(path)).items()}
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            sl = f.get_slice(k)
            dtype = getattr(torch, {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[sl.get_dtype()])
            out[k] = torch.empty(sl.get_shape(), dtype=dtype, device=device).uniform_(-1e-3, 1e-3)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hyperflexis_sglang.weights.standalone",
                                description="Serve a safetensors model's tensors through a weight agent.")
    p.add_argument("--model", required=True, type=Path, help="model directory or .safetensors file")
    p.add_argument("--dummy", action="store_true", help="random tensors of the right shapes (a new instance)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--pace-gbs", type=float, default=0.0, metavar="GBS",
                   help="benchmarks: cap this agent's sending at GBS GB/s (an emulated NIC); 0: off")
    p.add_argument("--exit-after-sent", type=int, default=0, metavar="N",
                   help="fault injection for tests: the process dies (exit 9) after sending N buckets")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.pace_gbs < 0:
        parser.error("--pace-gbs must be >= 0")
    try:
        path = model_file(args.model)
    except FileNotFoundError as e:
        parser.error(f"--model: {e}")  # exits 2
    from .agent import WeightAgent
    t0 = time.perf_counter()
    params = load_tensors(path, args.dummy, args.device)
    load_s = time.perf_counter() - t0

    def reload() -> None:
        for k, v in load_tensors(path, False, args.device).items():
            params[k].copy_(v)

    sent = []

    def die_after(bucket: int) -> None:
        sent.append(bucket)
        if len(sent) >= args.exit_after_sent > 0:
            os._exit(9)

    agent = WeightAgent(lambda: params.items(), args.host, args.port,
                        state="unloaded" if args.dummy else "ready", load_disk=reload, on_sent=die_after, pace_gbs=args.pace_gbs).start()
    print(json.dumps({"agent_url": agent.url, "load_s": load_s, "pid": os.getpid()}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    agent.stop()
    return 0


class AgentProcess:
    """Start/stop a standalone agent as a child process (stopped by its own PID)."""

    def __init__(self, model: Path, dummy: bool = False, device: str = "cpu", env: dict | None = None,
                 extra: list[str] | None = None):
        self.cmd = [sys.executable, "-m", "hyperflexis_sglang.weights.standalone", "--model", str(model),
                    "--device", device] + (["--dummy"] if dummy else []) + list(extra or [])
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.load_s = 0.0

    def start(self, timeout: float = 300.0) -> "AgentProcess":
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> "AgentProcess":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                                     text=True, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 300.0) -> "AgentProcess":
        line = _readline(self.proc, timeout)
        if not line:
            self.stop()
            raise RuntimeError(f"agent did not start: {self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")
        info = json.loads(line)
        self.url, self.load_s = info["agent_url"], info["load_s"]
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def kill(self) -> None:
        """SIGKILL now (fault injection)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ""


if __name__ == "__main__":
    sys.exit(main())
