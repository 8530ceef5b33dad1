"""What the controller asks of a provisioner, and the handle of one instance.

A provisioner creates and deletes serving instances on some engine (local
processes, Kubernetes pods); it knows nothing about routers, draining or
policies. ``add`` returns as soon as the instance is launched; ``wait_ready``
blocks until its HTTP server is healthy and returns the handle with its final
URL (a pod's IP is known only then). Errors are raised as ``ProvisionError``;
the controller retries them with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol


class ProvisionError(RuntimeError):
    pass


@dataclass(frozen=True)
class Handle:
    iid: str  # provisioner-unique instance id (local: "local-3"; Kubernetes: the pod name)
    role: str  # collocated | prefill | decode
    url: str = ""  # http://host:port of the SGLang server ("" until known)
    bootstrap_port: int | None = None  # P/D bootstrap port (prefill; every P/D instance with role switch on)
    weight_source: str = "disk"  # how it was started: disk (real weights) or peer (dummy weights, load from peers)
    gpu: str | None = None  # GPU id it was given (None: CPU, or the engine decides)
    detail: dict = field(default_factory=dict)  # engine specifics (pid, log path, StatefulSet, ordinal)

    def with_(self, **kw) -> "Handle":
        return replace(self, **kw)


class Provisioner(Protocol):
    name: str
    role_switch_api: bool  # instances start with --enable-pd-role-switch
    transfer_backend: str | None  # P/D KV transfer backend (None: collocated only)

    def add(self, role: str, weight_source: str) -> Handle: ...

    def wait_ready(self, handle: Handle, timeout_s: float) -> Handle: ...

    def remove(self, handle: Handle) -> None: ...

    def alive(self, handle: Handle) -> bool: ...

    def log_tail(self, handle: Handle) -> str: ...
