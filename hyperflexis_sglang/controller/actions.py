"""The controller's actions: add (with linking), remove (drain first), switch role, replace a crashed instance.

Each runs in a controller worker thread and returns a result record (also
kept in the controller's events). Order of an add (``core/scaling/lifecycle.link_steps``):
start -> healthy -> weights from peers (if asked and possible) -> prefill
bootstrap server up -> register with the router. A remove: router DELETE
(stops new requests; the HFX router drains) -> wait until drained
(``is_drained``) -> stop. A role switch: drain, then SGLang's
``/pd_role_switch`` when configured and supported, else stop and start in the
new role with weights from peers; its drain, switch and total times are
returned and kept in ``status()["transitions"]``.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request

from ..core.scaling.lifecycle import (BOOTSTRAP, LOAD_WEIGHTS, backoff_s, is_drained, link_steps, pick_removal,
                                      switch_method)
from ..core.scaling.types import ScaleAction
from .provisioners.base import Handle, ProvisionError
from .snapshot import poll_worker

WORKER_TYPE = {"collocated": "regular", "prefill": "prefill", "decode": "decode"}


class ActionError(RuntimeError):
    pass


def execute(ctl, action: ScaleAction) -> dict:
    fn = ACTIONS.get(action.kind)
    try:
        if fn is None:
            raise ActionError(f"unknown action kind {action.kind!r}")
        result = {"action": action.kind, "ok": True, **fn(ctl, action)}
    except Exception as e:  # reported, never raised into the loop: the fleet keeps serving
        result = {"action": action.kind, "ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
    ctl.events.add("action_done", **{"role": action.role, "target": action.iid, **result, "reason": action.reason})
    return result


def with_retries(ctl, what: str, fn):
    cfg = ctl.cfg
    for attempt in range(1, cfg.max_attempts + 1):
        try:
            return fn()
        except (ProvisionError, ActionError, OSError) as e:
            last = attempt == cfg.max_attempts
            delay = 0.0 if last else backoff_s(attempt, cfg.backoff_initial_s, cfg.backoff_factor, cfg.backoff_cap_s)
            ctl.events.failures.append({"t": time.time(), "what": what, "attempt": attempt, "error": str(e)[:500],
                                        "retry_in_s": None if last else delay})
            ctl.events.add("provision_failed", what=what, attempt=attempt, error=str(e)[:300])
            if last:
                raise ActionError(f"{what}: gave up after {attempt} attempts: {e}") from e
            ctl.sleep(delay)


def register(ctl, handle: Handle) -> None:
    boot = handle.bootstrap_port if handle.role == "prefill" else None
    ctl.router.add(handle.url, WORKER_TYPE[handle.role], boot)


def _wait_bootstrap(handle: Handle, timeout_s: float) -> None:
    host = urllib.parse.urlparse(handle.url).hostname
    url = f"http://{host}:{handle.bootstrap_port}/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise ProvisionError(f"{handle.iid}: bootstrap server {url} not up within {timeout_s:.0f} s")


def _load_weights(ctl, handle: Handle, seeds: list[str]) -> str:
    report = ctl.loader([handle.url], seeds)
    if not getattr(report, "ok", False):
        raise ProvisionError(f"{handle.iid}: weight load from {seeds} failed: {getattr(report, 'reason', report)}")
    return getattr(report, "reason", "loaded")


def bring_up(ctl, role: str, weight_source: str) -> dict:
    """Start, link and register one instance; retried with backoff as a whole."""
    from .controller import Instance

    seeds = [i.handle.url for i in ctl.ready()]
    steps, why = link_steps(role, weight_source, ctl.loader is not None and bool(seeds))
    source = "peer" if LOAD_WEIGHTS in steps else "disk"
    t0 = time.monotonic()

    def attempt() -> dict:
        handle = ctl.prov.add(role, source)
        inst = Instance(handle, "starting", ctl.clock())
        with ctl.lock:
            ctl.instances[handle.iid] = inst
        try:
            inst.handle = handle = ctl.prov.wait_ready(handle, ctl.cfg.ready_timeout_s)
            t_healthy = time.monotonic() - t0
            if handle.weight_source == "peer" and LOAD_WEIGHTS not in steps:  # the engine decided (Kubernetes)
                if ctl.loader is None or not seeds:
                    raise ProvisionError("started with dummy weights but no D2D loader or no seed is available")
                steps_now = steps[:2] + (LOAD_WEIGHTS,) + steps[2:]
            else:
                steps_now = steps
            weights = _load_weights(ctl, handle, seeds) if LOAD_WEIGHTS in steps_now else why
            if BOOTSTRAP in steps:
                _wait_bootstrap(handle, 60.0)
            register(ctl, handle)
        except Exception as e:
            tail = ctl.prov.log_tail(handle)[-800:]
            _forget(ctl, inst)
            raise ProvisionError(f"{handle.iid} ({role}): {e}" + (f"\n{tail}" if tail else "")) from e
        ctl.set_phase(inst, "ready")
        with ctl.lock:
            ctl.disaggregated |= role != "collocated"
        return {"iid": handle.iid, "url": handle.url, "role": role, "weight_source": handle.weight_source,
                "weights": weights, "steps": list(steps_now), "healthy_s": round(t_healthy, 2), "linked_s": round(time.monotonic() - t0, 2)}

    return with_retries(ctl, f"add {role}", attempt)


def _forget(ctl, inst) -> None:
    try:
        ctl.prov.remove(inst.handle)
    finally:
        with ctl.lock:
            ctl.instances.pop(inst.handle.iid, None)


def drain(ctl, inst) -> dict:
    """Router stops sending; wait until nothing is left on the worker. Never stops a busy worker early
    unless ``drain_timeout_s`` passes (then reported as ``drained: false``)."""
    t0 = time.monotonic()
    ctl.router.remove(inst.handle.url)
    idle, reason = 0, ""
    while time.monotonic() - t0 < ctl.cfg.drain_timeout_s:
        rw = ctl.router.find(inst.handle.url)
        polled = poll_worker(ctl.http, inst.handle.url)
        load = polled[0] if polled else None
        quiet = not (rw and rw.inflight) and load is not None and \
            load.num_running + load.num_waiting + load.num_inflight_kv == 0
        idle = idle + 1 if quiet else 0
        done, reason = is_drained(rw.inflight if rw else None, load, idle, ctl.cfg.quiet_polls)
        if done:
            return {"drained": True, "drain_s": round(time.monotonic() - t0, 2), "drain_reason": reason}
        time.sleep(ctl.cfg.drain_poll_s)
    return {"drained": False, "drain_s": round(time.monotonic() - t0, 2), "drain_reason": f"timeout: {reason}"}


def _target(ctl, action: ScaleAction, roles: tuple[str, ...]):
    preferred = getattr(ctl.prov, "preferred_removal", None)  # engines that choose the victim themselves
    key = action.iid if action.iid is not None or preferred is None else preferred(roles[0])
    if key is not None:
        inst = ctl.find(key)
        if inst is None:
            raise ActionError(f"no instance {key!r}")
        if inst.phase != "ready":
            raise ActionError(f"instance {key!r} is {inst.phase}; skipped")
        can = getattr(ctl.prov, "can_remove", None)
        ok, why = can(inst.handle) if can else (True, "")
        if not ok:
            raise ActionError(why)
        return inst
    with ctl.lock:
        cands = {i.handle.iid: (i.handle.role, i.phase, _work(i)) for i in ctl.instances.values()
                 if i.handle.role in roles}
    best = None
    for role in roles:
        iid, why = pick_removal(cands, role)
        if iid is not None and (best is None or cands[iid][2] < cands[best][2]):
            best = iid
    if best is None:
        raise ActionError(f"no ready instance among roles {roles}")
    return ctl.instances[best]


def _work(inst) -> int:
    return (inst.load.num_running + inst.load.num_waiting) if inst.load else 0


def add(ctl, action: ScaleAction) -> dict:
    return bring_up(ctl, action.role, action.weight_source)


def remove(ctl, action: ScaleAction) -> dict:
    inst = _target(ctl, action, (action.role,))
    ctl.set_phase(inst, "draining")
    d = drain(ctl, inst)
    _forget(ctl, inst)
    return {"iid": inst.handle.iid, "url": inst.handle.url, "role": inst.handle.role, **d}


def replace(ctl, action: ScaleAction) -> dict:
    inst = ctl.instances.get(action.iid)
    if inst is None:
        raise ActionError(f"no instance {action.iid!r} to replace")
    try:
        ctl.router.remove(inst.handle.url)
    except Exception:  # a router that cannot be reached must not keep a dead instance around
        pass
    _forget(ctl, inst)
    new = bring_up(ctl, inst.handle.role, action.weight_source)
    return {"replaced": inst.handle.iid, "reason": action.reason, "new": new}


def switch_role(ctl, action: ScaleAction) -> dict:
    new_role = action.role
    inst = _target(ctl, action, tuple(r for r in ("prefill", "decode") if r != new_role))
    old = inst.handle
    ctl.set_phase(inst, "switching")
    t0 = time.monotonic()
    d = drain(ctl, inst)
    t_drained = time.monotonic()
    method, why = switch_method(ctl.prov.transfer_backend, ctl.prov.role_switch_api, ctl.cfg.role_switch == "api")
    result = {"iid": old.iid, "from": old.role, "to": new_role, **d}
    if method == "api":
        ok, msg = _api_switch(ctl, inst, new_role)
        if ok:
            result.update(method="api", method_reason=why, new_iid=old.iid)
        else:
            method, why = "restart", f"/pd_role_switch failed ({msg}); restarted instead"
    if method == "restart":
        _forget(ctl, inst)
        new = bring_up(ctl, new_role, "peer")
        result.update(method="restart", method_reason=why, new_iid=new["iid"], new_url=new["url"],
                      weight_source=new["weight_source"], healthy_s=new["healthy_s"], linked_s=new["linked_s"])
    result.update(switch_s=round(time.monotonic() - t_drained, 2), total_s=round(time.monotonic() - t0, 2))
    ctl.events.transitions.append(result)
    return result


def _api_switch(ctl, inst, new_role: str) -> tuple[bool, str]:
    try:
        r = ctl.http.post(inst.handle.url + "/pd_role_switch", json={"new_role": new_role,
                                                                     "decode_cuda_graph_memory_gb": 0.0}, timeout=120)
        body = r.json()
    except Exception as e:
        return False, str(e)[:200]
    if r.status_code != 200 or not body.get("success"):
        return False, str(body.get("message", body))[:200]
    inst.handle = inst.handle.with_(role=new_role)
    register(ctl, inst.handle)
    ctl.set_phase(inst, "ready")
    return True, "ok"


ACTIONS = {"add": add, "remove": remove, "switch_role": switch_role, "replace": replace}
