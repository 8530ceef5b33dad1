"""Adapters that show SGLang ``Req`` objects to the core policies, and SLO parsing.

A ``ReqView`` is attached to each request once (``req._hfx``) when it is
first queued; its properties read SGLang's live fields, so the view never
goes stale. Times are ``time.perf_counter()`` seconds, SGLang's clock.
"""

from __future__ import annotations

from typing import Any

from ..core.slo import SLO, SLOCatalog, SLOError


class ReqView:
    __slots__ = ("req", "slo", "arrival", "best_effort", "first_token_time", "key", "key_stamp")

    def __init__(self, req: Any, slo: SLO, arrival: float):
        self.req = req
        self.slo = slo
        self.arrival = arrival
        self.best_effort = False
        self.first_token_time: float | None = None
        self.key: tuple | None = None  # the policy's queue key, cached (see hooks.sort_waiting)
        self.key_stamp: tuple | None = None  # what the cached key was computed from

    @property
    def rid(self) -> str:
        return self.req.rid

    @property
    def input_len(self) -> int:
        return len(self.req.origin_input_ids)

    @property
    def output_len(self) -> int:
        return len(self.req.output_ids)

    @property
    def max_new_tokens(self) -> int:
        return self.req.sampling_params.max_new_tokens or 0

    @property
    def cached_len(self) -> int:
        return self.req.prefix_len or 0

    @property
    def enqueue_time(self) -> float:
        return self.req.time_stats.wait_queue_entry_time or self.arrival


def slo_spec(req: Any) -> tuple[dict | None, int | None]:
    """The request's ``custom_params.slo`` object and top-level priority, unvalidated."""
    params = getattr(req.sampling_params, "custom_params", None)
    if isinstance(params, str):  # some clients send custom_params as a JSON string
        import json
        try:
            params = json.loads(params)
        except json.JSONDecodeError:
            raise SLOError("custom_params must be a JSON object") from None
    spec = None
    if params is not None:
        if not isinstance(params, dict):
            raise SLOError("custom_params must be a JSON object")
        spec = params.get("slo")
    return spec, getattr(req, "priority", None)


def resolve_slo(req: Any, catalog: SLOCatalog) -> SLO:
    spec, priority = slo_spec(req)
    if spec is not None and not isinstance(spec, dict):
        raise SLOError("custom_params.slo must be a JSON object")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise SLOError(f"priority must be an integer, got {priority!r}")
    return catalog.resolve(spec, priority)
