"""Resource ids: time-ordered, unique within the process, valid ids of the API."""

import re

import pytest

from server.domain import ids
from server.domain.validation import ID_RE

pytestmark = pytest.mark.driven


def test_ids_are_20_hex_digits_valid_in_the_api_and_start_with_the_time():
    before = ids.time.time_ns() // 1_000_000
    made = ids.time_ordered_id()
    after = ids.time.time_ns() // 1_000_000
    assert re.fullmatch(r"[0-9a-f]{20}", made)
    assert ID_RE.match(made)
    assert before <= int(made[:12], 16) <= after


def test_ids_made_one_after_another_are_unique_and_in_order():
    made = [ids.time_ordered_id() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)


def test_ids_stay_in_order_when_the_clock_steps_back(monkeypatch):
    maker = ids._TimeOrdered()
    now = [1_800_000_000_000 * 1_000_000]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0])
    first = maker.next()
    now[0] -= 5_000 * 1_000_000  # five seconds back
    second = maker.next()
    third = maker.next()
    assert first < second < third
    assert second[:12] == first[:12]


def test_a_full_millisecond_moves_on_to_the_next(monkeypatch):
    maker = ids._TimeOrdered()
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_800_000_000_000 * 1_000_000)
    first = maker.next()
    maker._tail = 0xFFFFFFFF
    following = maker.next()
    assert int(following[:12], 16) == int(first[:12], 16) + 1
    assert following[12:] == "00000000"
    assert first < following
