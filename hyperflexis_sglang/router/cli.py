"""Command line: sglang_router.launch_router's flags (mapped onto ``RouterConfig``) plus ``--hfx-*``.

Every sglang-router 0.3.2 flag is accepted. Those this router implements
set a ``RouterConfig`` field of the same name; the others (``ACCEPTED_IGNORED``:
Kubernetes discovery, tokenizer, parsers, history backends, TLS, tracing,
control-plane auth, ...) are parsed and a warning names each one given.
Anything else is an error: exit code 2 naming the flag (argparse's own
message; abbreviations are off, so a typo is never silently taken as
another flag).
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing

from pydantic import ValidationError

from .config import POLICIES, POLICY_ALIASES, RouterConfig

log = logging.getLogger("hyperflexis_sglang.router")

# sglang-router flags accepted but without effect here, by arity: store_true, one value, "+" or "*" values.
ACCEPTED_IGNORED = {
    "flag": ["dp-aware", "enable-igw", "mini-lb", "service-discovery", "tokenizer-cache-enable-l0",
             "tokenizer-cache-enable-l1", "enable-trace", "control-plane-audit-enabled"],
    "one": ["bucket-adjust-interval-secs", "eviction-interval-secs", "max-idle-secs", "worker-startup-timeout-secs",
            "worker-startup-check-interval", "service-discovery-port", "service-discovery-namespace",
            "rate-limit-tokens-per-second", "model-path", "tokenizer-path", "chat-template",
            "tokenizer-cache-l0-max-entries", "tokenizer-cache-l1-max-memory", "reasoning-parser",
            "tool-call-parser", "mcp-config-path", "backend", "history-backend", "oracle-wallet-path",
            "oracle-tns-alias", "oracle-connect-descriptor", "oracle-username", "oracle-password",
            "oracle-pool-min", "oracle-pool-max", "oracle-pool-timeout-secs", "postgres-db-url",
            "postgres-pool-max", "redis-url", "redis-pool-max", "redis-retention-days", "client-cert-path",
            "client-key-path", "tls-cert-path", "tls-key-path", "otlp-traces-endpoint", "jwt-issuer",
            "jwt-audience", "jwt-jwks-uri"],
    "+": ["selector", "prefill-selector", "decode-selector"],
    "*": ["ca-cert-paths", "control-plane-api-keys", "jwt-role-mapping"],
}
# Fields whose flag is not simply --field-name, or that need nargs/choices.
SPECIAL = {"prefill_urls", "decode_urls", "worker_urls", "policy", "prefill_policy", "decode_policy"}


def _scalar(annotation):
    """(python type, is list) of a field annotation such as Optional[list[float]]."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    if origin is typing.Literal:
        return str, False
    return annotation, False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hyperflexis_sglang.router", allow_abbrev=False,
                                description="HyperFlexis SLO-aware router (sglang_router.launch_router flags)")
    p.add_argument("--worker-urls", nargs="*", default=[], help="regular worker URLs")
    p.add_argument("--policy", default="cache_aware", choices=POLICIES, help="routing policy")
    pd_choices = (*POLICIES, *POLICY_ALIASES)
    p.add_argument("--prefill-policy", choices=pd_choices, help="P/D: prefill policy (default --policy)")
    p.add_argument("--decode-policy", choices=POLICIES, help="P/D: decode policy (default --policy)")
    p.add_argument("--prefill", nargs="+", action="append", metavar="URL [BOOTSTRAP_PORT|none]",
                   help="P/D: a prefill worker and its bootstrap port (repeatable)")
    p.add_argument("--decode", nargs=1, action="append", metavar="URL", help="P/D: a decode worker (repeatable)")
    for name, field in RouterConfig.model_fields.items():
        if name in SPECIAL:
            continue
        flag = "--" + name.replace("_", "-")
        typ, is_list = _scalar(field.annotation)
        kw = {"help": field.description, "dest": name, "default": argparse.SUPPRESS}
        if typ is bool:
            p.add_argument(flag, action="store_true", **kw)
        elif typing.get_origin(field.annotation) is typing.Literal:
            p.add_argument(flag, choices=typing.get_args(field.annotation), **kw)
        else:
            p.add_argument(flag, type=typ, nargs="*" if is_list else None, **kw)
    for arity, names in ACCEPTED_IGNORED.items():
        for name in names:
            kw = {"dest": "ignored_" + name.replace("-", "_"), "default": argparse.SUPPRESS,
                  "help": "accepted for sglang_router compatibility; no effect (a warning says so)"}
            if arity == "flag":
                p.add_argument("--" + name, action="store_true", **kw)
            else:
                p.add_argument("--" + name, nargs=None if arity == "one" else arity, metavar="VALUE", **kw)
    return p


def _prefill(entries, parser) -> list[tuple[str, int | None]]:
    out = []
    for entry in entries or []:
        if len(entry) > 2:
            parser.error(f"--prefill takes URL [BOOTSTRAP_PORT|none], got {' '.join(entry)}")
        port = entry[1] if len(entry) == 2 else "none"
        if port.lower() == "none":
            out.append((entry[0], None))
        elif port.isdigit() and 0 < int(port) < 65536:
            out.append((entry[0], int(port)))
        else:
            parser.error(f"--prefill {entry[0]}: bootstrap port must be a port number or 'none', got {port!r}")
    return out


def parse_args(argv: list[str]) -> tuple[RouterConfig, list[str]]:
    """The config, and a warning for each accepted-but-ignored flag given. Bad input: exit 2."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    warnings = [f"--{k[len('ignored_'):].replace('_', '-')} is accepted for sglang_router compatibility but has "
                f"no effect in this router" for k in ns if k.startswith("ignored_")]
    fields = {k: v for k, v in ns.items() if k in RouterConfig.model_fields}
    for name in ("prefill_policy",):
        if fields.get(name) in POLICY_ALIASES:
            warnings.append(f"--{name.replace('_', '-')} {fields[name]} is not implemented; using "
                            f"{POLICY_ALIASES[fields[name]]}")
            fields[name] = POLICY_ALIASES[fields[name]]
    fields["prefill_urls"] = _prefill(ns.pop("prefill", None), parser)
    fields["decode_urls"] = [d[0] for d in ns.pop("decode", None) or []]
    if fields.get("request_id_headers") == []:
        fields.pop("request_id_headers")
    try:
        return RouterConfig(**fields), warnings
    except ValidationError as e:
        first = e.errors()[0]
        loc = first["loc"][0] if first["loc"] else ""
        flag = f"--{str(loc).replace('_', '-')}: " if loc else ""
        parser.error(f"{flag}{first['msg']}")
        raise  # unreachable: parser.error exits


def main(argv: list[str] | None = None) -> None:
    cfg, warnings = parse_args(sys.argv[1:] if argv is None else argv)
    from .server import serve
    serve(cfg, warnings)
