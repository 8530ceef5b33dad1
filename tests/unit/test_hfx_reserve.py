"""HFX queue order with a TTFT reserve (``ttft_reserve``, core/scheduling/hfx.py).

Under overload, least slack serves every request just before its TTFT deadline; the loosest class
(batch, 15 s) is then always last and one burst tips it past its deadline. With a reserve the order
uses only ``1 - reserve`` of each TTFT target, so a loose request that has waited long reaches the
head before later tighter requests while part of its target is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.scheduling import make_scheduler
from hyperflexis_sglang.core.slo import DEFAULT_CLASSES, SLO

P = preset()
INTER, STD, BATCH = DEFAULT_CLASSES["interactive"], DEFAULT_CLASSES["standard"], DEFAULT_CLASSES["batch"]


@dataclass
class Req:
    rid: Hashable
    arrival: float
    slo: SLO
    input_len: int = 1000
    output_len: int = 0
    max_new_tokens: int = 100
    first_token_time: float | None = None
    best_effort: bool = False
    enqueue_time: float = 0.0
    cached_len: int = 0


def first(reserve, reqs):
    extra = {} if reserve is None else {"ttft_reserve": reserve}
    sched = make_scheduler("hfx", extra=extra)
    return min(reqs, key=lambda r: sched.key(r, P)).rid


@pytest.mark.parametrize("reserve, reqs, want", [
    # a batch request that has waited 7.5 s of its 15 s vs a standard one that just arrived
    (None, [Req("batch", 0.0, BATCH), Req("std", 7.5, STD)], "batch"),  # default reserve 0.5
    (0.0, [Req("batch", 0.0, BATCH), Req("std", 7.5, STD)], "std"),  # pure least slack: batch waits to its deadline
    # a fresh batch request still goes after a standard one (priority and a tighter target)
    (None, [Req("batch", 7.0, BATCH), Req("std", 7.5, STD)], "std"),
    # interactive keeps precedence over a standard request that arrived a second earlier
    (None, [Req("std", 6.5, STD), Req("inter", 7.5, INTER)], "inter"),
    # best effort still comes last
    (None, [Req("be", 0.0, STD, best_effort=True), Req("batch", 7.5, BATCH)], "batch"),
])
def test_ttft_reserve_orders_the_queue(reserve, reqs, want):
    assert first(reserve, reqs) == want


def test_retracted_request_keeps_its_next_token_deadline():
    # mid-decode requests are ordered by their next token's deadline; the reserve does not apply
    sched = make_scheduler("hfx")
    r = Req("r", 0.0, STD, output_len=5, first_token_time=1.0)
    assert sched.key(r, P)[1] == pytest.approx(r.slo.token_deadline(6, 0.0, 1.0) - P.prefill_time(1005)
                                               - 0.5 * STD.priority)
