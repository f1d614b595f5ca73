"""TailLogs: history then live with no gap or duplicate, resume, fan-out, slow tailers,
start options and filters, the end of the stream, and release of subscriptions."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from streamkit import Driver, group_md, make_execution, wait_for

from client.client import TrainyardError
from server.domain.models import LogStream, Status
from trainyard.v1 import log_pb2, log_service_pb2_grpc
from trainyard.v1 import log_service_pb2 as lpb

pytestmark = [pytest.mark.driven, pytest.mark.backends("sqlite", "postgresql")]


def tail(stubs, execution_id: str, timeout: float = 30, **kwargs):
    return stubs.logs.TailLogs(
        lpb.TailLogsRequest(execution_id=execution_id, **kwargs), timeout=timeout
    )


def seqs(messages) -> list[int]:
    return [line.sequence for message in messages for line in message.lines]


def broker(server):
    return server.running.extra["broker"]


def tails(server):
    return server.running.extra["tails"]


def wait_subscribed(server, count: int = 1) -> None:
    wait_for(
        lambda: broker(server).stats().log_subscriptions >= count,
        what=f"{count} log subscriptions",
    )


def wait_live(server, execution_id: str, count: int = 1) -> None:
    """Until ``count`` tailers of the execution have read the store and gone live."""

    def live():
        subs = server.run_sync(broker(server).log_subscriptions, execution_id)
        return sum(1 for s in subs if s.live) >= count

    wait_for(live, what=f"{count} live tailers")


def test_follow_from_start_gets_history_then_live_lines_until_final(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(50)
    call = tail(stubs, execution_id, follow=True)
    wait_live(server, execution_id)
    driver.write(30)
    driver.write(20, stream=LogStream.STDERR)
    driver.finish()
    messages = list(call)
    assert seqs(messages) == list(range(1, 101))
    stored = driver.stored()
    received = [(line.sequence, line.step, line.text) for m in messages for line in m.lines]
    assert received == [(r[1], r[3], r[5]) for r in stored]
    assert messages[-1].cursor == 100
    assert all(m.cursor == m.lines[-1].sequence for m in messages)
    streams = {line.stream for m in messages for line in m.lines}
    assert streams == {log_pb2.LOG_STREAM_STDOUT, log_pb2.LOG_STREAM_STDERR}


def test_follow_from_a_cursor_in_the_middle(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(40)
    call = tail(stubs, execution_id, follow=True, after_sequence=25)
    wait_live(server, execution_id)
    driver.write(10)
    driver.finish()
    assert seqs(call) == list(range(26, 51))


def test_lines_written_while_history_is_read_are_neither_lost_nor_doubled(server, stubs):
    tails(server).limits.chunk_lines = 50
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(2000)
    received: list[int] = []
    call = tail(stubs, execution_id, follow=True)

    def consume():
        received.extend(seqs(call))

    reader = threading.Thread(target=consume)
    reader.start()
    # Keep writing in small batches while the tailer pages through the history.
    for _ in range(40):
        driver.write(25)
    driver.finish()
    reader.join(30)
    assert received == list(range(1, 3001))


def test_reconnect_mid_stream_resumes_with_no_gap_and_no_duplicate(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(300)
    first = tail(stubs, execution_id, follow=True)
    received: list[log_pb2.LogLine] = []
    cursor = 0
    for message in first:
        received.extend(message.lines)
        cursor = message.cursor
        if cursor >= 120:
            break
    first.cancel()
    driver.write(200)  # written while disconnected
    second = tail(stubs, execution_id, follow=True, after_sequence=cursor)
    wait_live(server, execution_id)
    driver.write(100)
    driver.finish()
    received.extend(line for message in second for line in message.lines)
    stored = driver.stored()
    assert [(line.sequence, line.text) for line in received] == [(r[1], r[5]) for r in stored]
    assert len(stored) == 600


def test_hundred_concurrent_tailers_all_get_every_line_in_order(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(100)
    tailers = 100

    async def main() -> list[list[int]]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = log_service_pb2_grpc.LogServiceStub(channel)

            async def one() -> list[int]:
                call = stub.TailLogs(
                    lpb.TailLogsRequest(execution_id=execution_id, follow=True), timeout=60
                )
                return [line.sequence async for m in call for line in m.lines]

            tasks = [asyncio.create_task(one()) for _ in range(tailers)]
            await asyncio.to_thread(wait_live, server, execution_id, tailers)
            for _ in range(20):
                await asyncio.to_thread(driver.write, 50)
            await asyncio.to_thread(driver.finish)
            return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    expected = list(range(1, 1101))
    assert len(results) == tailers
    for result in results:
        assert result == expected
    assert broker(server).stats().log_subscriptions == 0


def test_slow_tailer_does_not_hold_back_a_fast_one_and_memory_stays_bounded(server, stubs):
    limits = tails(server).limits
    limits.buffer_lines = 500
    limits.chunk_lines = 500
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    padding = "x" * 200
    total = 40_000
    driver.write(1, text=lambda i: f"{i} {padding}")

    async def main():
        async with (
            grpc.aio.insecure_channel(server.address) as fast_channel,
            grpc.aio.insecure_channel(server.address) as slow_channel,
        ):
            fast = log_service_pb2_grpc.LogServiceStub(fast_channel).TailLogs(
                lpb.TailLogsRequest(execution_id=execution_id, follow=True), timeout=60
            )
            slow = log_service_pb2_grpc.LogServiceStub(slow_channel).TailLogs(
                lpb.TailLogsRequest(execution_id=execution_id, follow=True), timeout=60
            )
            # The slow tailer reads one message, then nothing until the run is over.
            slow_first = await slow.read()
            fast_seqs: list[int] = []

            async def read_fast():
                async for message in fast:
                    fast_seqs.extend(line.sequence for line in message.lines)

            fast_task = asyncio.create_task(read_fast())
            await asyncio.to_thread(wait_live, server, execution_id, 2)
            for _ in range(total // 1000 - 1):
                await asyncio.to_thread(driver.write, 1000, text=lambda i: f"{i} {padding}")
            await asyncio.to_thread(driver.write, 999, text=lambda i: f"{i} {padding}")
            await asyncio.to_thread(driver.finish)
            await asyncio.wait_for(fast_task, 30)
            stats = broker(server).stats()
            slow_seqs = [line.sequence for line in slow_first.lines]
            while (message := await slow.read()) != grpc.aio.EOF:
                slow_seqs.extend(line.sequence for line in message.lines)
            return fast_seqs, slow_seqs, stats

    fast_seqs, slow_seqs, stats = asyncio.run(main())
    expected = list(range(1, total + 1))
    assert fast_seqs == expected
    assert slow_seqs == expected
    # Neither tailer ever held more than its bound; the slow one fell back to the store.
    assert stats.peak_buffered_lines <= limits.buffer_lines
    assert stats.overflows >= 1
    assert tails(server).catchups >= 1


def test_tailer_too_far_behind_gets_resource_exhausted_with_its_cursor(server, stubs):
    limits = tails(server).limits
    limits.buffer_lines = 100
    limits.chunk_lines = 100
    limits.max_lag_lines = 1000
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    padding = "y" * 500
    driver.write(1)
    call = tail(stubs, execution_id, follow=True)
    received = list(next(call).lines)
    wait_live(server, execution_id)
    # The client reads nothing more while the execution writes 30,000 lines.
    for _ in range(30):
        driver.write(1000, text=lambda i: f"{i} {padding}")
    with pytest.raises(grpc.RpcError) as caught:
        for message in call:
            received.extend(message.lines)
    error = TrainyardError.from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "TAILER_TOO_SLOW"
    cursor = int(error.metadata["cursor"])
    assert cursor == (received[-1].sequence if received else 0)
    assert tails(server).too_slow == 1
    # Resume from the cursor: the rest, exactly.
    limits.max_lag_lines = 10_000_000
    resumed = tail(stubs, execution_id, follow=True, after_sequence=cursor)
    driver.finish()
    received.extend(line for message in resumed for line in message.lines)
    assert [line.sequence for line in received] == list(range(1, 30_002))


def test_a_follow_ends_when_the_execution_ended_just_before_it_subscribed(
    server, stubs, monkeypatch
):
    """The execution ends between the tailer's first read of its status and its
    subscription to events: the follow still ends after the last line, not at its
    deadline."""
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(5)
    driver.flush()
    plane = tails(server).plane
    first_read = plane.require_execution
    calls = []

    async def read_then_end(group, eid):
        execution = await first_read(group, eid)
        if not calls:
            await plane.transition(eid, Status.COMPLETED, "test_finished", "")
        calls.append(eid)
        return execution  # RUNNING: as read before the final transition

    monkeypatch.setattr(plane, "require_execution", read_then_end)
    assert seqs(tail(stubs, execution_id, timeout=10, follow=True)) == [1, 2, 3, 4, 5]


def test_tail_lines_starts_with_the_last_n_lines(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.write(100)
    assert seqs(tail(stubs, execution_id, tail_lines=10)) == list(range(91, 101))
    assert seqs(tail(stubs, execution_id, tail_lines=1000)) == list(range(1, 101))
    driver.write(10, step="eval")
    assert seqs(tail(stubs, execution_id, tail_lines=5, steps=["train"])) == list(range(96, 101))


def test_since_time_starts_at_the_first_line_at_or_after_it(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.write(10)
    driver.write(10)
    stored = driver.stored()
    at_us = stored[10][2]
    assert stored[9][2] < at_us
    since = Timestamp(seconds=at_us // 1_000_000, nanos=at_us % 1_000_000 * 1000)
    assert seqs(tail(stubs, execution_id, since_time=since)) == list(range(11, 21))
    later = Timestamp(seconds=at_us // 1_000_000 + 3600)
    assert seqs(tail(stubs, execution_id, since_time=later)) == []


def test_step_and_stream_filters_apply_to_history_and_live_lines(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)

    def mixed():
        driver.write(5, step="prepare")
        driver.write(5, step="train", stream=LogStream.STDERR)
        driver.write(5, step="train")

    mixed()
    call = tail(
        stubs, execution_id, follow=True, steps=["train"], streams=[log_pb2.LOG_STREAM_STDERR]
    )
    wait_live(server, execution_id)
    mixed()
    driver.finish()
    lines = [line for m in call for line in m.lines]
    assert [line.sequence for line in lines] == [6, 7, 8, 9, 10, 21, 22, 23, 24, 25]
    assert {(line.step, line.stream) for line in lines} == {("train", log_pb2.LOG_STREAM_STDERR)}
    only_prepare = seqs(tail(stubs, execution_id, steps=["prepare"]))
    assert only_prepare == [1, 2, 3, 4, 5, 16, 17, 18, 19, 20]


def test_follow_stream_ends_after_the_last_line_once_final(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    call = tail(stubs, execution_id, follow=True)
    wait_live(server, execution_id)
    driver.write(7)
    # Lines written but not yet stored are flushed by the runtime before the final
    # transition (Driver.finish does the same): the stream holds them all, then ends.
    driver.write(3, flush=False)
    driver.finish(Status.DEAD)
    assert seqs(call) == list(range(1, 11))
    assert call.code() == grpc.StatusCode.OK
    # A follow tail of a final execution reads its log and ends at once.
    assert seqs(tail(stubs, execution_id, follow=True, after_sequence=8)) == [9, 10]
    wait_for(lambda: broker(server).stats().log_subscriptions == 0, what="no subscriptions")


def test_without_follow_the_stream_ends_at_the_current_end(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(12)
    assert seqs(tail(stubs, execution_id)) == list(range(1, 13))
    assert seqs(tail(stubs, execution_id, after_sequence=12)) == []


def test_large_history_is_sent_in_bounded_messages(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.write(5000, text=lambda i: f"{i} " + "z" * 2000)
    messages = list(tail(stubs, execution_id))
    assert seqs(messages) == list(range(1, 5001))
    assert max(m.ByteSize() for m in messages) < 2 * 1024 * 1024
    assert max(len(m.lines) for m in messages) <= 4000


def test_cancelled_stream_releases_its_subscription_at_once(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(3)
    call = tail(stubs, execution_id, follow=True)
    assert seqs([next(call)]) == [1, 2, 3]
    wait_live(server, execution_id)
    assert broker(server).stats().log_subscriptions == 1
    assert broker(server).stats().event_subscriptions == 1
    call.cancel()
    wait_for(lambda: broker(server).stats().log_subscriptions == 0, what="release on cancel")
    assert broker(server).stats().event_subscriptions == 0
    assert tails(server).active == 0


def test_cancelling_some_waiting_tailers_leaves_the_others_following(server, stubs):
    """The tailers of an execution wait on shared wake-ups: the ones that go away while
    everybody waits must not take the others with them."""
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(5)
    tailers = 6

    async def main() -> list[list[int]]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = log_service_pb2_grpc.LogServiceStub(channel)
            calls = [
                stub.TailLogs(lpb.TailLogsRequest(execution_id=execution_id, follow=True))
                for _ in range(tailers)
            ]

            async def read(call) -> list[int]:
                return [line.sequence async for m in call for line in m.lines]

            await asyncio.to_thread(wait_live, server, execution_id, tailers)
            for call in calls[::2]:
                call.cancel()
            await asyncio.to_thread(
                wait_for,
                lambda: broker(server).stats().log_subscriptions == tailers // 2,
                10,
                "the cancelled tailers to go",
            )
            kept = [asyncio.create_task(read(call)) for call in calls[1::2]]
            await asyncio.to_thread(driver.write, 20)
            await asyncio.to_thread(driver.finish)
            return await asyncio.wait_for(asyncio.gather(*kept), 30)

    results = asyncio.run(main())
    assert results == [list(range(1, 26))] * (tailers // 2)
    assert broker(server).stats().log_subscriptions == 0


def test_deadline_releases_the_subscription(server, stubs):
    execution_id = make_execution(stubs)
    Driver(server, execution_id).transition(Status.RUNNING)
    call = tail(stubs, execution_id, follow=True, timeout=0.5)
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: broker(server).stats().log_subscriptions == 0, what="release on deadline")
    wait_for(lambda: tails(server).active == 0, what="tailer ended")


def test_client_disconnect_releases_the_subscription(server):
    from conftest import make_stubs

    stubs = make_stubs(server.address)
    execution_id = make_execution(stubs)
    Driver(server, execution_id).transition(Status.RUNNING)
    call = tail(stubs, execution_id, follow=True)
    wait_subscribed(server)
    del call
    stubs.channel.close()
    wait_for(lambda: broker(server).stats().log_subscriptions == 0, what="release on close")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"after_sequence": 3, "tail_lines": 2}, "tail_lines"),
        ({"after_sequence": 3, "since_time": Timestamp(seconds=10)}, "since_time"),
        ({"since_time": Timestamp(seconds=10), "tail_lines": 2}, "tail_lines"),
        ({"after_sequence": -1}, "after_sequence"),
        ({"tail_lines": 100_001}, "tail_lines"),
        ({"streams": [9]}, "streams[0]"),
    ],
)
def test_bad_options_are_invalid_argument_naming_the_field(server, stubs, options, field):
    execution_id = make_execution(stubs)
    with pytest.raises(grpc.RpcError) as caught:
        list(tail(stubs, execution_id, **options))
    error = TrainyardError.from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == [field]


def test_tailing_another_groups_execution_is_not_found(server, stubs):
    execution_id = make_execution(stubs)
    Driver(server, execution_id).write(3)
    call = stubs.logs.TailLogs(
        lpb.TailLogsRequest(execution_id=execution_id, follow=True),
        metadata=group_md("team-b"),
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    unknown = tail(stubs, "0123456789abcdef", follow=True)
    with pytest.raises(grpc.RpcError) as caught:
        list(unknown)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert broker(server).stats().log_subscriptions == 0


def test_meta_reports_streaming_capabilities(stubs):
    from trainyard.v1 import meta_service_pb2

    meta = stubs.meta.GetMeta(meta_service_pb2.GetMetaRequest())
    assert meta.capabilities.log_streaming
    assert meta.capabilities.status_watch
