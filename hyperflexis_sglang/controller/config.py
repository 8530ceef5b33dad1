"""The controller's config file (JSON or TOML), validated once; errors name the file and the field.

```json
{"router": "http://127.0.0.1:8000",
 "policy": {"name": "hfx", "perf": "llama-3-8b/h100/1", "options": {"max_replicas": 8}},
 "provisioner": {"name": "local", "model": "/models/llama", "role_switch_api": true},
 "initial": {"collocated": 1},
 "tick_s": 5}
```

Top-level keys besides ``router``, ``router_api_key``, ``policy``,
``provisioner``, ``initial`` and ``slo_classes`` are ``ControllerConfig``
fields. Provisioner keys are ``LocalConfig`` / ``KubernetesConfig`` fields
(plus ``namespace_from_pod`` for Kubernetes: read the pod's own namespace).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..core.scaling.types import ROLES
from .controller import ControllerConfig
from .provisioners.kubernetes import KubernetesConfig
from .provisioners.local import LocalConfig

TOP = {"router", "router_api_key", "policy", "provisioner", "initial", "slo_classes"}
PROVISIONERS = {"local": LocalConfig, "kubernetes": KubernetesConfig}
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    path: str  # the file it came from
    router: str  # router base URL
    router_api_key: str | None  # bearer token for the router, if it needs one
    policy: str  # scaling policy name (core/scaling registry)
    policy_perf: str | None  # performance-model preset "model/gpu/tp" for policies that take one
    policy_options: dict  # the policy's config fields
    provisioner: str  # local | kubernetes
    provisioner_cfg: object  # LocalConfig or KubernetesConfig
    controller: ControllerConfig  # loop, drain, health and retry settings
    initial: dict = field(default_factory=dict)  # role -> instances to add at start
    slo_classes: str | None = None  # SLO class file (default: built-in classes)


def _typed(cls, data: dict, where: str, path: str, extra: set[str] = frozenset()):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields and k not in extra:
            raise ConfigError(f"{path}: unknown field {where}{k!r}; known: {', '.join(sorted(fields))}")
    out = {}
    for k, v in data.items():
        if k in extra:
            continue
        default = fields[k].default
        want = type(default) if default is not None and default is not dataclasses.MISSING else None
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if want in (int, float, str, bool) and (not isinstance(v, want) or (want is not bool and isinstance(v, bool))):
            raise ConfigError(f"{path}: field {where}{k!r} must be {want.__name__}, got {v!r}")
        if want is float and v < 0:
            raise ConfigError(f"{path}: field {where}{k!r} must be >= 0, got {v!r}")
        out[k] = tuple(v) if k in ("extra_args", "gpus") and isinstance(v, list) else v
    try:
        return cls(**out)
    except TypeError as e:
        raise ConfigError(f"{path}: {where.rstrip('.') or 'config'}: {e}") from None


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be an object")
    return data


def load(path: str | Path) -> Config:
    path = Path(path)
    data = _read(path)
    if "router" not in data or not isinstance(data["router"], str) or not data["router"].startswith("http"):
        raise ConfigError(f"{path}: field 'router' must be the router's http(s) URL")
    pol = data.get("policy", {"name": "static"})
    if not isinstance(pol, dict) or not isinstance(pol.get("name"), str):
        raise ConfigError(f"{path}: field 'policy' must be an object with a 'name'")
    if not isinstance(pol.get("options", {}), dict):
        raise ConfigError(f"{path}: field 'policy.options' must be an object")
    prov = data.get("provisioner")
    if not isinstance(prov, dict) or prov.get("name") not in PROVISIONERS:
        raise ConfigError(f"{path}: field 'provisioner.name' must be one of {', '.join(PROVISIONERS)}")
    prov = dict(prov)
    name = prov.pop("name")
    if name == "kubernetes" and prov.pop("namespace_from_pod", False):
        prov["namespace"] = Path(SA_NAMESPACE).read_text().strip()
    prov_cfg = _typed(PROVISIONERS[name], prov, "provisioner.", str(path))
    initial = data.get("initial", {})
    if not isinstance(initial, dict) or any(r not in ROLES or not isinstance(n, int) or isinstance(n, bool) or n < 0
                                            for r, n in initial.items()):
        raise ConfigError(f"{path}: field 'initial' must map roles ({', '.join(ROLES)}) to counts >= 0")
    ctl = _typed(ControllerConfig, {k: v for k, v in data.items() if k not in TOP}, "", str(path))
    if ctl.role_switch not in ("api", "restart"):
        raise ConfigError(f"{path}: field 'role_switch' must be 'api' or 'restart', got {ctl.role_switch!r}")
    return Config(str(path), data["router"], data.get("router_api_key"), pol["name"], pol.get("perf"),
                  dict(pol.get("options", {})), name, prov_cfg, ctl, dict(initial), data.get("slo_classes"))


def make_policy(cfg: Config):
    from ..core.perf_model import preset
    from ..core.scaling.registry import make_scaler
    opts = dict(cfg.policy_options)
    if cfg.policy_perf:
        try:
            model, gpu, tp = cfg.policy_perf.split("/")
            opts["perf"] = preset(model, gpu, int(tp))
        except (ValueError, KeyError) as e:
            raise ConfigError(f"{cfg.path}: field 'policy.perf': {e}") from None
    try:
        return make_scaler(cfg.policy, **opts)
    except ValueError as e:  # ScalingConfigError is a ValueError
        raise ConfigError(f"{cfg.path}: field 'policy': {e}") from None


def make_provisioner(cfg: Config):
    if cfg.provisioner == "local":
        from .provisioners.local import LocalProvisioner
        return LocalProvisioner(cfg.provisioner_cfg)
    from .provisioners.kubernetes import KubernetesProvisioner
    return KubernetesProvisioner(cfg.provisioner_cfg)
