"""Keep a P/D instance's prefix cache consistent across SGLang's runtime role switch (``/pd_role_switch``).

Why: SGLang 0.5.23 builds the prefix cache (``scheduler.tree_cache``) once,
for the role an instance starts in: enabled on a prefill server, disabled on
a decode server (``disaggregation_decode_enable_radix_cache`` off, the
default). ``handle_pd_role_switch`` rebuilds only the disaggregation
queues, so an instance started as prefill and switched to decode keeps an
enabled tree: its finished decode requests go into it as if it were a
prefill server, and at the next idle poll the pool check (strict by default,
``SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE``) finds a KV token unaccounted
and kills the scheduler ("pool memory leak detected! ... evictable=30").
Found on CPU with Mooncake TCP; nothing in it is CPU-specific.

Fix (AROUND ``Scheduler.handle_pd_role_switch``): after a successful switch
to decode, empty the cache (the instance is idle: SGLang refuses the switch
otherwise) and disable the tree, as a decode launch has it; after a switch
back to prefill, enable it again if the instance started with it enabled.
An instance started as decode keeps its tree disabled when it becomes a
prefill server (no prefix reuse there; SGLang built that tree without an
eviction policy).

Second fix: a prefill server that comes back keeps its KV endpoint. Each
Mooncake KV manager binds a random port for the decode servers' messages
(``rank_port``), and a decode server caches that endpoint per prefill
bootstrap address for its whole life, registering its KV buffers there
only once (``connection_pool``). SGLang's switch rebuilds the manager, so a
prefill server that went to decode and came back listens on a new port with
an empty peer table, while every decode server that had served it still
sends to the old port: each such request waits in ``Bootstrapping`` until
SGLang's 300 s bootstrap timeout (seen on CPU with Mooncake TCP on the
second P -> D -> P round trip of ``bench/scaling/role_switch.py``; a decode
server that never met the prefill server before fetches the new port and
works, which is why the first round trip did). The fix remembers the port
and the registered decode peers when a prefill server switches to decode,
holds the port with a placeholder socket meanwhile, and on the way back
binds the new manager to the same port and publishes the remembered peers
to it, so the decode servers' caches stay true. If the port cannot be had
back, the instance keeps SGLang's random port and the log says which decode
servers must be restarted.

Gate: :func:`wanted`: ``HFX_ROLE_SWITCH_FIX=1``, or ``HFX_ENABLE=1`` without
``HFX_ROLE_SWITCH_FIX=0``. The hook runs only when ``/pd_role_switch`` is
called, which SGLang accepts only with ``--enable-pd-role-switch``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .config import PluginConfig

log = logging.getLogger("hyperflexis_sglang")

TARGET = "sglang.srt.managers.scheduler.Scheduler.handle_pd_role_switch"
REGISTERED: list[str] = []


def wanted(cfg: PluginConfig) -> bool:
    return cfg.role_switch_fix_wanted


def register() -> None:
    if REGISTERED:
        return
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType
    HookRegistry.register(TARGET, around_switch, HookType.AROUND)
    REGISTERED.append(TARGET)


def around_switch(original, self, recv_req, *args, **kwargs):
    cache = getattr(self, "tree_cache", None)
    if cache is not None and not hasattr(self, "_hfx_tree_enabled_at_start"):
        self._hfx_tree_enabled_at_start = not getattr(cache, "disable", True)
    prepare_only = getattr(recv_req, "prepare_only", False)
    new_role = (getattr(recv_req, "new_role", None) or "").lower()
    old_role = _role(self)
    leaving = remember_endpoint(self) if not prepare_only and old_role == "prefill" and new_role == "decode" else None
    kept: KeptEndpoint | None = getattr(self, "_hfx_kept_endpoint", None)
    returning = kept is not None and not prepare_only and old_role == "decode" and new_role == "prefill"
    if returning:
        kept.release()
        with bind_rank_port(kept.ip, kept.port):
            out = original(self, recv_req, *args, **kwargs)
    else:
        out = original(self, recv_req, *args, **kwargs)
    switched = not prepare_only and getattr(out, "success", False) \
        and getattr(out, "old_role", None) != getattr(out, "new_role", None)
    if leaving is not None and switched:
        leaving.hold()
        self._hfx_kept_endpoint = leaving
    if returning:
        if switched:
            self._hfx_kept_endpoint = None
            give_back_endpoint(self, kept)
        elif _role(self) == "decode":
            kept.hold()  # refused before teardown: still decode, keep the port for the next try
    if cache is None or not switched:
        return out
    after_switch(self, out.new_role)
    return out


def _role(scheduler) -> str:
    mode = getattr(scheduler, "disaggregation_mode", None)
    return str(getattr(mode, "value", mode) or "")


def _kv_manager(scheduler):
    """The current role's KV manager (SGLang's ``role_switch._current_kv_manager``), or None."""
    role = _role(scheduler)
    queue = getattr(scheduler, "disagg_prefill_bootstrap_queue" if role == "prefill"
                    else "disagg_decode_prealloc_queue", None)
    return getattr(queue, "kv_manager", None)


@dataclass
class KeptEndpoint:
    """A prefill KV manager's endpoint and registered decode peers, kept while the instance is decode."""
    ip: str
    port: int
    peers: dict[str, Any] = field(default_factory=dict)
    placeholder: Any = None  # (zmq context, PULL socket) holding the port

    def hold(self, tries: int = 20, pause_s: float = 0.01) -> None:
        """Bind a placeholder on the port. zmq unbinds a closed socket in its I/O thread, so the port the
        torn-down KV manager held may stay busy for a moment: the bind is tried ``tries`` times."""
        if self.placeholder is not None:
            return
        import zmq
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        error = None
        for attempt in range(tries):
            try:
                sock.bind(_tcp(self.ip, self.port))
                error = None
                break
            except zmq.ZMQError as e:
                error = e
                if attempt + 1 < tries:
                    time.sleep(pause_s)
        if error is not None:
            sock.close(0)
            ctx.term()
            log.warning("hyperflexis: could not hold the prefill KV port %s:%s while decode (%s); "
                        "it is tried again on the way back", self.ip, self.port, error)
            return
        self.placeholder = (ctx, sock)

    def release(self) -> None:
        if self.placeholder is None:
            return
        ctx, sock = self.placeholder
        self.placeholder = None
        sock.close(0)
        ctx.term()


def _tcp(ip: str, port: int) -> str:
    return f"tcp://[{ip}]:{port}" if ":" in ip else f"tcp://{ip}:{port}"


def remember_endpoint(scheduler) -> KeptEndpoint | None:
    """The prefill KV manager's port and decode peers, before SGLang tears it down; None if it has none."""
    km = _kv_manager(scheduler)
    port, ip = getattr(km, "rank_port", None), getattr(km, "local_ip", None)
    table = getattr(km, "decode_kv_args_table", None)
    if not isinstance(port, int) or not ip or not isinstance(table, dict):
        return None
    return KeptEndpoint(ip=str(ip), port=port, peers=dict(table))


class bind_rank_port:
    """While active, the first PULL socket SGLang's KV manager binds gets ``port`` instead of a random one.

    SGLang binds it in ``CommonKVManager.__init__`` through
    ``sglang.srt.disaggregation.common.conn.get_zmq_socket_on_host``; that name
    is swapped for the switch's duration only (the scheduler thread runs the
    switch; no other socket is bound meanwhile). A port that is taken falls
    back to SGLang's random bind.
    """

    def __init__(self, ip: str, port: int):
        self.ip, self.port, self.used = ip, port, False

    def __enter__(self):
        import sglang.srt.disaggregation.common.conn as conn
        self.module, self.original = conn, conn.get_zmq_socket_on_host
        conn.get_zmq_socket_on_host = self.bind
        return self

    def __exit__(self, *exc):
        self.module.get_zmq_socket_on_host = self.original
        return False

    def bind(self, context, socket_type, host=None, *args, **kwargs):
        import zmq
        if self.used or socket_type != zmq.PULL or (host or "127.0.0.1") != self.ip or args or kwargs:
            return self.original(context, socket_type, host, *args, **kwargs)
        self.used = True
        from sglang.srt.utils.network import config_socket
        sock = context.socket(socket_type)
        config_socket(sock, socket_type)
        if ":" in self.ip:
            sock.setsockopt(zmq.IPV6, 1)
        try:
            sock.bind(_tcp(self.ip, self.port))
        except zmq.ZMQError as e:
            sock.close(0)
            log.warning("hyperflexis: prefill KV port %s:%s is taken (%s); SGLang binds a random one", self.ip,
                        self.port, e)
            return self.original(context, socket_type, host)
        return self.port, sock


def give_back_endpoint(scheduler, kept: KeptEndpoint) -> None:
    """After a switch back to prefill: publish the remembered decode peers to the new KV manager."""
    km = _kv_manager(scheduler)
    if km is None:
        return
    if getattr(km, "rank_port", None) != kept.port:
        log.error("hyperflexis: prefill KV endpoint moved from port %s to %s on the switch back; decode servers "
                  "that served this instance before (mooncake sessions %s) keep sending to the old port and must "
                  "be restarted", kept.port, getattr(km, "rank_port", None), sorted(kept.peers) or "none")
        return
    publish = getattr(km, "_publish_peer_registration", None)
    table = getattr(km, "decode_kv_args_table", None)
    for session, info in kept.peers.items():
        if getattr(info, "requires_dcp_relayout", False) and hasattr(km, "_init_dcp_pack_buffers_once"):
            km._init_dcp_pack_buffers_once(info.dst_dcp_size, include_draft=True)
        if publish is not None:
            publish(session, info)
        elif isinstance(table, dict):
            table[session] = info
    log.info("hyperflexis: role switch to prefill: KV endpoint %s:%s kept, %d decode peer(s) registered again",
             kept.ip, kept.port, len(kept.peers))


def after_switch(scheduler, new_role: str) -> None:
    """Give ``scheduler``'s prefix cache the state a fresh launch in ``new_role`` would have (see module doc)."""
    cache = scheduler.tree_cache
    if new_role == "decode" and not cache.disable:
        flushed = scheduler.flush_cache(empty_cache=False)
        cache.disable = True
        log.info("hyperflexis: role switch to decode: prefix cache %s and disabled, as on a decode launch",
                 "emptied" if flushed else "NOT emptied (instance busy)")
    elif new_role == "prefill" and getattr(scheduler, "_hfx_tree_enabled_at_start", False) and cache.disable:
        cache.disable = False
        log.info("hyperflexis: role switch to prefill: prefix cache enabled again")
