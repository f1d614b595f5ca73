"""Rendering for the command line: readable tables, or JSON with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def enum_name(value: str) -> str:
    """``EXECUTION_STATUS_RUNNING`` -> ``RUNNING``."""
    for prefix in (
        "EXECUTION_STATUS_",
        "TARGET_STATUS_",
        "STEP_PHASE_",
        "ARTIFACT_KIND_",
        "PARAMETER_TYPE_",
        "LOG_STREAM_",
        "WATCH_EVENT_TYPE_",
    ):
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def when(stamp: Timestamp, with_date: bool = True) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    dt = stamp.ToDatetime(tzinfo=UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S.%f")[
        : 19 if with_date else 12
    ]


def duration(start: Timestamp, end: Timestamp) -> str:
    if not start.seconds:
        return "-"
    finish = end.ToDatetime(tzinfo=UTC) if end.seconds else datetime.now(UTC)
    seconds = (finish - start.ToDatetime(tzinfo=UTC)).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if isinstance(data, Message):
        data = to_dict(data)
    elif isinstance(data, list):
        data = [to_dict(d) if isinstance(d, Message) else d for d in data]
    json.dump(data, out, indent=2, sort_keys=False, default=str)
    out.write("\n")


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None
) -> None:
    out = out or sys.stdout
    rows = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers))
    out.write(line.rstrip() + "\n")
    for row in rows:
        out.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() + "\n")
    if not rows:
        out.write("(none)\n")
