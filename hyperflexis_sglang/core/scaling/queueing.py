"""Queueing helpers of the capacity model: pooled waiting (Erlang C) and prompt-length spread.

* Pooled waiting. The HFX router sends each request to the replica that
  predicts the earliest first token, so ``n`` replicas behave like one queue
  served by ``n`` servers (M/M/n), not like ``n`` separate M/M/1 queues fed
  at random: ``P(wait > w) = C(n, rho) exp(-n (1 - rho) w / S)`` with the
  Erlang-C probability ``C`` that a request waits at all (``n`` = 1 gives the
  M/M/1 ``rho exp(-(1 - rho) w / S)``).
* Prompt-length spread. A class's prompt lengths are modelled as a
  log-normal fitted to the mean and the 90th percentile (as SLO traces are
  heavy-tailed: Mooncake's conversation prompts have mean 12.7k and p90 28k
  tokens); the predicted attainment averages the TTFT probability over
  ``SPREAD_POINTS`` equal-probability quantiles, so prompts that cannot
  prefill within the TTFT on any fleet count as misses, and the rest do not
  inherit the mean's verdict. Without a p90 (or with p90 <= mean) every
  prompt has the mean length, as before.

Pure functions (``statistics.NormalDist`` is the standard library's).
"""

from __future__ import annotations

import math
from statistics import NormalDist

SPREAD_POINTS = 20  # equal-probability quantiles of the prompt-length distribution
_Z = tuple(NormalDist().inv_cdf((j + 0.5) / SPREAD_POINTS) for j in range(SPREAD_POINTS))
_Z90 = NormalDist().inv_cdf(0.9)
MAX_SERVERS = 256  # Erlang C is computed with at most this many servers (C falls with n: an upper bound)


def erlang_c(n: int, rho: float) -> float:
    """Probability that an arrival waits in an M/M/n queue at per-server utilisation ``rho``."""
    if rho <= 0.0:
        return 0.0
    if rho >= 1.0:
        return 1.0
    n = max(1, min(int(n), MAX_SERVERS))
    a = n * rho
    b = 1.0  # Erlang B by the stable recursion B(k) = a B(k-1) / (k + a B(k-1))
    for k in range(1, n + 1):
        b = a * b / (k + a * b)
    return b / (1.0 - rho * (1.0 - b))


def wait_within(w: float, n: int, rho: float, mean_service: float) -> float:
    """P(wait <= w) in an M/M/n queue (0 for w < 0, 0 at rho >= 1)."""
    if w < 0.0 or rho >= 1.0:
        return 0.0
    c = erlang_c(n, rho)
    return 1.0 - c * math.exp(-n * (1.0 - rho) * w / max(mean_service, 1e-9))


def lognormal_sigma(mean: float, p90: float) -> float:
    """Shape of the log-normal with this mean and 90th percentile (0: no spread known)."""
    if not (mean > 0 and p90 > mean and math.isfinite(p90)):
        return 0.0
    r = math.log(p90 / mean)  # = z90 s - s^2 / 2; the smaller root, capped at z90 (the widest fit)
    disc = _Z90 * _Z90 - 2.0 * r
    return _Z90 - math.sqrt(disc) if disc > 0 else _Z90


def length_points(mean: float, p90: float) -> tuple[float, ...]:
    """``SPREAD_POINTS`` equal-probability prompt lengths (all = mean without a spread)."""
    s = lognormal_sigma(mean, p90)
    if s <= 0.0:
        return (mean,)
    mu = math.log(mean) - s * s / 2.0
    return tuple(math.exp(mu + s * z) for z in _Z)
