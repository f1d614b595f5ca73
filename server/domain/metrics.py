"""Metrics of executions: writing points, tags and custom info, reading them back, and
comparing executions by their metrics. Free of protobuf and peewee.

The write path is hot (training loops log from many steps): a point travels as a plain
tuple ``(name, value, step, at_us, labels)`` from the API layer through validation to
the store, which writes a whole call in one transaction.
"""

from __future__ import annotations

import enum
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from server.domain import validation
from server.domain.errors import InvalidArgument, Reason
from server.domain.models import Status
from server.domain.paging import PageTokens, encode_token, page_request
from server.domain.validation import Violations

if TYPE_CHECKING:
    from server.domain.ports import MetricStore

# One point as written: (name, value, step or None, at_us or None = now, labels or None).
PointIn = tuple[str, float, "int | None", "int | None", "dict[str, str] | None"]

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/]([A-Za-z0-9_.\-/ ]{0,254}[A-Za-z0-9_.\-/])?$")
NAME_RULE = (
    "must be 1 to 256 letters, digits, spaces or _ . - / (not starting or ending with a space)"
)

MAX_EXECUTIONS_PER_WRITE = 100
# Bounds the time one call holds the event loop and the write lock (~30 ms).
MAX_POINTS_PER_WRITE = 10_000
MAX_TAGS_PER_WRITE = 1000
MAX_CUSTOM_INFO_PER_WRITE = 100
MAX_LABELS_PER_POINT = 16
MAX_LABEL_VALUE = 256
MAX_TAG_VALUE = 5000
MAX_CUSTOM_INFO_BYTES = 64 * 1024
MAX_REQUEST_ID_CHARS = 200
MAX_VIOLATIONS = 100

MAX_EXECUTIONS_PER_LIST = 100
MAX_NAME_FILTERS = 100
DEFAULT_POINTS_PAGE = 1000
MAX_POINTS_PAGE = 10_000

MAX_COMPARED_IDS = 1000
MAX_SELECTORS = 20
DEFAULT_COMPARE_PAGE = 100
MAX_COMPARE_PAGE = 1000

# Timestamps the API can express: 0001-01-01 to 9999-12-31 (microseconds since 1970).
MIN_US = -62_135_596_800 * 1_000_000
MAX_US = 253_402_300_799 * 1_000_000


class Aggregation(enum.StrEnum):
    """How a series is reduced to one value."""

    LATEST = "latest"  # the point written last
    MIN = "min"
    MAX = "max"


class MetricView(enum.StrEnum):
    LATEST = "latest"  # one point per name: the one written last
    SERIES = "series"  # every point


class InfoFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(slots=True)
class MetricPoint:
    """One stored point (``seq``: its position in its series, from 1)."""

    name: str
    value: float
    step: int | None
    at_us: int
    labels: dict[str, str] | None = None
    seq: int = 0


@dataclass(slots=True)
class CustomInfo:
    name: str
    value: str
    format: InfoFormat = InfoFormat.TEXT


@dataclass(slots=True)
class ExecutionMetricsIn:
    """What one WriteMetrics entry asks to record for one execution."""

    execution_id: str
    points: list[PointIn] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    custom_info: list[CustomInfo] = field(default_factory=list)


@dataclass(slots=True)
class ExecutionMetrics:
    """What ListMetrics returns for one execution (tags and custom info on page 1)."""

    execution_id: str
    points: list[MetricPoint] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    custom_info: list[CustomInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    aggregation: Aggregation = Aggregation.LATEST


# The summary of one series, as comparisons read it: (count, latest value, step of the
# latest point or None, min, max). A tuple: comparisons handle thousands at once.
Summary = tuple[int, float, "int | None", float, float]
SUMMARY_FIELD = {Aggregation.LATEST: 1, Aggregation.MIN: 3, Aggregation.MAX: 4}


@dataclass(slots=True)
class SelectedValue:
    name: str
    aggregation: Aggregation
    value: float | None = None  # None: the execution has no such metric
    step: int | None = None
    count: int = 0


@dataclass(slots=True)
class ComparedExecution:
    execution_id: str
    configuration_id: str
    configuration_name: str
    executable_id: str
    status: Status
    parameters: dict[str, str]
    duration: timedelta | None
    created_us: int
    # Summaries of the series the comparison asked for, by name (from the store).
    series: dict[str, Summary] = field(default_factory=dict)
    metrics: list[SelectedValue] = field(default_factory=list)
    best: bool = False


@dataclass(slots=True)
class Comparison:
    executions: list[ComparedExecution]
    next_page_token: str
    total_size: int
    best_value: float | None


@dataclass(slots=True)
class CompareQuery:
    """The selection and order of a comparison, as the store runs it."""

    resource_group: str
    execution_ids: list[str]
    executable_id: str
    configuration_id: str
    statuses: list[Status]
    order_by: Selector | None
    ascending: bool
    limit: int
    # Series to summarise per execution; None: every series of the page's executions.
    names: list[str] | None = None
    # Keyset position after the last row seen: (missing, value, position) or None.
    after: tuple[int, float | None, int] | None = None


# ------------------------------------------------------------------- validation


def check_metric_name(v: Violations, field_name: str, name: str) -> bool:
    if not name:
        v.add(field_name, "is required")
        return False
    if len(name) > validation.MAX_NAME or not NAME_RE.match(name):
        v.add(field_name, NAME_RULE)
        return False
    return True


def _check_labels(v: Violations, field_name: str, labels: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS_PER_POINT:
        v.add(field_name, f"at most {MAX_LABELS_PER_POINT} labels")
        return
    for key, value in labels.items():
        if not key or len(key) > validation.MAX_LABEL_KEY or not validation.LABEL_KEY_RE.match(key):
            v.add(
                f"{field_name}[{key[:64]!r}]", "label key must be 1 to 256 of A-Z a-z 0-9 . _ / -"
            )
        elif len(value) > MAX_LABEL_VALUE:
            v.add(
                f"{field_name}[{key!r}]",
                f"label value must be at most {MAX_LABEL_VALUE} characters",
            )


class _Capped(Violations):
    """Violations that keep the first MAX_VIOLATIONS (a 10,000-point batch of NaNs must
    not produce a 10,000-entry error) and say how many more there were."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def add(self, field: str, description: str) -> None:
        if len(self.items) < MAX_VIOLATIONS:
            super().add(field, description)
        else:
            self.dropped += 1

    def raise_if_any(self, reason: Reason = Reason.INVALID_ARGUMENT, summary: str = "") -> None:
        if self.dropped:
            super().add("executions", f"and {self.dropped} more problems")
        super().raise_if_any(reason, summary)


def _check_points(v: Violations, prefix: str, points: list[PointIn], now_us: int) -> list[PointIn]:
    """Validate points; returns them with the time filled in (``now_us`` when unset)."""
    known = _known_names
    isfinite = math.isfinite
    out: list[PointIn] = []
    append = out.append
    for i, point in enumerate(points):
        name, value, step, at_us, labels = point
        if name not in known:
            if check_metric_name(v, f"{prefix}.metrics[{i}].name", name):
                if len(known) < 10_000:
                    known.add(name)
        if not isfinite(value):
            v.add(
                f"{prefix}.metrics[{i}].value",
                f"must be a finite number, got {value!r} (NaN and infinities are refused)",
            )
        if step is not None and step < 0:
            v.add(f"{prefix}.metrics[{i}].step", "must not be negative")
        if at_us is None:
            point = (name, value, step, now_us, labels)
        elif not MIN_US <= at_us <= MAX_US:
            v.add(f"{prefix}.metrics[{i}].time", "timestamp out of range")
        if labels:
            _check_labels(v, f"{prefix}.metrics[{i}].labels", labels)
        append(point)
    return out


# Names that passed the check (names repeat in every batch: checking each once is
# most of the validation cost saved). Bounded.
_known_names: set[str] = set()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_ids(v: Violations, field_name: str, ids: Sequence[str], limit: int) -> None:
    if not ids:
        v.add(field_name, "at least one execution id is required")
    elif len(ids) > limit:
        v.add(field_name, f"at most {limit} execution ids")
        return
    seen: set[str] = set()
    for i, eid in enumerate(ids):
        validation.check_id(v, f"{field_name}[{i}]", eid)
        if eid in seen:
            v.add(f"{field_name}[{i}]", f"execution {eid} is listed twice")
        seen.add(eid)


def _check_names(v: Violations, field_name: str, names: Sequence[str]) -> None:
    if len(names) > MAX_NAME_FILTERS:
        v.add(field_name, f"at most {MAX_NAME_FILTERS} names")
        return
    for i, name in enumerate(names):
        check_metric_name(v, f"{field_name}[{i}]", name)


def _page_key(after: object, parts: int) -> list:
    if not isinstance(after, list) or len(after) != parts:
        raise InvalidArgument.of(
            "page_token", "malformed page token", reason=Reason.INVALID_PAGE_TOKEN
        )
    return after


# ----------------------------------------------------------------------- service


@dataclass
class MetricsService:
    store: MetricStore
    page_tokens: PageTokens = field(default_factory=PageTokens)

    # ----------------------------------------------------------------- write

    async def write(
        self,
        resource_group: str,
        entries: Sequence[ExecutionMetricsIn],
        request_id: str = "",
        request_digest: str = "",
    ) -> tuple[int, int, int]:
        """Validate and store, all in one transaction. Returns (points, tags, custom info).
        A ``request_id`` seen before with the same ``request_digest`` (the request's
        content) writes nothing and returns the first write's counts."""
        v = _Capped()
        if len(request_id) > MAX_REQUEST_ID_CHARS:
            v.add("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} characters")
        if not entries:
            v.add("executions", "at least one entry is required")
        if len(entries) > MAX_EXECUTIONS_PER_WRITE:
            v.add("executions", f"at most {MAX_EXECUTIONS_PER_WRITE} entries")
            v.raise_if_any()
        total_points = sum(len(e.points) for e in entries)
        total_tags = sum(len(e.tags) for e in entries)
        total_info = sum(len(e.custom_info) for e in entries)
        if total_points > MAX_POINTS_PER_WRITE:
            v.add(
                "executions",
                f"at most {MAX_POINTS_PER_WRITE} metric points per call, got {total_points}",
            )
        if total_tags > MAX_TAGS_PER_WRITE:
            v.add("executions", f"at most {MAX_TAGS_PER_WRITE} tags per call, got {total_tags}")
        if total_info > MAX_CUSTOM_INFO_PER_WRITE:
            v.add("executions", f"at most {MAX_CUSTOM_INFO_PER_WRITE} custom info entries per call")
        v.raise_if_any()

        now_us = time.time_ns() // 1000
        seen: set[str] = set()
        checked: list[ExecutionMetricsIn] = []
        for i, entry in enumerate(entries):
            prefix = f"executions[{i}]"
            validation.check_id(v, f"{prefix}.execution_id", entry.execution_id)
            if entry.execution_id in seen:
                v.add(f"{prefix}.execution_id", f"execution {entry.execution_id} has two entries")
            seen.add(entry.execution_id)
            points = _check_points(v, prefix, entry.points, now_us) if entry.points else []
            tags = self._check_tags(v, prefix, entry.tags)
            infos = self._check_custom_info(v, prefix, entry.custom_info)
            checked.append(ExecutionMetricsIn(entry.execution_id, points, tags, infos))
        v.raise_if_any(summary="metrics refused")
        return await self.store.write(
            resource_group, checked, now_us, request_id, request_digest
        )

    @staticmethod
    def _check_tags(
        v: Violations, prefix: str, tags: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        last: dict[str, str] = {}
        for i, (key, value) in enumerate(tags):
            check_metric_name(v, f"{prefix}.tags[{i}].key", key)
            if len(value) > MAX_TAG_VALUE:
                v.add(f"{prefix}.tags[{i}].value", f"must be at most {MAX_TAG_VALUE} characters")
            last[key] = value  # the last value of a key given twice wins
        return list(last.items())

    @staticmethod
    def _check_custom_info(v: Violations, prefix: str, infos: list[CustomInfo]) -> list[CustomInfo]:
        last: dict[str, CustomInfo] = {}
        for i, info in enumerate(infos):
            check_metric_name(v, f"{prefix}.custom_info[{i}].name", info.name)
            if len(info.value.encode()) > MAX_CUSTOM_INFO_BYTES:
                v.add(f"{prefix}.custom_info[{i}].value", "must be at most 64 KiB")
            elif info.format is InfoFormat.JSON:
                try:
                    json.loads(info.value, parse_constant=_no_constant)
                except ValueError as exc:
                    v.add(f"{prefix}.custom_info[{i}].value", f"is not valid JSON: {exc}")
            last[info.name] = info
        return list(last.values())

    # ------------------------------------------------------------------ read

    async def read(
        self,
        resource_group: str,
        execution_ids: Sequence[str],
        names: Sequence[str] = (),
        view: MetricView = MetricView.LATEST,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[ExecutionMetrics], str]:
        v = Violations()
        _check_ids(v, "execution_ids", execution_ids, MAX_EXECUTIONS_PER_LIST)
        _check_names(v, "names", names)
        v.raise_if_any()
        filters = {
            "execution_ids": list(execution_ids),
            "names": sorted(set(names)),
            "view": str(view),
        }
        page = page_request(
            page_size,
            page_token,
            filters,
            default=DEFAULT_POINTS_PAGE,
            maximum=MAX_POINTS_PAGE,
            tokens=self.page_tokens,
        )
        await self.store.require_visible(resource_group, execution_ids)
        index, after_name, after_seq = 0, "", 0
        if page.after is not None:
            index, after_name, after_seq = _page_key(page.after, 3)
            if (
                not isinstance(index, int)
                or not 0 <= index < len(execution_ids)
                or not isinstance(after_name, str)
                or not isinstance(after_seq, int)
            ):
                raise InvalidArgument.of(
                    "page_token", "malformed page token", reason=Reason.INVALID_PAGE_TOKEN
                )
        first_page = page.after is None
        results: list[ExecutionMetrics] = []
        if first_page:
            tags = await self.store.tags(execution_ids)
            infos = await self.store.custom_info(execution_ids)
            results = [
                ExecutionMetrics(eid, [], tags.get(eid, {}), infos.get(eid, []))
                for eid in execution_ids
            ]
        remaining = page.size + 1  # one more than a page tells whether another follows
        fetched: list[tuple[int, MetricPoint]] = []
        name_filter = sorted(set(names))
        for i in range(index, len(execution_ids)):
            eid = execution_ids[i]
            start = (after_name, after_seq) if i == index and page.after is not None else None
            if view is MetricView.LATEST:
                points = await self.store.latest_points(eid, name_filter, start, remaining)
            else:
                points = await self.store.series_points(eid, name_filter, start, remaining)
            fetched.extend((i, p) for p in points)
            remaining -= len(points)
            if remaining <= 0:
                break
        more = len(fetched) > page.size
        fetched = fetched[: page.size]
        by_index: dict[int, ExecutionMetrics] = {}
        if first_page:
            by_index = dict(enumerate(results))
        for i, point in fetched:
            entry = by_index.get(i)
            if entry is None:
                entry = by_index[i] = ExecutionMetrics(execution_ids[i])
                results.append(entry)
            entry.points.append(point)
        token = ""
        if more:
            last_index, last = fetched[-1]
            token = encode_token([last_index, last.name, last.seq], filters, self.page_tokens)
        return results, token

    async def delete(
        self, resource_group: str, execution_id: str, names: Sequence[str] = ()
    ) -> int:
        v = Violations()
        validation.check_id(v, "execution_id", execution_id)
        _check_names(v, "names", names)
        v.raise_if_any()
        return await self.store.delete(resource_group, execution_id, sorted(set(names)))

    # --------------------------------------------------------------- compare

    async def compare(
        self,
        resource_group: str,
        *,
        execution_ids: Sequence[str] = (),
        executable_id: str = "",
        configuration_id: str = "",
        statuses: Sequence[Status] = (),
        selectors: Sequence[Selector] = (),
        order_by: Selector | None = None,
        ascending: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> Comparison:
        v = Violations()
        by_filter = bool(executable_id or configuration_id or statuses)
        if execution_ids and by_filter:
            v.add("execution_ids", "name executions or give a filter, not both")
        elif execution_ids:
            _check_ids(v, "execution_ids", execution_ids, MAX_COMPARED_IDS)
        elif not (executable_id or configuration_id):
            v.add(
                "execution_ids",
                "name executions, or select them by executable_id or configuration_id",
            )
        validation.check_id(v, "executable_id", executable_id, required=False)
        validation.check_id(v, "configuration_id", configuration_id, required=False)
        if len(selectors) > MAX_SELECTORS:
            v.add("metrics", f"at most {MAX_SELECTORS} metrics")
        for i, selector in enumerate(selectors):
            check_metric_name(v, f"metrics[{i}].name", selector.name)
        if order_by is not None:
            check_metric_name(v, "order_by.name", order_by.name)
        v.raise_if_any()
        filters = {
            "execution_ids": list(execution_ids),
            "executable_id": executable_id,
            "configuration_id": configuration_id,
            "statuses": sorted(str(s) for s in statuses),
            "order_by": [order_by.name, str(order_by.aggregation)] if order_by else None,
            "ascending": ascending,
        }
        page = page_request(
            page_size,
            page_token,
            filters,
            default=DEFAULT_COMPARE_PAGE,
            maximum=MAX_COMPARE_PAGE,
            tokens=self.page_tokens,
        )
        after = None
        if page.after is not None:
            key = _page_key(page.after, 3)
            missing, value, position = key
            if (
                missing not in (0, 1)
                or not isinstance(position, int)
                or (missing == 0 and not isinstance(value, int | float))
            ):
                raise InvalidArgument.of(
                    "page_token", "malformed page token", reason=Reason.INVALID_PAGE_TOKEN
                )
            after = (missing, value, position)
        if execution_ids:
            await self.store.require_executions(resource_group, execution_ids)
        shown = list(dict.fromkeys(selectors))
        names = None
        if shown:
            names = sorted({s.name for s in shown} | ({order_by.name} if order_by else set()))
        query = CompareQuery(
            resource_group=resource_group,
            execution_ids=list(execution_ids),
            executable_id=executable_id,
            configuration_id=configuration_id,
            statuses=list(statuses),
            order_by=order_by,
            ascending=ascending,
            limit=page.size + 1,
            names=names,
            after=after,
        )
        rows, total, best = await self.store.compare_page(query)
        more = len(rows) > page.size
        rows = rows[: page.size]
        if not shown:  # every name found on this page, latest values
            shown = [Selector(n) for n in sorted({n for r, _ in rows for n in r.series})]
        if order_by is not None:  # the ordering metric comes first
            shown = [order_by, *(s for s in shown if s != order_by)]
        # (name, aggregation, summary field of the value, summary field of the step)
        plan = [
            (
                s.name,
                s.aggregation,
                SUMMARY_FIELD[s.aggregation],
                2 if s.aggregation is Aggregation.LATEST else None,
            )
            for s in shown
        ]
        order_field = SUMMARY_FIELD[order_by.aggregation] if order_by else 0
        for row, _ in rows:
            get = row.series.get
            row.metrics = [
                SelectedValue(name, aggregation)
                if (summary := get(name)) is None
                else SelectedValue(
                    name,
                    aggregation,
                    summary[field],
                    None if step is None else summary[step],
                    summary[0],
                )
                for name, aggregation, field, step in plan
            ]
            if order_by is not None and best is not None:
                summary = get(order_by.name)
                row.best = summary is not None and summary[order_field] == best
        token = encode_token(list(rows[-1][1]), filters, self.page_tokens) if more else ""
        return Comparison([r for r, _ in rows], token, total, best)
