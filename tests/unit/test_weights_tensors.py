"""Bucket transport and checksums in one process: two gloo ranks in threads (real torch.distributed, no fakes)."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from hyperflexis_sglang.core.weights import PlanConfig, plan_transfers  # noqa: E402
from hyperflexis_sglang.weights import tensors, transport  # noqa: E402


def model(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"embed": torch.randn(64, 32, generator=g), "norm": torch.ones(32),
            "half": torch.randn(7, 5, generator=g).to(torch.bfloat16), "w": torch.randn(33, 17, generator=g)}


@pytest.mark.parametrize("packed", [False, True])
def test_two_ranks_move_every_bucket_bit_exact(packed):
    seed, new = model(0), model(1)
    plan = plan_transfers(tensors.manifest(seed.items()), ["s"], ["r"], PlanConfig(bucket_bytes=4096, min_bucket_bytes=1))
    assert len(plan.buckets) > 2 and {b.dtype for b in plan.buckets} == {"float32", "bfloat16"}
    store = transport.host_store("127.0.0.1")
    results: dict = {}

    def node(rank: int, me: str, params: dict) -> None:
        g = transport.open_group("gloo", rank, 2, "t", 30, store=store if rank == 0 else None,
                                 store_addr=("127.0.0.1", store.port), local_host="127.0.0.1")
        g.packed = packed
        results[me] = transport.run_node(g, me, {"s": 0, "r": 1}, plan.ops_for(me),
                                         {b.index: b for b in plan.buckets}, params)

    threads = [threading.Thread(target=node, args=a) for a in ((0, "s", seed), (1, "r", new))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results["r"].received) == list(range(len(plan.buckets)))
    assert results["s"].sent_bytes == results["r"].received_bytes == plan.total_bytes()
    assert tensors.checksums(new.items()) == tensors.checksums(seed.items())
    assert all(torch.equal(new[k], seed[k]) for k in seed)


def test_checksum_sees_one_flipped_bit():
    a = model(0)
    before = tensors.total_checksum(tensors.checksums(a.items()))
    a["w"].view(torch.int32)[3, 4] ^= 1
    assert tensors.total_checksum(tensors.checksums(a.items())) != before


def test_manifest_names_dtypes_sizes():
    m = {p.name: p for p in tensors.manifest(model(0).items())}
    assert m["half"].dtype == "bfloat16" and m["half"].nbytes == 70 and m["embed"].shape == (64, 32)


def test_unpack_rejects_wrong_size():
    a = model(0)
    b = plan_transfers(tensors.manifest(a.items()), ["s"], ["r"]).buckets[0]
    with pytest.raises(ValueError, match="bytes"):
        tensors.unpack(b, torch.empty(3, dtype=torch.uint8), a)
