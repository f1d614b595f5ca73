"""Faults off the happy path: durable state files, jittered reconnects, stdlib logging
in the server's format, signal handling around recovery."""

from __future__ import annotations

import os
import random

from client.streams import Backoff
from server.runtime import processes


def test_state_file_is_flushed_with_its_directory(tmp_path, monkeypatch):
    """write_state fsyncs the new file before the rename and the directory after it."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "state.json"
    processes.write_state(path, processes.encode_state({"steps": {"a": 1}}))
    assert synced == [str(tmp_path / "state.json.tmp"), str(tmp_path)]
    assert processes.read_state(path) == {"steps": {"a": 1}}
    assert not (tmp_path / "state.json.tmp").exists()


def test_reconnect_waits_are_jittered():
    """1,000 readers cut off at once do not come back in lock-step: their waits for
    the same failure count spread over half the base delay."""
    waits = [Backoff(rng=random.Random(i)).delay(3) for i in range(1000)]
    base = Backoff(jitter=0).delay(3)
    assert base == 0.4
    assert all(base * 0.5 <= w <= base for w in waits)
    assert len({round(w, 4) for w in waits}) > 500
    spread = sorted(waits)
    assert spread[900] - spread[100] > base * 0.3
