"""Engine iteration-time and KV-capacity model.

One engine iteration (a forward pass over a batch) is predicted as a linear
function of its composition::

    t = base                      # weight read + launch/scheduling overhead (any non-empty batch)
      + per_prefill_token * new prefill tokens       (GEMM FLOPs, compute bound)
      + per_attn_pair     * prefill query-key pairs  (attention FLOPs; cached prefix counts here)
      + per_prefill_seq   * prefill sequences        (per-sequence overhead)
      + per_decode_req    * decode requests          (GEMM FLOPs + sampling per decoded token)
      + per_kv_token      * KV tokens read by decode (memory bound)

A sum instead of a roofline ``max`` keeps the model linear, so it can be
fitted by least squares from measured (composition, duration) samples and
inverted cheaply ("how many prefill tokens fit in T seconds?").

Presets derive the coefficients from FLOPs and bytes with efficiency factors
(documented below), from public specs:
* GPUs: NVIDIA H100 SXM5 datasheet (989 TFLOPS dense BF16, 3.35 TB/s HBM3,
  80 GB); A100 SXM4 80GB datasheet (312 TFLOPS BF16, 2.039 TB/s, 80 GB).
* Models: Meta Llama 3 model card / config.json (8B: 32 layers, hidden 4096,
  32 heads, 8 KV heads, head dim 128, 8.03e9 params; 70B: 80 layers, hidden
  8192, 64 heads, 8 KV heads, 70.6e9 params).
* Efficiency factors: prefill GEMM MFU 0.55 and memory-bandwidth efficiency
  0.75 are in the range reported for FlashAttention-2/vLLM-class kernels
  (Dao 2023; Kwon et al. SOSP 2023; Agrawal et al. Sarathi-Serve OSDI 2024
  report 50-60% MFU for prefill); tensor parallelism scales by 0.85 (TP4)
  and 0.75 (TP8) for all-reduce costs (Megatron-LM, Narayanan et al. SC'21).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Sequence

import numpy as np

FEATURES = ("base", "per_prefill_token", "per_attn_pair", "per_prefill_seq", "per_decode_req", "per_kv_token")


@dataclass(frozen=True)
class GPUSpec:
    name: str
    bf16_flops: float  # dense BF16 FLOP/s
    mem_bw: float  # HBM bytes/s
    mem_bytes: float  # HBM capacity, bytes
    cost_per_hour: float = 1.0  # relative price of one GPU-hour (for cost reports)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: float  # total parameters
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes


GPUS = {
    "h100": GPUSpec("h100", 989e12, 3.35e12, 80e9, cost_per_hour=1.0),
    "a100": GPUSpec("a100", 312e12, 2.039e12, 80e9, cost_per_hour=0.55),
}
MODELS = {
    "llama-3-8b": ModelSpec("llama-3-8b", 8.03e9, 32, 4096, 32, 8, 128),
    "llama-3-70b": ModelSpec("llama-3-70b", 70.6e9, 80, 8192, 64, 8, 128),
}
TP_EFFICIENCY = {1: 1.0, 2: 0.92, 4: 0.85, 8: 0.75}
MFU_PREFILL = 0.55
MFU_ATTN = 0.40
MEM_BW_EFF = 0.75
MEM_FRACTION_STATIC = 0.88  # share of HBM SGLang gives to weights + KV pool
ITER_OVERHEAD_S = 0.002  # scheduler + launch overhead per iteration (CUDA graphs on)
PER_SEQ_OVERHEAD_S = 20e-6
PER_DECODE_OVERHEAD_S = 5e-6


class PerfModelError(ValueError):
    pass


@dataclass(frozen=True)
class PerfModel:
    """Coefficients in seconds per unit (see module doc) and KV capacity."""

    base: float  # s per non-empty iteration
    per_prefill_token: float  # s per newly computed prefill token
    per_attn_pair: float  # s per prefill query-key pair
    per_prefill_seq: float  # s per sequence in a prefill batch
    per_decode_req: float  # s per decoded request
    per_kv_token: float  # s per KV token read by decode
    kv_capacity_tokens: int  # KV pool size in tokens
    kv_bytes_per_token: int = 131072  # bytes of KV per token (for P/D transfer time)
    num_gpus: int = 1  # GPUs per instance (cost = num_gpus x seconds)
    name: str = "custom"

    def iteration_time(self, prefill_tokens: int = 0, attn_pairs: float = 0.0, prefill_seqs: int = 0,
                       decode_reqs: int = 0, decode_kv_tokens: int = 0) -> float:
        if not (prefill_tokens or decode_reqs):
            return 0.0
        return (self.base + self.per_prefill_token * prefill_tokens + self.per_attn_pair * attn_pairs
                + self.per_prefill_seq * prefill_seqs + self.per_decode_req * decode_reqs
                + self.per_kv_token * decode_kv_tokens)

    def chunk_time(self, tokens: int, prefix: int) -> float:
        """Marginal time of adding a prefill chunk of ``tokens`` after ``prefix`` cached/done tokens."""
        return (self.per_prefill_token * tokens + self.per_attn_pair * attn_pairs(tokens, prefix)
                + self.per_prefill_seq)

    def prefill_time(self, tokens: int, prefix: int = 0) -> float:
        """Time of a prefill-only iteration computing ``tokens`` after ``prefix``."""
        return self.base + self.chunk_time(tokens, prefix) if tokens > 0 else 0.0

    def decode_time(self, reqs: int, kv_tokens: int) -> float:
        return self.iteration_time(decode_reqs=reqs, decode_kv_tokens=kv_tokens)

    def max_chunk_tokens(self, prefix: int, seconds: float) -> int:
        """Largest chunk whose marginal :meth:`chunk_time` fits in ``seconds`` (0 if none)."""
        budget = seconds - self.per_prefill_seq
        if budget <= 0:
            return 0
        a = self.per_attn_pair / 2.0
        b = self.per_prefill_token + self.per_attn_pair * (prefix + 0.5)  # attn_pairs = n*prefix + n^2/2 + n/2
        if a <= 0:
            return int(budget / b) if b > 0 else 1 << 30
        n = int((-b + math.sqrt(b * b + 4 * a * budget)) / (2 * a))
        while n > 0 and self.chunk_time(n, prefix) > seconds:  # float rounding at the boundary
            n -= 1
        return max(n, 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PerfModel":
        """Inverse of :meth:`to_dict` (e.g. a model a worker reports); unknown keys are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise PerfModelError(f"unknown perf model fields: {', '.join(sorted(unknown))}")
        try:
            model = cls(**d)
        except TypeError as e:
            raise PerfModelError(f"incomplete perf model: {e}") from None
        bad = [k for k, v in asdict(model).items() if k != "name" and not (isinstance(v, (int, float)) and v >= 0)]
        if bad:
            raise PerfModelError(f"perf model fields must be non-negative numbers: {', '.join(bad)}")
        return model


def attn_pairs(tokens: int, prefix: int) -> float:
    """Causal query-key pairs of a chunk of ``tokens`` queries after ``prefix`` keys."""
    return tokens * (prefix + (tokens + 1) / 2.0)


def preset(model: str = "llama-3-8b", gpu: str = "h100", tp: int = 1) -> PerfModel:
    """Coefficients derived from FLOPs/bytes (see module doc for sources)."""
    if model not in MODELS:
        raise PerfModelError(f"unknown model {model!r}; presets: {', '.join(sorted(MODELS))}")
    if gpu not in GPUS:
        raise PerfModelError(f"unknown GPU {gpu!r}; presets: {', '.join(sorted(GPUS))}")
    if tp not in TP_EFFICIENCY:
        raise PerfModelError(f"tensor parallel size {tp} not in {sorted(TP_EFFICIENCY)}")
    m, g = MODELS[model], GPUS[gpu]
    free = g.mem_bytes * MEM_FRACTION_STATIC * tp - m.weight_bytes
    if free <= 0:
        raise PerfModelError(f"{model} does not fit on {tp}x {gpu}; use a larger --tp")
    scale = tp * TP_EFFICIENCY[tp]
    flops, bw = g.bf16_flops * scale, g.mem_bw * MEM_BW_EFF * scale
    gemm_flops_per_token = 2 * (m.params - m.hidden * 128256)  # no embedding lookup FLOPs
    return PerfModel(
        base=m.weight_bytes / bw + ITER_OVERHEAD_S * (1 + 0.25 * math.log2(tp)),
        per_prefill_token=gemm_flops_per_token / (flops * MFU_PREFILL),
        per_attn_pair=4 * m.layers * m.heads * m.head_dim / (flops * MFU_ATTN),
        per_prefill_seq=PER_SEQ_OVERHEAD_S,
        per_decode_req=gemm_flops_per_token / (flops * MFU_PREFILL) + PER_DECODE_OVERHEAD_S,
        per_kv_token=m.kv_bytes_per_token / bw,
        kv_capacity_tokens=int(free / m.kv_bytes_per_token),
        kv_bytes_per_token=m.kv_bytes_per_token,
        num_gpus=tp,
        name=f"{model}/{gpu}/tp{tp}",
    )


@dataclass(frozen=True)
class Sample:
    """One measured iteration: its composition and duration in seconds."""

    prefill_tokens: int
    attn_pairs: float
    prefill_seqs: int
    decode_reqs: int
    decode_kv_tokens: int
    seconds: float

    def features(self) -> tuple[float, ...]:
        return (1.0, float(self.prefill_tokens), float(self.attn_pairs), float(self.prefill_seqs),
                float(self.decode_reqs), float(self.decode_kv_tokens))


def fit(samples: Sequence[Sample], template: PerfModel, min_samples: int = 8) -> PerfModel:
    """Least-squares fit of the six coefficients, constrained to be >= 0, on relative error.

    Each sample's residual is divided by its duration, so the fit minimises the
    error the policy cares about and a few long iterations (an engine stalled
    by the OS, a scheduler waiting on I/O) cannot pull every coefficient. After
    a first fit, samples predicted more than ``OUTLIER_FACTOR`` (3x) off either
    way are dropped and the fit is redone, unless that would leave fewer than
    ``min_samples``. Features that the samples never exercise (all zero) keep
    the template's value. Negative solutions are handled by an active set:
    the most negative coefficient is fixed at zero and the rest refitted.
    Capacity and sizes come from ``template``.
    """
    if len(samples) < min_samples:
        raise PerfModelError(f"need at least {min_samples} samples to fit, got {len(samples)}")
    x, y = sample_arrays(samples)
    return fit_arrays(x, y, template, min_samples)


def sample_arrays(samples: Iterable[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """(features, seconds) of ``samples`` as arrays: one row of ``Sample.features()`` per sample."""
    rows = [(s.features(), s.seconds) for s in samples]
    x = np.array([r for r, _ in rows], dtype=float).reshape(len(rows), 6)
    return x, np.array([sec for _, sec in rows], dtype=float)


def fit_arrays(x: np.ndarray, y: np.ndarray, template: PerfModel, min_samples: int = 8) -> PerfModel:
    """``fit`` on samples given as arrays (rows of ``Sample.features()``, seconds): a live engine keeps its
    samples in such a ring buffer, so a refit costs no pass over Python objects."""
    keep = y > 0
    if int(keep.sum()) < min_samples:
        raise PerfModelError(f"need at least {min_samples} samples with a positive duration, got {int(keep.sum())}")
    if not keep.all():
        x, y = x[keep], y[keep]
    values = _nnls_relative(x, y, template)
    predicted = x @ np.array(values)
    kept = (y / OUTLIER_FACTOR <= predicted) & (predicted <= y * OUTLIER_FACTOR)
    if min_samples <= int(kept.sum()) < len(y):
        values = _nnls_relative(x[kept], y[kept], template)
    return replace(template, name=template.name + "+fit", **{FEATURES[i]: values[i] for i in range(6)})


OUTLIER_FACTOR = 3.0  # predicted over 3x or under 1/3 of measured: an iteration the model cannot explain


def _nnls_relative(x, y, template: PerfModel) -> list[float]:
    """Coefficients minimising the squared relative error of ``x @ c`` against ``y`` (seconds), all >= 0.

    Relative error: each row is divided by its duration, so the target is 1 for every row. The normal
    equations are formed once (one pass over the samples); the active set then only re-solves the 6x6
    system with the fixed coefficients moved to the right-hand side.
    """
    a = x / y[:, None]
    gram, rhs = (a.T @ a).tolist(), a.sum(axis=0).tolist()
    col_max = np.abs(a).max(axis=0).tolist()
    used = x.any(axis=0).tolist()
    fixed = {i: getattr(template, FEATURES[i]) for i in range(1, 6) if not used[i]}
    while True:
        free = [i for i in range(6) if i not in fixed]
        ata = [[gram[i][j] for j in free] for i in free]
        aty = [rhs[i] - sum(gram[i][j] * v for j, v in fixed.items()) for i in free]
        coef = _lstsq_normal(ata, aty, [col_max[i] for i in free])
        worst = min(range(len(free)), key=lambda j: coef[j], default=None)
        if worst is None or coef[worst] >= 0:
            break
        fixed[free[worst]] = 0.0
    values = dict(fixed)
    values.update(zip(free, coef))
    return [values[i] for i in range(6)]


def _lstsq_normal(ata: list[list[float]], aty: list[float], col_max: list[float]) -> list[float]:
    """Solve the normal equations ``ata x = aty`` of a least-squares problem, columns scaled by their largest
    entry and a tiny ridge added for rank-deficient systems (collinear features)."""
    n = len(aty)
    if n == 0:
        return []
    scale = [m or 1.0 for m in col_max]
    m = [[ata[i][j] / (scale[i] * scale[j]) for j in range(n)] for i in range(n)]
    v = [aty[i] / scale[i] for i in range(n)]
    for i in range(n):
        m[i][i] += 1e-9 * (m[i][i] + 1.0)
    return [xi / scale[j] for j, xi in enumerate(_solve(m, v))]


def _solve(m: list[list[float]], v: list[float]) -> list[float]:
    n = len(v)
    aug = [row[:] + [v[i]] for i, row in enumerate(m)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(aug[r][c]))
        aug[c], aug[p] = aug[p], aug[c]
        if abs(aug[c][c]) < 1e-300:
            continue
        for r in range(n):
            if r != c and aug[r][c]:
                f = aug[r][c] / aug[c][c]
                aug[r] = [x - f * y for x, y in zip(aug[r], aug[c])]
    return [aug[i][n] / aug[i][i] if abs(aug[i][i]) > 1e-300 else 0.0 for i in range(n)]


def relative_error(model: PerfModel, samples: Iterable[Sample]) -> float:
    """Median absolute relative error of ``model`` on ``samples``."""
    return prediction_errors(model, samples)[0]


def prediction_errors(model: PerfModel, samples: Iterable[Sample]) -> tuple[float, float]:
    """(median absolute relative error, total measured / total predicted time) of ``model`` on ``samples``.

    The fit minimises relative error, which serves per-iteration decisions but lets the slow iterations
    a noisy machine interleaves weigh little; the second number says how far the summed time (what
    queueing delays add up) is off, so a simulator of this engine can scale its model by it.
    """
    return prediction_errors_arrays(model, *sample_arrays(samples))


def prediction_errors_arrays(model: PerfModel, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``prediction_errors`` on samples given as arrays (rows of ``Sample.features()``, seconds)."""
    keep = y > 0
    x, y = x[keep], y[keep]
    if not len(y):
        return 0.0, 1.0
    t = x @ np.array([getattr(model, f) for f in FEATURES])
    t[(x[:, 1] == 0) & (x[:, 4] == 0)] = 0.0  # no prefill and no decode: no iteration (iteration_time's 0)
    errs = np.sort(np.abs(t - y) / y)
    predicted = float(t.sum())
    return float(errs[len(errs) // 2]), (float(y.sum()) / predicted if predicted > 0 else 1.0)
