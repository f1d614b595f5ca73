"""Splitting a step's output into lines: a read's complete lines at once, decoded as
line by line would, whatever the reads' sizes."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.runtime.processes import MAX_LINE_BYTES, read_lines

pytestmark = pytest.mark.driven


def one_by_one(data: bytes) -> list[str]:
    """The lines of ``data`` split and decoded one at a time (lines shorter than
    MAX_LINE_BYTES)."""
    *complete, rest = data.split(b"\n")
    lines = [(line[:-1] if line.endswith(b"\r") else line) for line in complete]
    if rest:
        lines.append(rest[:-1] if rest.endswith(b"\r") else rest)
    return [line.decode("utf-8", errors="replace") for line in lines]


def read_in_chunks(data: bytes, cuts: list[int]) -> tuple[list[str], list[int]]:
    """What read_lines emits when the pipe delivers ``data`` cut at ``cuts``: the lines,
    and how many came in each call."""

    async def main():
        stream = asyncio.StreamReader()
        emitted: list[list[str]] = []
        reading = asyncio.create_task(read_lines(stream, emitted.append))
        start = 0
        for cut in sorted(set(cuts)) + [len(data)]:
            if cut > start:
                stream.feed_data(data[start:cut])
                start = cut
                await asyncio.sleep(0)  # let the reader take this piece alone
        stream.feed_eof()
        await reading
        return [line for lines in emitted for line in lines], [len(lines) for lines in emitted]

    return asyncio.run(main())


# Bytes rich in what matters: newlines, carriage returns, multi-byte and broken UTF-8.
PIECES = st.sampled_from(
    [b"\n", b"\r\n", b"\r", b"a", b"line", b" ", b"\xc3\xa9", b"\xe2\x82\xac", b"\xe2\x82",
     b"\xff", b"\xf0\x9f\x98\x80", b"\x00", b"\x0b", b"\xe2\x80\xa8"]
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(PIECES, max_size=200).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=800), max_size=12),
)
def test_lines_are_what_splitting_and_decoding_one_by_one_gives(data, cuts):
    lines, _ = read_in_chunks(data, [c for c in cuts if c < len(data)])
    assert lines == one_by_one(data)


def test_the_complete_lines_of_a_read_come_in_one_call():
    data = b"".join(b"line %d\n" % i for i in range(500))
    lines, calls = read_in_chunks(data, [])
    assert lines == [f"line {i}" for i in range(500)]
    assert calls == [500]


def test_an_endless_line_is_cut_in_pieces_while_it_lasts():
    data = b"x" * (3 * MAX_LINE_BYTES + 10)
    lines, _ = read_in_chunks(data, list(range(0, len(data), 10_000)))
    assert [len(line) for line in lines] == [MAX_LINE_BYTES] * 3 + [10]


def test_a_long_line_that_ends_within_a_read_comes_whole_for_the_sink_to_cut():
    data = b"x" * (MAX_LINE_BYTES + 10) + b"\nnext\n"
    lines, _ = read_in_chunks(data, [MAX_LINE_BYTES // 2])
    assert [len(line) for line in lines] == [MAX_LINE_BYTES + 10, 4]
