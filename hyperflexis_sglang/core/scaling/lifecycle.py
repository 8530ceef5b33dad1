"""Pure decisions of the scaling controller's shell: linking steps, drain, crash replacement, retries, rates.

The controller (``controller/controller.py``) does the I/O; every "what next"
question it has is answered here from plain values, so it is table-tested and
the simulator could use the same answers. Guarantees:

* an added instance is registered with the router only as the *last* link step,
  after health, weights and (prefill) bootstrap are ready, so no request
  reaches an instance that cannot serve it;
* an instance counts as drained only when the router holds no request for it
  and the worker itself reports nothing running, waiting or in KV transfer, for
  ``quiet_polls`` consecutive polls (one idle poll can race a request that was
  sent just before the router stopped routing there);
* an instance is replaced only after ``threshold`` consecutive failed health
  checks, and only when it is in phase ``ready`` (a starting, draining or
  switching instance is the controller's own business).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping

# Link steps of an added instance, in order; the controller maps each name to a function.
START, HEALTHY, LOAD_WEIGHTS, BOOTSTRAP, REGISTER = "start", "healthy", "load_weights", "bootstrap", "register"
ROLE_SWITCH_BACKENDS = ("mooncake", "mori")  # SGLang 0.5.23 KV managers with supports_role_switch = True


def link_steps(role: str, weight_source: str, loader_available: bool) -> tuple[tuple[str, ...], str]:
    """Ordered steps that bring a new instance into service, and why weights come from where they do."""
    steps = [START, HEALTHY]
    if weight_source == "peer" and loader_available:
        steps.append(LOAD_WEIGHTS)
        why = "weights from peers (started with dummy weights)"
    elif weight_source == "peer":
        why = "peer weights asked for but no D2D loader is installed: weights from disk"
    else:
        why = "weights from disk"
    if role == "prefill":
        steps.append(BOOTSTRAP)
    steps.append(REGISTER)
    return tuple(steps), why


@dataclass(frozen=True)
class WorkerLoad:
    num_running: int = 0  # requests in the decode batch
    num_waiting: int = 0  # queued requests (incl. P/D bootstrap/prealloc/transfer queues)
    num_inflight_kv: int = 0  # prefill: requests whose KV is still being sent


def is_drained(router_inflight: int | None, load: WorkerLoad | None, idle_polls: int, quiet_polls: int = 2
               ) -> tuple[bool, str]:
    """Whether a draining instance may be stopped. ``idle_polls``: consecutive idle polls so far (incl. this one).

    ``router_inflight`` None means the router does not report it (sglang-router
    forgets a worker at once); ``load`` None means the worker did not answer.
    """
    if router_inflight:
        return False, f"router still has {router_inflight} request(s) on it"
    if load is None:
        return False, "worker load unknown (no answer)"
    busy = load.num_running + load.num_waiting + load.num_inflight_kv
    if busy:
        return False, (f"worker busy: {load.num_running} running, {load.num_waiting} waiting, "
                       f"{load.num_inflight_kv} sending KV")
    if idle_polls < quiet_polls:
        return False, f"idle {idle_polls}/{quiet_polls} polls"
    return True, f"idle for {idle_polls} consecutive polls"


def to_replace(phases: Mapping[Hashable, str], failures: Mapping[Hashable, int], threshold: int
               ) -> tuple[tuple[Hashable, str], ...]:
    """Instances to replace (crashed), with the reason; sorted by id for a stable order."""
    out = []
    for iid in sorted(failures, key=str):
        n = failures[iid]
        if n >= threshold and phases.get(iid) == "ready":
            out.append((iid, f"{n} consecutive failed health checks (threshold {threshold})"))
    return tuple(out)


def backoff_s(attempt: int, initial_s: float = 1.0, factor: float = 2.0, cap_s: float = 30.0) -> float:
    """Delay before retry number ``attempt`` (1-based): initial x factor^(attempt-1), capped."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return min(cap_s, initial_s * factor ** (attempt - 1))


def switch_method(backend: str | None, api_enabled: bool, api_works: bool) -> tuple[str, str]:
    """How to change an instance's P/D role: ``api`` (SGLang's /pd_role_switch) or ``restart``; with the reason.

    ``api_works``: the controller is configured to switch in place (``role_switch: "api"``,
    the default); ``"restart"`` turns it off.
    """
    if not api_enabled:
        return "restart", "instances run without --enable-pd-role-switch"
    if backend not in ROLE_SWITCH_BACKENDS:
        return "restart", f"transfer backend {backend!r} has no runtime role switch"
    if not api_works:
        return "restart", "in-place switch configured off (role_switch: restart)"
    return "api", f"{backend} supports /pd_role_switch"


def rates(prev: Mapping[str, float], now: Mapping[str, float], dt: float) -> dict[str, float]:
    """Per-key rate (per second) between two readings of monotonic counters; a reset counts from zero."""
    if dt <= 0:
        return {k: 0.0 for k in now}
    out = {}
    for k, v in now.items():
        before = prev.get(k, 0.0)
        out[k] = (v - before if v >= before else v) / dt
    return out


def pick_removal(candidates: Mapping[Hashable, tuple[str, str, int]], role: str) -> tuple[Hashable | None, str]:
    """Which instance to remove when the policy names only a role.

    ``candidates``: iid -> (role, phase, queued + running requests). The ready
    instance of that role with the least work goes (it drains fastest); ties by id.
    """
    pool = [(work, str(iid), iid) for iid, (r, phase, work) in candidates.items() if r == role and phase == "ready"]
    if not pool:
        return None, f"no ready {role} instance to remove"
    work, _, iid = min(pool)
    return iid, f"least loaded ready {role} instance ({work} requests)"
