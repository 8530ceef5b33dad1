"""``python -m hyperflexis_sglang.controller --config FILE``: run the scaling controller.

Adds the ``initial`` instances, then ticks every ``tick_s``; prints one status
line per tick and serves ``GET /status`` (JSON: instances, phases, last
decision, role transitions with their times, provisioner failures) and
``GET /health`` on ``--status-port``. A bad config exits 2 naming the file and
field. Ctrl-C/SIGTERM stops the loop; ``--stop-instances`` also stops what it started.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..core.scaling.types import ScaleAction
from ..core.slo import SLOCatalog, SLOError
from .config import ConfigError, load, make_policy, make_provisioner
from .controller import Controller
from .router_client import RouterClient
from .weights import default_loader


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hyperflexis_sglang.controller", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="controller config (JSON or TOML)")
    ap.add_argument("--status-port", type=int, default=None, help="serve GET /status and /health on this port")
    ap.add_argument("--ticks", type=int, default=None, help="stop after this many ticks (default: run until stopped)")
    ap.add_argument("--check", action="store_true", help="validate the config and exit")
    ap.add_argument("--stop-instances", action="store_true", help="stop the instances it started when it exits")
    return ap


def status_server(ctl: Controller, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            if self.path not in ("/status", "/health"):
                body, code = {"error": {"message": f"no route {self.path}", "type": "not_found", "param": None,
                                        "code": 404}}, 404
            else:
                body, code = (ctl.status() if self.path == "/status" else {"status": "ok"}), 200
            data = json.dumps(body, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def line(ctl: Controller) -> str:
    s = ctl.status()
    by = {}
    for i in s["instances"]:
        by.setdefault(f"{i['role']}/{i['phase']}", 0)
        by[f"{i['role']}/{i['phase']}"] += 1
    d = s["last_decision"] or {}
    return f"fleet {by} | decision: {d.get('reason', '-')} | failures {len(s['provisioner_failures'])}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = load(args.config)
        policy = make_policy(cfg)
        catalog = SLOCatalog.from_file(cfg.slo_classes) if cfg.slo_classes else SLOCatalog()
    except (ConfigError, SLOError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"config OK: policy {cfg.policy}, provisioner {cfg.provisioner}, router {cfg.router}")
        return 0
    try:
        prov = make_provisioner(cfg)
    except Exception as e:  # e.g. no kubeconfig / not in a cluster
        print(f"error: {cfg.path}: provisioner {cfg.provisioner!r} could not start: {e}", file=sys.stderr)
        return 1
    ctl = Controller(prov, RouterClient(cfg.router, cfg.router_api_key), policy, catalog, cfg.controller,
                     weight_loader=default_loader())
    srv = status_server(ctl, args.status_port) if args.status_port else None
    signal.signal(signal.SIGTERM, lambda *_: ctl._stop.set())
    try:
        for role, n in cfg.initial.items():
            for _ in range(n):
                ctl.submit(ScaleAction("add", role, weight_source="disk", reason="initial fleet"))
        ctl.wait_idle(cfg.controller.ready_timeout_s * 2)
        print(line(ctl), flush=True)
        loop = threading.Thread(target=ctl.run, args=(args.ticks,), daemon=True)
        loop.start()
        while loop.is_alive():
            loop.join(cfg.controller.tick_s)
            print(line(ctl), flush=True)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        ctl.stop()
        if srv:
            srv.shutdown()
        if args.stop_instances and hasattr(ctl.prov, "stop_all"):
            ctl.prov.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
