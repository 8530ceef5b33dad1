"""The out-of-tree CPU platform entry point stays inactive unless asked for."""

import pytest

from hyperflexis_sglang.sglang_ext import cpu_platform


def test_inactive_without_env(monkeypatch):
    monkeypatch.delenv(cpu_platform.ENV_FLAG, raising=False)
    assert cpu_platform.activate() is None
    monkeypatch.setenv(cpu_platform.ENV_FLAG, "0")
    assert cpu_platform.activate() is None


def test_active_with_env_only_without_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv(cpu_platform.ENV_FLAG, "1")
    expected = None if torch.cuda.is_available() else cpu_platform.CLASS_PATH
    assert cpu_platform.activate() == expected


def test_class_is_out_of_tree_cpu():
    pytest.importorskip("sglang.srt.platforms.interface")
    import pkgutil

    cls = pkgutil.resolve_name(cpu_platform.CLASS_PATH)
    platform = cls()
    assert platform.is_out_of_tree() and not platform.is_cpu()
    assert platform.get_device() == "cpu"
    assert platform.get_default_attention_backend() == "torch_native"
    assert platform.get_compile_backend() == "eager"
    assert not platform.is_pin_memory_available()
