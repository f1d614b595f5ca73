"""peewee models: the query layer. Times are integer microseconds since the Unix epoch (UTC).

The classes below are bound to no database. ``bind(db)`` gives a ``Tables`` of
subclasses bound to ``db`` alone, so two stores in one process (two files, or a
SQLite file and a PostgreSQL server) never share a binding. The models only read and
write rows: the DDL is the frozen text in ``server.store.migrations``, and a test
checks that every model agrees with the schema those statements build.
"""

from __future__ import annotations

import json
import time

import peewee as pw


class JSONField(pw.TextField):
    """A JSON document stored as text."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class Base(pw.Model):
    class Meta:
        database = None  # bound per database by bind()
        legacy_table_names = False


class SchemaVersion(Base):
    version = pw.IntegerField(primary_key=True)
    applied_us = pw.BigIntegerField(default=lambda: time.time_ns() // 1000)


class ScenarioRow(Base):
    resource_group = pw.TextField()
    scenario_id = pw.TextField()
    name = pw.TextField()
    description = pw.TextField(default="")
    labels = JSONField(default=dict)
    created_us = pw.BigIntegerField()
    modified_us = pw.BigIntegerField()

    class Meta:
        table_name = "scenario"
        indexes = ((("resource_group", "scenario_id"), True),)


class ExecutableRow(Base):
    resource_group = pw.TextField()
    executable_id = pw.TextField()
    version = pw.TextField()
    scenario_id = pw.TextField()
    name = pw.TextField()
    description = pw.TextField(default="")
    deployable = pw.BooleanField(default=False)
    labels = JSONField(default=dict)
    # parameters, input_artifacts, output_artifacts, spec: the parsed definition
    definition = JSONField()
    digest = pw.TextField()
    created_us = pw.BigIntegerField()
    modified_us = pw.BigIntegerField()

    class Meta:
        table_name = "executable"
        indexes = (
            (("resource_group", "executable_id", "version"), True),
            (("resource_group", "scenario_id", "executable_id"), False),
        )


class ArtifactRow(Base):
    resource_group = pw.TextField()
    artifact_id = pw.TextField()
    name = pw.TextField()
    kind = pw.TextField()
    url = pw.TextField()
    scenario_id = pw.TextField()
    description = pw.TextField(default="")
    labels = JSONField(default=dict)
    execution_id = pw.TextField(default="")
    created_us = pw.BigIntegerField()
    modified_us = pw.BigIntegerField()
    created_by = pw.TextField(default="")  # since schema version 6

    class Meta:
        table_name = "artifact"
        indexes = (
            (("resource_group", "artifact_id"), True),
            (("resource_group", "execution_id"), False),
        )


class ConfigurationRow(Base):
    resource_group = pw.TextField()
    configuration_id = pw.TextField()
    name = pw.TextField()
    executable_id = pw.TextField()
    executable_version = pw.TextField()
    scenario_id = pw.TextField()
    parameter_bindings = JSONField(default=dict)
    input_artifact_bindings = JSONField(default=dict)
    created_us = pw.BigIntegerField()
    created_by = pw.TextField(default="")  # since schema version 6

    class Meta:
        table_name = "configuration"
        indexes = (
            (("resource_group", "configuration_id"), True),
            (("resource_group", "executable_id"), False),
        )


class ExecutionRow(Base):
    # The integer key orders executions (newest first) for keyset paging.
    resource_group = pw.TextField()
    execution_id = pw.TextField(unique=True)
    configuration_id = pw.TextField()
    executable_id = pw.TextField()
    scenario_id = pw.TextField()
    status = pw.TextField()
    target_status = pw.TextField()
    status_message = pw.TextField(default="")
    step_details = JSONField(default=list)
    output_artifact_ids = JSONField(default=list)
    created_us = pw.BigIntegerField()
    submitted_us = pw.BigIntegerField(null=True)
    started_us = pw.BigIntegerField(null=True)
    completed_us = pw.BigIntegerField(null=True)
    modified_us = pw.BigIntegerField()
    history_len = pw.IntegerField(default=0)
    # Since schema version 3: the replica running it, its lease, the claim's token.
    owner = pw.TextField(null=True)
    lease_expires_us = pw.BigIntegerField(null=True)
    fence = pw.BigIntegerField(default=0)
    created_by = pw.TextField(default="")  # since schema version 6
    # Since schema version 7: the execution this one re-runs (NULL for a first run).
    rerun_of = pw.TextField(null=True)

    class Meta:
        table_name = "execution"
        indexes = (
            (("resource_group", "id"), False),
            (("resource_group", "status", "id"), False),
            (("resource_group", "scenario_id", "id"), False),
            (("resource_group", "executable_id", "id"), False),
            (("resource_group", "configuration_id", "id"), False),
            (("resource_group", "rerun_of"), False),
            (("status", "id"), False),
        )


class ExecutionCount(Base):
    """Executions per (group, status, configuration): exact totals for filtered lists
    without counting millions of rows. Maintained in the same transactions as the
    execution rows."""

    resource_group = pw.TextField()
    status = pw.TextField()
    scenario_id = pw.TextField()
    executable_id = pw.TextField()
    configuration_id = pw.TextField()
    n = pw.IntegerField(default=0)

    class Meta:
        table_name = "execution_count"
        primary_key = pw.CompositeKey(
            "resource_group", "status", "configuration_id", "scenario_id", "executable_id"
        )


class TransitionRow(Base):
    execution_id = pw.TextField()
    seq = pw.IntegerField()
    from_status = pw.TextField(null=True)
    to_status = pw.TextField()
    at_us = pw.BigIntegerField()
    cause = pw.TextField()
    message = pw.TextField(default="")

    class Meta:
        table_name = "transition"
        primary_key = pw.CompositeKey("execution_id", "seq")


class LogRow(Base):
    execution_id = pw.TextField()
    seq = pw.BigIntegerField()
    at_us = pw.BigIntegerField()
    step = pw.TextField()
    stream = pw.SmallIntegerField()  # 1 stdout, 2 stderr, 3 system
    text = pw.TextField()

    class Meta:
        table_name = "log_line"
        primary_key = pw.CompositeKey("execution_id", "seq")
        without_rowid = True


class LogPurgeRow(Base):
    """Since schema version 4: an execution that was deleted while its log lines are
    still being removed (in chunks, by the log purger). Its lines are invisible from
    the moment its row is here."""

    execution_id = pw.TextField(primary_key=True)
    queued_us = pw.BigIntegerField()

    class Meta:
        table_name = "log_purge"


class SecretRow(Base):
    """Since schema version 5: a secret of a resource group. ``keys`` lists its key
    names; ``sealed`` its values, encrypted (never plain)."""

    resource_group = pw.TextField()
    name = pw.TextField()
    keys = JSONField()
    sealed = pw.TextField()
    created_us = pw.BigIntegerField()
    modified_us = pw.BigIntegerField()

    class Meta:
        table_name = "secret"
        primary_key = pw.CompositeKey("resource_group", "name")


class IdempotencyRow(Base):
    """Client request ids of create calls, so retries return the first result."""

    resource_group = pw.TextField()
    kind = pw.TextField()
    request_id = pw.TextField()
    resource_id = pw.TextField()
    request_digest = pw.TextField()
    created_us = pw.BigIntegerField()

    class Meta:
        table_name = "idempotency_key"
        primary_key = pw.CompositeKey("resource_group", "kind", "request_id")
        # Since schema version 9: the retention purge deletes by creation time.
        indexes = ((("created_us",), False),)


# ----------------------------------------------------------------- metrics (migration 2)


class MetricOwnerRow(Base):
    """An execution that has (or had) metrics, with its resource group: metrics kept
    after the execution is deleted stay visible to that group only."""

    execution_id = pw.TextField(primary_key=True)
    resource_group = pw.TextField()
    created_us = pw.BigIntegerField()

    class Meta:
        table_name = "metric_owner"


class MetricSeriesRow(Base):
    """One metric name of one execution, with a summary of its points (count, latest,
    min, max) kept up to date by every write: comparisons read only these rows, found by
    their primary key (no rowid: one B-tree lookup per series). ``series_id`` is the
    short key of its points, assigned by the store."""

    series_id = pw.BigIntegerField(unique=True)
    execution_id = pw.TextField()
    name = pw.TextField()
    count = pw.BigIntegerField(default=0)
    last_seq = pw.BigIntegerField(default=0)
    last_value = pw.DoubleField(null=True)
    last_step = pw.BigIntegerField(null=True)
    last_us = pw.BigIntegerField(null=True)
    min_value = pw.DoubleField(null=True)
    max_value = pw.DoubleField(null=True)

    class Meta:
        table_name = "metric_series"
        primary_key = pw.CompositeKey("execution_id", "name")
        without_rowid = True


class MetricPointRow(Base):
    """One point of a series; ``seq`` numbers the points of a series in write order."""

    series_id = pw.IntegerField()
    seq = pw.BigIntegerField()
    value = pw.DoubleField()
    step = pw.BigIntegerField(null=True)
    at_us = pw.BigIntegerField()
    labels = pw.TextField(null=True)  # JSON object, NULL when the point has none

    class Meta:
        table_name = "metric_point"
        primary_key = pw.CompositeKey("series_id", "seq")
        without_rowid = True


class MetricTagRow(Base):
    execution_id = pw.TextField()
    key = pw.TextField()
    value = pw.TextField()
    modified_us = pw.BigIntegerField()

    class Meta:
        table_name = "metric_tag"
        primary_key = pw.CompositeKey("execution_id", "key")
        without_rowid = True


class MetricCustomInfoRow(Base):
    execution_id = pw.TextField()
    name = pw.TextField()
    value = pw.TextField()
    format = pw.TextField()  # "text" | "json"
    modified_us = pw.BigIntegerField()

    class Meta:
        table_name = "metric_custom_info"
        primary_key = pw.CompositeKey("execution_id", "name")
        without_rowid = True


class AuditEventRow(Base):
    # Since schema version 6: the audit trail, newest last.
    at_us = pw.BigIntegerField()
    resource_group = pw.TextField()
    principal = pw.TextField()
    action = pw.TextField()
    resource_type = pw.TextField()
    resource_id = pw.TextField()
    outcome = pw.TextField()
    request_id = pw.TextField()
    detail = pw.TextField()

    class Meta:
        table_name = "audit_event"
        indexes = (
            (("resource_group", "id"), False),
            (("principal", "id"), False),
        )


class PageTokenKeyRow(Base):
    """Since schema version 8: the key that signs page tokens, shared by every replica
    of the database (one row, ``id`` 1; ``key`` in hex)."""

    id = pw.IntegerField(primary_key=True)
    key = pw.TextField()
    created_us = pw.BigIntegerField()

    class Meta:
        table_name = "page_token_key"


class ExecutionEventCounterRow(Base):
    """Since schema version 10: the last change number given in a resource group."""

    resource_group = pw.TextField(primary_key=True)
    number = pw.BigIntegerField()

    class Meta:
        table_name = "execution_event_counter"


class ExecutionEventRow(Base):
    """Since schema version 10: one change of an execution, numbered in its resource
    group in commit order (what set-watch cursors count)."""

    resource_group = pw.TextField()
    number = pw.BigIntegerField()
    execution_id = pw.TextField()
    kind = pw.TextField()
    seq = pw.IntegerField()
    detail = pw.TextField()
    at_us = pw.BigIntegerField(index=True)

    class Meta:
        table_name = "execution_event"
        primary_key = pw.CompositeKey("resource_group", "number")


MODELS: tuple[type[Base], ...] = (
    SchemaVersion,
    ScenarioRow,
    ExecutableRow,
    ArtifactRow,
    ConfigurationRow,
    ExecutionRow,
    ExecutionCount,
    TransitionRow,
    LogRow,
    LogPurgeRow,
    SecretRow,
    IdempotencyRow,
    MetricOwnerRow,
    MetricSeriesRow,
    MetricPointRow,
    MetricTagRow,
    MetricCustomInfoRow,
    AuditEventRow,
    PageTokenKeyRow,
    ExecutionEventCounterRow,
    ExecutionEventRow,
)


# ------------------------------------------------------------------------- binding


class Tables:
    """Every model, as a subclass bound to one database (``bind``)."""

    SchemaVersion: type[SchemaVersion]
    ScenarioRow: type[ScenarioRow]
    ExecutableRow: type[ExecutableRow]
    ArtifactRow: type[ArtifactRow]
    ConfigurationRow: type[ConfigurationRow]
    ExecutionRow: type[ExecutionRow]
    ExecutionCount: type[ExecutionCount]
    TransitionRow: type[TransitionRow]
    LogRow: type[LogRow]
    LogPurgeRow: type[LogPurgeRow]
    SecretRow: type[SecretRow]
    IdempotencyRow: type[IdempotencyRow]
    MetricOwnerRow: type[MetricOwnerRow]
    MetricSeriesRow: type[MetricSeriesRow]
    MetricPointRow: type[MetricPointRow]
    MetricTagRow: type[MetricTagRow]
    MetricCustomInfoRow: type[MetricCustomInfoRow]
    AuditEventRow: type[AuditEventRow]
    PageTokenKeyRow: type[PageTokenKeyRow]
    ExecutionEventCounterRow: type[ExecutionEventCounterRow]
    ExecutionEventRow: type[ExecutionEventRow]

    def __init__(self, database: pw.Database):
        self.database = database
        self.models: tuple[type[Base], ...] = tuple(_bound(m, database) for m in MODELS)
        for model in self.models:
            setattr(self, model.__name__, model)


def _bound(model: type[Base], database: pw.Database) -> type[Base]:
    """A subclass of ``model`` bound to ``database``; ``model`` itself is not touched
    (peewee's ``bind`` and ``bind_ctx`` rebind the class for the whole process).

    Subclassing copies the fields, the indexes and the primary key; the options peewee
    does not inherit (the table name, WITHOUT ROWID) are passed on here."""
    meta = type(
        "Meta",
        (),
        {
            "database": database,
            "table_name": model._meta.table_name,
            "without_rowid": model._meta.without_rowid,
        },
    )
    return type(model.__name__, (model,), {"Meta": meta, "__module__": model.__module__})


def bind(database: pw.Database) -> Tables:
    """The models bound to ``database`` (a new set of classes per call)."""
    return Tables(database)
