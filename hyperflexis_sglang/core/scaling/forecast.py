"""Short-term arrival-rate history and forecast (pure: the caller passes ``now``).

A policy records the per-class rates of every snapshot it sees. ``trend``
is the least-squares slope over a recent window, used only when it is
significant (t-statistic >= 2); ``forecast`` extrapolates
it over a horizon (a scale-out decision made now brings capacity only after
the cold start) and never forecasts below the current rate, so a falling
trend cannot shrink the fleet early (scale-in uses ``peak``: the largest rate
over a longer window).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable

from .types import ClassLoad


class RateHistory:
    def __init__(self, span_s: float = 600.0):
        self.span_s = span_s  # samples older than this are dropped
        self.samples: deque = deque()  # (time, {class: rate})

    def add(self, now: float, classes: Iterable[ClassLoad]) -> None:
        self.samples.append((now, {c.name: c.arrival_rate for c in classes}))
        while self.samples and self.samples[0][0] < now - self.span_s:
            self.samples.popleft()

    def _window(self, name: str, now: float, window_s: float) -> list[tuple[float, float]]:
        return [(t, r.get(name, 0.0)) for t, r in self.samples if t >= now - window_s]

    def trend(self, name: str, now: float, window_s: float, min_t: float = 2.0) -> float:
        """Least-squares slope of the class's rate, requests/s per second; 0 with < 4 samples or when the
        slope is not significant (|t| < ``min_t``): noise in a measured rate is not a trend."""
        pts = self._window(name, now, window_s)
        n = len(pts)
        if n < 4:
            return 0.0
        mt = sum(t for t, _ in pts) / n
        mr = sum(r for _, r in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var <= 0:
            return 0.0
        slope = sum((t - mt) * (r - mr) for t, r in pts) / var
        resid = sum((r - mr - slope * (t - mt)) ** 2 for t, r in pts) / (n - 2)
        stderr = math.sqrt(resid / var)
        return slope if stderr == 0 or abs(slope) / stderr >= min_t else 0.0

    def forecast(self, name: str, now: float, rate: float, horizon_s: float, window_s: float) -> float:
        """Rate expected ``horizon_s`` from now: current rate plus a rising trend (never below current)."""
        return max(rate, rate + self.trend(name, now, window_s) * horizon_s)

    def peak(self, name: str, now: float, window_s: float, rate: float) -> float:
        """Largest rate seen over the window (at least ``rate``)."""
        return max([rate] + [r for _, r in self._window(name, now, window_s)])

    def covers(self, now: float, window_s: float) -> bool:
        """True once the history reaches back ``window_s`` (enough evidence to scale in)."""
        return bool(self.samples) and self.samples[0][0] <= now - window_s
