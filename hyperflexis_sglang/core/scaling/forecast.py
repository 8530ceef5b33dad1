"""Short-term arrival-rate history and forecast (pure: the caller passes ``now``).

A policy records the per-class rates of every snapshot it sees. ``trend``
is the least-squares slope over a recent window; ``forecast`` extrapolates
it over a horizon (a scale-out decision made now brings capacity only after
the cold start) and never forecasts below the current rate, so a falling
trend cannot shrink the fleet early (scale-in uses ``peak``: the largest rate
over a longer window).
"""

from __future__ import annotations

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

    def trend(self, name: str, now: float, window_s: float) -> float:
        """Least-squares slope of the class's rate, requests/s per second (0 with < 3 samples)."""
        pts = self._window(name, now, window_s)
        if len(pts) < 3:
            return 0.0
        mt = sum(t for t, _ in pts) / len(pts)
        mr = sum(r for _, r in pts) / len(pts)
        var = sum((t - mt) ** 2 for t, _ in pts)
        return sum((t - mt) * (r - mr) for t, r in pts) / var if var > 0 else 0.0

    def forecast(self, name: str, now: float, rate: float, horizon_s: float, window_s: float) -> float:
        """Rate expected ``horizon_s`` from now: current rate plus a rising trend (never below current)."""
        return max(rate, rate + self.trend(name, now, window_s) * horizon_s)

    def peak(self, name: str, now: float, window_s: float, rate: float) -> float:
        """Largest rate seen over the window (at least ``rate``)."""
        return max([rate] + [r for _, r in self._window(name, now, window_s)])

    def covers(self, now: float, window_s: float) -> bool:
        """True once the history reaches back ``window_s`` (enough evidence to scale in)."""
        return bool(self.samples) and self.samples[0][0] <= now - window_s
