"""The metric store: series with running summaries, points, tags, custom info.

Writes are the hot path: one call is one transaction, points go in with a raw
``executemany``, and each series keeps its count, latest, min and max up to date so that
comparisons and latest-value reads never scan points. Every method is synchronous and
short, like the rest of the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from server.domain.errors import NotFound
from server.domain.metrics import (
    Aggregation,
    ComparedExecution,
    CompareQuery,
    CustomInfo,
    ExecutionMetricsIn,
    InfoFormat,
    MetricPoint,
    Summary,
)
from server.domain.models import Status
from server.store.repository import Store

# SQLite accepts at most 32766 bound variables per statement; stay well below.
CHUNK = 500
# The key of the lock that metric writes take in turn (PostgreSQL advisory lock).
METRIC_WRITE_LOCK = 7_302_001

_AGG_COLUMN = {
    Aggregation.LATEST: "s.last_value",
    Aggregation.MIN: "s.min_value",
    Aggregation.MAX: "s.max_value",
}


def _chunks(items: Sequence[Any], size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


# The idempotency_key kind of WriteMetrics request ids (resource_id: the counts).
METRICS_KIND = "metrics"


class MetricStore:
    """Metric tables of a ``Store``. Registers itself as a delete hook of the store, so
    an execution's metrics go with it in the same transaction unless kept."""

    def __init__(self, store: Store):
        self.store = store
        self.db = store.db
        store.delete_hooks.append(self.on_execution_deleted)

    def _sql(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return self.store.execute(sql, args).fetchall()

    # ----------------------------------------------------------------- write

    def write(
        self,
        resource_group: str,
        entries: Sequence[ExecutionMetricsIn],
        now_us: int,
        request_id: str = "",
        request_digest: str = "",
    ) -> tuple[int, int, int]:
        """Store validated entries in one transaction. NotFound (nothing written) when an
        execution does not exist in ``resource_group``. With a ``request_id``: its
        idempotency key is recorded in the same transaction, with the counts, and a
        repeat returns those counts without writing."""
        ids = [e.execution_id for e in entries]
        with self.store.write_lock():
            # New series take the next ids: one metric writer at a time, on every
            # replica (SQLite's write lock already is that; PostgreSQL takes a lock).
            # Also what makes the request id lookup below safe from a concurrent repeat.
            self.store.dialect.serialize(self.db, METRIC_WRITE_LOCK)
            if request_id:
                done = self.store._idempotent_lookup(
                    resource_group, METRICS_KIND, request_id, request_digest
                )
                if done is not None:
                    points, tags, infos = (int(n) for n in done.split(","))
                    return points, tags, infos
            self.require_executions(resource_group, ids)
            cursor = self.store.cursor()
            cursor.executemany(
                "INSERT INTO metric_owner (execution_id, resource_group, created_us) "
                "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(eid, resource_group, now_us) for eid in ids],
            )
            points = tags = infos = 0
            point_rows: list[tuple] = []
            summary_rows: list[tuple] = []
            for entry in entries:
                if entry.points:
                    self._series_rows(cursor, entry, point_rows, summary_rows)
                    points += len(entry.points)
                if entry.tags:
                    cursor.executemany(
                        "INSERT INTO metric_tag (execution_id, key, value, modified_us) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (execution_id, key) "
                        "DO UPDATE SET value = excluded.value, modified_us = excluded.modified_us",
                        [(entry.execution_id, k, val, now_us) for k, val in entry.tags],
                    )
                    tags += len(entry.tags)
                if entry.custom_info:
                    cursor.executemany(
                        "INSERT INTO metric_custom_info "
                        "(execution_id, name, value, format, modified_us) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (execution_id, name) DO UPDATE SET value = excluded.value, "
                        "format = excluded.format, modified_us = excluded.modified_us",
                        [
                            (entry.execution_id, c.name, c.value, str(c.format), now_us)
                            for c in entry.custom_info
                        ],
                    )
                    infos += len(entry.custom_info)
            if point_rows:
                cursor.executemany(
                    "INSERT INTO metric_point (series_id, seq, value, step, at_us, labels) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    point_rows,
                )
            if summary_rows:
                cursor.executemany(
                    "UPDATE metric_series SET count = ?, last_seq = ?, last_value = ?, "
                    "last_step = ?, last_us = ?, min_value = ?, max_value = ? "
                    "WHERE execution_id = ? AND name = ?",
                    summary_rows,
                )
            if request_id:
                self.store._idempotent_record(
                    resource_group,
                    METRICS_KIND,
                    request_id,
                    request_digest,
                    f"{points},{tags},{infos}",
                )
        return points, tags, infos

    def _series_rows(
        self, cursor, entry: ExecutionMetricsIn, point_rows: list[tuple], summary_rows: list[tuple]
    ) -> None:
        """Append the point rows of ``entry`` and the new summaries of its series."""
        eid = entry.execution_id
        # series state: name -> [series_id, count, last_seq, last_value, last_step,
        # last_us, min, max]
        state: dict[str, list] = {}
        names = list({p[0] for p in entry.points})
        for chunk in _chunks(names):
            for row in cursor.execute(
                "SELECT name, series_id, count, last_seq, last_value, last_step, last_us, "
                f"min_value, max_value FROM metric_series WHERE execution_id = ? "
                f"AND name IN ({_marks(len(chunk))})",
                [eid, *chunk],
            ).fetchall():
                state[row[0]] = list(row[1:])
        new = [name for name in names if name not in state]
        if new:
            # The write lock is held: nobody else can take the same ids.
            first = cursor.execute(
                "SELECT COALESCE(MAX(series_id), 0) + 1 FROM metric_series"
            ).fetchone()[0]
            cursor.executemany(
                "INSERT INTO metric_series (series_id, execution_id, name, count, last_seq) "
                "VALUES (?, ?, ?, 0, 0)",
                [(first + i, eid, name) for i, name in enumerate(new)],
            )
            for i, name in enumerate(new):
                state[name] = [first + i, 0, 0, None, None, None, None, None]
        dumps = json.dumps
        append = point_rows.append
        for name, value, step, at_us, labels in entry.points:
            s = state[name]
            seq = s[2] + 1
            s[2] = seq
            s[1] += 1
            s[3] = value
            s[4] = step
            s[5] = at_us
            if s[6] is None or value < s[6]:
                s[6] = value
            if s[7] is None or value > s[7]:
                s[7] = value
            append(
                (
                    s[0],
                    seq,
                    value,
                    step,
                    at_us,
                    dumps(labels, separators=(",", ":"), sort_keys=True) if labels else None,
                )
            )
        for name in names:
            sid, count, last_seq, last_value, last_step, last_us, lo, hi = state[name]
            summary_rows.append(
                (count, last_seq, last_value, last_step, last_us, lo, hi, eid, name)
            )

    # ------------------------------------------------------------ visibility

    def require_executions(self, resource_group: str, execution_ids: Sequence[str]) -> None:
        """NotFound for the first id that is not an execution of ``resource_group``."""
        found: set[str] = set()
        for chunk in _chunks(list(execution_ids)):
            found.update(
                r[0]
                for r in self._sql(
                    "SELECT execution_id FROM execution WHERE resource_group = ? "
                    f"AND execution_id IN ({_marks(len(chunk))})",
                    [resource_group, *chunk],
                )
            )
        for eid in execution_ids:
            if eid not in found:
                raise NotFound.of("execution", eid)

    def require_visible(self, resource_group: str, execution_ids: Sequence[str]) -> None:
        """Like ``require_executions``, but executions deleted with their metrics kept
        count as found."""
        found: set[str] = set()
        for chunk in _chunks(list(execution_ids)):
            marks = _marks(len(chunk))
            found.update(
                r[0]
                for r in self._sql(
                    f"SELECT execution_id FROM execution WHERE resource_group = ? "
                    f"AND execution_id IN ({marks}) UNION SELECT execution_id FROM metric_owner "
                    f"WHERE resource_group = ? AND execution_id IN ({marks})",
                    [resource_group, *chunk, resource_group, *chunk],
                )
            )
        for eid in execution_ids:
            if eid not in found:
                raise NotFound.of("execution", eid)

    # ------------------------------------------------------------------ read

    def latest_points(
        self, execution_id: str, names: Sequence[str], after: tuple[str, int] | None, limit: int
    ) -> list[MetricPoint]:
        """The last point of every series of an execution, by name."""
        sql = [
            "SELECT s.name, p.value, p.step, p.at_us, p.labels, p.seq FROM metric_series s "
            "JOIN metric_point p ON p.series_id = s.series_id AND p.seq = s.last_seq "
            "WHERE s.execution_id = ?"
        ]
        args: list[Any] = [execution_id]
        if names:
            sql.append(f"AND s.name IN ({_marks(len(names))})")
            args.extend(names)
        if after is not None:
            sql.append("AND s.name > ?")
            args.append(after[0])
        sql.append("ORDER BY s.name LIMIT ?")
        args.append(limit)
        return [_point(r) for r in self._sql(" ".join(sql), args)]

    def series_points(
        self, execution_id: str, names: Sequence[str], after: tuple[str, int] | None, limit: int
    ) -> list[MetricPoint]:
        """Every point of every series of an execution, by name, then in write order."""
        series = self._sql(
            "SELECT series_id, name FROM metric_series WHERE execution_id = ? "
            + (f"AND name IN ({_marks(len(names))}) " if names else "")
            + "ORDER BY name",
            [execution_id, *names],
        )
        points: list[MetricPoint] = []
        for series_id, name in series:
            if after is not None and name < after[0]:
                continue
            after_seq = after[1] if after is not None and name == after[0] else 0
            rows = self._sql(
                "SELECT value, step, at_us, labels, seq FROM metric_point "
                "WHERE series_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (series_id, after_seq, limit - len(points)),
            )
            points.extend(_point((name, *r)) for r in rows)
            if len(points) >= limit:
                break
        return points

    def tags(self, execution_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        result: dict[str, dict[str, str]] = {}
        for chunk in _chunks(list(execution_ids)):
            for eid, key, value in self._sql(
                "SELECT execution_id, key, value FROM metric_tag "
                f"WHERE execution_id IN ({_marks(len(chunk))}) ORDER BY execution_id, key",
                chunk,
            ):
                result.setdefault(eid, {})[key] = value
        return result

    def custom_info(self, execution_ids: Sequence[str]) -> dict[str, list[CustomInfo]]:
        result: dict[str, list[CustomInfo]] = {}
        for chunk in _chunks(list(execution_ids)):
            for eid, name, value, fmt in self._sql(
                "SELECT execution_id, name, value, format FROM metric_custom_info "
                f"WHERE execution_id IN ({_marks(len(chunk))}) ORDER BY execution_id, name",
                chunk,
            ):
                result.setdefault(eid, []).append(CustomInfo(name, value, InfoFormat(fmt)))
        return result

    def summaries(self, execution_ids: Sequence[str]) -> dict[str, dict[str, Summary]]:
        """Every series summary of executions, by execution id then name."""
        result: dict[str, dict[str, Summary]] = {}
        for chunk in _chunks(list(execution_ids)):
            rows = self._sql(
                "SELECT execution_id, name, count, last_value, last_step, min_value, max_value "
                f"FROM metric_series WHERE execution_id IN ({_marks(len(chunk))})",
                chunk,
            )
            for eid, name, *summary in rows:
                result.setdefault(eid, {})[name] = tuple(summary)
        return result

    # ---------------------------------------------------------------- delete

    def delete(self, resource_group: str, execution_id: str, names: Sequence[str]) -> int:
        """Delete the named series (or every series, tag and custom info entry) of an
        execution, or of its kept metrics. Returns the number of points deleted."""
        with self.store.write_lock():
            self.require_visible(resource_group, [execution_id])
            deleted = self._delete_series(execution_id, names)
            if not names:
                self._delete_rest(execution_id)
        return deleted

    def on_execution_deleted(self, execution_id: str, keep_metrics: bool) -> None:
        """Delete hook: runs inside the execution's delete transaction."""
        if keep_metrics:
            return
        self._delete_series(execution_id, ())
        self._delete_rest(execution_id)

    def _delete_series(self, execution_id: str, names: Sequence[str]) -> int:
        name_sql = f" AND name IN ({_marks(len(names))})" if names else ""
        where = f"execution_id = ?{name_sql}"
        args = [execution_id, *names]
        deleted = self.store.execute(
            "DELETE FROM metric_point WHERE series_id IN "
            f"(SELECT series_id FROM metric_series WHERE {where})",
            args,
        ).rowcount
        self.store.execute(f"DELETE FROM metric_series WHERE {where}", args)
        return max(deleted, 0)

    def _delete_rest(self, execution_id: str) -> None:
        for table in ("metric_tag", "metric_custom_info", "metric_owner"):
            self.store.execute(f"DELETE FROM {table} WHERE execution_id = ?", (execution_id,))

    # --------------------------------------------------------------- compare

    def compare_page(
        self, q: CompareQuery
    ) -> tuple[list[tuple[ComparedExecution, tuple]], int, float | None]:
        """One page of a comparison, its total and the best value of the ordering metric.

        Rows come with the summaries of ``q.names`` (every series when None) and their
        keyset position ``(missing, value, position)``; position is the index in
        ``q.execution_ids``, or minus the execution's row id (newest first). The page is
        chosen first (ordered, keyset, limit); only its rows are then joined with their
        configuration and series, so a large selection costs one sort, not one lookup
        per metric per execution.
        """
        args: list[Any] = []
        if q.execution_ids:
            values = ",".join("(?, ?)" for _ in q.execution_ids)
            source = (
                f"(WITH req (pos, eid) AS (VALUES {values}) "
                "SELECT e.*, req.pos AS pos FROM req JOIN execution e "
                "ON e.execution_id = req.eid AND e.resource_group = ?)"
            )
            for i, eid in enumerate(q.execution_ids):
                args += [i, eid]
            args.append(q.resource_group)
        else:
            source = "(SELECT e.*, -e.id AS pos FROM execution e WHERE e.resource_group = ?"
            args.append(q.resource_group)
            if q.executable_id:
                source += " AND e.executable_id = ?"
                args.append(q.executable_id)
            if q.configuration_id:
                source += " AND e.configuration_id = ?"
                args.append(q.configuration_id)
            if q.statuses:
                source += f" AND e.status IN ({_marks(len(q.statuses))})"
                args.extend(str(s) for s in q.statuses)
            source += ")"
        if q.order_by is not None:
            value_sql = _AGG_COLUMN[q.order_by.aggregation]
            join = "LEFT JOIN metric_series s ON s.execution_id = x.execution_id AND s.name = ?"
            args.append(q.order_by.name)
        else:
            value_sql = "NULL"
            join = ""
        base = f"FROM {source} x {join}"

        where: list[str] = []
        page_args = list(args)
        if q.after is not None:
            missing, value, position = q.after
            if q.order_by is None:
                where.append("x.pos > ?")
                page_args.append(position)
            elif missing:
                where.append(f"({value_sql} IS NULL AND x.pos > ?)")
                page_args.append(position)
            else:
                cmp = ">" if q.ascending else "<"
                where.append(
                    f"({value_sql} IS NULL OR {value_sql} {cmp} ? OR "
                    f"({value_sql} = ? AND x.pos > ?))"
                )
                page_args += [value, value, position]
        direction = "ASC" if q.ascending else "DESC"
        page_sql = (
            "SELECT x.execution_id, x.resource_group, x.configuration_id, x.executable_id, "
            f"x.status, x.created_us, x.started_us, x.completed_us, x.pos, {value_sql} AS v "
            f"{base} " + (f"WHERE {' AND '.join(where)} " if where else "")
            # The expression, not its alias: PostgreSQL takes an alias in ORDER BY only
            # on its own, never inside an expression such as ``v IS NULL``.
            + (
                f"ORDER BY ({value_sql} IS NULL), {value_sql} {direction}, x.pos"
                if q.order_by
                else "ORDER BY x.pos"
            )
            + " LIMIT ?"
        )
        page_args.append(q.limit)
        joins, columns = [], []
        for i, name in enumerate(q.names or ()):
            joins.append(
                f"LEFT JOIN metric_series m{i} ON m{i}.execution_id = p.execution_id "
                f"AND m{i}.name = ?"
            )
            columns.append(
                f", m{i}.count, m{i}.last_value, m{i}.last_step, m{i}.min_value, m{i}.max_value"
            )
            page_args.append(name)
        # p is the left side of every join, so SQLite reads it first, in its order; the
        # rows are still sorted again below rather than trusting that.
        sql = (
            "SELECT p.execution_id, p.configuration_id, p.executable_id, p.status, "
            f"p.created_us, p.started_us, p.completed_us, p.pos, p.v{''.join(columns)} "
            f"FROM ({page_sql}) p {' '.join(joins)}"
        )
        found = self._sql(sql, page_args)
        if q.order_by is None:
            found.sort(key=lambda r: r[7])
        else:
            sign = 1 if q.ascending else -1
            found.sort(key=lambda r: (1, 0, r[7]) if r[8] is None else (0, sign * r[8], r[7]))

        if q.after is None and len(found) < q.limit:
            # The first page holds everything: its rows give the total and the best.
            total = len(found)
            best = found[0][8] if found else None
        else:
            total, best = self._sql(
                f"SELECT COUNT(*), {'MIN' if q.ascending else 'MAX'}({value_sql}) {base}", args
            )[0]

        configurations = self._configurations(q.resource_group, {r[1] for r in found})
        now_us = time.time_ns() // 1000
        statuses = {s.value: s for s in Status}
        names = q.names or ()
        rows: list[tuple[ComparedExecution, tuple]] = []
        for row in found:
            eid, config_id, exe_id, status, created, started, completed, pos, value = row[:9]
            config_name, parameters = configurations.get(config_id, ("", {}))
            series = {}
            for i, name in enumerate(names):
                summary = row[9 + 5 * i : 14 + 5 * i]
                if summary[0] is not None:
                    series[name] = summary
            rows.append(
                (
                    ComparedExecution(
                        execution_id=eid,
                        configuration_id=config_id,
                        configuration_name=config_name,
                        executable_id=exe_id,
                        status=statuses[status],
                        parameters=parameters,
                        duration=(
                            None
                            if started is None
                            else timedelta(microseconds=(completed or now_us) - started)
                        ),
                        created_us=created,
                        series=series,
                    ),
                    (1 if value is None else 0, value, pos),
                )
            )
        if q.names is None and rows:
            every = self.summaries([r.execution_id for r, _ in rows])
            for r, _ in rows:
                r.series = every.get(r.execution_id, {})
        return rows, int(total), best

    def _configurations(
        self, resource_group: str, ids: set[str]
    ) -> dict[str, tuple[str, dict[str, str]]]:
        """(name, parameter bindings) of configurations, by id."""
        result = {}
        for chunk in _chunks(sorted(ids)):
            for cid, name, params in self._sql(
                "SELECT configuration_id, name, parameter_bindings FROM configuration "
                f"WHERE resource_group = ? AND configuration_id IN ({_marks(len(chunk))})",
                [resource_group, *chunk],
            ):
                result[cid] = (name, json.loads(params) if params else {})
        return result


def _point(row: tuple) -> MetricPoint:
    name, value, step, at_us, labels, seq = row
    return MetricPoint(name, value, step, at_us, json.loads(labels) if labels else None, seq)
