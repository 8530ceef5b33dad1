"""Hooks that run the core scheduling policy inside SGLang 0.5.23's scheduler process.

Seams (see the field guide, section 2):

* enqueue (``Scheduler._add_request_to_queue``, AROUND): resolve the
  request's SLO from ``custom_params.slo`` / ``priority`` and attach a view;
  a bad SLO, or a P/D request without bootstrap fields, is answered with
  HTTP 400 and never queued (the scheduler keeps serving);
* queue order (``SchedulePolicy.calc_priority``, AROUND): after SGLang's
  prefix matching, sort the waiting queue by the policy's key;
* admission and token budget (``Scheduler.get_prefill_adder_class``,
  REPLACE): a ``PrefillAdder`` subclass asks the policy for this
  iteration's plan, applies its verdicts (reject: abort with HTTP 429 and the
  reason; demote: best effort, back of the queue) and admits exactly the
  planned requests and chunk sizes; an empty plan makes SGLang decode, which
  is the prefill-vs-decode choice;
* decode admission order (``DecodePreallocQueue.pop_preallocated``, BEFORE;
  P/D decode servers only): sort the pending queue by the policy's
  ``decode_key`` before SGLang reserves KV for it in order (SGLang's own
  priority sort, when enabled, is stable, so this order survives within a
  priority). The deadlines count from the decode server's own scheduler
  receive time, which a router that POSTs to both servers at once makes
  the same instant as the prefill server's, give or take the network;
* preemption (inside the ``PrefillAdder`` subclass): running requests the
  plan names as victims for a waiting one are evicted the way SGLang's
  priority preemption evicts them, and re-queued. A plan blocked on KV makes
  SGLang mark the batch full, as stock SGLang does; while requests wait, the
  mark is cleared on each arrival and every ``FULL_RECHECK_S`` so the policy
  can pick victims without paying a sort and a plan every iteration;
* retraction victims (``ScheduleBatch._get_decode_retraction_order``,
  REPLACE): the policy's victim order;
* calibration (``Scheduler.run_batch``, AROUND): iteration composition and
  period feed the online performance-model fit;
* KV transfer time (``process_disagg_prefill_inflight_queue``, AROUND; P/D
  prefill servers): from the first poll after a prefill to the poll that
  reports success; with ``HFX_PD_HANDOFF_MS`` it is the handoff the TTFT
  deadlines leave room for (``EngineSnapshot.handoff_s``);
* ``/server_info`` (``SchedulerInternalStateController.get_internal_state``,
  AFTER): an ``hfx`` entry with hooks fired, overhead and fitted model.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus

from ..core.perf_model import attn_pairs
from ..core.scheduling import EngineSnapshot
from ..core.scheduling.base import MIN_CHUNK_TOKENS
from ..core.slo import SLOError
from .config import PluginConfig
from .state import PluginState, timed
from .views import ReqView, resolve_slo

log = logging.getLogger("hyperflexis_sglang")

CFG: PluginConfig | None = None
STATE: PluginState | None = None
MAX_REFUSED_PLANS = 3  # plans in a row whose requests SGLang refused with nothing running: SGLang admits instead
FULL_RECHECK_S = 0.05  # while admission is blocked on KV, the policy looks again at most this often (and on arrivals)

TARGETS = {
    "enqueue": "sglang.srt.managers.scheduler.Scheduler._add_request_to_queue",
    "order": "sglang.srt.managers.schedule_policy.SchedulePolicy.calc_priority",
    "prefill_batch": "sglang.srt.managers.scheduler.Scheduler._get_new_batch_prefill_raw",
    "adder": "sglang.srt.managers.scheduler.Scheduler.get_prefill_adder_class",
    "retraction": "sglang.srt.managers.schedule_batch.ScheduleBatch._get_decode_retraction_order",
    "run_batch": "sglang.srt.managers.scheduler.Scheduler.run_batch",
    "idle": "sglang.srt.managers.scheduler.Scheduler.on_idle",
    "decode_order": "sglang.srt.disaggregation.decode.DecodePreallocQueue.pop_preallocated",
    "transfer": "sglang.srt.disaggregation.prefill.SchedulerDisaggregationPrefillMixin."
                "process_disagg_prefill_inflight_queue",
    "server_info": "sglang.srt.managers.scheduler_components.internal_state."
                   "SchedulerInternalStateController.get_internal_state",
}


def state_for(scheduler) -> PluginState:
    global STATE
    if STATE is None:
        STATE = PluginState(CFG, scheduler.server_args, int(scheduler.max_total_num_tokens),
                            int(scheduler.max_running_requests))
        log.info("hyperflexis: policy %s active in scheduler (mode %s, mixed chunk %s); hooks: %s",
                 CFG.policy, STATE.mode, STATE.sched_cfg.mixed, ", ".join(TARGETS))
        if CFG.policy == "hfx" and not STATE.sched_cfg.mixed:
            log.warning("hyperflexis: --enable-mixed-chunk is off; HFX budgets assume separate prefill "
                        "and decode iterations (start SGLang with --enable-mixed-chunk for best results)")
    return STATE


def view(req, st: PluginState) -> ReqView:
    v = getattr(req, "_hfx", None)
    if v is None:  # a request that bypassed enqueue (e.g. aborted): default class
        v = ReqView(req, st.catalog.resolve(), getattr(req.time_stats, "scheduler_recv_time", 0.0)
                    or time.perf_counter())
        req._hfx = v
    return v


def _reject_now(scheduler, req, message: str) -> None:
    """Answer HTTP 400 without queueing or running the request."""
    from sglang.srt.disaggregation.utils import prepare_abort
    log.warning("hyperflexis: rejecting request %s: %s", req.rid, message)
    prepare_abort(req, message, status_code=HTTPStatus.BAD_REQUEST)
    scheduler.output_streamer.stream_output([req], req.return_logprob)


# ---- enqueue ---------------------------------------------------------------
def add_request_to_queue(original, self, req, *args, **kwargs):
    st = state_for(self)
    is_retracted = kwargs.get("is_retracted", args[0] if args else False)
    with timed(st, "enqueue"):
        if not is_retracted and getattr(req, "_hfx", None) is None and not req.to_finish:
            if st.mode == "decode" and (getattr(req, "bootstrap_host", None) is None
                                        or getattr(req, "bootstrap_room", None) is None):
                st.invalid += 1
                return _reject_now(self, req, "P/D decode request is missing bootstrap_host/bootstrap_room; "
                                              "send it through a P/D router")
            try:
                slo = resolve_slo(req, st.catalog)
            except SLOError as e:
                st.invalid += 1
                return _reject_now(self, req, f"invalid SLO: {e}")
            req._hfx = ReqView(req, slo, req.time_stats.scheduler_recv_time or time.perf_counter())
            st.arrivals += 1
    return original(self, req, *args, **kwargs)


# ---- queue order -------------------------------------------------------------
def calc_priority(original, self, waiting_queue, *args, **kwargs):
    result = original(self, waiting_queue, *args, **kwargs)
    st = STATE
    if st is not None and waiting_queue:
        with timed(st, "order"):
            sort_waiting(waiting_queue, st)
    return result


def sort_waiting(queue: list, st: PluginState) -> None:
    """Sort SGLang's waiting list in place by the policy's queue key.

    Keys are time-invariant, so each request's key is cached and recomputed only when something it
    depends on changed: the performance model (a refit), demotion, the prefix match, output tokens
    (a retracted request), the first-token time or the queue entry time. With hundreds of waiting
    requests this sort runs every iteration.
    """
    key, perf = st.policy.key, st.perf

    def cached(r):
        v = view(r, st)
        stamp = (perf, v.best_effort, r.prefix_len, len(r.output_ids), v.first_token_time,
                 r.time_stats.wait_queue_entry_time)
        if v.key_stamp != stamp:  # tuple equality checks identity first: the same model costs no field compare
            v.key, v.key_stamp = key(v, perf), stamp
        return v.key
    queue.sort(key=cached)


def get_new_batch_prefill_raw(original, self, *args, **kwargs):
    st = state_for(self)
    st.scheduler = self
    batch = kwargs.get("running_batch", args[1] if len(args) > 1 else None)
    if st.sched_cfg.preemption and self.waiting_queue and batch is not None and batch.batch_is_full:
        # SGLang skips admission while the batch is marked full (KV ran out) until a request leaves. A
        # preemption needs the policy to look again before that, but only a new arrival (a possible
        # preemptor) or time (deadlines, a shrinking KV reservation) can change its answer: the mark is
        # cleared for those, not every iteration, so a queue blocked on KV costs no sort and no plan.
        now = time.perf_counter()
        if st.arrivals != st.full_seen_arrivals or now >= st.full_recheck_at:
            batch.batch_is_full = False
            st.full_seen_arrivals = st.arrivals
            st.full_recheck_at = now + FULL_RECHECK_S
    return original(self, *args, **kwargs)


class _Views:
    """Lazy views over SGLang's waiting list (the walk only reads its head)."""

    __slots__ = ("reqs", "st")

    def __init__(self, reqs, st):
        self.reqs, self.st = reqs, st

    def __iter__(self):
        st = self.st
        for r in self.reqs:
            yield view(r, st)

    def __len__(self):
        return len(self.reqs)

    def __bool__(self):
        return bool(self.reqs)


class _SingleChunkSchedule:
    """SGLang's schedule settings, except that the policy reads as ``shortest-prefill-first``: the one
    policy for which SGLang refuses (``AddReqResult.OTHER``) to truncate a request while another chunked
    request stays open, instead of making it a second chunked request (which its scheduler asserts never
    happens). Used only around ``add_one_req`` calls behind a chunk that yielded room."""

    def __init__(self, real):
        self._real = real

    schedule_policy = "shortest-prefill-first"

    def __getattr__(self, name):
        return getattr(self._real, name)


def one_chunked_at_a_time(call):
    """Run ``call`` (an ``add_one_req``) so that SGLang admits the request only if it prefills whole."""
    import sglang.srt.managers.schedule_policy as sp
    real = sp.get_schedule
    sp.get_schedule = lambda: _SingleChunkSchedule(real())
    try:
        return call()
    finally:
        sp.get_schedule = real


def make_adder_class(base, add_req_result):
    class HFXPrefillAdder(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            st = STATE
            self._hfx_open = False  # the chunked request stays mid prefill after this iteration's chunk
            self._hfx_allow: dict = {}
            if st is None or getattr(st, "scheduler", None) is None:
                self._hfx_allow = None  # not our walk (e.g. a warm-up): behave like SGLang
                return
            with timed(st, "plan"):
                self._hfx_plan(st, st.scheduler)

        def _hfx_plan(self, st: PluginState, sched) -> None:
            now = time.perf_counter()
            running = []
            for r in (self.running_batch.reqs if self.running_batch is not None else ()):
                v = view(r, st)
                if v.first_token_time is None and r.output_ids:
                    v.first_token_time = now
                running.append(v)
            chunked = view(sched.chunked_req, st) if sched.chunked_req is not None else None
            kv_free = self.token_to_kv_pool_allocator.available_size() + self.tree_cache.evictable_size()
            budget = getattr(self, "memory_budget", None)  # SGLang's own reservation for the running requests
            snap = EngineSnapshot(now, _Views(sched.waiting_queue, st), running, kv_free, st.perf, chunked,
                                  self.new_token_ratio, st.mode, perf_trusted=st.model_trusted(),
                                  reserved_kv_tokens=float(getattr(budget, "total_offset", -1.0)),
                                  handoff_s=st.handoff_s)
            plan = st.policy.plan(snap)
            st.planned(now, plan, len(sched.waiting_queue), len(running))
            self._hfx_allow = {item.rid: item.tokens for item in plan.prefill}
            # past the planned requests: NO_TOKEN when the pool is full makes SGLang mark the batch full and
            # skip admission (sort and plan too) until a request leaves, as stock SGLang does; else OTHER
            self._hfx_stop = add_req_result.NO_TOKEN if plan.kv_full else add_req_result.OTHER
            if plan.retract and plan.prefill:  # victims for a waiting request (decode-time retraction is SGLang's)
                self._hfx_preempt(st, sched, set(plan.retract))
            if plan.verdicts:
                self._hfx_verdicts(st, sched, plan.verdicts, now)
            (planned, ran), st.last_walk = st.last_walk, (bool(self._hfx_allow), self.can_run_list)
            refused = planned and not ran and not running and sched.chunked_req is None
            st.refused_plans = st.refused_plans + 1 if refused else 0
            if st.refused_plans >= MAX_REFUSED_PLANS:
                # SGLang's own accounting refused every request the last plans admitted while nothing ran:
                # an engine that would spin without running anything. SGLang admits this iteration itself.
                st.idle_fallbacks += 1
                st.refused_fallbacks += 1
                if st.refused_fallbacks == 1 or st.refused_fallbacks % 1000 == 0:
                    log.warning("hyperflexis: SGLang refused the planned requests %d times with nothing running "
                                "(%s; last refusal %s); SGLang admits this iteration (counted in "
                                "refused_fallbacks)", st.refused_plans, plan.reason, st.last_refusal)
                st.refused_plans = 0
                self._hfx_allow = None
            elif not self._hfx_allow and not running and (sched.waiting_queue or sched.chunked_req is not None):
                # Work-conserving: a plan that admits nothing while nothing runs would leave the engine
                # idle with requests waiting (an estimate off from SGLang's own accounting; also with a
                # chunked request, whose next chunk the plan found no room for). SGLang admits this
                # iteration, in the policy's queue order.
                st.idle_fallbacks += 1
                if st.idle_fallbacks == 1:
                    log.warning("hyperflexis: the plan admitted nothing on an idle engine (%s); SGLang admits "
                                "instead (counted in idle_fallbacks)", plan.reason)
                self._hfx_allow = None

        def _hfx_preempt(self, st, sched, rids: set) -> None:
            """Evict the planned victims as SGLang's ``preempt_to_schedule`` does: free their KV (the
            prefix cache may keep it), drop them from the running batch and hand them back to the
            scheduler, which re-queues them after this walk; they resume by re-prefilling their tokens."""
            batch = self.running_batch
            if batch is None or not hasattr(self, "memory_budget") or not hasattr(batch, "release_req"):
                return  # not the SGLang this was written against (0.5.23): admit without evicting
            keep, victims = [], []
            for i, r in enumerate(batch.reqs):
                # a request that finished this step has already released its KV (SGLang's comment in
                # preempt_to_schedule); the chunked request is not in the batch
                if r.rid in rids and not r.finished() and r not in self.preempt_list and r is not sched.chunked_req:
                    victims.append(r)
                    self.memory_budget.total_offset -= self._get_running_request_total_token_offset(r)
                    batch.release_req(i, len(batch.reqs) - len(victims))
                else:
                    keep.append(i)
            if victims:
                batch.filter_batch(keep_indices=keep)
                self.preempt_list.extend(victims)
                st.preempted += len(victims)
                st.recent_preemptions.extend((r.rid, len(r.output_ids)) for r in victims)

        def _hfx_verdicts(self, st, sched, verdicts, now: float) -> None:
            """Apply verdicts the engine can stand behind: all of them on a trusted model, otherwise
            only those of requests whose TTFT deadline has already passed (certain misses)."""
            by_rid = {v.rid: v for v in verdicts}
            trusted = st.model_trusted()
            for r in sched.waiting_queue:
                v = by_rid.get(r.rid)
                if v is None:
                    continue
                if r.to_finish is not None:  # rejected by an earlier plan, still queued until SGLang passes it
                    self._hfx_allow[r.rid] = None
                    continue
                rv = view(r, st)
                if not trusted and now <= rv.slo.ttft_deadline(rv.arrival):
                    continue
                if v.action == "reject":
                    st.rejected += 1
                    r.set_finish_with_abort(f"SLO cannot be met: {v.reason}", HTTPStatus.TOO_MANY_REQUESTS,
                                            "SLOInfeasibleError")
                    self._hfx_allow[r.rid] = None  # one-token abort pass-through
                else:
                    st.demoted += 1
                    view(r, st).best_effort = True
            sort_waiting(sched.waiting_queue, st)  # demoted ones go to the back

        def _hfx_with_cap(self, tokens, call):
            saved = self.rem_chunk_tokens
            if tokens is None or saved is None or tokens >= saved:
                return call()
            self.rem_chunk_tokens = tokens
            try:
                return call()
            finally:
                self.rem_chunk_tokens += saved - tokens

        def add_chunked_req(self, req):
            if self._hfx_allow is None:
                return super().add_chunked_req(req)
            tokens = self._hfx_allow.get(req.rid) or MIN_CHUNK_TOKENS  # never strand a chunked request
            left = self._hfx_with_cap(tokens, lambda: super(HFXPrefillAdder, self).add_chunked_req(req))
            self._hfx_open = left is not None  # it yielded room: whole prompts only behind it
            return left

        def add_one_req(self, req, *args, **kwargs):
            if self._hfx_allow is None:
                return super().add_one_req(req, *args, **kwargs)
            if req.rid not in self._hfx_allow:
                return self._hfx_stop

            def add():
                call = lambda: super(HFXPrefillAdder, self).add_one_req(req, *args, **kwargs)  # noqa: E731
                if self._hfx_open:
                    return one_chunked_at_a_time(call)
                return call()
            result = self._hfx_with_cap(self._hfx_allow[req.rid], add)
            if result is not add_req_result.CONTINUE and STATE is not None and req not in self.can_run_list:
                self._hfx_note_refusal(STATE, req, result)
            return result

        def _hfx_note_refusal(self, st: PluginState, req, result) -> None:
            """A planned request SGLang's own accounting refused: kept for the refused-plan guard's log and
            ``/server_info`` (where the policy's estimate and SGLang's disagree)."""
            st.last_refusal = {"result": getattr(result, "name", str(result)), "rid": req.rid,
                               "input_tokens": len(req.origin_input_ids), "output_tokens": len(req.output_ids),
                               "planned_tokens": self._hfx_allow[req.rid],
                               "rem_total_tokens": getattr(self, "rem_total_tokens", None),
                               "rem_chunk_tokens": getattr(self, "rem_chunk_tokens", None)}

    return HFXPrefillAdder


# ---- P/D decode admission order ---------------------------------------------------
def decode_prealloc_order(self, *args, **kwargs):
    """Sort the decode server's pending (pre-allocation) queue by ``decode_key`` (BEFORE hook).

    ``self.queue`` holds ``DecodeRequest`` objects (``.req`` is the SGLang
    ``Req``); ``pop_preallocated`` then reserves KV walking it in order.
    Entries are shared with ``self.pending_reqs``, so only the order changes.
    """
    queue = getattr(self, "queue", None)
    if not queue:
        return None
    st = state_for(self.scheduler)
    with timed(st, "decode_order"):
        key, perf = st.policy.decode_key, st.perf
        queue.sort(key=lambda d: key(view(d.req, st), perf))
    return None


# ---- retraction ----------------------------------------------------------------
def retraction_order(reqs):
    """SGLang wants indices most-preferred-to-keep first; the policy gives victims first."""
    st = STATE
    with timed(st, "retraction"):
        views = [view(r, st) for r in reqs]
        index = {id(v): i for i, v in enumerate(views)}
        victims_first = st.policy.retraction_order(views, time.perf_counter())
        return [index[id(v)] for v in reversed(victims_first)]


# ---- calibration -----------------------------------------------------------------
def composition(batch) -> tuple:
    """(prefill tokens, query-key pairs, prefill seqs, decode reqs, decode KV tokens) of a batch."""
    mode = batch.forward_mode
    pre_tokens = pairs = pre_seqs = dec = dec_kv = 0
    if mode is not None and (mode.is_extend() or mode.is_mixed()):
        lens = batch.extend_lens or []
        prefixes = batch.prefix_lens or [0] * len(lens)
        for n, p in zip(lens, prefixes):
            if n == 1 and mode.is_mixed():
                dec += 1
                dec_kv += p + 1
            else:
                pre_tokens += n
                pairs += attn_pairs(n, p)
                pre_seqs += 1
    elif mode is not None and mode.is_decode():
        for r in batch.reqs:
            dec += 1
            dec_kv += len(r.origin_input_ids) + len(r.output_ids)
    return (pre_tokens, pairs, pre_seqs, dec, dec_kv)


def prefill_inflight(original, self, *args, **kwargs):
    """P/D prefill server: time each request's KV transfer, from the first poll after its prefill to the
    poll that reports success (AROUND). The moving average feeds the TTFT deadlines (``handoff_s``)."""
    st = STATE
    queue = getattr(self, "disagg_prefill_inflight_queue", None)
    if st is None or not queue:
        return original(self, *args, **kwargs)
    with timed(st, "transfer"):
        now = time.perf_counter()
        for req in queue:
            if getattr(req, "_hfx_sent", None) is None:
                req._hfx_sent = now
    done = original(self, *args, **kwargs)
    if done:
        end = time.perf_counter()
        for req in done:
            sent = getattr(req, "_hfx_sent", None)
            if sent is not None and type(getattr(req, "finished_reason", None)).__name__ != "FINISH_ABORT":
                st.transfer_done(end - sent)
    return done


def run_batch(original, self, batch, *args, **kwargs):
    st = state_for(self)
    with timed(st, "run_batch"):
        comp = composition(batch)
        if comp[0] or comp[3]:
            st.iteration_started(time.perf_counter(), comp)
    return original(self, batch, *args, **kwargs)


def on_idle(self, *args, **kwargs):
    """No batch this loop turn: the next launch does not end an iteration (BEFORE hook)."""
    st = STATE
    if st is not None:
        st.idle()


# ---- /server_info ------------------------------------------------------------------
def get_internal_state(result, *args, **kwargs):
    st = STATE
    try:
        result.internal_state["hfx"] = st.report() if st is not None else {"enabled": True, "scheduler": "not started"}
    except Exception as e:  # reporting must never break /server_info
        log.warning("hyperflexis: cannot report state: %s", e)
    return result
