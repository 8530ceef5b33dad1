"""Transfer plan for loading a model's weights from running peers (device to device).

Guarantees of :func:`plan_transfers`:

* every receiver gets every bucket exactly once, and only from a node that
  already holds it at the start of that round (a seed, or a receiver that
  got it in an earlier round: fan-out);
* per round, a node sends at most ``max_send_streams`` buckets and a
  receiver takes at most ``max_recv_streams``; so with several seeds one
  receiver pulls disjoint buckets from them in parallel (multi-seed);
* among the possible senders of a bucket the one with the fewest bytes sent
  so far is chosen, which balances the seeds by bytes; rare buckets (fewest
  holders) go first, which keeps the fan-out pipeline full;
* deterministic: the same inputs give the same plan (ties break by order);
* buckets hold parameters of one dtype, back to back in manifest order, and
  depend only on the manifest and the config, so a re-plan after a failure
  (``have``: buckets receivers already hold) uses the same bucket indexes.

Rounds are logical: a node runs its own transfers round by round and waits
only for its own, so there is no global barrier; a bucket received in
round r can be forwarded from round r + 1 on. Each round's transfers are
matched pairs, so running them in round order cannot deadlock.

The time model (:func:`estimate`) charges each transfer a fixed latency
plus its bytes over the smaller of the sender's and the receiver's share
of their link bandwidth in that round; a round lasts as long as its
slowest transfer. The simulator's cold-start model can call
:func:`estimate_load_seconds` with only a weight size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

MIB = 1 << 20


class WeightPlanError(ValueError):
    """Inputs that admit no plan (no seeds, a receiver listed as a seed, a bucket nobody holds, ...)."""


@dataclass(frozen=True)
class ParamSpec:
    name: str  # parameter name as the model's named_parameters() reports it
    dtype: str  # dtype name, e.g. "float32", "bfloat16"
    shape: tuple[int, ...]  # tensor shape
    nbytes: int  # size in bytes


@dataclass(frozen=True)
class Piece:
    name: str  # parameter
    offset: int  # first byte of the parameter's raw bytes in this piece
    nbytes: int  # bytes in this piece


@dataclass(frozen=True)
class Bucket:
    index: int  # position in the plan's bucket list; also the wire tag
    dtype: str  # the one dtype of all its parameters
    pieces: tuple[Piece, ...]  # parameter byte ranges, back to back in this order
    nbytes: int  # total bytes (sum of its pieces')

    @property
    def names(self) -> tuple[str, ...]:
        """Parameters this bucket touches (whole or in part), in order."""
        return tuple(dict.fromkeys(p.name for p in self.pieces))


@dataclass(frozen=True)
class Transfer:
    round: int  # logical step; a node runs its transfers in round order
    bucket: int  # bucket index
    src: str  # node that sends (holds the bucket at the start of the round)
    dst: str  # receiver
    reason: str  # "seed" (sent by an original holder) or "fan-out" (forwarded by a receiver)


@dataclass(frozen=True)
class PlanConfig:
    bucket_bytes: int = 256 * MIB  # largest bucket (a bigger parameter gets a bucket of its own)
    min_buckets: int = 16  # split into at least this many buckets when the model allows (pipelining)
    min_bucket_bytes: int = 16 * MIB  # but never below this size for that split (per-transfer latency)
    max_send_streams: int = 1  # buckets a node sends concurrently per round
    max_recv_streams: int = 2  # buckets a receiver takes concurrently per round (one per seed)
    fanout: bool = True  # receivers forward buckets they hold to later receivers

    def __post_init__(self) -> None:
        for name in ("bucket_bytes", "min_buckets", "min_bucket_bytes", "max_send_streams", "max_recv_streams"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise WeightPlanError(f"plan config: {name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class TransferPlan:
    buckets: tuple[Bucket, ...]  # all buckets of the model, by index
    nodes: tuple[str, ...]  # participants; a node's rank is its position (seeds first)
    seeds: tuple[str, ...]  # nodes that hold every bucket at the start
    receivers: tuple[str, ...]  # nodes that must end with every bucket
    transfers: tuple[Transfer, ...]  # sorted by (round, dst, bucket)
    rounds: int  # number of rounds
    reason: str  # one-line summary for logs

    def ops_for(self, node: str) -> tuple[Transfer, ...]:
        """The transfers ``node`` takes part in, in execution order."""
        return tuple(t for t in self.transfers if node in (t.src, t.dst))

    def sent_bytes(self, node: str) -> int:
        return sum(self.buckets[t.bucket].nbytes for t in self.transfers if t.src == node)

    def total_bytes(self) -> int:
        return sum(b.nbytes for b in self.buckets)


@dataclass(frozen=True)
class LinkModel:
    send_gbs: float  # GB/s one node can send (all its streams together)
    recv_gbs: float  # GB/s one node can receive (all its streams together)
    latency_s: float = 0.0  # fixed cost per transfer (posting, synchronisation)


@dataclass(frozen=True)
class PlanEstimate:
    total_s: float  # predicted wall time of the whole plan
    round_s: tuple[float, ...]  # predicted time of each round


def make_buckets(params: Sequence[ParamSpec], cfg: PlanConfig = PlanConfig()) -> tuple[Bucket, ...]:
    """Group parameters by dtype (first-seen order), then cut each group's byte stream into equal buckets.

    A parameter larger than the room left is split across buckets (so one
    huge embedding does not make one huge, pipeline-stalling bucket); cuts
    fall on multiples of 64 bytes inside a parameter. Empty parameters
    carry no bytes and appear in no bucket.
    """
    _check_params(params)
    total = sum(p.nbytes for p in params)
    split = -(-max(cfg.min_bucket_bytes, -(-total // cfg.min_buckets)) // 64) * 64  # rounded up: no tiny tail
    size = max(64, min(cfg.bucket_bytes - cfg.bucket_bytes % 64, split))
    by_dtype: dict[str, list[ParamSpec]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    out: list[Bucket] = []
    for dtype, group in by_dtype.items():
        pieces: list[Piece] = []
        filled = 0
        for p in group:
            offset = 0
            while offset < p.nbytes:
                take = min(p.nbytes - offset, size - filled)
                pieces.append(Piece(p.name, offset, take))
                offset, filled = offset + take, filled + take
                if filled == size:
                    out.append(Bucket(len(out), dtype, tuple(pieces), size))
                    pieces, filled = [], 0
        if pieces:
            out.append(Bucket(len(out), dtype, tuple(pieces), filled))
    return tuple(out)


def _check_params(params: Sequence[ParamSpec]) -> None:
    if not params:
        raise WeightPlanError("the model has no parameters to transfer")
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            raise WeightPlanError(f"parameter {p.name!r} is listed twice")
        if p.nbytes < 0:
            raise WeightPlanError(f"parameter {p.name!r} has a negative size {p.nbytes}")
        seen.add(p.name)


def plan_transfers(params: Sequence[ParamSpec], seeds: Sequence[str], receivers: Sequence[str],
                   cfg: PlanConfig = PlanConfig(),
                   have: Mapping[str, Iterable[int]] | None = None) -> TransferPlan:
    """Plan the transfers that give every receiver every bucket (see the module doc)."""
    _check_nodes(seeds, receivers)
    buckets = make_buckets(params, cfg)
    every = frozenset(range(len(buckets)))
    held = {s: set(every) for s in seeds}
    held.update({r: set(have.get(r, ()) if have else ()) & every for r in receivers})
    sent = {n: 0 for n in held}
    transfers: list[Transfer] = []
    rnd = 0
    while any(held[r] != every for r in receivers):
        step = _plan_round(rnd, buckets, held, sent, seeds, receivers, cfg)
        if not step:
            missing = sorted(set().union(*(every - held[r] for r in receivers)))
            raise WeightPlanError(f"buckets {missing} have no holder that can send them")
        for t in step:
            held[t.dst].add(t.bucket)
        transfers += step
        rnd += 1
    reason = (f"{len(buckets)} buckets ({sum(b.nbytes for b in buckets) / MIB:.0f} MiB) from "
              f"{len(seeds)} seed(s) to {len(receivers)} receiver(s) in {rnd} round(s)"
              f"{', fan-out' if cfg.fanout and len(receivers) > 1 else ''}")
    return TransferPlan(buckets, tuple(seeds) + tuple(receivers), tuple(seeds), tuple(receivers),
                        tuple(sorted(transfers, key=lambda t: (t.round, t.dst, t.bucket))), rnd, reason)


def _check_nodes(seeds: Sequence[str], receivers: Sequence[str]) -> None:
    if not seeds:
        raise WeightPlanError("no seed: at least one running instance must send the weights")
    if not receivers:
        raise WeightPlanError("no receiver to load")
    nodes = list(seeds) + list(receivers)
    if len(set(nodes)) != len(nodes):
        raise WeightPlanError(f"a node is listed twice among seeds and receivers: {nodes}")


def _plan_round(rnd: int, buckets: Sequence[Bucket], held: dict[str, set[int]], sent: dict[str, int],
                seeds: Sequence[str], receivers: Sequence[str], cfg: PlanConfig) -> list[Transfer]:
    """One round: receivers, in an order that rotates by round, take one bucket per pass, up to max_recv_streams."""
    holders = {b.index: [n for n in held if b.index in held[n]] for b in buckets}
    sends = {n: 0 for n in held}
    taking: dict[str, set[int]] = {r: set() for r in receivers}
    arriving = {b.index: 0 for b in buckets}  # copies arriving this round: rarity counts them (spreads buckets)
    step: list[Transfer] = []
    order = list(receivers[rnd % len(receivers):]) + list(receivers[:rnd % len(receivers)])
    for _ in range(cfg.max_recv_streams):
        for r in order:
            pick = _pick(r, holders, arriving, held[r] | taking[r], sends, sent, seeds, cfg)
            if pick is None:
                continue
            b, src = pick
            sends[src] += 1
            sent[src] += buckets[b].nbytes
            taking[r].add(b)
            arriving[b] += 1
            step.append(Transfer(rnd, b, src, r, "seed" if src in seeds else "fan-out"))
    return step


def _pick(dst: str, holders: dict[int, list[str]], arriving: dict[int, int], has: set[int],
          sends: dict[str, int], sent: dict[str, int], seeds: Sequence[str],
          cfg: PlanConfig) -> tuple[int, str] | None:
    """The rarest missing bucket (counting this round's arrivals) that a free holder can send, and that holder."""
    for b in sorted((b for b in holders if b not in has), key=lambda b: (len(holders[b]) + arriving[b], b)):
        src = _pick_sender(holders[b], dst, sends, sent, seeds, cfg)
        if src is not None:
            return b, src
    return None


def _pick_sender(candidates: Sequence[str], dst: str, sends: dict[str, int], sent: dict[str, int],
                 seeds: Sequence[str], cfg: PlanConfig) -> str | None:
    free = [n for n in candidates if n != dst and sends[n] < cfg.max_send_streams
            and (cfg.fanout or n in seeds)]
    return min(free, key=lambda n: sent[n]) if free else None


def estimate(plan: TransferPlan, link: LinkModel) -> PlanEstimate:
    """Predicted time of ``plan`` under ``link`` (see the module doc)."""
    rounds: list[float] = []
    for rnd in range(plan.rounds):
        step = [t for t in plan.transfers if t.round == rnd]
        n_out = {t.src: sum(u.src == t.src for u in step) for t in step}
        n_in = {t.dst: sum(u.dst == t.dst for u in step) for t in step}
        rounds.append(max(link.latency_s + plan.buckets[t.bucket].nbytes / 1e9
                          / min(link.send_gbs / n_out[t.src], link.recv_gbs / n_in[t.dst]) for t in step))
    return PlanEstimate(sum(rounds), tuple(rounds))


def per_param_seconds(params: Sequence[ParamSpec], link: LinkModel) -> float:
    """The R-Fork baseline: one seed broadcasts parameter after parameter, each a synchronous transfer."""
    bw = min(link.send_gbs, link.recv_gbs)
    return sum(link.latency_s + p.nbytes / 1e9 / bw for p in params)


def estimate_load_seconds(weight_bytes: float, num_seeds: int, num_receivers: int, link: LinkModel,
                          cfg: PlanConfig = PlanConfig(), num_params: int = 64) -> float:
    """Predicted time to load ``num_receivers`` new instances from ``num_seeds`` peers, from a size only.

    The model is taken as ``num_params`` equal float parameters (bucketing
    makes the real split matter little).
    """
    if weight_bytes <= 0 or num_params < 1:
        raise WeightPlanError(f"weight_bytes and num_params must be positive, got {weight_bytes}, {num_params}")
    each = max(1, int(weight_bytes // num_params))
    params = [ParamSpec(f"p{i}", "float", (each,), each) for i in range(num_params)]
    plan = plan_transfers(params, [f"s{i}" for i in range(num_seeds)],
                          [f"r{i}" for i in range(num_receivers)], cfg)
    return estimate(plan, link).total_s
