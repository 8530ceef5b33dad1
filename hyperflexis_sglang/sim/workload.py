"""Workloads: real traces, a generic JSONL format, synthetic arrivals, SLO mixes.

Formats (detected from the file):
* Azure LLM inference trace 2023 CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens``
  (wall-clock timestamps, rebased to seconds from the first row);
* Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``;
* generic JSONL: as Mooncake, plus optional ``slo_class``, ``ttft_ms``,
  ``tpot_ms``, ``priority`` per line.

No trace carries SLOs: a request without its own class gets one drawn from
the SLO mix (``interactive:0.2,standard:0.5,batch:0.3``) with a seeded RNG,
in trace order, so the same seed gives the same assignment. Per-line
``ttft_ms``/``tpot_ms``/``priority`` override the class defaults.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..core.slo import SLO, SLOCatalog, SLOError

DEFAULT_MIX = "interactive:0.2,standard:0.5,batch:0.3"


class TraceError(ValueError):
    """Bad trace or workload spec; the message names the file and line or the flag."""


@dataclass(frozen=True)
class TraceRow:
    t: float  # arrival, seconds from the first row
    input_len: int  # prompt tokens
    output_len: int  # output tokens
    hash_ids: tuple = ()  # prefix blocks (Mooncake: 512 tokens each)
    slo: dict | None = None  # per-line SLO spec, if any


@dataclass(frozen=True)
class Workload:
    """Requests ready for the simulator: (arrival, input, output, blocks, SLO)."""

    arrivals: tuple[float, ...]
    input_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    blocks: tuple[tuple, ...]
    slos: tuple[SLO, ...]

    def __len__(self) -> int:
        return len(self.arrivals)


def load_trace(path: str | Path, limit: int | None = None) -> list[TraceRow]:
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    with path.open() as f:
        first = f.readline()
    if first.lstrip().startswith("{"):
        return _load_jsonl(path, limit)
    return _load_azure(path, limit)


def _positive_int(value, what: str, where: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TraceError(f"{where}: {what} must be an integer, got {value!r}")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {what} must be an integer, got {value!r}") from None
    if v < 0 or (v == 0 and not allow_zero) or str(value).strip().startswith("-"):
        raise TraceError(f"{where}: {what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def _load_azure(path: Path, limit: int | None) -> list[TraceRow]:
    rows: list[TraceRow] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise TraceError(f"{path}:1: expected header TIMESTAMP,ContextTokens,GeneratedTokens, got {header}")
        t0 = None
        for lineno, rec in enumerate(reader, start=2):
            if limit is not None and len(rows) >= limit:
                break
            where = f"{path}:{lineno}"
            if len(rec) < 3:
                raise TraceError(f"{where}: expected 3 columns, got {len(rec)}")
            try:
                ts = datetime.fromisoformat(rec[0].strip()[:26])
            except ValueError:
                raise TraceError(f"{where}: bad TIMESTAMP {rec[0]!r}") from None
            t = ts.timestamp()
            t0 = t if t0 is None else t0
            if t < t0:
                raise TraceError(f"{where}: timestamps must not go backwards")
            rows.append(TraceRow(t - t0, _positive_int(rec[1], "ContextTokens", where),
                                 _positive_int(rec[2], "GeneratedTokens", where)))
    return rows


def _load_jsonl(path: Path, limit: int | None) -> list[TraceRow]:
    rows: list[TraceRow] = []
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise TraceError(f"{where}: expected a JSON object")
            for key in ("timestamp", "input_length", "output_length"):
                if key not in obj:
                    raise TraceError(f"{where}: missing field {key!r}")
            ts = obj["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
                raise TraceError(f"{where}: timestamp must be a number of ms >= 0, got {ts!r}")
            hashes = obj.get("hash_ids", [])
            if not isinstance(hashes, list):
                raise TraceError(f"{where}: hash_ids must be a list")
            slo = {k: obj[k] for k in ("slo_class", "ttft_ms", "tpot_ms", "priority") if k in obj}
            rows.append(TraceRow(ts / 1000.0, _positive_int(obj["input_length"], "input_length", where),
                                 _positive_int(obj["output_length"], "output_length", where),
                                 tuple(hashes), slo or None))
    if any(b.t < a.t for a, b in zip(rows, rows[1:])):
        rows.sort(key=lambda r: r.t)
    t0 = rows[0].t if rows else 0.0
    return [r if not t0 else TraceRow(r.t - t0, r.input_len, r.output_len, r.hash_ids, r.slo) for r in rows]


def parse_mix(spec: str, catalog: SLOCatalog) -> list[tuple[str, float]]:
    """``"interactive:0.2,standard:0.5,batch:0.3"`` -> normalised (class, weight) pairs."""
    out = []
    for part in spec.split(","):
        name, sep, weight = part.strip().partition(":")
        if not sep:
            raise TraceError(f"--slo-mix: expected CLASS:WEIGHT, got {part.strip()!r}")
        try:
            catalog.get(name)
            w = float(weight)
        except SLOError as e:
            raise TraceError(f"--slo-mix: {e}") from None
        except ValueError:
            raise TraceError(f"--slo-mix: weight of {name!r} must be a number, got {weight!r}") from None
        if not math.isfinite(w) or w < 0:
            raise TraceError(f"--slo-mix: weight of {name!r} must be >= 0, got {weight!r}")
        out.append((name, w))
    total = sum(w for _, w in out)
    if total <= 0:
        raise TraceError("--slo-mix: weights must not all be zero")
    return [(n, w / total) for n, w in out]


def build(rows: list[TraceRow], mix: str = DEFAULT_MIX, seed: int = 0, rate_scale: float = 1.0,
          catalog: SLOCatalog | None = None, source: str = "trace") -> Workload:
    """Assign SLOs and rescale arrival times (``rate_scale`` 2 = twice the request rate)."""
    if not (rate_scale > 0 and math.isfinite(rate_scale)):
        raise TraceError(f"--rate-scale must be a positive number, got {rate_scale}")
    catalog = catalog or SLOCatalog()
    classes = parse_mix(mix, catalog)
    rng = random.Random(seed)
    slos = []
    for i, row in enumerate(rows):
        draw = rng.random()  # drawn for every row so per-line SLOs do not shift the others
        spec = dict(row.slo or {})
        name = spec.pop("slo_class", None) or _pick(classes, draw)
        try:
            slos.append(catalog.resolve({"class": name, **spec}))
        except SLOError as e:
            raise TraceError(f"{source}: request {i + 1}: {e}") from None
    return Workload(tuple(r.t / rate_scale for r in rows), tuple(r.input_len for r in rows),
                    tuple(r.output_len for r in rows), tuple(r.hash_ids for r in rows), tuple(slos))


def _pick(classes: list[tuple[str, float]], u: float) -> str:
    acc = 0.0
    for name, w in classes:
        acc += w
        if u < acc:
            return name
    return classes[-1][0]


def synthetic(n: int, rate: float, seed: int = 0, cv: float = 1.0, lengths: list[TraceRow] | None = None,
              input_len: int = 1024, output_len: int = 128) -> list[TraceRow]:
    """Poisson (``cv`` = 1) or Gamma (other ``cv``) arrivals at ``rate`` req/s.

    Lengths are drawn from ``lengths`` rows when given (a trace's empirical
    distribution), else fixed.
    """
    if n <= 0 or rate <= 0 or cv <= 0:
        raise TraceError("synthetic workload needs n > 0, rate > 0 and cv > 0")
    rng = random.Random(seed)
    shape = 1.0 / (cv * cv)
    t, rows = 0.0, []
    for _ in range(n):
        t += rng.gammavariate(shape, 1.0 / (shape * rate))
        if lengths:
            src = lengths[rng.randrange(len(lengths))]
            rows.append(TraceRow(t, src.input_len, src.output_len, src.hash_ids))
        else:
            rows.append(TraceRow(t, input_len, output_len))
    return rows


def burst(wl: Workload, start_s: float, duration_s: float, factor: float, ramp_s: float = 0.0) -> Workload:
    """The same requests with the arrival rate multiplied by ``factor`` over a window (a rate burst).

    Deterministic time warp, in simulated seconds (after rate scaling): the
    rate multiplier is 1 until ``start_s``, rises linearly to ``factor`` over
    ``ramp_s``, holds for ``duration_s``, falls back over ``ramp_s``, then is
    1 again. Arrival order, lengths, prefixes and SLOs are the trace's; the
    trace is consumed ``factor`` times faster inside the window, so what
    follows the burst arrives earlier. ``factor`` < 1 makes a lull.
    """
    for name, v in (("start", start_s), ("duration", duration_s), ("ramp", ramp_s)):
        if not (math.isfinite(v) and v >= 0):
            raise TraceError(f"--burst: {name} must be a number of seconds >= 0, got {v}")
    if not (math.isfinite(factor) and factor > 0):
        raise TraceError(f"--burst: factor must be > 0, got {factor}")
    warp = _Warp(start_s, ramp_s, duration_s, factor)
    return Workload(tuple(warp.new_time(t) for t in wl.arrivals), wl.input_lens, wl.output_lens, wl.blocks, wl.slos)


class _Warp:
    """Maps trace time o to burst time tau where d o / d tau is the trapezoid rate multiplier."""

    def __init__(self, a: float, r: float, h: float, f: float):
        self.a, self.r, self.h, self.f = a, r, h, f
        up = r * (1 + f) / 2
        self.o = (a, a + up, a + up + f * h, a + 2 * up + f * h)  # trace time at the segment ends
        self.k = (f - 1) / (2 * r) if r > 0 else 0.0

    def new_time(self, o: float) -> float:
        a, r, h, f, k = self.a, self.r, self.h, self.f, self.k
        o1, o2, o3, o4 = self.o
        if o <= o1:
            return o
        if o <= o2:  # ramp up: o - o1 = s + k s^2
            d = o - o1
            return a + (d if abs(k) < 1e-12 else (-1 + math.sqrt(max(1 + 4 * k * d, 0.0))) / (2 * k))
        if o <= o3:
            return a + r + (o - o2) / f
        if o <= o4:  # ramp down: o - o3 = f s - k s^2
            d = o - o3
            s = d / f if abs(k) < 1e-12 else (f - math.sqrt(max(f * f - 4 * k * d, 0.0))) / (2 * k)
            return a + r + h + s
        return a + 2 * r + h + (o - o4)
