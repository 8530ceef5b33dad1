"""Tensor side of D2D weight loading: manifests, bucket packing and checksums (torch only, no SGLang).

On NCCL a bucket travels as one contiguous uint8 tensor on the GPU: the
raw bytes of its parameters back to back in the bucket's order
(``transport.pack_into`` / :func:`unpack`); on gloo each parameter's own
bytes are sent (see transport).

Checksums are BLAKE2b-128 of each parameter's raw bytes (GPU tensors are
copied to the host first); the total is BLAKE2b of the sorted
``name:digest`` lines. Equal totals mean bit-identical weights.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

import torch

from ..core.weights import Bucket, ParamSpec, Piece

HASH_CHUNK = 64 << 20  # bytes hashed per host copy of a GPU tensor


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def manifest(named: Iterable[tuple[str, torch.Tensor]]) -> list[ParamSpec]:
    """ParamSpec of every parameter, in the model's own order."""
    return [ParamSpec(n, dtype_name(t.dtype), tuple(t.shape), t.numel() * t.element_size()) for n, t in named]


def bytes_view(t: torch.Tensor) -> torch.Tensor:
    if not t.is_contiguous():
        raise ValueError("D2D weight transfer needs contiguous parameters")
    return t.detach().reshape(-1).view(torch.uint8)


def piece_view(piece: Piece, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The piece's bytes inside its parameter (a view: writing it writes the parameter)."""
    return bytes_view(params[piece.name])[piece.offset:piece.offset + piece.nbytes]


def unpack(bucket: Bucket, buf: torch.Tensor, params: Mapping[str, torch.Tensor]) -> None:
    """Copy a fully received bucket into the parameters (in place: addresses, e.g. in CUDA graphs, stay)."""
    if buf.numel() != bucket.nbytes:
        raise ValueError(f"bucket {bucket.index}: {buf.numel()} bytes, expected {bucket.nbytes}")
    at = 0
    with torch.no_grad():
        for piece in bucket.pieces:
            piece_view(piece, params).copy_(buf[at:at + piece.nbytes])
            at += piece.nbytes


def param_checksum(t: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    flat = bytes_view(t)
    for at in range(0, flat.numel(), HASH_CHUNK):
        chunk = flat[at:at + HASH_CHUNK]
        h.update(chunk.cpu().numpy().tobytes() if chunk.device.type != "cpu" else memoryview(chunk.numpy()))
    return h.hexdigest()


def checksums(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, str]:
    """Per-parameter BLAKE2b-128 hex digests."""
    return {n: param_checksum(t) for n, t in named}


def total_checksum(per_param: Mapping[str, str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(per_param):
        h.update(f"{name}:{per_param[name]}\n".encode())
    return h.hexdigest()
