"""Out-of-tree SGLang platform that runs SGLang's own model code on a plain CPU.

Why: with `--device cpu` and no platform plugin, SGLang 0.5.23 falls back to
the base `SRTPlatform` (neither CPU nor out-of-tree), and e.g. the rotary
embedding then imports `vllm._custom_ops`. Its in-tree CPU platform needs
`SGLANG_USE_CPU_ENGINE=1`, which imports sgl_kernel CPU ops that are not on
the package index. An out-of-tree (`PlatformEnum.OOT`) platform makes layers
take their pure-PyTorch paths instead.

Guarantee: `activate()` returns the class path only when HFX_CPU_PLATFORM=1 and
no CUDA device is visible, so installing the entry point never changes a GPU
machine or a default CPU run.

Entry point (pyproject.toml):
    [project.entry-points."sglang.srt.platforms"]
    hfx_cpu = "hyperflexis_sglang.sglang_ext.cpu_platform:activate"
"""

from __future__ import annotations

import os

ENV_FLAG = "HFX_CPU_PLATFORM"
CLASS_PATH = "hyperflexis_sglang.sglang_ext.cpu_platform.HfxCpuPlatform"


def activate() -> str | None:
    """`sglang.srt.platforms` entry point: the platform class path, or None."""
    if os.environ.get(ENV_FLAG, "0") != "1":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return CLASS_PATH


def __getattr__(name: str):
    # The class needs sglang; build it on first access so that `activate`
    # (and this module) import without sglang installed.
    if name == "HfxCpuPlatform":
        cls = _build_platform_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_platform_class() -> type:
    from sglang.srt.platforms.cpu import CpuDeviceMixin
    from sglang.srt.platforms.device_mixin import PlatformEnum
    from sglang.srt.platforms.interface import PlatformCapabilities, SRTPlatform

    class HfxCpuPlatform(CpuDeviceMixin, SRTPlatform):
        """CPU device ops from SGLang's CpuDeviceMixin, flagged out-of-tree.

        No Triton, no graph capture, no pinned memory; attention through
        the `torch_native` backend, no torch.compile backend ("eager").
        """

        _enum = PlatformEnum.OOT
        device_name = "cpu"
        device_type = "cpu"
        capabilities = PlatformCapabilities()  # all False: torch-native paths

        def get_device(self, device_id: int = 0) -> str:  # type: ignore[override]
            return "cpu"

        def get_default_attention_backend(self) -> str:
            return "torch_native"

        def get_compile_backend(self, mode: str | None = None) -> str:
            return "eager"

        def is_pin_memory_available(self, device=None) -> bool:
            return False

    HfxCpuPlatform.__module__ = __name__
    HfxCpuPlatform.__qualname__ = "HfxCpuPlatform"
    return HfxCpuPlatform
