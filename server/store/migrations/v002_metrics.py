"""Schema version 2: metrics. Series with their summaries, points, tags, custom info,
and the owners (execution and resource group) that keep metrics visible after their
execution is deleted.

Frozen: this is the DDL that databases at version 2 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'CREATE TABLE "metric_custom_info" ("execution_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "value" TEXT NOT NULL, "format" TEXT NOT NULL, "modified_us" INTEGER NOT NULL,'
    ' PRIMARY KEY ("execution_id", "name")) WITHOUT ROWID',
    'CREATE TABLE "metric_owner" ("execution_id" TEXT NOT NULL PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "created_us" INTEGER NOT NULL)',
    'CREATE TABLE "metric_point" ("series_id" INTEGER NOT NULL, "seq" INTEGER NOT NULL,'
    ' "value" REAL NOT NULL, "step" INTEGER, "at_us" INTEGER NOT NULL, "labels" TEXT,'
    ' PRIMARY KEY ("series_id", "seq")) WITHOUT ROWID',
    'CREATE TABLE "metric_series" ("series_id" INTEGER NOT NULL,'
    ' "execution_id" TEXT NOT NULL, "name" TEXT NOT NULL, "count" INTEGER NOT NULL,'
    ' "last_seq" INTEGER NOT NULL, "last_value" REAL, "last_step" INTEGER, "last_us" INTEGER,'
    ' "min_value" REAL, "max_value" REAL, PRIMARY KEY ("execution_id", "name")) WITHOUT ROWID',
    'CREATE UNIQUE INDEX "metric_series_series_id" ON "metric_series" ("series_id")',
    'CREATE TABLE "metric_tag" ("execution_id" TEXT NOT NULL, "key" TEXT NOT NULL,'
    ' "value" TEXT NOT NULL, "modified_us" INTEGER NOT NULL,'
    ' PRIMARY KEY ("execution_id", "key")) WITHOUT ROWID',
)

# The same tables on PostgreSQL (no WITHOUT ROWID: every table is a heap there, the
# primary key its index).
POSTGRESQL = (
    'CREATE TABLE "metric_custom_info" ("execution_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "value" TEXT NOT NULL, "format" TEXT NOT NULL, "modified_us" BIGINT NOT NULL,'
    ' PRIMARY KEY ("execution_id", "name"))',
    'CREATE TABLE "metric_owner" ("execution_id" TEXT NOT NULL PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "created_us" BIGINT NOT NULL)',
    'CREATE TABLE "metric_point" ("series_id" BIGINT NOT NULL, "seq" BIGINT NOT NULL,'
    ' "value" DOUBLE PRECISION NOT NULL, "step" BIGINT, "at_us" BIGINT NOT NULL,'
    ' "labels" TEXT, PRIMARY KEY ("series_id", "seq"))',
    'CREATE TABLE "metric_series" ("series_id" BIGINT NOT NULL,'
    ' "execution_id" TEXT NOT NULL, "name" TEXT NOT NULL, "count" BIGINT NOT NULL,'
    ' "last_seq" BIGINT NOT NULL, "last_value" DOUBLE PRECISION, "last_step" BIGINT,'
    ' "last_us" BIGINT, "min_value" DOUBLE PRECISION, "max_value" DOUBLE PRECISION,'
    ' PRIMARY KEY ("execution_id", "name"))',
    'CREATE UNIQUE INDEX "metric_series_series_id" ON "metric_series" ("series_id")',
    'CREATE TABLE "metric_tag" ("execution_id" TEXT NOT NULL, "key" TEXT NOT NULL,'
    ' "value" TEXT NOT NULL, "modified_us" BIGINT NOT NULL,'
    ' PRIMARY KEY ("execution_id", "key"))',
)
