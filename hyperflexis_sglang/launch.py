"""``python -m hyperflexis_sglang.launch``: bring up SGLang servers with the HFX plugin on.

With no ``--model-path`` and no GPU, it builds the embedded tiny Llama model
(random weights, local tokenizer; nothing downloaded) and serves it on the
CPU, so it works on any fresh machine. With a GPU, pass ``--model-path`` as
to ``sglang.launch_server``; arguments after ``--`` go to every server
unchanged. It waits for health, prints each server's URL and one status
line, optionally sends one request per server (``--smoke``), and stops
everything on Ctrl-C/SIGTERM (or right after ``--smoke`` with ``--exit``).

The SLO-aware router in front of several servers is issue 4's work; until
then each server is addressed directly.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from .controller.local import SGLangServer, ServerError
from .core.scheduling import POLICIES


def has_gpu() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # no torch or a broken CUDA setup: treat as CPU
        return False


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hyperflexis_sglang.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", default=None, help="model directory (default: generated tiny model on CPU)")
    ap.add_argument("--servers", type=int, default=1, help="number of SGLang servers (default 1)")
    ap.add_argument("--port", type=int, default=None, help="port of the first server (default: a free port)")
    ap.add_argument("--policy", default="hfx", choices=[*POLICIES, "off"],
                    help="scheduling policy, or 'off' for stock SGLang (default hfx)")
    ap.add_argument("--slo-classes", default=None, help="JSON/TOML SLO class file for the plugin")
    ap.add_argument("--smoke", action="store_true", help="send one SLO-tagged request to each server")
    ap.add_argument("--exit", action="store_true", help="stop after start-up (and --smoke) instead of serving")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for health (default 300)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.servers < 1:
        print("error: --servers must be >= 1", file=sys.stderr)
        return 2
    model = args.model_path
    cpu = model is None and not has_gpu()
    if model is None:
        if not cpu:
            print("error: a GPU is present: pass --model-path (the tiny model is for CPU machines)", file=sys.stderr)
            return 2
        from .sglang_ext.tiny_model import ensure_tiny_model
        model = str(ensure_tiny_model())
    env = {"HFX_POLICY": args.policy} if args.policy != "off" else {}
    if args.slo_classes:
        env["HFX_SLO_CLASSES"] = args.slo_classes
    extra = (["--enable-mixed-chunk"] if args.policy == "hfx" else []) + passthrough
    servers = [SGLangServer(model, hfx=args.policy != "off", extra_args=extra, env=env, name=f"server{i}",
                            port=(args.port + i) if args.port else None, cpu=cpu) for i in range(args.servers)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for s in servers:
            s.start_async()
        for s in servers:
            s.wait_healthy(args.timeout)
        print(f"hyperflexis: {len(servers)} SGLang server(s) up, model {model}, policy {args.policy}"
              f"{' (CPU, tiny model)' if cpu else ''}", flush=True)
        for s in servers:
            state = s.hfx_state() if args.policy != "off" else None
            hooks = "plugin on" if state else "stock SGLang"
            print(f"  {s.name}: {s.url}  pid {s.proc.pid}  {hooks}", flush=True)
        if args.smoke:
            for s in servers:
                status, out = s.post("/generate", {"text": "Hello from HyperFlexis", "sampling_params": {
                    "max_new_tokens": 8, "temperature": 0, "custom_params": {"slo": {"class": "interactive"}}}})
                print(f"  {s.name} smoke: HTTP {status} {json.dumps(out.get('text', out))[:80]}", flush=True)
                if status != 200:
                    return 1
        if not args.exit:
            print("serving; Ctrl-C stops all servers", flush=True)
            stop.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for s in servers:
            s.stop()
        print("hyperflexis: all servers stopped", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
