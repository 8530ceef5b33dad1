"""The local provisioner's pure parts: GPU assignment (round robin, one per instance) and role flags."""

from __future__ import annotations

import pytest

from hyperflexis_sglang.controller.gpus import assign_gpu, detect_gpus, parse_nvidia_smi, parse_visible_devices
from hyperflexis_sglang.controller.provisioners.local import role_args


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", []), ("-1", []), ("0,1", ["0", "1"]), (" 2 , 3 ", ["2", "3"]),
    ("GPU-abc,GPU-def", ["GPU-abc", "GPU-def"]),
])
def test_parse_visible_devices(value, expected):
    assert parse_visible_devices(value) == expected


def test_parse_nvidia_smi():
    assert parse_nvidia_smi("0\n1\n\n3\nNo devices were found\n") == ["0", "1", "3"]


@pytest.mark.parametrize("gpus, in_use, counter, expected", [
    ([], [], 0, (None, 0)),
    (["0", "1", "2"], [], 0, ("0", 1)),
    (["0", "1", "2"], ["0"], 0, ("1", 2)),
    (["0", "1", "2"], ["1"], 1, ("2", 3)),
    (["0", "1", "2"], ["2"], 2, ("0", 4)),  # wraps round
    (["0", "1"], ["0", "1"], 3, ("1", 4)),  # all busy: still round robin (instances share)
])
def test_assign_gpu(gpus, in_use, counter, expected):
    assert assign_gpu(gpus, in_use, counter) == expected


def test_assign_gpu_spreads_one_per_instance():
    gpus, used, c = ["0", "1", "2", "3"], [], 0
    for _ in range(4):
        g, c = assign_gpu(gpus, used, c)
        used.append(g)
    assert sorted(used) == gpus


def test_detect_gpus_prefers_visible_devices():
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "4,5"}) == ["4", "5"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


@pytest.mark.parametrize("role, boot, switch, cpu, expected", [
    ("collocated", None, False, True, []),
    ("prefill", 9000, False, True, ["--disaggregation-mode", "prefill", "--disaggregation-transfer-backend",
                                    "mooncake", "--disaggregation-bootstrap-port", "9000"]),
    ("decode", None, False, True, ["--disaggregation-mode", "decode", "--disaggregation-transfer-backend",
                                   "mooncake", "--disaggregation-decode-retraction-backup", "cpu_tensor"]),
    ("decode", None, False, False, ["--disaggregation-mode", "decode", "--disaggregation-transfer-backend",
                                    "mooncake"]),
    ("prefill", 9001, True, True, ["--disaggregation-mode", "prefill", "--disaggregation-transfer-backend",
                                   "mooncake", "--disaggregation-bootstrap-port", "9001",
                                   "--disaggregation-decode-retraction-backup", "cpu_tensor",
                                   "--enable-pd-role-switch"]),
])
def test_role_args(role, boot, switch, cpu, expected):
    assert role_args(role, "mooncake", boot, switch, cpu) == expected
