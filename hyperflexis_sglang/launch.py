"""``python -m hyperflexis_sglang.launch``: the whole system with one command.

Starts the SLO-aware router (``python -m hyperflexis_sglang.router``), then N
SGLang servers with the HFX plugin on (collocated), or P prefill + D decode
servers (KV over Mooncake), through the scaling controller's local
provisioner, which registers each server with the router only once it is
healthy (prefill: bootstrap ready). Prints the router URL and one status line
per worker, and stops everything (router drains first) on Ctrl-C/SIGTERM.

With no model given and no GPU present it serves the embedded default, a
generated tiny Llama on the CPU, so it works on any fresh machine; with a GPU
pass ``--model-path`` as to ``sglang.launch_server`` (each server gets one
GPU). Arguments after ``--`` go to every server unchanged. ``--config FILE``
(JSON or TOML) holds the same settings as the flags (flags win);
``--autoscaler NAME`` keeps the controller's scaling loop running.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .controller.controller import Controller, ControllerConfig
from .controller.local import free_port
from .controller.provisioners.local import LocalConfig, LocalProvisioner
from .controller.router_client import RouterClient
from .controller.router_process import RouterProcess
from .controller.weights import default_loader
from .core.scaling.registry import SCALERS, make_scaler
from .core.scaling.types import ScaleAction
from .core.scheduling import POLICIES
from .core.slo import SLOCatalog, SLOError

ROUTER_POLICIES = ("hfx", "cache_aware", "round_robin", "power_of_two", "random")


class LaunchConfig(BaseModel):
    """Everything the launcher needs; the CLI flags map one to one onto these fields."""

    model_config = ConfigDict(extra="forbid")
    model_path: str | None = Field(None, description="model directory (default: generated tiny model on a CPU)")
    servers: int = Field(1, ge=0, description="collocated SGLang servers (ignored with prefill/decode)")
    prefill: int = Field(0, ge=0, description="prefill servers (P/D disaggregation with decode)")
    decode: int = Field(0, ge=0, description="decode servers (P/D disaggregation with prefill)")
    policy: str = Field("hfx", description="scheduling policy inside SGLang, or 'off' for stock SGLang")
    router_policy: str = Field("hfx", description="router policy (P/D: for both pools)")
    host: str = Field("127.0.0.1", description="router host")
    port: int = Field(30000, ge=0, le=65535, description="router port (0: a free port)")
    slo_classes: str | None = Field(None, description="JSON/TOML SLO class file for router and servers")
    autoscaler: str | None = Field(None, description="scaling policy run by the controller (default: a static fleet)")
    max_replicas: int = Field(4, ge=1, description="per role, with --autoscaler")
    server_args: list[str] = Field(default_factory=list, description="more sglang.launch_server flags")
    timeout_s: float = Field(300.0, gt=0, description="seconds a server may take to become healthy")

    @field_validator("policy", "router_policy", "autoscaler")
    @classmethod
    def _known(cls, v, info):
        known = {"policy": (*POLICIES, "off"), "router_policy": ROUTER_POLICIES, "autoscaler": tuple(SCALERS)}
        if v is not None and v not in known[info.field_name]:
            raise ValueError(f"must be one of {', '.join(known[info.field_name])}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "LaunchConfig":
        if (self.prefill > 0) != (self.decode > 0):
            raise ValueError("--prefill/--decode: P/D needs both prefill >= 1 and decode >= 1")
        if self.prefill == 0 and self.servers < 1:
            raise ValueError("--servers: must be >= 1 (or give --prefill and --decode)")
        return self

    @property
    def fleet(self) -> dict[str, int]:
        return {"prefill": self.prefill, "decode": self.decode} if self.prefill else {"collocated": self.servers}


class LaunchError(ValueError):
    pass


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hyperflexis_sglang.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="JSON or TOML file with the settings below (flags win)")
    for name, f in LaunchConfig.model_fields.items():
        if name == "server_args":
            continue
        ap.add_argument("--" + name.replace("_", "-"), default=None, help=f.description,
                        type={"servers": int, "prefill": int, "decode": int, "port": int, "max_replicas": int,
                              "timeout_s": float}.get(name, str))
    ap.add_argument("--smoke", action="store_true", help="send one SLO-tagged request through the router")
    ap.add_argument("--exit", action="store_true", help="stop after start-up (and --smoke) instead of serving")
    return ap


def resolve(argv: list[str]) -> tuple[LaunchConfig, argparse.Namespace]:
    """Config file, then flags; raises LaunchError naming the file, field or flag."""
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    data: dict = {}
    if args.config:
        path = Path(args.config)
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as e:
            raise LaunchError(f"{path}: cannot read a {'TOML' if path.suffix == '.toml' else 'JSON'} config: {e}")
        if not isinstance(data, dict):
            raise LaunchError(f"{path}: the top level must be an object")
    flags = {k: v for k, v in vars(args).items() if k in LaunchConfig.model_fields and v is not None}
    merged = {**data, **flags}
    if passthrough:
        merged["server_args"] = [*merged.get("server_args", []), *passthrough]
    try:
        return LaunchConfig(**merged), args
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        field = ".".join(str(p) for p in err["loc"])
        if not field:  # a rule across fields: the message names the flags
            raise LaunchError(msg + (f" (with {args.config})" if args.config else "")) from None
        flag = "--" + field.replace("_", "-")
        where = flag if field in flags or not args.config else f"{args.config}: field {field!r}"
        raise LaunchError(f"{where}: {msg}") from None


def has_gpu() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # no torch or a broken CUDA setup: treat as CPU
        return False


def build(cfg: LaunchConfig) -> tuple[RouterProcess, Controller, bool, str]:
    cpu = cfg.model_path is None and not has_gpu()
    model = cfg.model_path
    if model is None:
        if not cpu:
            raise LaunchError("--model-path: a GPU is present: pass a model (the tiny model is for CPU machines)")
        from .sglang_ext.tiny_model import ensure_tiny_model
        model = str(ensure_tiny_model())
    catalog = SLOCatalog.from_file(cfg.slo_classes) if cfg.slo_classes else SLOCatalog()
    env = {"HFX_POLICY": cfg.policy} if cfg.policy != "off" else {}
    if cfg.slo_classes:
        env["HFX_SLO_CLASSES"] = str(Path(cfg.slo_classes).resolve())
    extra = (["--enable-mixed-chunk"] if cfg.policy == "hfx" else []) + cfg.server_args
    prov = LocalProvisioner(LocalConfig(model=model, hfx=cfg.policy != "off", cpu=True if cpu else None,
                                        extra_args=tuple(extra), env=env))
    router = RouterProcess(cfg.host, cfg.port or free_port(), cfg.router_policy, pd=cfg.prefill > 0,
                           slo_classes=cfg.slo_classes)
    name = cfg.autoscaler or "static"
    opts = {"max_replicas": cfg.max_replicas} if name not in ("static",) else {}
    policy = make_scaler(name, **opts)
    ctl = Controller(prov, RouterClient(router.url), policy, catalog, ControllerConfig(ready_timeout_s=cfg.timeout_s),
                     weight_loader=default_loader())
    return router, ctl, cpu, model


def bring_up(cfg: LaunchConfig, router: RouterProcess, ctl: Controller) -> list[dict]:
    router.start()
    for role, n in cfg.fleet.items():
        for _ in range(n):
            ctl.submit(ScaleAction("add", role, weight_source="disk", reason="launch"))
    ctl.wait_idle(cfg.timeout_s * 2 + 60)
    ready = [i for i in ctl.status()["instances"] if i["phase"] == "ready"]
    if len(ready) < sum(cfg.fleet.values()):
        fails = ctl.status()["provisioner_failures"]
        raise RuntimeError(f"{len(ready)} of {sum(cfg.fleet.values())} servers came up; failures: "
                           f"{json.dumps(fails, default=str)[:2000]}")
    return ready


def smoke(router: RouterProcess) -> bool:
    status, out = router.post("/generate", {"text": "Hello from HyperFlexis", "sampling_params": {
        "max_new_tokens": 8, "temperature": 0, "custom_params": {"slo": {"class": "interactive"}}}})
    print(f"  smoke through the router: HTTP {status} {json.dumps(out.get('text', out))[:100]}", flush=True)
    return status == 200


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = resolve(list(sys.argv[1:] if argv is None else argv))
        router, ctl, cpu, model = build(cfg)
    except (LaunchError, SLOError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ready = bring_up(cfg, router, ctl)
        print(f"hyperflexis: router {router.url} (policy {cfg.router_policy}) -> {len(ready)} SGLang server(s), "
              f"model {model}, scheduling {cfg.policy}{' (CPU, tiny model)' if cpu else ''}", flush=True)
        for i in ready:
            pid = ctl.prov.servers[i["iid"]].proc.pid if i["iid"] in getattr(ctl.prov, "servers", {}) else "-"
            boot = f"  bootstrap {i['bootstrap_port']}" if i["bootstrap_port"] else ""
            print(f"  {i['iid']}: {i['role']:<10} {i['url']}  pid {pid}  gpu {i['gpu'] or '-'}{boot}", flush=True)
        if args.smoke and not smoke(router):
            return 1
        if cfg.autoscaler:
            threading.Thread(target=ctl.run, daemon=True).start()
        if not args.exit:
            print("serving; Ctrl-C stops the router and every server", flush=True)
            stop.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # start-up failed: say why, then clean up below
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        router.stop()  # drains in-flight requests first
        ctl.stop()
        ctl.prov.stop_all()
        print("hyperflexis: router and all servers stopped", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
