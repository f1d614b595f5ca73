"""Reading execution logs: paged reads for clients that cannot stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from server.domain.errors import InvalidArgument, Reason
from server.domain.models import LogLine, LogStream
from server.domain.paging import page_request
from server.domain.service import ControlPlane

DEFAULT_LOG_PAGE = 1000
MAX_LOG_PAGE = 10_000
MAX_STEP_FILTERS = 100


def check_filters(after_sequence: int, steps: Sequence[str]) -> None:
    """The checks ListLogs and TailLogs share, in the same order (both check their
    arguments before they look the execution up)."""
    if after_sequence < 0:
        raise InvalidArgument.of("after_sequence", "must not be negative")
    if len(steps) > MAX_STEP_FILTERS:
        raise InvalidArgument.of("steps", f"at most {MAX_STEP_FILTERS} steps")
    for i, step in enumerate(steps):
        if not isinstance(step, str) or not step or len(step) > 253:
            raise InvalidArgument.of(f"steps[{i}]", "must be a step name")


def _us(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1_000_000)


@dataclass
class LogReader:
    plane: ControlPlane

    async def list_page(
        self,
        resource_group: str,
        execution_id: str,
        *,
        page_size: int,
        page_token: str,
        descending: bool,
        steps: Sequence[str],
        streams: Sequence[LogStream],
        start: datetime | None,
        end: datetime | None,
        after_sequence: int,
        size_field: str = "page_size",
    ) -> tuple[list[LogLine], str]:
        check_filters(after_sequence, steps)
        if start and end and end <= start:
            raise InvalidArgument.of("end_time", "must be after start_time")
        filters = {
            "execution_id": execution_id,
            "descending": descending,
            "steps": sorted(steps),
            "streams": sorted(str(s) for s in streams),
            "start": _us(start),
            "end": _us(end),
            "after": after_sequence,
        }
        page = page_request(
            page_size,
            page_token,
            filters,
            default=DEFAULT_LOG_PAGE,
            maximum=MAX_LOG_PAGE,
            size_field=size_field,
            tokens=self.plane.page_tokens,
        )
        if page.after is not None and (
            not isinstance(page.after, int) or isinstance(page.after, bool)
        ):
            raise InvalidArgument.of(
                "page_token", "malformed page token", reason=Reason.INVALID_PAGE_TOKEN
            )
        await self.plane.require_execution(resource_group, execution_id)
        after = after_sequence
        before = None
        if page.after is not None:
            if descending:
                before = page.after
            else:
                after = max(after, page.after)
        lines = await self.plane.store.read_logs(
            execution_id,
            after_seq=after,
            before_seq=before,
            limit=page.size + 1,
            descending=descending,
            steps=steps,
            streams=streams,
            start_us=_us(start),
            end_us=_us(end),
        )
        more = len(lines) > page.size
        lines = lines[: page.size]
        token = page.next_token(lines[-1].seq) if more else ""
        return lines, token
