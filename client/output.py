"""Rendering for the command line: readable tables, or JSON with --json."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table
from rich.text import Text


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
    """A time in the local zone (TZ), with its UTC offset: ``2026-12-02 14:05:01 +01:00``;
    without the date, ``14:05:01.123+01:00``."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    dt = stamp.ToDatetime(tzinfo=UTC).astimezone()
    if not with_date:
        return dt.strftime("%H:%M:%S.%f")[:12] + _offset(dt)
    return dt.isoformat(sep=" ", timespec="seconds")[:19] + " " + _offset(dt)


def _offset(dt: datetime) -> str:
    text = dt.strftime("%z")  # +0100
    return text[:3] + ":" + text[3:] if text else ""


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


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters: cut at a word boundary with an
    ellipsis, never mid-word (unless a single word is longer than the limit)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


class _Mode:
    quiet = False  # -q: ids only
    color = True  # off with --no-color; rich also honours NO_COLOR


def configure(quiet: bool = False, color: bool = True) -> None:
    """Output mode of this command line (the global -q and --no-color)."""
    _Mode.quiet = quiet
    _Mode.color = color


def quiet() -> bool:
    return _Mode.quiet


def console(out: TextIO | None = None) -> Console:
    """A rich console on ``out`` (default stdout, looked up at each call): colour on a
    terminal unless --no-color or NO_COLOR; never wraps lines into a pipe."""
    out = out or sys.stdout
    terminal = out.isatty() if hasattr(out, "isatty") else False
    plain = not _Mode.color or bool(os.environ.get("NO_COLOR"))
    return Console(
        file=out,
        color_system=None if plain else "auto",
        highlight=False,
        emoji=False,
        markup=False,
        width=None if terminal else 10_000,
    )


STATUS_STYLES = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "STOPPING": "magenta",
    "COMPLETED": "green",
    "SUCCEEDED": "green",
    "DEAD": "red",
    "FAILED": "red",
    "STOPPED": "magenta",
    "refused": "red",
}


def styled(text: str, style: str = "") -> Text:
    return Text(text, style=style if _Mode.color else "")


def error(text: str) -> None:
    """An error line on stderr."""
    console(sys.stderr).print(Text("error: ", style="bold red") + Text(text))


def hint(text: str) -> None:
    console(sys.stderr).print(Text("hint: ", style="bold") + Text(text))


def detail(text: str) -> None:
    console(sys.stderr).print(Text("  " + text))


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    out: TextIO | None = None,
    id_column: int = 0,
) -> None:
    """Columns under headers; on a terminal wider than the screen, cells end in an
    ellipsis. With -q only the ``id_column`` of each row, one a line."""
    out = out or sys.stdout
    rows = [[str(c) for c in row] for row in rows]
    if _Mode.quiet:
        for row in rows:
            out.write(row[id_column] + "\n")
        return
    if not rows:
        out.write("  ".join(headers).rstrip() + "\n(none)\n")
        return
    grid = Table(
        box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0),
        header_style="bold", collapse_padding=True,
    )
    status_columns = {n for n, h in enumerate(headers) if h in ("STATUS", "RESULT")}
    for n, header in enumerate(headers):
        natural = max(len(header), *(len(row[n]) for row in rows))
        # Ids and statuses are never cut; the other columns give way on a narrow terminal.
        keep = n == id_column or n in status_columns
        width = natural if keep else min(natural, 8)
        grid.add_column(header, overflow="ellipsis", no_wrap=True, min_width=width)
    for row in rows:
        grid.add_row(
            *(
                Text(cell, style=STATUS_STYLES.get(cell, "")) if n in status_columns else cell
                for n, cell in enumerate(row)
            )
        )
    target = console(out)
    with target.capture() as captured:
        target.print(grid)
    for line in captured.get().splitlines():
        out.write(line.rstrip() + "\n")
