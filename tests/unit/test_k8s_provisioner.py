"""The Kubernetes provisioner against a *fake Kubernetes API*: a recording stand-in for the
``AppsV1Api``/``CoreV1Api`` methods it calls (no cluster exists on these machines). The tests
assert the exact calls and bodies the provisioner sends; objects it reads are built with the
official client's model classes, so attribute access is the real client's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes.client import (V1ObjectMeta, V1Pod, V1PodCondition, V1PodStatus, V1Scale, V1ScaleSpec)
from kubernetes.client.exceptions import ApiException

from hyperflexis_sglang.controller.provisioners.base import ProvisionError
from hyperflexis_sglang.controller.provisioners.kubernetes import KubernetesConfig, KubernetesProvisioner

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "k8s"


class FakeK8s:
    """Fake Kubernetes API (recording): StatefulSet scales and pods held in dicts; every call is recorded."""

    def __init__(self, replicas: dict[str, int], pods: dict[str, V1Pod] | None = None, fail_patches: int = 0):
        self.replicas, self.pods, self.calls, self.fail_patches = dict(replicas), dict(pods or {}), [], fail_patches

    def read_namespaced_stateful_set_scale(self, name, namespace):
        self.calls.append(("read_scale", name, namespace))
        return V1Scale(spec=V1ScaleSpec(replicas=self.replicas[name]))

    def patch_namespaced_stateful_set_scale(self, name, namespace, body):
        self.calls.append(("patch_scale", name, namespace, body))
        if self.fail_patches:
            self.fail_patches -= 1
            raise ApiException(status=409, reason="Conflict")
        self.replicas[name] = body["spec"]["replicas"]

    def read_namespaced_pod(self, name, namespace):
        self.calls.append(("read_pod", name, namespace))
        if name not in self.pods:
            raise ApiException(status=404, reason="Not Found")
        return self.pods[name]

    def read_namespaced_pod_log(self, name, namespace, tail_lines):
        self.calls.append(("read_log", name, namespace, tail_lines))
        return "log line"


def pod(name: str, ip: str | None, ready: bool, phase: str = "Running") -> V1Pod:
    cond = [V1PodCondition(type="Ready", status="True" if ready else "False")]
    return V1Pod(metadata=V1ObjectMeta(name=name), status=V1PodStatus(pod_ip=ip, phase=phase, conditions=cond))


def prov(fake, **cfg) -> KubernetesProvisioner:
    return KubernetesProvisioner(KubernetesConfig(namespace="ns", poll_s=1.0, **cfg), apps=fake, core=fake,
                                 sleep=lambda s: None)


def test_add_patches_replicas_and_names_the_new_ordinal():
    fake = FakeK8s({"hfx-prefill": 2})
    h = prov(fake, peer_weights={"prefill": True}).add("prefill", "peer")
    assert fake.calls == [("read_scale", "hfx-prefill", "ns"),
                          ("patch_scale", "hfx-prefill", "ns", {"spec": {"replicas": 3}})]
    assert (h.iid, h.role, h.bootstrap_port, h.weight_source) == ("hfx-prefill-2", "prefill", 8998, "peer")


def test_first_pod_loads_from_disk_even_when_peer_asked():
    fake = FakeK8s({"hfx-collocated": 0})
    h = prov(fake, peer_weights={"collocated": True}).add("collocated", "peer")
    assert h.iid == "hfx-collocated-0" and h.weight_source == "disk" and h.bootstrap_port is None


def test_wait_ready_polls_until_ready_with_ip():
    fake = FakeK8s({"hfx-decode": 0})
    p = prov(fake)
    h = p.add("decode", "disk")
    states = iter([None, pod("hfx-decode-0", None, False), pod("hfx-decode-0", "10.0.0.7", True)])

    def read(name, namespace):
        fake.calls.append(("read_pod", name, namespace))
        s = next(states)
        if s is None:
            raise ApiException(status=404)
        return s
    fake.read_namespaced_pod = read
    h = p.wait_ready(h, 60)
    assert h.url == "http://10.0.0.7:30000"
    assert [c for c in fake.calls if c[0] == "read_pod"] == [("read_pod", "hfx-decode-0", "ns")] * 3


def test_wait_ready_times_out_with_error():
    t = iter(range(0, 1000, 10))
    fake = FakeK8s({"hfx-decode": 0}, {"hfx-decode-0": pod("hfx-decode-0", "10.0.0.1", False)})
    p = KubernetesProvisioner(KubernetesConfig(namespace="ns"), apps=fake, core=fake, sleep=lambda s: None,
                              clock=lambda: next(t))
    with pytest.raises(ProvisionError, match="not Ready within 30 s"):
        p.wait_ready(p.add("decode", "disk"), 30)


def test_remove_scales_down_only_the_highest_ordinal():
    fake = FakeK8s({"hfx-decode": 3})
    p = prov(fake)
    h2 = p.add("decode", "disk").with_(iid="hfx-decode-2")
    fake.replicas["hfx-decode"] = 3
    fake.calls.clear()
    assert p.can_remove(h2.with_(iid="hfx-decode-1"))[0] is False
    with pytest.raises(ProvisionError, match="scales down from hfx-decode-2"):
        p.remove(h2.with_(iid="hfx-decode-1"))
    assert not [c for c in fake.calls if c[0] == "patch_scale"]  # nothing changed
    p.remove(h2)
    assert fake.calls[-1] == ("patch_scale", "hfx-decode", "ns", {"spec": {"replicas": 2}})
    assert p.preferred_removal("decode") == "hfx-decode-1"


def test_api_errors_become_provision_errors():
    fake = FakeK8s({"hfx-prefill": 1}, fail_patches=1)
    with pytest.raises(ProvisionError, match="scale statefulset hfx-prefill to 2"):
        prov(fake).add("prefill", "disk")


def test_alive_reflects_pod_state():
    fake = FakeK8s({"hfx-decode": 1}, {"hfx-decode-0": pod("hfx-decode-0", "10.0.0.2", True)})
    p = prov(fake)
    h = p.add("decode", "disk").with_(iid="hfx-decode-0")
    assert p.alive(h)
    fake.pods["hfx-decode-0"] = pod("hfx-decode-0", "10.0.0.2", False, phase="Failed")
    assert not p.alive(h)
    del fake.pods["hfx-decode-0"]
    assert not p.alive(h)


def test_unknown_role_is_an_error():
    with pytest.raises(ProvisionError, match="no StatefulSet configured for role 'weird'"):
        prov(FakeK8s({})).add("weird", "disk")


def test_manifests_parse_and_name_what_the_provisioner_uses():
    docs = [d for f in sorted(LAUNCH.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for sts in ("hfx-prefill", "hfx-decode", "hfx-collocated"):
        assert ("StatefulSet", sts) in kinds
    assert ("Service", "hfx-router") in kinds and ("Role", "hfx-controller") in kinds
    role = next(d for d in docs if d["kind"] == "Role")
    verbs = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    for need in [("statefulsets/scale", "get"), ("statefulsets/scale", "patch"), ("pods", "get"),
                 ("pods/log", "get")]:
        assert need in verbs, need
    assert all("namespace" not in d["metadata"] for d in docs)  # namespace-agnostic
