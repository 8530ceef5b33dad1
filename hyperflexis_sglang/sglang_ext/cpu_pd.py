"""Let a P/D prefill server send its KV over Mooncake when there is no CUDA device.

Why: SGLang 0.5.23's prefill side (``disaggregation/prefill.py``,
``SchedulerDisaggregationPrefillMixin._send_kv_chunk``) copies the page
indices of every chunk into *pinned* host memory and records a
``torch.cuda.Event`` when the sender says it takes host tensor indices,
which ``MooncakeKVSender`` does (class attribute
``supports_host_tensor_indices = True``). On a plain CPU the prefill
scheduler then dies with "Found no NVIDIA driver". With the attribute False
the same function computes the indices with ``kv_to_page_indices`` on the
host, the path other transfer backends take; the KV that moves is the same
(decode output through a pair equals a collocated server's).

The early send of a cached prefix (``maybe_send_cached_prefix_chunk``) also
records a CUDA event under the overlap loop; it is an optimisation, so the
variable that turns it off defaults to 0 here (an explicit setting wins).

Still needed from the user: ``MOONCAKE_PROTOCOL=tcp MC_FORCE_TCP=1`` (the
transfer engine's transport) and, on the decode server,
``--disaggregation-decode-retraction-backup cpu_tensor``.

Gate: :func:`wanted` is true only without a CUDA device and when asked for
(``HFX_CPU_PD=1``, or ``HFX_ENABLE=1`` without ``HFX_CPU_PD=0``), so GPU
deployments and stock servers are never changed.
"""

from __future__ import annotations

import logging
import os

from .config import PluginConfig

log = logging.getLogger("hyperflexis_sglang")

EARLY_SEND_ENV = "SGLANG_DISAGG_PREFILL_EARLY_SEND_CACHED_PREFIX"
APPLIED: list[str] = []


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def wanted(cfg: PluginConfig) -> bool:
    return cfg.cpu_pd_wanted and not _has_cuda()


def apply() -> list[str]:
    """Patch this process (idempotent); returns what was changed."""
    if APPLIED:
        return APPLIED
    try:
        from sglang.srt.disaggregation.mooncake.conn import MooncakeKVSender
    except Exception as e:  # Mooncake backend not importable: nothing to fix
        log.info("hyperflexis: CPU P/D fix skipped, Mooncake sender not importable (%s)", e)
        return APPLIED
    MooncakeKVSender.supports_host_tensor_indices = False
    APPLIED.append("MooncakeKVSender.supports_host_tensor_indices=False")
    if os.environ.setdefault(EARLY_SEND_ENV, "0") == "0":
        APPLIED.append(f"{EARLY_SEND_ENV}=0")
    log.info("hyperflexis: no CUDA device, CPU P/D fix applied in pid %d: %s", os.getpid(), ", ".join(APPLIED))
    return APPLIED
