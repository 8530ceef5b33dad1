"""``local`` provisioner: SGLang server processes on this machine.

One process group per instance (``SGLangServer``), stopped by its PID. With
GPUs (``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi``) each instance gets one GPU,
round robin (``controller/gpus.py``); without, it runs on the CPU with the CPU
flags. P/D roles get the Mooncake flags of ``tests/integration/test_pd_live.py``
(TCP transport; the decode retraction backup that works without CUDA) and a
free bootstrap port (prefill always; every P/D instance when the runtime role
switch is on, because SGLang then runs a bootstrap server on each).

Weights: ``disk`` starts normally; ``peer`` starts with ``--load-format dummy``
(random weights: it must not serve yet) and the controller pulls the weights
from running peers (D2D loader); the instance reaches the router only after
the loader verified its checksums (``link_steps``). Every
instance runs the weight agent (``HFX_WEIGHTS_AGENT=1``) so it can be a seed.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..gpus import assign_gpu, detect_gpus
from ..local import SGLangServer, ServerError, free_port
from .base import Handle, ProvisionError

PD_ENV = {"MOONCAKE_PROTOCOL": "tcp", "MC_FORCE_TCP": "1"}  # the plugin's CPU P/D fix sets the rest


@dataclass(frozen=True)
class LocalConfig:
    model: str  # model directory
    hfx: bool = True  # HFX plugin on (HFX_ENABLE=1)
    cpu: bool | None = None  # CPU flags; None: CPU exactly when no GPU is found
    extra_args: tuple[str, ...] = ()  # more sglang.launch_server flags for every instance
    env: dict = field(default_factory=dict)  # more environment for every instance
    transfer_backend: str = "mooncake"  # P/D KV transfer backend
    role_switch_api: bool = False  # start P/D instances with --enable-pd-role-switch
    weights_agent: bool = True  # run the D2D weight agent in every instance (HFX_WEIGHTS_AGENT=1)
    gpus: tuple[str, ...] | None = None  # GPU ids to use; None: detect


def role_args(role: str, backend: str, bootstrap_port: int | None, role_switch: bool, cpu: bool = True) -> list[str]:
    """sglang.launch_server flags of a role (pure). ``cpu``: add the decode retraction backup that needs no CUDA."""
    if role == "collocated":
        return []
    args = ["--disaggregation-mode", role, "--disaggregation-transfer-backend", backend]
    if bootstrap_port is not None:
        args += ["--disaggregation-bootstrap-port", str(bootstrap_port)]
    if cpu and (role == "decode" or role_switch):  # a switchable prefill may become a decode server
        args += ["--disaggregation-decode-retraction-backup", "cpu_tensor"]
    if role_switch:
        args.append("--enable-pd-role-switch")
    return args


class LocalProvisioner:
    name = "local"

    def __init__(self, cfg: LocalConfig):
        self.cfg = cfg
        self.transfer_backend = cfg.transfer_backend
        self.role_switch_api = cfg.role_switch_api
        self.gpus = list(cfg.gpus) if cfg.gpus is not None else detect_gpus()
        self.cpu = (not self.gpus) if cfg.cpu is None else cfg.cpu
        self.servers: dict[str, SGLangServer] = {}
        self._gpu_of: dict[str, str] = {}
        self._rr = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, role: str, weight_source: str) -> Handle:
        with self._lock:
            iid = f"local-{next(self._ids)}"
            gpu, self._rr = assign_gpu(self.gpus, self._gpu_of.values(), self._rr)
            if gpu is not None:
                self._gpu_of[iid] = gpu
        needs_boot = role == "prefill" or (role != "collocated" and self.role_switch_api)
        boot = free_port() if needs_boot else None
        args = [*self.cfg.extra_args, *role_args(role, self.transfer_backend, boot, self.role_switch_api, self.cpu)]
        env = {**self.cfg.env}
        if role != "collocated":
            env = {**PD_ENV, **env}
        if self.cfg.weights_agent:
            env["HFX_WEIGHTS_AGENT"] = "1"
        if weight_source == "peer":
            args += ["--load-format", "dummy"]
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        server = SGLangServer(self.cfg.model, hfx=self.cfg.hfx, extra_args=args, env=env, name=f"{iid}-{role}",
                              cpu=self.cpu)
        try:
            server.start_async()
        except OSError as e:
            self._forget(iid)
            raise ProvisionError(f"{iid}: could not start SGLang: {e}") from e
        self.servers[iid] = server
        return Handle(iid, role, server.url, boot, weight_source, gpu,
                      {"pid": server.proc.pid, "log": str(server.log_path)})

    def wait_ready(self, handle: Handle, timeout_s: float) -> Handle:
        server = self._server(handle)
        try:
            server.wait_healthy(timeout_s)
        except ServerError as e:
            self.remove(handle)
            raise ProvisionError(f"{handle.iid} did not become healthy: {e}") from e
        return handle

    def remove(self, handle: Handle) -> None:
        server = self.servers.pop(handle.iid, None)
        if server is not None:
            server.stop()
            try:
                Path(server.log_path).unlink()
            except OSError:
                pass
        self._forget(handle.iid)

    def alive(self, handle: Handle) -> bool:
        server = self.servers.get(handle.iid)
        return server is not None and server.proc is not None and server.proc.poll() is None

    def log_tail(self, handle: Handle) -> str:
        server = self.servers.get(handle.iid)
        return server.log_tail() if server else ""

    def stop_all(self) -> None:
        for iid in list(self.servers):
            self.remove(Handle(iid, "collocated"))

    def _server(self, handle: Handle) -> SGLangServer:
        server = self.servers.get(handle.iid)
        if server is None:
            raise ProvisionError(f"{handle.iid} is not an instance of this provisioner")
        return server

    def _forget(self, iid: str) -> None:
        with self._lock:
            self._gpu_of.pop(iid, None)
