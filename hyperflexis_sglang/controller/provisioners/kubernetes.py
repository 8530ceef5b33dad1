"""``kubernetes`` provisioner: one StatefulSet per role, scaled through the official ``kubernetes`` client.

Manifests: ``launch/k8s/`` (StatefulSets ``hfx-prefill``, ``hfx-decode``,
``hfx-collocated``, the router Service, RBAC for the controller).

* add: read the StatefulSet's scale, patch ``spec.replicas`` to n + 1; the new
  pod is ``<statefulset>-<n>`` (StatefulSet ordinals). Its weights: ordinal 0
  loads from disk; higher ordinals start with dummy weights and pull them from
  peers when the StatefulSet sets ``HFX_PEER_WEIGHTS=1`` (the entrypoint in the
  manifest decides from the pod's ordinal), so ``Handle.weight_source`` says
  what the pod really does, whatever was asked.
* wait_ready: the pod is Ready (its readiness probe is SGLang's ``/health``)
  and has an IP -> ``http://<pod IP>:<port>``.
* remove: a StatefulSet scales down from its highest ordinal, so only that
  pod can be removed (``preferred_removal`` names it; the controller drains it
  through the router first, then this patches replicas to n - 1). Removing any
  other pod raises ``ProvisionError`` before anything changes.
* alive: the pod exists, is not being deleted and its phase is Running.

Tested against a recording fake of ``AppsV1Api``/``CoreV1Api`` (no cluster here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .base import Handle, ProvisionError

DEFAULT_SETS = {"prefill": "hfx-prefill", "decode": "hfx-decode", "collocated": "hfx-collocated"}


@dataclass(frozen=True)
class KubernetesConfig:
    namespace: str = "default"  # namespace of the StatefulSets
    statefulsets: dict = field(default_factory=lambda: dict(DEFAULT_SETS))  # role -> StatefulSet name
    port: int = 30000  # SGLang HTTP port in the pod
    bootstrap_port: int = 8998  # P/D bootstrap port in the pod
    peer_weights: dict = field(default_factory=dict)  # role -> True when its StatefulSet sets HFX_PEER_WEIGHTS=1
    transfer_backend: str = "mooncake"  # P/D KV transfer backend of the pods
    role_switch_api: bool = False  # pods run with --enable-pd-role-switch
    poll_s: float = 2.0  # seconds between pod readiness polls


def load_clients():
    """AppsV1Api and CoreV1Api from the in-cluster config, else ~/.kube/config."""
    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.AppsV1Api(), client.CoreV1Api()


def ordinal(pod_name: str) -> int:
    return int(pod_name.rsplit("-", 1)[1])


class KubernetesProvisioner:
    name = "kubernetes"

    def __init__(self, cfg: KubernetesConfig, apps=None, core=None, sleep=time.sleep, clock=time.monotonic):
        if apps is None or core is None:
            apps, core = load_clients()
        self.cfg, self.apps, self.core, self.sleep, self.clock = cfg, apps, core, sleep, clock
        self.transfer_backend = cfg.transfer_backend
        self.role_switch_api = cfg.role_switch_api

    def _set(self, role: str) -> str:
        try:
            return self.cfg.statefulsets[role]
        except KeyError:
            raise ProvisionError(f"no StatefulSet configured for role {role!r}") from None

    def _replicas(self, name: str) -> int:
        try:
            scale = self.apps.read_namespaced_stateful_set_scale(name, self.cfg.namespace)
        except Exception as e:  # ApiException, connection errors: the controller retries
            raise ProvisionError(f"read scale of statefulset {name}: {e}") from e
        return int(scale.spec.replicas or 0)

    def _scale(self, name: str, replicas: int) -> None:
        try:
            self.apps.patch_namespaced_stateful_set_scale(name, self.cfg.namespace, {"spec": {"replicas": replicas}})
        except Exception as e:
            raise ProvisionError(f"scale statefulset {name} to {replicas}: {e}") from e

    def add(self, role: str, weight_source: str) -> Handle:
        sts = self._set(role)
        n = self._replicas(sts)
        self._scale(sts, n + 1)
        pod = f"{sts}-{n}"
        source = "peer" if self.cfg.peer_weights.get(role) and n > 0 else "disk"
        boot = self.cfg.bootstrap_port if role == "prefill" or (role != "collocated" and self.role_switch_api) \
            else None
        return Handle(pod, role, "", boot, source, None, {"statefulset": sts, "ordinal": n,
                                                         "asked_weight_source": weight_source})

    def wait_ready(self, handle: Handle, timeout_s: float) -> Handle:
        deadline = self.clock() + timeout_s
        while True:
            pod = self._pod(handle.iid)
            if pod is not None and pod.status and pod.status.pod_ip and _ready(pod):
                return handle.with_(url=f"http://{pod.status.pod_ip}:{self.cfg.port}")
            if self.clock() >= deadline:
                raise ProvisionError(f"pod {handle.iid} not Ready within {timeout_s:.0f} s")
            self.sleep(self.cfg.poll_s)

    def preferred_removal(self, role: str) -> str:
        """The only pod of the role's StatefulSet that a scale-down removes: the highest ordinal."""
        sts = self._set(role)
        return f"{sts}-{self._replicas(sts) - 1}"

    def can_remove(self, handle: Handle) -> tuple[bool, str]:
        want = self.preferred_removal(handle.role)
        if handle.iid != want:
            return False, f"a StatefulSet removes its highest ordinal first: remove {want}, not {handle.iid}"
        return True, "highest ordinal"

    def remove(self, handle: Handle) -> None:
        sts = handle.detail.get("statefulset") or self._set(handle.role)
        n = self._replicas(sts)
        if ordinal(handle.iid) != n - 1:
            raise ProvisionError(f"cannot remove {handle.iid}: statefulset {sts} has {n} replicas and scales "
                                 f"down from {sts}-{n - 1}")
        self._scale(sts, n - 1)

    def alive(self, handle: Handle) -> bool:
        pod = self._pod(handle.iid)
        return (pod is not None and pod.metadata.deletion_timestamp is None
                and pod.status is not None and pod.status.phase == "Running")

    def log_tail(self, handle: Handle) -> str:
        try:
            return self.core.read_namespaced_pod_log(handle.iid, self.cfg.namespace, tail_lines=40)
        except Exception:
            return ""

    def _pod(self, name: str):
        try:
            return self.core.read_namespaced_pod(name, self.cfg.namespace)
        except Exception as e:
            if getattr(e, "status", None) == 404:
                return None
            raise ProvisionError(f"read pod {name}: {e}") from e


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
