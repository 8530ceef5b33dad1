"""Which GPUs this machine has and which one a new local instance gets (one GPU per instance, round robin).

``assign_gpu`` and the parsers are pure (tested as such); only ``detect_gpus``
looks at the environment and runs ``nvidia-smi``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterable


def parse_visible_devices(value: str | None) -> list[str] | None:
    """GPU ids from ``CUDA_VISIBLE_DEVICES``; None when unset (then ask nvidia-smi), [] when set empty or -1."""
    if value is None:
        return None
    ids = [v.strip() for v in value.split(",") if v.strip()]
    return [] if not ids or ids[0] == "-1" else ids


def parse_nvidia_smi(text: str) -> list[str]:
    """GPU indices from ``nvidia-smi --query-gpu=index --format=csv,noheader``."""
    return [line.strip() for line in text.splitlines() if line.strip().isdigit()]


def assign_gpu(gpus: list[str], in_use: Iterable[str], counter: int) -> tuple[str | None, int]:
    """The GPU for the next instance and the next counter value.

    Round robin over ``gpus`` starting at ``counter``, skipping GPUs in use; when
    every GPU is in use it still goes round robin (instances then share).
    Returns (None, counter) without GPUs.
    """
    if not gpus:
        return None, counter
    busy = set(in_use)
    n = len(gpus)
    for k in range(n):
        gpu = gpus[(counter + k) % n]
        if gpu not in busy:
            return gpu, counter + k + 1
    return gpus[counter % n], counter + 1


def detect_gpus(env: dict | None = None) -> list[str]:
    env = os.environ if env is None else env
    visible = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        return visible
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else []
