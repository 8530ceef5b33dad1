"""Integration tests against real SGLang 0.5.23 servers on the CPU with a generated tiny model.

Nothing here is faked: the servers are `python -m sglang.launch_server`
processes, started per module on free ports and stopped by their own PIDs
(process groups). They need SGLang installed (`bash scripts/setup.sh`);
without it the whole directory is skipped with that reason, and CI
(`scripts/test.sh`) installs it first, so CI always runs them.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sglang", reason="SGLang is not installed: run `bash scripts/setup.sh`")

from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model  # noqa: E402
from hyperflexis_sglang.testing.classes import CPU_CLASSES  # noqa: E402
from hyperflexis_sglang.controller.local import SGLangServer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def cpu_classes(tmp_path_factory):
    import json
    path = tmp_path_factory.mktemp("slo") / "cpu_classes.json"
    path.write_text(json.dumps(CPU_CLASSES))
    return path


@pytest.fixture(scope="module")
def servers(tiny_model, cpu_classes):
    """A stock server and an HFX server on the same tiny model, started in parallel."""
    stock = SGLangServer(tiny_model, hfx=False, name="stock")
    hfx = SGLangServer(tiny_model, hfx=True, extra_args=["--enable-mixed-chunk"], name="hfx",
                       env={"HFX_SLO_CLASSES": str(cpu_classes)})
    try:
        for s in (stock, hfx):
            s.start_async()
        for s in (stock, hfx):
            s.wait_healthy()
        yield stock, hfx
    finally:
        for s in (stock, hfx):
            s.stop()
