"""Per-request, stage-specific service-level objectives (SLOs).

An SLO has two stage targets: TTFT (time to first token, the prefill stage)
and TPOT (time per output token, the decode stage), plus a priority and the
name of the class it came from.

Deadlines (times are seconds on the caller's clock, targets are ms):

* token 1 (the first token) is due at ``arrival + ttft``;
* token i > 1 is due, in ``per_token`` mode, at ``arrival + ttft + (i-1)*tpot``
  (a request that started late can never catch up), and in ``average`` mode
  at ``first_token_time + (i-1)*tpot`` (only the average pace after the first
  token matters: slack banked by fast steps may be spent on slow ones).

Attainment is defined once for the whole project (see :func:`meets_slo`):
the first token within TTFT and the *average* time per output token after
the first within TPOT.  The per-token-deadline variant is reported beside it.

Default classes (all overridable from a JSON/TOML file or per request):

* ``interactive``: TTFT 450 ms, TPOT 40 ms. MLPerf Inference v5.0
  "Llama-2-70B Interactive" scenario latency constraints.
* ``standard``: TTFT 2 s, TPOT 200 ms. MLPerf Inference v4.0 Llama-2-70B
  "Server" scenario latency constraints.
* ``batch``: TTFT 15 s, TPOT 200 ms. TTFT from DistServe's summarization
  workload (Zhong et al., OSDI 2024, Table 1: 15 s); TPOT kept at the
  server pace so streamed output still advances at reading speed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

TPOT_MODES = ("average", "per_token")
ON_MISS = ("reject", "best_effort")

# Targets above this are almost certainly a unit mistake (seconds given as ms
# would be 1000x too small, ms given as us 1000x too large): one hour.
MAX_TARGET_MS = 3_600_000.0


class SLOError(ValueError):
    """A bad SLO value, class name or class file; the message says which."""


@dataclass(frozen=True)
class SLO:
    """The objectives of one request."""

    ttft_ms: float  # first token due this many ms after arrival
    tpot_ms: float  # each later token due this many ms after the previous deadline
    priority: int = 0  # larger is more important (SGLang's default convention)
    cls: str = "standard"  # the class this SLO came from (metrics label)
    tpot_mode: str = "average"  # "average" or "per_token", see module doc
    on_miss: str = "best_effort"  # when TTFT becomes infeasible: "reject" or "best_effort"

    def __post_init__(self) -> None:
        _check_target("ttft_ms", self.ttft_ms)
        _check_target("tpot_ms", self.tpot_ms)
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise SLOError(f"priority must be an integer, got {self.priority!r}")
        if self.tpot_mode not in TPOT_MODES:
            raise SLOError(f"tpot_mode must be one of {TPOT_MODES}, got {self.tpot_mode!r}")
        if self.on_miss not in ON_MISS:
            raise SLOError(f"on_miss must be one of {ON_MISS}, got {self.on_miss!r}")
        if not self.cls or not isinstance(self.cls, str):
            raise SLOError(f"class name must be a non-empty string, got {self.cls!r}")

    @property
    def ttft_s(self) -> float:
        return self.ttft_ms / 1000.0

    @property
    def tpot_s(self) -> float:
        return self.tpot_ms / 1000.0

    def ttft_deadline(self, arrival: float) -> float:
        return arrival + self.ttft_s

    def token_deadline(self, i: int, arrival: float, first_token_time: float | None) -> float:
        """Deadline of output token ``i`` (1-based), see the module doc."""
        if i <= 1 or first_token_time is None:
            return arrival + self.ttft_s + max(i - 1, 0) * self.tpot_s
        if self.tpot_mode == "per_token":
            return arrival + self.ttft_s + (i - 1) * self.tpot_s
        return first_token_time + (i - 1) * self.tpot_s


def _check_target(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SLOError(f"{name} must be a number of milliseconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise SLOError(f"{name} must be a positive, finite number of milliseconds, got {value!r}")
    if value > MAX_TARGET_MS:
        raise SLOError(f"{name}={value} ms is over one hour; targets are in milliseconds")


DEFAULT_CLASSES: dict[str, SLO] = {
    "interactive": SLO(ttft_ms=450, tpot_ms=40, priority=2, cls="interactive", on_miss="reject"),
    "standard": SLO(ttft_ms=2000, tpot_ms=200, priority=1, cls="standard"),
    "batch": SLO(ttft_ms=15000, tpot_ms=200, priority=0, cls="batch"),
}

_FIELD_ALIASES = {"class": "cls", "ttft": "ttft_ms", "tpot": "tpot_ms"}
_FIELDS = {f.name for f in dataclasses.fields(SLO)}


class SLOCatalog:
    """Named SLO classes; resolves a request's (possibly partial) SLO spec."""

    def __init__(self, classes: Mapping[str, SLO] | None = None, default: str = "standard"):
        self.classes: dict[str, SLO] = dict(classes or DEFAULT_CLASSES)
        if default not in self.classes:
            raise SLOError(f"default class {default!r} is not one of {sorted(self.classes)}")
        self.default = default

    def get(self, name: str) -> SLO:
        try:
            return self.classes[name]
        except KeyError:
            raise SLOError(
                f"unknown SLO class {name!r}; known classes: {', '.join(sorted(self.classes))}"
            ) from None

    def resolve(self, spec: Mapping[str, Any] | None = None, priority: int | None = None) -> SLO:
        """SLO for a request: its class's defaults, overridden field by field.

        ``spec`` is the request's ``slo`` object (keys ``class``, ``ttft_ms``,
        ``tpot_ms``, ``priority``, ``tpot_mode``, ``on_miss``); ``priority`` is
        a top-level priority that applies when the spec has none.
        """
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise SLOError(f"slo must be a JSON object, got {type(spec).__name__}")
        fields = _normalise(spec)
        base = self.get(fields.pop("cls", self.default))
        if "priority" not in fields and priority is not None:
            fields["priority"] = priority
        return dataclasses.replace(base, **fields)

    @classmethod
    def from_file(cls, path: str | Path) -> "SLOCatalog":
        """Load classes from JSON or TOML: ``{"default": NAME, "classes": {NAME: {...}}}``.

        Classes in the file are added to (or replace) the built-in ones.
        """
        path = Path(path)
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as e:
            raise SLOError(f"{path}: cannot read SLO classes: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("classes", {}), dict):
            raise SLOError(f"{path}: expected an object with a 'classes' object")
        classes = dict(DEFAULT_CLASSES)
        for name, spec in data.get("classes", {}).items():
            if not isinstance(spec, dict):
                raise SLOError(f"{path}: class {name!r} must be an object")
            try:
                base = classes.get(name, DEFAULT_CLASSES["standard"])
                fields = _normalise(spec)
                fields["cls"] = name
                classes[name] = dataclasses.replace(base, **fields)
            except SLOError as e:
                raise SLOError(f"{path}: class {name!r}: {e}") from None
        try:
            return cls(classes, default=data.get("default", "standard"))
        except SLOError as e:
            raise SLOError(f"{path}: {e}") from None


def _normalise(spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        name = _FIELD_ALIASES.get(key, key)
        if name not in _FIELDS:
            raise SLOError(f"unknown SLO field {key!r}; allowed: class, ttft_ms, tpot_ms, priority, tpot_mode, on_miss")
        out[name] = value
    return out


def avg_tpot(first_token_time: float, finish_time: float, output_tokens: int) -> float:
    """Average seconds per output token after the first (0 for one-token outputs)."""
    if output_tokens <= 1:
        return 0.0
    return (finish_time - first_token_time) / (output_tokens - 1)


def meets_slo(slo: SLO, arrival: float, first_token_time: float | None,
              finish_time: float | None, output_tokens: int) -> bool:
    """The project's attainment test: TTFT met and average TPOT met (1 us tolerance)."""
    if first_token_time is None or finish_time is None:
        return False
    if first_token_time - arrival > slo.ttft_s + 1e-6:
        return False
    return avg_tpot(first_token_time, finish_time, output_tokens) <= slo.tpot_s + 1e-6
