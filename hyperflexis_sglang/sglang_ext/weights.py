"""D2D weight loading inside SGLang: a weight agent next to the scheduler's model (see hyperflexis_sglang/weights).

On with ``HFX_WEIGHTS_AGENT=1`` (independent of ``HFX_ENABLE``), on seeds and
on new instances alike. Hooks (SGLang 0.5.23):

* ``Scheduler.__init__`` (AFTER): start the agent on the model runner's
  parameters, on the server's host and ``HFX_WEIGHTS_PORT`` (0: a free port).
  Its state starts ``unloaded`` when the server was started with
  ``--load-format dummy`` and ``ready`` otherwise;
* ``SchedulerInternalStateController.get_internal_state`` (AFTER):
  ``/server_info`` -> ``internal_states[0].hfx_weights`` = agent URL and state,
  which is how the controller finds the agent;
* fault injection for tests only: ``HFX_WEIGHTS_TEST_EXIT_AFTER_SENT=N``
  makes the scheduler process exit after sending N buckets (a seed dying
  mid-transfer; SGLang then stops the whole server).

Readiness: an instance loaded this way reports ``ready`` only after the
controller's checksum check (``load_from_peers``); a router should add it
only then.

Why an agent instead of SGLang's own endpoints: the seed side of R-Fork
(``/send_weights_to_remote_instance``) broadcasts parameter by parameter,
blocks the scheduler while it sends and hard-codes CUDA; the receiver side
(``/update_weights_from_distributed``) takes one group and one source per
call and loads through ``model.load_weights`` (checkpoint names). The agent
moves buckets in a background thread (a seed keeps serving), from several
seeds at once, in place into the parameters (same layout on both sides),
over gloo on a CPU and NCCL on GPUs. Tensor parallelism > 1 is not
supported yet (the agent stays off and says so in the log).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("hyperflexis_sglang")

AGENT = None  # the scheduler process's WeightAgent
REGISTERED: list[str] = []
TARGETS = {
    "init": "sglang.srt.managers.scheduler.Scheduler.__init__",
    "server_info": "sglang.srt.managers.scheduler_components.internal_state."
                   "SchedulerInternalStateController.get_internal_state",
}


def wanted() -> bool:
    return os.environ.get("HFX_WEIGHTS_AGENT", "0") == "1"


def _port() -> int:
    raw = os.environ.get("HFX_WEIGHTS_PORT", "0")
    if not raw.isdigit() or int(raw) > 65535:
        raise SystemExit(f"hyperflexis: HFX_WEIGHTS_PORT must be a port number (0: free), got {raw!r}")
    return int(raw)


def _fault():
    """HFX_WEIGHTS_TEST_EXIT_AFTER_SENT=N (tests only): exit the process after sending N buckets."""
    limit = int(os.environ.get("HFX_WEIGHTS_TEST_EXIT_AFTER_SENT", "0") or 0)
    sent = []

    def on_sent(bucket: int) -> None:
        sent.append(bucket)
        if 0 < limit <= len(sent):
            log.error("hyperflexis: HFX_WEIGHTS_TEST_EXIT_AFTER_SENT=%d reached: exiting (fault injection)", limit)
            os._exit(9)
    return on_sent


def register() -> None:
    if REGISTERED:
        return
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType
    _port()  # fail at start on a bad setting
    table = [("init", start_agent, HookType.AFTER), ("server_info", report, HookType.AFTER)]
    for name, fn, kind in table:
        HookRegistry.register(TARGETS[name], fn, kind)
        REGISTERED.append(TARGETS[name])
    log.info("hyperflexis: weight agent hooks in pid %d: %s", os.getpid(), ", ".join(REGISTERED))


def start_agent(result, scheduler, *args, **kwargs):
    global AGENT
    if AGENT is not None:
        return result
    try:
        sa = scheduler.server_args
        if getattr(sa, "tp_size", 1) != 1 or getattr(sa, "pp_size", 1) != 1 or getattr(sa, "dp_size", 1) != 1:
            log.warning("hyperflexis: weight agent off: only tp/pp/dp size 1 is supported")
            return result
        from ..weights.agent import WeightAgent
        model = scheduler.tp_worker.model_runner.model
        state = "unloaded" if str(sa.load_format) == "dummy" else "ready"
        AGENT = WeightAgent(model.named_parameters, sa.host, _port(), state=state, on_sent=_fault()).start()
        log.info("hyperflexis: weight agent on %s (state %s)", AGENT.url, state)
    except Exception as e:  # the server keeps serving; the controller sees no agent in /server_info
        log.exception("hyperflexis: weight agent not started: %s", e)
    return result


def report(result, *args, **kwargs):
    try:
        result.internal_state["hfx_weights"] = (
            {"agent_url": AGENT.url, "state": AGENT.state} if AGENT is not None else {"agent_url": None})
    except Exception as e:  # reporting must never break /server_info
        log.warning("hyperflexis: cannot report the weight agent: %s", e)
    return result
