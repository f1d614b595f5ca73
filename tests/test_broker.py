"""The in-process broker on its own: the tailers of one execution share wake-ups, and
one of them going away must never disturb the others."""

import asyncio

import pytest

from server.streams.broker import LocalBroker

pytestmark = pytest.mark.driven


def rows(execution_id: str, first: int, count: int):
    return [(execution_id, seq, 0, "main", 1, f"line {seq}") for seq in range(first, first + count)]


def subscribers(broker: LocalBroker, count: int):
    subscriptions = [
        broker.subscribe_logs("e1", max_lines=1_000, max_bytes=1 << 20) for _ in range(count)
    ]
    for subscription in subscriptions:
        subscription.go_live()
    return subscriptions


@pytest.mark.parametrize("how", ["wait", "wait_timeout", "linger", "next_delivery"])
def test_cancelling_one_waiting_tailer_leaves_the_others_waiting(how):
    async def main():
        broker = LocalBroker()
        subscriptions = subscribers(broker, 3)

        async def waiting(subscription):
            if how == "wait":
                await subscription.wait()
            elif how == "wait_timeout":
                await subscription.wait(timeout=60)
            elif how == "linger":
                # Lingering ends at the execution's shared tick, not at a publish.
                await subscription.linger(0.5)
            else:
                # Due at once: the publish holds send_lines lines.
                await subscription.next_delivery(60.0, 5)
            return subscription.take()

        tasks = [asyncio.create_task(waiting(s)) for s in subscriptions]
        await asyncio.sleep(0)  # every task is now waiting on the shared future
        tasks[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        subscriptions[0].close()
        await asyncio.sleep(0)
        assert not tasks[1].done() and not tasks[2].done()
        broker.publish_logs("e1", rows("e1", 1, 5))
        taken = await asyncio.wait_for(asyncio.gather(*tasks[1:]), 10)
        return [[batch.last_seq for batch in batches] for batches in taken]

    assert asyncio.run(main()) == [[5], [5]]


def test_a_published_batch_wakes_every_waiting_tailer_once():
    async def main():
        broker = LocalBroker()
        subscriptions = subscribers(broker, 100)

        async def waiting(subscription):
            await subscription.wait()
            return [batch.first_seq for batch in subscription.take()]

        tasks = [asyncio.create_task(waiting(s)) for s in subscriptions]
        await asyncio.sleep(0)
        broker.publish_logs("e1", rows("e1", 1, 3))
        return await asyncio.wait_for(asyncio.gather(*tasks), 10)

    assert asyncio.run(main()) == [[1]] * 100


def test_lines_are_delivered_a_linger_after_the_first_publish_or_once_enough_wait():
    async def main():
        broker = LocalBroker()
        subscriptions = subscribers(broker, 3)
        loop = asyncio.get_running_loop()

        async def delivered(subscription, linger, send_lines):
            await subscription.next_delivery(linger, send_lines)
            return loop.time(), [batch.last_seq for batch in subscription.take()]

        # A long linger: a small batch is not due, a second batch reaching
        # send_lines makes both due at once, for every waiting tailer.
        tasks = [asyncio.create_task(delivered(s, 3600.0, 10)) for s in subscriptions]
        await asyncio.sleep(0)
        broker.publish_logs("e1", rows("e1", 1, 4))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not any(task.done() for task in tasks)
        assert len(broker._logs["e1"].waiters) == 3  # one future each, one timer
        broker.publish_logs("e1", rows("e1", 5, 6))
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert [seqs for _, seqs in results] == [[4, 10]] * 3
        assert not broker._logs["e1"].waiters and broker._logs["e1"].delivery is None

        # A short linger: due that long after the publish, not before.
        tasks = [asyncio.create_task(delivered(s, 0.05, 1000)) for s in subscriptions]
        await asyncio.sleep(0)
        published = loop.time()
        broker.publish_logs("e1", rows("e1", 11, 1))
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert [seqs for _, seqs in results] == [[11]] * 3
        assert all(at - published >= 0.04 for at, _ in results)

        # Lines already pending wait only what is left of their linger.
        broker.publish_logs("e1", rows("e1", 12, 1))
        pending = subscriptions[0]
        since = pending.oldest_published_at()
        assert since > 0 and pending.lines == 1
        await asyncio.wait_for(pending.next_delivery(0.05, 1000, since=since), 10)
        assert loop.time() - since >= 0.04 and [b.last_seq for b in pending.take()] == [12]

    asyncio.run(main())
