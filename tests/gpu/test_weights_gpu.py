"""D2D weight loading on NVIDIA GPUs (NCCL): skipped without CUDA; the two-GPU test also needs two devices.

Run on a GPU machine: ``python -m pytest tests/gpu -m gpu -q``. Nothing is
faked: standalone weight agents hold the tiny model on ``cuda:0`` (seed)
and ``cuda:1`` (new instance, random weights) and move it over NCCL.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]


def test_packed_buckets_and_checksums_on_the_gpu():
    from hyperflexis_sglang.core.weights import PlanConfig, plan_transfers
    from hyperflexis_sglang.weights import tensors, transport
    g = torch.Generator().manual_seed(0)
    cpu = {"a": torch.randn(300, 70, generator=g), "b": torch.randn(999, generator=g).to(torch.bfloat16),
           "c": torch.randn(5, 5, generator=g)}
    src = {k: v.cuda() for k, v in cpu.items()}
    dst = {k: torch.zeros_like(v) for k, v in src.items()}
    plan = plan_transfers(tensors.manifest(src.items()), ["s"], ["r"],
                          PlanConfig(bucket_bytes=4096, min_bucket_bytes=1))
    pool = transport._Pool()
    for b in plan.buckets:
        tensors.unpack(b, transport.pack_into(b, src, pool), dst)
        pool.release_all()
    torch.cuda.synchronize()
    assert tensors.checksums(dst.items()) == tensors.checksums(cpu.items())
    assert transport.Group(None, None, "nccl").backend == "nccl"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between two instances needs two GPUs")
def test_nccl_seed_to_new_instance_bit_exact(tmp_path):
    from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model
    from hyperflexis_sglang.weights import load_from_peers
    from hyperflexis_sglang.weights.orchestrate import _http
    from hyperflexis_sglang.weights.standalone import AgentProcess
    model = ensure_tiny_model(tmp_path / "tiny")
    seed = AgentProcess(model, device="cuda:0").launch()
    new = AgentProcess(model, dummy=True, device="cuda:1").launch()
    try:
        seed.wait_ready(), new.wait_ready()
        assert _http("GET", seed.url + "/hfx/weights/manifest")["backend"] == "nccl"
        report = load_from_peers([new.url], [seed.url], bucket_mb=1)
        assert report.ok and report.ready == (new.url,), report
        assert _http("GET", new.url + "/hfx/weights/checksum")["params"] == \
            _http("GET", seed.url + "/hfx/weights/checksum")["params"]
    finally:
        seed.stop()
        new.stop()
