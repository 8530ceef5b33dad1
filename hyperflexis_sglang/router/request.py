"""Request parsing on the hot path: the few fields the router needs, validated by hand (no pydantic).

Everything else in the body is the worker's to validate (its 4xx is passed
through). SLOs: ``custom_params.slo`` (top-level ``custom_params`` for
``/v1/*``, ``sampling_params.custom_params`` for ``/generate``, as the
plugin reads them) composed with the headers ``x-slo-class``,
``x-slo-ttft-ms``, ``x-slo-tpot-ms`` and ``x-priority`` (headers win), then
resolved with the core's ``SLOCatalog`` exactly as the plugin does; the
composed spec is written back so the worker sees the same SLO.

Length estimate: ``hfx_chars_per_token`` characters per token (4 by
default, about right for English with Llama-3-style BPE); prefix blocks
are chained hashes of ``hfx_prefix_block_tokens`` x that many characters
(64 x 4 = 256 by default; the last, partial block included), or of token
ids for ``input_ids``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from ..core.routing import RouteRequest
from ..core.slo import SLO, SLOCatalog, SLOError
from .errors import bad_request

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's default
SLO_HEADERS = {"x-slo-class": ("class", str), "x-slo-ttft-ms": ("ttft_ms", float), "x-slo-tpot-ms": ("tpot_ms", float)}


@dataclass(frozen=True)
class Parsed:
    body: dict  # the body to forward (SLO composed in)
    stream: bool  # SSE response wanted
    route: RouteRequest  # what routing and admission need
    batch: int  # number of prompts (0: a single prompt, not a list)


def _int(value, param: str, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{param} must be an integer, got {orjson.dumps(value).decode()[:80]}", param)
    if minimum is not None and value < minimum:
        raise bad_request(f"{param} must be >= {minimum}, got {value}", param)
    return value


def _custom_params(holder: dict, where: str) -> dict | None:
    params = holder.get("custom_params")
    if isinstance(params, str):  # some clients send it as a JSON string
        try:
            params = orjson.loads(params)
        except orjson.JSONDecodeError:
            raise bad_request(f"{where}custom_params must be a JSON object", f"{where}custom_params") from None
    if params is not None and not isinstance(params, dict):
        raise bad_request(f"{where}custom_params must be a JSON object", f"{where}custom_params")
    return params


def compose_slo(spec, headers) -> dict | None:
    """The body's ``slo`` object overridden field by field by the SLO headers (None: neither given)."""
    if spec is not None and not isinstance(spec, dict):
        raise bad_request("custom_params.slo must be a JSON object", "custom_params.slo")
    out = dict(spec) if spec else None
    for header, (field, typ) in SLO_HEADERS.items():
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = typ(raw)
        except ValueError:
            raise bad_request(f"header {header} must be a number of milliseconds, got {raw!r}", header) from None
        if typ is float and not math.isfinite(value):
            raise bad_request(f"header {header} must be finite, got {raw!r}", header)
        out = out or {}
        out[field] = value
    raw = headers.get("x-priority")
    if raw is not None:
        try:
            out = {**(out or {}), "priority": int(raw)}
        except ValueError:
            raise bad_request(f"header x-priority must be an integer, got {raw!r}", "x-priority") from None
    return out


def _prompt(kind: str, body: dict) -> tuple[str | list | None, str]:
    """(prompt text or token ids, name of the field) for length and prefix estimates."""
    if kind == "generate":
        if body.get("text") is not None:
            return body["text"], "text"
        if body.get("input_ids") is not None:
            return body["input_ids"], "input_ids"
        if body.get("input_embeds") is not None:
            return "", "input_embeds"
        raise bad_request("one of text, input_ids or input_embeds is required", "text", "missing_field")
    if kind == "completions":
        if "prompt" not in body:
            raise bad_request("prompt is required", "prompt", "missing_field")
        return body["prompt"], "prompt"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("messages must be a non-empty array", "messages")
    parts = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string role", f"messages[{i}]")
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
        elif c is not None and not isinstance(c, str):
            raise bad_request(f"messages[{i}].content must be a string, an array or null", f"messages[{i}].content")
        parts.append(f"{m['role']}:{c or ''}")
    return "\n".join(parts), "messages"


def _first(prompt, param: str) -> tuple[str | list, int]:
    """The first prompt of a batch and the batch size (0 for a single prompt)."""
    if isinstance(prompt, str):
        return prompt, 0
    if isinstance(prompt, list):
        if not prompt:
            raise bad_request(f"{param} must not be empty", param)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return prompt, 0
        if all(isinstance(p, str) for p in prompt) or all(isinstance(p, list) for p in prompt):
            return prompt[0], len(prompt)
    raise bad_request(f"{param} must be a string, an array of strings or an array of token ids", param)


def blocks(prompt: str | list, block_chars: int, block_ids: int) -> tuple:
    out, h = [], 0
    if isinstance(prompt, str):
        for i in range(0, len(prompt), block_chars):
            h = hash((h, prompt[i:i + block_chars]))
            out.append(h)
    else:
        for i in range(0, len(prompt), block_ids):
            h = hash((h, tuple(prompt[i:i + block_ids])))
            out.append(h)
    return tuple(out)


def parse(kind: str, raw: bytes, headers, catalog: SLOCatalog, rid: str, chars_per_token: float,
          block_tokens: int) -> Parsed:
    """Validate and prepare one inference request; bad input raises a 400 ``RouterHTTPError``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"request body is not valid JSON: {e}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", None, "invalid_json")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream must be a boolean", "stream")
    if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
        raise bad_request("model must be a string", "model")
    prompt, param = _prompt(kind, body)
    first, batch = _first(prompt, param) if param != "messages" else (prompt, 0)
    if kind == "generate":
        sp = body.get("sampling_params")
        if sp is None:
            sp = {}
        if not isinstance(sp, dict):
            raise bad_request("sampling_params must be a JSON object", "sampling_params")
        max_new = _int(sp.get("max_new_tokens"), "sampling_params.max_new_tokens", 0)
        holder, where = sp, "sampling_params."
    else:
        max_new = _int(body.get("max_tokens"), "max_tokens", 0)
        mct = _int(body.get("max_completion_tokens"), "max_completion_tokens", 0)
        max_new = mct if mct is not None else max_new
        holder, where = body, ""
    priority = _int(body.get("priority"), "priority")
    params = _custom_params(holder, where)
    spec = compose_slo(params.get("slo") if params else None, headers)
    try:
        slo: SLO = catalog.resolve(spec, priority)
    except SLOError as e:
        raise bad_request(f"invalid SLO: {e}", "custom_params.slo", "invalid_slo") from None
    if spec is not None:
        params = {**(params or {}), "slo": spec}
        if kind == "generate":
            body["sampling_params"] = {**sp, "custom_params": params}
        else:
            body["custom_params"] = params
        if "priority" in spec and headers.get("x-priority") is not None:
            body["priority"] = spec["priority"]
    block_chars = max(int(block_tokens * chars_per_token), 1)
    input_len = len(first) if isinstance(first, list) else math.ceil(len(first) / chars_per_token)
    route = RouteRequest(rid, max(input_len, 1), max_new if max_new is not None else DEFAULT_MAX_NEW_TOKENS, slo,
                         blocks(first, block_chars, block_tokens), block_tokens,
                         routing_key=headers.get("x-smg-routing-key"),
                         target=headers.get("x-smg-target-worker") or headers.get("x-worker-url"))
    return Parsed(body, stream, route, batch)
