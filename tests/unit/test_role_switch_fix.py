"""The plugin's prefix-cache fix for SGLang's runtime P/D role switch (sglang_ext/role_switch.py).

The scheduler here is a stand-in holding only what the fix touches (``tree_cache.disable``,
``flush_cache``); the real switch on real SGLang servers is
``tests/integration/test_controller_live.py::test_role_switch_in_place_both_ways``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hyperflexis_sglang.sglang_ext import role_switch
from hyperflexis_sglang.sglang_ext.config import PluginConfig


@pytest.mark.parametrize("env, wanted", [
    ({}, False),
    ({"HFX_ENABLE": "1"}, True),
    ({"HFX_ENABLE": "1", "HFX_ROLE_SWITCH_FIX": "0"}, False),
    ({"HFX_ROLE_SWITCH_FIX": "1"}, True),  # also for a stock-scheduling fleet
    ({"HFX_ROLE_SWITCH_FIX": "no"}, False),
])
def test_fix_asked_for(env, wanted):
    assert role_switch.wanted(PluginConfig.from_env(env)) is wanted


class Scheduler:
    def __init__(self, disabled: bool, idle: bool = True):
        self.tree_cache = SimpleNamespace(disable=disabled, tokens=30)
        self.idle, self.flushes = idle, 0

    def flush_cache(self, empty_cache: bool = True) -> bool:
        self.flushes += 1
        if self.idle:
            self.tree_cache.tokens = 0
        return self.idle


def reply(ok: bool, old: str, new: str) -> SimpleNamespace:
    return SimpleNamespace(success=ok, old_role=old, new_role=new)


def switch(sched: Scheduler, new: str, ok: bool = True, prepare_only: bool = False, old: str | None = None):
    old = old or ("prefill" if new == "decode" else "decode")
    return role_switch.around_switch(lambda self, req: reply(ok, old, new), sched,
                                     SimpleNamespace(new_role=new, prepare_only=prepare_only))


# started as | switches (new role, succeeded, prepare only) | tree disabled after each | flushes
@pytest.mark.parametrize("start_disabled, steps, disabled_after, flushes", [
    (False, [("decode", True, False)], [True], 1),  # prefill launch -> decode: emptied, disabled
    (False, [("decode", True, False), ("prefill", True, False)], [True, False], 1),  # and back: enabled again
    (False, [("decode", True, True)], [False], 0),  # prepare_only: nothing switched yet
    (False, [("decode", False, False)], [False], 0),  # refused (busy, no flag...): untouched
    (True, [("prefill", True, False)], [True], 0),  # decode launch -> prefill: SGLang built no eviction policy
    (True, [("prefill", True, False), ("decode", True, False)], [True, True], 0),
])
def test_prefix_cache_follows_the_role(start_disabled, steps, disabled_after, flushes):
    s = Scheduler(disabled=start_disabled)
    for (new, ok, prep), want in zip(steps, disabled_after):
        out = switch(s, new, ok, prep)
        assert out.success is ok  # SGLang's reply passes through unchanged
        assert s.tree_cache.disable is want
    assert s.flushes == flushes
    if flushes:
        assert s.tree_cache.tokens == 0  # nothing stays behind in a tree that can no longer evict


def test_same_role_is_a_no_op():
    s = Scheduler(disabled=False)
    switch(s, "prefill", old="prefill")
    assert s.tree_cache.disable is False and s.flushes == 0


def test_the_hooked_method_exists_in_the_pinned_sglang():
    import importlib
    module, cls, meth = role_switch.TARGET.rsplit(".", 2)
    assert callable(getattr(getattr(importlib.import_module(module), cls), meth))


# --- the kept KV endpoint (second fix): real zmq sockets on 127.0.0.1, SGLang's own binder ---

def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_placeholder_holds_the_port_until_released():
    import zmq
    kept = role_switch.KeptEndpoint(ip="127.0.0.1", port=free_port())
    kept.hold()
    ctx = zmq.Context()
    try:
        other = ctx.socket(zmq.PULL)
        with pytest.raises(zmq.ZMQError):
            other.bind(f"tcp://127.0.0.1:{kept.port}")
        kept.release()
        other.bind(f"tcp://127.0.0.1:{kept.port}")  # free again for the new KV manager
        other.close(0)
    finally:
        kept.release()
        ctx.term()


def test_placeholder_waits_for_a_port_still_being_freed():
    """zmq frees a closed socket's port in its I/O thread: a bind right after the close can find it busy."""
    import threading
    import zmq
    kept = role_switch.KeptEndpoint(ip="127.0.0.1", port=free_port())
    ctx = zmq.Context()
    old = ctx.socket(zmq.PULL)
    old.bind(f"tcp://127.0.0.1:{kept.port}")
    closer = threading.Timer(0.05, lambda: old.close(0))  # still busy when hold() starts
    closer.start()
    try:
        kept.hold(tries=200, pause_s=0.01)
        assert kept.placeholder is not None
    finally:
        closer.join()
        kept.release()
        ctx.term()
    ctx2 = zmq.Context()
    taken = ctx2.socket(zmq.PULL)
    taken.bind(f"tcp://127.0.0.1:{kept.port}")
    try:
        kept.hold(tries=3, pause_s=0.001)  # a port that stays taken: no placeholder, no error
        assert kept.placeholder is None
    finally:
        taken.close(0)
        ctx2.term()


def test_the_new_kv_manager_binds_the_kept_port_and_only_its_first_pull_socket():
    import zmq
    import sglang.srt.disaggregation.common.conn as conn
    original = conn.get_zmq_socket_on_host
    port = free_port()
    ctx = zmq.Context()
    try:
        with role_switch.bind_rank_port("127.0.0.1", port):
            got, sock = conn.get_zmq_socket_on_host(ctx, zmq.PULL, host="127.0.0.1")
            second, sock2 = conn.get_zmq_socket_on_host(ctx, zmq.PULL, host="127.0.0.1")
        assert got == port and second != port
        assert conn.get_zmq_socket_on_host is original  # swapped for the switch only
        push = ctx.socket(zmq.PUSH)  # a decode server's cached endpoint reaches the new socket
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(b"room")
        assert sock.poll(5000) and sock.recv() == b"room"
        for s in (push, sock, sock2):
            s.close(0)
    finally:
        ctx.term()


def test_a_taken_port_falls_back_to_a_random_one():
    import zmq
    import sglang.srt.disaggregation.common.conn as conn
    kept = role_switch.KeptEndpoint(ip="127.0.0.1", port=free_port())
    kept.hold()
    ctx = zmq.Context()
    try:
        with role_switch.bind_rank_port("127.0.0.1", kept.port):
            got, sock = conn.get_zmq_socket_on_host(ctx, zmq.PULL, host="127.0.0.1")
        assert got != kept.port
        sock.close(0)
    finally:
        kept.release()
        ctx.term()


class KVManager:
    def __init__(self, port, peers=None):
        self.rank_port, self.local_ip = port, "127.0.0.1"
        self.decode_kv_args_table = dict(peers or {})
        self.published = []

    def _publish_peer_registration(self, session, info):
        self.published.append(session)
        self.decode_kv_args_table[session] = info


def disagg_scheduler(role: str, km: KVManager) -> SimpleNamespace:
    queue = SimpleNamespace(kv_manager=km)
    return SimpleNamespace(disaggregation_mode=SimpleNamespace(value=role), disagg_prefill_bootstrap_queue=queue,
                           disagg_decode_prealloc_queue=queue)


def test_peers_are_remembered_on_leaving_and_published_on_return():
    info = SimpleNamespace(requires_dcp_relayout=False)
    old = KVManager(free_port(), {"127.0.0.1:17001": info})
    kept = role_switch.remember_endpoint(disagg_scheduler("prefill", old))
    assert kept is not None and kept.port == old.rank_port and kept.peers == {"127.0.0.1:17001": info}
    new = KVManager(old.rank_port)
    role_switch.give_back_endpoint(disagg_scheduler("prefill", new), kept)
    assert new.published == ["127.0.0.1:17001"] and new.decode_kv_args_table["127.0.0.1:17001"] is info
    moved = KVManager(old.rank_port + 1)  # the port could not be had back: peers are not published to it
    role_switch.give_back_endpoint(disagg_scheduler("prefill", moved), kept)
    assert moved.published == []


def test_round_trip_through_the_hook_keeps_the_endpoint():
    """around_switch with a stand-in for SGLang's switch that, like it, tears the KV manager down and binds a new
    one through common.conn.get_zmq_socket_on_host (real zmq); a refused switch back keeps the port held."""
    import zmq
    import sglang.srt.disaggregation.common.conn as conn
    ctx = zmq.Context()
    sockets = []

    def new_manager(peers=None):
        port, sock = conn.get_zmq_socket_on_host(ctx, zmq.PULL, host="127.0.0.1")
        sockets.append(sock)
        return KVManager(port, peers)

    sched = disagg_scheduler("prefill", new_manager({"decode-1": SimpleNamespace()}))
    sched.tree_cache = None
    first_port = sched.disagg_prefill_bootstrap_queue.kv_manager.rank_port

    def sglang_switch(self, req, refuse=False):
        old = self.disaggregation_mode.value
        if refuse:
            return SimpleNamespace(success=False, old_role=old, new_role=req.new_role)
        sockets.pop().close(0)  # teardown frees the old port
        km = new_manager()
        self.disaggregation_mode = SimpleNamespace(value=req.new_role)
        self.disagg_prefill_bootstrap_queue = self.disagg_decode_prealloc_queue = SimpleNamespace(kv_manager=km)
        return SimpleNamespace(success=True, old_role=old, new_role=req.new_role)

    try:
        role_switch.around_switch(sglang_switch, sched, SimpleNamespace(new_role="decode"))
        kept = sched._hfx_kept_endpoint
        assert kept.port == first_port and kept.placeholder is not None
        role_switch.around_switch(lambda s, r: sglang_switch(s, r, refuse=True), sched,
                                  SimpleNamespace(new_role="prefill"))
        assert sched._hfx_kept_endpoint is kept and kept.placeholder is not None  # still decode, port still held
        role_switch.around_switch(sglang_switch, sched, SimpleNamespace(new_role="prefill"))
        km = sched.disagg_prefill_bootstrap_queue.kv_manager
        assert km.rank_port == first_port and km.published == ["decode-1"]
        assert sched._hfx_kept_endpoint is None and kept.placeholder is None
    finally:
        for s in sockets:
            s.close(0)
        if getattr(sched, "_hfx_kept_endpoint", None):
            sched._hfx_kept_endpoint.release()
        ctx.term()
