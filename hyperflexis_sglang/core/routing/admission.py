"""Admission at the router: dispatch now, hold in the router's queue, or reject (HTTP 429).

Guarantees:

* a request is rejected for its SLO only when its class allows it
  (``on_miss == "reject"``) and the routing prediction says no instance
  gives it its first token within what is left of its TTFT target; a full
  router queue is the only other reason to reject;
* a best-effort request that no instance can serve in time is held (so
  that instances keep room for requests that can still make it) for at most
  ``max_hold_fraction`` of its TTFT target, then dispatched best effort;
  a request held for the concurrency limit waits at most the router's queue
  timeout (the shell enforces it). So every held request ends;
* policies that make no prediction (NaN) never cause a hold or an SLO
  rejection: they behave as sglang-router's.

The held queue is ordered by :func:`queue_key`: higher priority first, then
the earlier TTFT deadline (least slack).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..slo import SLO

DISPATCH, HOLD, REJECT = "dispatch", "hold", "reject"


@dataclass(frozen=True)
class AdmissionInput:
    """What the router knows when it decides on a request."""

    slo: SLO  # the request's resolved SLO
    waited_s: float  # seconds since the request reached the router
    predicted_ttft_s: float  # predicted TTFT on the chosen instance (NaN: the policy makes no prediction)
    at_capacity: bool  # the router's concurrency limit is reached
    queue_room: bool  # the router's queue can take one more request
    max_hold_fraction: float = 0.5  # a best-effort request is held at most this share of its TTFT target


@dataclass(frozen=True)
class Admission:
    action: str  # DISPATCH, HOLD or REJECT
    reason: str  # why, for logs, metrics and the client's error message
    code: str = ""  # machine-readable reason of a rejection: "slo_unattainable" or "queue_full"


def decide(inp: AdmissionInput) -> Admission:
    if inp.at_capacity:
        if inp.queue_room:
            return Admission(HOLD, "concurrency limit reached: queued")
        return Admission(REJECT, "concurrency limit reached and the router queue is full", "queue_full")
    pred = inp.predicted_ttft_s
    if math.isnan(pred):
        return Admission(DISPATCH, "policy makes no prediction")
    slo = inp.slo
    left = slo.ttft_s - inp.waited_s
    if pred <= left:
        return Admission(DISPATCH, f"predicted TTFT {pred * 1e3:.0f} ms within the {left * 1e3:.0f} ms left")
    if slo.on_miss == "reject":
        return Admission(REJECT, f"no worker can meet SLO class {slo.cls!r}: predicted TTFT {pred * 1e3:.0f} ms "
                                 f"> {left * 1e3:.0f} ms left of its {slo.ttft_ms:g} ms target", "slo_unattainable")
    if inp.waited_s < inp.max_hold_fraction * slo.ttft_s and inp.queue_room:
        return Admission(HOLD, f"no worker meets the SLO now (predicted TTFT {pred * 1e3:.0f} ms): held")
    return Admission(DISPATCH, f"best effort: predicted TTFT {pred * 1e3:.0f} ms misses the target")


def queue_key(slo: SLO, arrival_s: float, seq: int) -> tuple:
    """Order of the router's queue: higher priority, then earlier TTFT deadline, then arrival order."""
    return (-slo.priority, arrival_s + slo.ttft_s, seq)
