"""TailLogs encoding: batches become complete messages that concatenate into valid
messages, within the size clients accept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.api.logs import MESSAGE_LINES, _encode_runs, cursor_field, encode_rows, tail_messages
from server.streams.broker import LogBatch
from trainyard.v1 import log_service_pb2 as lpb

CLIENT_LIMIT = 4 * 1024 * 1024  # what gRPC clients accept by default


def rows(first: int, count: int, text=lambda i: f"line {i}") -> list[tuple]:
    start_us = 1_700_000_000_123_456
    return [("e1", i, start_us + i, "train", 1, text(i)) for i in range(first, first + count)]


def test_segments_concatenate_into_one_message_with_the_last_cursor():
    segments = encode_rows(rows(1, 3 * MESSAGE_LINES // 2))
    assert len(segments) == 2
    message = lpb.TailLogsResponse.FromString(b"".join(data for _, _, data in segments))
    assert [line.sequence for line in message.lines] == list(range(1, 3 * MESSAGE_LINES // 2 + 1))
    assert message.cursor == 3 * MESSAGE_LINES // 2
    first = message.lines[0]
    assert (first.time.seconds, first.time.nanos) == (1_700_000_000, 123_457_000)
    assert (first.step, first.stream, first.text) == ("train", 1, "line 1")


def test_a_batch_sent_alone_is_its_shared_encoding():
    batch = LogBatch("e1", rows(1, 10))
    assert list(tail_messages([batch])) == [encode_rows(batch.rows)[0][2]]
    assert tail_messages([batch])[0] is tail_messages([batch])[0]


def test_multibyte_text_never_makes_a_message_larger_than_clients_accept():
    wide = "\U0001f600" * 60_000  # 240,000 bytes of UTF-8 in 60,000 characters
    batch = LogBatch("e1", rows(1, 100, text=lambda i: f"{i} {wide}"))
    messages = list(tail_messages([batch]))
    assert all(len(m) < CLIENT_LIMIT for m in messages)
    parsed = [lpb.TailLogsResponse.FromString(m) for m in messages]
    assert [line.sequence for m in parsed for line in m.lines] == list(range(1, 101))
    assert [m.cursor for m in parsed] == [m.lines[-1].sequence for m in parsed]
    assert parsed[0].lines[0].text == f"1 {wide}"


def library_encoding(rows: list[tuple]) -> bytes:
    """What the protobuf library makes of the rows."""
    message = lpb.TailLogsResponse(cursor=rows[-1][1])
    for _, seq, at_us, step, code, text in rows:
        line = message.lines.add(sequence=seq, step=step, stream=code, text=text)
        line.time.seconds = at_us // 1_000_000
        line.time.nanos = at_us % 1_000_000 * 1000
    return message.SerializeToString()


ROW = st.tuples(
    st.just("e1"),
    st.one_of(st.integers(0, 300), st.integers(0, 2**62)),
    st.one_of(st.just(1_700_000_000_000_000), st.integers(0, 2**52)),
    st.sampled_from(["", "train", "évaluer", "x" * 200]),
    st.sampled_from([0, 1, 2, 3]),
    st.one_of(st.text(max_size=20), st.text(min_size=120, max_size=300)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ROW, min_size=1, max_size=30))
def test_the_encoding_is_the_bytes_the_protobuf_library_makes(rows):
    assert encode_rows(rows)[0][2] == library_encoding(rows)


# Runs of consecutive lines sharing time, step and stream, as the sink and the store
# give them (the encoder's fast path), from sequence numbers around each varint size.
STARTS = st.sampled_from([1, 100, 121, 16_000, 16_380, 2**21 - 300, 2**28 - 200, 2**35])
RUN = st.tuples(
    st.integers(1, 300),  # lines
    st.one_of(st.just(1_700_000_000_000_000), st.integers(0, 2**52)),
    st.sampled_from(["", "train", "évaluer"]),
    st.sampled_from([0, 1, 2, 3]),
)
TEXT = st.one_of(
    st.just("x" * 100),
    st.just(""),
    st.text(max_size=30),
    st.sampled_from(["y" * 4095, "z" * 4096, "é" * 2048]),
)


@settings(max_examples=200, deadline=None)
@given(STARTS, st.lists(RUN, min_size=1, max_size=6), st.randoms(use_true_random=False), TEXT)
def test_runs_of_consecutive_lines_encode_as_the_library_does(first, runs, random, text):
    rows, seq = [], first
    for count, at_us, step, code in runs:
        for _ in range(count):
            line = text if random.random() < 0.5 else f"line {seq}"
            rows.append(("e1", seq, at_us, step, code, line))
            seq += 1
    start = 0
    for count, _, data in encode_rows(rows):  # segments of at most MESSAGE_BYTES
        assert data == library_encoding(rows[start : start + count])
        start += count
    assert start == len(rows)


def test_the_sinks_batches_take_the_fast_path():
    start_us = 1_700_000_000_123_456
    rows = [
        ("e1", seq, start_us + seq // 648, "train", 1, "x" * 100) for seq in range(1, 5001)
    ]
    assert _encode_runs(rows) is not None
    assert b"".join(_encode_runs(rows)) + cursor_field(5000) == library_encoding(rows)
