"""Cold-start and role-switch time model: how long until a new instance serves.

    start_s(source) = process_start_s + load_s(source)
    load_s("disk")  = weight_bytes / disk_gbs            (one node's storage feeds all its GPUs)
    load_s("peer")  = weight_bytes / tp / peer_gbs       (device-to-device: each GPU pulls its shard
                                                          from a running peer over its own link)
    switch_s        = drain (measured by the caller) + role_switch_s (weights stay on the GPU)

Constants (defaults; every one is a constructor argument):

* ``process_start_s`` 15 s: SGLang server start without the weight load --
  Python imports, CUDA/NCCL init, KV pool allocation, CUDA-graph capture.
  Order of magnitude of SGLang launch logs for 8B-class models on H100
  (our assumption; the live controller measures its own).
* ``disk_gbs`` 2 GB/s: loading safetensors from a local NVMe SSD. A PCIe 4.0
  NVMe drive reads ~7 GB/s sequentially (e.g. Samsung 990 PRO datasheet:
  7,450 MB/s); deserialisation and host-to-device copies keep end-to-end
  loaders well below that. Network storage is slower still.
* ``peer_gbs`` 25 GB/s: one 200 Gb/s RDMA NIC per GPU (the simulator's P/D
  link default; ConnectX-7 does 400 Gb/s, NVLink within a node ~450 GB/s
  per direction on H100), as SGLang's ``remote_instance`` loader uses.
* ``role_switch_s`` 2 s: re-registering a drained instance in its new role
  (P/D bootstrap server, router update); no weights move.

Weight bytes come from ``perf_model.MODELS`` (parameters x dtype bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..perf_model import MODELS, PerfModel
from .types import WEIGHT_SOURCES


class ScalingConfigError(ValueError):
    """A bad scaling option, policy name or cold-start setting; the message names it."""


@dataclass(frozen=True)
class ColdStartModel:
    weight_bytes: float  # model weights in bytes (all tensor-parallel shards together)
    tp: int = 1  # GPUs per instance (shards loaded in parallel from peers)
    process_start_s: float = 15.0  # process start without the weight load (see module doc)
    disk_gbs: float = 2.0  # GB/s from local disk (see module doc)
    peer_gbs: float = 25.0  # GB/s per GPU from a running peer (D2D)
    role_switch_s: float = 2.0  # switching a drained instance's role

    def __post_init__(self) -> None:
        for name in ("weight_bytes", "disk_gbs", "peer_gbs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ScalingConfigError(f"cold start: {name} must be > 0, got {value!r}")
        for name in ("process_start_s", "role_switch_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ScalingConfigError(f"cold start: {name} must be >= 0, got {value!r}")
        if not (isinstance(self.tp, int) and self.tp >= 1):
            raise ScalingConfigError(f"cold start: tp must be an integer >= 1, got {self.tp!r}")

    def load_s(self, source: str) -> float:
        """Seconds to bring the weights onto the new instance's GPUs from ``source``."""
        if source == "disk":
            return self.weight_bytes / (self.disk_gbs * 1e9)
        if source == "peer":
            return self.weight_bytes / self.tp / (self.peer_gbs * 1e9)
        raise ScalingConfigError(f"weight source must be one of {WEIGHT_SOURCES}, got {source!r}")

    def start_s(self, source: str) -> float:
        """Seconds from the add decision until the instance is ready to serve."""
        return self.process_start_s + self.load_s(source)

    @classmethod
    def for_model(cls, model: str, tp: int = 1, **opts) -> "ColdStartModel":
        """The model for a preset model name (``perf_model.MODELS``)."""
        if model not in MODELS:
            raise ScalingConfigError(f"cold start: unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
        return cls(weight_bytes=MODELS[model].weight_bytes, tp=tp, **opts)

    @classmethod
    def for_perf(cls, perf: PerfModel, **opts) -> "ColdStartModel":
        """From a preset performance model's name (``model/gpu/tpN``); else 8B-class weights."""
        model = perf.name.split("/")[0]
        spec = MODELS.get(model, MODELS["llama-3-8b"])
        return cls(weight_bytes=spec.weight_bytes, tp=perf.num_gpus, **opts)
