"""The router's hold queue: order by key, equal keys never compare their futures, stale entries pruned."""

import asyncio

from hyperflexis_sglang.router.admission import HoldQueue


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
