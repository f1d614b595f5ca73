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


@pytest.mark.parametrize("how", ["wait", "wait_timeout", "linger"])
def test_cancelling_one_waiting_tailer_leaves_the_others_waiting(how):
    async def main():
        broker = LocalBroker()
        subscriptions = subscribers(broker, 3)

        async def waiting(subscription):
            if how == "wait":
                await subscription.wait()
            elif how == "wait_timeout":
                await subscription.wait(timeout=60)
            else:
                # Lingering ends at the execution's shared tick, not at a publish.
                await subscription.linger(0.5)
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
