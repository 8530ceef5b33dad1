"""What the load generator sends: a trace replayed as timed, SLO-tagged requests (no I/O here).

Guarantees:
- Deterministic: the same trace, flags and seed give the same send times,
  prompts, output lengths and SLOs (SLOs come from ``sim/workload.build``,
  so the simulator and the load generator assign classes identically).
- Prompts are made of common English words (about one token each in real
  tokenizers, ~1.2 in the generated tiny model's), one word per token of the
  scaled length. Mooncake ``hash_ids`` become text blocks: equal ids give equal
  text, so requests sharing prefix blocks share a textual prefix and the
  server's radix cache (and a cache-aware router) can hit on it.
- Requests without hash ids get text derived from their index: no two share
  more than a word or two of prefix by accident.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.slo import SLO
from ..sim.workload import Workload

BLOCK_TOKENS = 512  # Mooncake's prefix block size (tokens per hash id)
ENDPOINTS = ("generate", "completions", "chat")
_PATHS = {"generate": "/generate", "completions": "/v1/completions", "chat": "/v1/chat/completions"}
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their can has more when will would if so no what up out about "
    "time some into them only new other these two may then do first any like now my such make over our even "
    "most after also made many did well way down should because each just those people how too good where"
).split()


@dataclass(frozen=True)
class PlannedRequest:
    """One request of the replay."""

    index: int  # position in the trace (0-based)
    t: float  # send offset, seconds from the start of the run
    prompt: str  # synthesized prompt text
    input_words: int  # words in the prompt (the scaled input length)
    max_tokens: int  # output tokens asked for (the scaled output length; EOS ignored)
    slo: SLO  # the request's SLO (targets the client measures attainment against)


@dataclass(frozen=True)
class Scaling:
    """How trace lengths are shrunk for a slow (CPU) server."""

    len_scale: float = 1.0  # divide input and output lengths by this
    max_input: int | None = None  # cap on prompt words after scaling
    max_output: int | None = None  # cap on output tokens after scaling
    min_input: int = 4  # floor on prompt words (a prompt is never empty)
    min_output: int = 2  # floor on output tokens (so TPOT is defined)

    def input_len(self, n: int) -> int:
        return _clamp(round(n / self.len_scale), self.min_input, self.max_input)

    def output_len(self, n: int) -> int:
        return _clamp(round(n / self.len_scale), self.min_output, self.max_output)


def _clamp(v: int, lo: int, hi: int | None) -> int:
    v = max(lo, v)
    return v if hi is None else min(v, max(lo, hi))


def _mix(a: int, b: int) -> int:
    """A small deterministic integer hash (splitmix64 finaliser) of two integers."""
    x = (a * 0x9E3779B97F4A7C15 + b * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 29)


def words(key: int, n: int, salt: int = 0) -> list[str]:
    """``n`` words determined by ``(key, salt)`` only."""
    return [_WORDS[_mix(key * 2 + salt, k) % len(_WORDS)] for k in range(n)]


def synth_prompt(index: int, n_words: int, hash_ids: tuple = (), block_words: int = BLOCK_TOKENS) -> str:
    """Prompt of ``n_words`` words: one text block per hash id (equal ids, equal text), then filler."""
    out: list[str] = []
    for h in hash_ids:
        if len(out) >= n_words:
            break
        out.extend(words(int(h), min(block_words, n_words - len(out)), salt=1))
    if len(out) < n_words:
        out.extend(words(index, n_words - len(out)))
    return " ".join(out)


def make_plan(wl: Workload, scaling: Scaling) -> list[PlannedRequest]:
    """Requests in send order: the workload's arrivals, scaled lengths, synthesized prompts."""
    block_words = max(1, round(BLOCK_TOKENS / scaling.len_scale))
    plan = []
    for i in range(len(wl)):
        n_in = scaling.input_len(wl.input_lens[i])
        plan.append(PlannedRequest(i, wl.arrivals[i], synth_prompt(i, n_in, wl.blocks[i], block_words), n_in,
                                   scaling.output_len(wl.output_lens[i]), wl.slos[i]))
    return plan


def slo_spec(slo: SLO) -> dict:
    """The SLO as sent to a server or router (``custom_params.slo``): class and explicit targets."""
    return {"class": slo.cls, "ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "priority": slo.priority}


def slo_headers(slo: SLO) -> dict[str, str]:
    """The same SLO as request headers (read by routers that do not parse bodies)."""
    return {"x-slo-class": slo.cls, "x-slo-ttft-ms": f"{slo.ttft_ms:g}", "x-slo-tpot-ms": f"{slo.tpot_ms:g}",
            "x-priority": str(slo.priority)}


def request_body(endpoint: str, req: PlannedRequest, model: str) -> tuple[str, dict]:
    """(path, JSON body) of a streaming request for ``endpoint`` (generate | completions | chat)."""
    custom = {"slo": slo_spec(req.slo)}
    if endpoint == "generate":
        return _PATHS[endpoint], {"text": req.prompt, "stream": True, "sampling_params": {
            "max_new_tokens": req.max_tokens, "temperature": 0, "ignore_eos": True, "custom_params": custom}}
    common = {"model": model, "max_tokens": req.max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
              "stream_options": {"include_usage": True}, "custom_params": custom}
    if endpoint == "completions":
        return _PATHS[endpoint], {**common, "prompt": req.prompt}
    if endpoint == "chat":
        return _PATHS[endpoint], {**common, "messages": [{"role": "user", "content": req.prompt}]}
    raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
