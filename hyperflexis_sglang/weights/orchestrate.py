"""Controller side of D2D weight loading: ``load_from_peers(targets, seeds) -> LoadReport``.

Imports neither torch nor SGLang (the controller may run anywhere). Steps:

1. find each instance's weight agent (``/server_info`` -> ``internal_states[0].hfx_weights.agent_url``,
   or the URL is an agent itself) and check that every manifest matches the first seed's;
2. checksum every seed (they must agree: that is the reference);
3. plan (core/weights) and run a session: every node gets its part, rank 0 hosts the group's store;
4. on a failure (a seed died, a timeout): keep the buckets that fully arrived, drop dead nodes and
   re-plan the missing buckets from the seeds still alive; with none left, load from disk;
5. verify: each target recomputes its checksum and becomes ``ready`` only when it equals the seeds';
   the server's prefix cache (computed with the dummy weights) is flushed.

A target is reported ready only after step 5, so a router that adds
instances from this report never serves partial or wrong weights.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..core.weights import ParamSpec, PlanConfig, WeightPlanError, plan_transfers
from .protocol import per_param_body, session_body

MIB = 1 << 20


class WeightLoadError(RuntimeError):
    """Loading cannot proceed (no agent, manifests differ, seeds disagree); the message says which."""


@dataclass(frozen=True)
class Peer:
    name: str  # node id in plans (the URL the caller gave)
    agent_url: str  # the weight agent's base URL
    server_url: str | None  # the SGLang server (None for a plain-process agent)
    model_path: str | None  # the server's model path (disk fallback)


@dataclass(frozen=True)
class Attempt:
    session: str  # session id
    seeds: tuple[str, ...]  # seeds that took part
    receivers: tuple[str, ...]  # targets that still needed buckets
    buckets: int  # buckets moved in this attempt (transfers)
    rounds: int  # plan rounds
    seconds: float  # wall time of the session
    failed: tuple[str, ...]  # nodes whose part failed or that became unreachable
    error: str  # first error reported, if any


@dataclass(frozen=True)
class LoadReport:
    ok: bool  # every target verified bit-exact against the seeds and marked ready
    seconds: float  # wall time from start to verified
    transfer_seconds: float  # wall time inside transfer sessions
    total_bytes: int  # bytes of one copy of the weights
    buckets: int  # buckets one copy is split into
    checksum: str  # the seeds' total checksum (equal to every ready target's)
    ready: tuple[str, ...]  # targets verified and ready
    from_disk: tuple[str, ...]  # targets that fell back to loading from disk
    failed: tuple[str, ...]  # targets that could not be loaded
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)  # transfer sessions, in order
    reason: str = ""  # one-line summary


def _http(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read() or b"{}"
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise WeightLoadError(f"{method} {url}: HTTP {e.code}: {detail[:500]}") from None
    try:
        return json.loads(raw)
    except ValueError:  # some SGLang endpoints (/flush_cache) answer plain text
        return {"text": raw.decode(errors="replace")}


def discover(url: str) -> Peer:
    """The weight agent of an SGLang server URL (with the plugin's agent on) or of an agent URL."""
    url = url.rstrip("/")
    try:
        info = _http("GET", url + "/server_info", timeout=10)
    except (WeightLoadError, OSError):
        info = None
    if info is not None:
        entry = ((info.get("internal_states") or [{}])[0] or {}).get("hfx_weights") or {}
        if not entry.get("agent_url"):
            raise WeightLoadError(f"{url} has no weight agent: start it with HFX_WEIGHTS_AGENT=1")
        return Peer(url, _reachable(entry["agent_url"], url), url, info.get("model_path"))
    _http("GET", url + "/hfx/weights/status", timeout=10)  # raises when it is not an agent either
    return Peer(url, url, None, None)


def _reachable(agent_url: str, server_url: str) -> str:
    """An agent bound to all interfaces (0.0.0.0, ::) is reached at the server URL's host."""
    agent, server = urllib.parse.urlparse(agent_url), urllib.parse.urlparse(server_url)
    if agent.hostname in ("0.0.0.0", "::"):
        host = f"[{server.hostname}]" if ":" in (server.hostname or "") else server.hostname
        return f"{agent.scheme}://{host}:{agent.port}"
    return agent_url


def _manifest(peer: Peer) -> tuple[list[ParamSpec], str]:
    m = _http("GET", peer.agent_url + "/hfx/weights/manifest")
    return [ParamSpec(n, d, tuple(s), int(b)) for n, d, s, b in m["params"]], m["backend"]


def _alive(peer: Peer) -> bool:
    try:
        _http("GET", peer.agent_url + "/hfx/weights/status", timeout=5)
        return True
    except (WeightLoadError, OSError):
        return False


def load_from_peers(targets: list[str], seeds: list[str], *, bucket_mb: int = 256, max_recv_streams: int = 2,
                    fanout: bool = True, backend: str | None = None, timeout_s: float = 120.0,
                    max_attempts: int = 3, fallback_disk: bool = True, poll_s: float = 0.05) -> LoadReport:
    """Load the weights of ``targets`` (new instances, e.g. ``--load-format dummy``) from running ``seeds``.

    Arguments are SGLang server URLs (plugin agent on) or weight-agent URLs.
    Raises WeightLoadError for bad inputs; transfer failures end in the report.
    """
    t0 = time.perf_counter()
    if not targets or not seeds or set(targets) & set(seeds):
        raise WeightLoadError("need at least one target and one seed, and no URL in both lists")
    with ThreadPoolExecutor(len(targets) + len(seeds)) as pool:
        peers = dict(zip(seeds + targets, pool.map(discover, seeds + targets)))
        manifests = dict(zip(peers, pool.map(_manifest, peers.values())))
        sums = dict(zip(seeds, pool.map(lambda s: _http("GET", peers[s].agent_url + "/hfx/weights/checksum",
                                                        timeout=600), seeds)))
    params, ref_backend = manifests[seeds[0]]
    for name, (m, _) in manifests.items():
        if m != params:
            raise WeightLoadError(f"{name}: parameters differ from seed {seeds[0]} (same model, dtype and TP needed)")
    totals = {s: sums[s]["total"] for s in seeds}
    if len(set(totals.values())) != 1:
        raise WeightLoadError(f"seeds hold different weights: {totals}")
    checksum = totals[seeds[0]]
    # at least 16 buckets, a multiple of the seed count: every seed is busy in every round of a 1-target load
    cfg = PlanConfig(bucket_bytes=bucket_mb * MIB, min_buckets=-(-16 // len(seeds)) * len(seeds),
                     max_recv_streams=max_recv_streams, fanout=fanout)
    run = _Run(peers, params, cfg, backend or ref_backend, timeout_s, poll_s)
    attempts = run.transfer(list(targets), list(seeds), max_attempts)
    transfer_s = sum(a.seconds for a in attempts)
    ready, from_disk, failed = _finish(peers, targets, run.missing(list(targets)), checksum, fallback_disk)
    reason = (f"{len(ready)}/{len(targets)} ready from {len(seeds)} seed(s) in {len(attempts)} attempt(s)"
              f"{f', {len(from_disk)} from disk' if from_disk else ''}{f', failed: {failed}' if failed else ''}")
    return LoadReport(not failed, time.perf_counter() - t0, transfer_s, sum(p.nbytes for p in params),
                      len(run.buckets), checksum, tuple(ready), tuple(from_disk), tuple(failed),
                      tuple(attempts), reason)


def load_per_param(targets: list[str], seed: str, *, backend: str | None = None,
                   timeout_s: float = 600.0) -> LoadReport:
    """Baseline for benchmarks: R-Fork's scheme (one seed broadcasts parameter by parameter), then verify."""
    t0 = time.perf_counter()
    peers = {u: discover(u) for u in [seed] + targets}
    params, ref_backend = _manifest(peers[seed])
    checksum = _http("GET", peers[seed].agent_url + "/hfx/weights/checksum", timeout=600)["total"]
    run = _Run(peers, params, PlanConfig(), backend or ref_backend, timeout_s, 0.05)
    sid = f"{uuid.uuid4().hex[:12]}-pp"
    t1 = time.perf_counter()
    reports = run.launch([seed] + targets, sid, lambda node, store: per_param_body(
        [seed] + targets, node, sid, run.backend, timeout_s, store))
    seconds = time.perf_counter() - t1
    failed = tuple(n for n in reports if reports[n]["state"] != "done")
    attempt = Attempt(sid, (seed,), tuple(targets), len(params), 1, seconds, failed,
                      next((reports[n].get("error", "") for n in failed), ""))
    ready, _, bad = _finish(peers, targets, [t for t in targets if t in failed], checksum, False)
    return LoadReport(not bad, time.perf_counter() - t0, seconds, sum(p.nbytes for p in params), len(params),
                      checksum, tuple(ready), (), tuple(bad), (attempt,), "per-parameter broadcast (R-Fork style)")


class _Run:
    def __init__(self, peers, params, cfg, backend, timeout_s, poll_s):
        self.peers, self.params, self.cfg = peers, params, cfg
        self.backend, self.timeout_s, self.poll_s = backend, timeout_s, poll_s
        self.buckets = plan_transfers(params, ["s"], ["r"], cfg).buckets
        self.have: dict[str, set[int]] = {}

    def transfer(self, targets: list[str], seeds: list[str], max_attempts: int):
        """Sessions until every live target has every bucket, at most ``max_attempts``."""
        attempts: list[Attempt] = []
        every = set(range(len(self.buckets)))
        while len(attempts) < max_attempts:
            todo = [t for t in targets if self.have.get(t, set()) != every]
            if not todo or not seeds:
                break
            try:
                plan = plan_transfers(self.params, seeds, todo, self.cfg, have=self.have)
            except WeightPlanError:
                break
            attempt = self._session(plan, len(attempts))
            attempts.append(attempt)
            dead = {n for n in attempt.failed if not _alive(self.peers[n])}
            seeds = [s for s in seeds if s not in dead]
            targets = [t for t in targets if t not in dead]
        return attempts

    def missing(self, targets: list[str]) -> list[str]:
        """Targets that do not hold every bucket."""
        every = set(range(len(self.buckets)))
        return [t for t in targets if self.have.get(t, set()) != every]

    def _session(self, plan, index: int) -> Attempt:
        sid = f"{uuid.uuid4().hex[:12]}-{index}"
        t0 = time.perf_counter()
        reports = self.launch(list(plan.nodes), sid, lambda node, store: session_body(
            plan, node, sid, self.backend, self.timeout_s, store))
        for node in plan.receivers:
            self.have.setdefault(node, set()).update(reports[node].get("received", []))
        failed = tuple(n for n in plan.nodes if reports[n]["state"] != "done")
        error = next((reports[n].get("error", "") for n in failed), "")
        return Attempt(sid, plan.seeds, plan.receivers, len(plan.transfers), plan.rounds,
                       time.perf_counter() - t0, failed, error)

    def launch(self, nodes: list[str], sid: str, body) -> dict[str, dict]:
        """Start the session on every node (rank 0 first: it hosts the store) and wait for all reports."""
        t0 = time.perf_counter()
        first = self.peers[nodes[0]].agent_url
        reply = _http("POST", first + "/hfx/weights/session", body(nodes[0], None))
        store = (urllib.parse.urlparse(first).hostname, int(reply["store_port"]))
        for node in nodes[1:]:
            _http("POST", self.peers[node].agent_url + "/hfx/weights/session", body(node, store))
        return self._wait(nodes, sid, t0)

    def _wait(self, nodes, sid: str, t0: float) -> dict[str, dict]:
        reports: dict[str, dict] = {}
        deadline = t0 + self.timeout_s * 4 + 60
        while len(reports) < len(nodes):
            for node in [n for n in nodes if n not in reports]:
                try:
                    r = _http("GET", f"{self.peers[node].agent_url}/hfx/weights/session/{sid}", timeout=10)
                except (WeightLoadError, OSError) as e:
                    r = {"state": "failed", "error": f"unreachable: {e}", "received": []}
                if r["state"] != "running" or time.perf_counter() > deadline:
                    reports[node] = r if r["state"] != "running" else {**r, "state": "failed", "error": "timeout"}
            time.sleep(self.poll_s)
        return reports


def _finish(peers: dict[str, Peer], targets: list[str], pending: list[str], checksum: str,
            fallback_disk: bool) -> tuple[list[str], list[str], list[str]]:
    """Verify every target; fall back to disk for those that did not get (or verify) every bucket."""
    ready, from_disk, failed = [], [], []
    for t in targets:
        if t not in pending and _verify(peers[t], checksum):
            ready.append(t)
        elif fallback_disk and _alive(peers[t]) and _load_disk(peers[t]) and _verify(peers[t], checksum):
            from_disk.append(t)
        else:
            failed.append(t)
    for t in ready + from_disk:
        if peers[t].server_url:  # KV/prefix cache computed with the dummy weights is stale
            _http("POST", peers[t].server_url + "/flush_cache", {})
    return ready, from_disk, failed


def _verify(peer: Peer, checksum: str) -> bool:
    try:
        return bool(_http("POST", peer.agent_url + "/hfx/weights/verify", {"total": checksum}, timeout=600)["ready"])
    except (WeightLoadError, OSError):
        return False


def _load_disk(peer: Peer) -> bool:
    try:
        if peer.server_url and peer.model_path:
            r = _http("POST", peer.server_url + "/update_weights_from_disk",
                      {"model_path": peer.model_path, "load_format": "auto"}, timeout=600)
            return bool(r.get("success"))
        _http("POST", peer.agent_url + "/hfx/weights/load_disk", {}, timeout=600)
        return True
    except (WeightLoadError, OSError):
        return False
