"""The router's hold queue and admitter: key order, no future comparisons, stale entries pruned, freed slots
reserved for the queued request they wake."""

import asyncio
import time
from types import SimpleNamespace

from hyperflexis_sglang.core.slo import SLOCatalog
from hyperflexis_sglang.router.admission import Admitter, HoldQueue


def test_equal_keys_requeued_after_timeout_do_not_compare_futures():
    async def main():
        q = HoldQueue()
        # the same request re-queues with its old key after each re-check timeout: its stale entry stays
        await q.wait((0, 1.0, 1), 0.001)
        await q.wait((0, 1.0, 1), 0.001)
        waiter = asyncio.create_task(q.wait((0, 1.0, 1), 5.0))
        await asyncio.sleep(0.01)
        q.pump(1)
        await asyncio.wait_for(waiter, 1.0)  # woken, not timed out
        assert len(q) == 0
    asyncio.run(main())


def test_pump_wakes_in_key_order():
    async def main():
        q = HoldQueue()
        order = []

        async def wait(key):
            await q.wait(key, 5.0)
            order.append(key)
        tasks = [asyncio.create_task(wait(k)) for k in [(1, 2.0, 3), (0, 5.0, 2), (0, 1.0, 1)]]
        await asyncio.sleep(0.01)
        for _ in range(3):
            q.pump(1)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == [(0, 1.0, 1), (0, 5.0, 2), (1, 2.0, 3)]
    asyncio.run(main())


def test_stale_entries_are_pruned():
    async def main():
        q = HoldQueue()
        for i in range(300):
            await q.wait((0, 0.0, i), 0)
        assert len(q._heap) <= 2 * q.live + 65
    asyncio.run(main())


ROUTE = SimpleNamespace(slo=SLOCatalog().resolve({"class": "batch"}))
PLAN = SimpleNamespace(predicted_ttft_s=float("nan"))  # no prediction: only the concurrency limit decides


def _admitter(limit=1):
    cfg = SimpleNamespace(max_concurrent_requests=limit, queue_size=10, queue_timeout_secs=5.0,
                          hfx_max_hold_fraction=0.5)
    return Admitter(cfg, SimpleNamespace(rejected=lambda *a: None))


async def _one_running_one_queued():
    """An admitter with its only slot taken (A) and a request (B) queued for it."""
    adm = _admitter(limit=1)
    await adm.admit(ROUTE, time.monotonic(), lambda: PLAN)
    adm.started()
    b = asyncio.create_task(adm.admit(ROUTE, time.monotonic(), lambda: PLAN))
    await asyncio.sleep(0.01)
    assert len(adm.queue) == 1
    return adm, b


def test_a_freed_slot_goes_to_the_queued_request_not_a_newcomer():
    async def main():
        adm, b = await _one_running_one_queued()
        adm.finished()  # A done: B is woken with the slot reserved
        c = asyncio.create_task(adm.admit(ROUTE, time.monotonic(), lambda: PLAN))  # C arrives before B runs
        done, _ = await asyncio.wait({b, c}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        assert done == {b}, "the newcomer took the slot freed for the queued request"
        adm.started()
        assert adm.queue.reserved == 0 and len(adm.queue) == 1  # C queued behind
        adm.finished()
        await asyncio.wait_for(c, 1.0)
        assert adm.queue.reserved == 0
    asyncio.run(main())


def test_a_reserved_slot_is_given_back_when_the_waiter_goes_away():
    async def main():
        adm, b = await _one_running_one_queued()
        adm.finished()
        b.cancel()  # the client disconnected right after its wake-up
        await asyncio.gather(b, return_exceptions=True)
        assert adm.queue.reserved == 0 and not adm.at_capacity()
    asyncio.run(main())
