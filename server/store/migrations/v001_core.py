"""Schema version 1: scenarios, executables, artifacts, configurations, executions with
their counts and transitions, log lines, idempotency keys.

Frozen: this is the DDL that databases at version 1 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'CREATE TABLE "artifact" ("id" INTEGER NOT NULL PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "artifact_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "kind" TEXT NOT NULL, "url" TEXT NOT NULL, "scenario_id" TEXT NOT NULL,'
    ' "description" TEXT NOT NULL, "labels" TEXT NOT NULL, "execution_id" TEXT NOT NULL,'
    ' "created_us" INTEGER NOT NULL, "modified_us" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "artifact_resource_group_artifact_id"'
    ' ON "artifact" ("resource_group", "artifact_id")',
    'CREATE INDEX "artifact_resource_group_execution_id"'
    ' ON "artifact" ("resource_group", "execution_id")',
    'CREATE TABLE "configuration" ("id" INTEGER NOT NULL PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "configuration_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "executable_id" TEXT NOT NULL, "executable_version" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "parameter_bindings" TEXT NOT NULL,'
    ' "input_artifact_bindings" TEXT NOT NULL, "created_us" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "configuration_resource_group_configuration_id"'
    ' ON "configuration" ("resource_group", "configuration_id")',
    'CREATE INDEX "configuration_resource_group_executable_id"'
    ' ON "configuration" ("resource_group", "executable_id")',
    'CREATE TABLE "executable" ("id" INTEGER NOT NULL PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "executable_id" TEXT NOT NULL, "version" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "name" TEXT NOT NULL, "description" TEXT NOT NULL,'
    ' "deployable" INTEGER NOT NULL, "labels" TEXT NOT NULL, "definition" TEXT NOT NULL,'
    ' "digest" TEXT NOT NULL, "created_us" INTEGER NOT NULL, "modified_us" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "executable_resource_group_executable_id_version"'
    ' ON "executable" ("resource_group", "executable_id", "version")',
    'CREATE INDEX "executable_resource_group_scenario_id_executable_id"'
    ' ON "executable" ("resource_group", "scenario_id", "executable_id")',
    'CREATE TABLE "execution_count" ("resource_group" TEXT NOT NULL, "status" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "executable_id" TEXT NOT NULL,'
    ' "configuration_id" TEXT NOT NULL, "n" INTEGER NOT NULL, PRIMARY KEY ("resource_group",'
    ' "status", "configuration_id", "scenario_id", "executable_id"))',
    'CREATE TABLE "execution" ("id" INTEGER NOT NULL PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "execution_id" TEXT NOT NULL,'
    ' "configuration_id" TEXT NOT NULL, "executable_id" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "status" TEXT NOT NULL, "target_status" TEXT NOT NULL,'
    ' "status_message" TEXT NOT NULL, "step_details" TEXT NOT NULL,'
    ' "output_artifact_ids" TEXT NOT NULL, "created_us" INTEGER NOT NULL,'
    ' "submitted_us" INTEGER, "started_us" INTEGER, "completed_us" INTEGER,'
    ' "modified_us" INTEGER NOT NULL, "history_len" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "execution_execution_id" ON "execution" ("execution_id")',
    'CREATE INDEX "execution_resource_group_id" ON "execution" ("resource_group", "id")',
    'CREATE INDEX "execution_resource_group_status_id"'
    ' ON "execution" ("resource_group", "status", "id")',
    'CREATE INDEX "execution_resource_group_scenario_id_id"'
    ' ON "execution" ("resource_group", "scenario_id", "id")',
    'CREATE INDEX "execution_resource_group_executable_id_id"'
    ' ON "execution" ("resource_group", "executable_id", "id")',
    'CREATE INDEX "execution_resource_group_configuration_id_id"'
    ' ON "execution" ("resource_group", "configuration_id", "id")',
    'CREATE INDEX "execution_status_id" ON "execution" ("status", "id")',
    'CREATE TABLE "idempotency_key" ("resource_group" TEXT NOT NULL, "kind" TEXT NOT NULL,'
    ' "request_id" TEXT NOT NULL, "resource_id" TEXT NOT NULL,'
    ' "request_digest" TEXT NOT NULL, "created_us" INTEGER NOT NULL,'
    ' PRIMARY KEY ("resource_group", "kind", "request_id"))',
    'CREATE TABLE "log_line" ("execution_id" TEXT NOT NULL, "seq" INTEGER NOT NULL,'
    ' "at_us" INTEGER NOT NULL, "step" TEXT NOT NULL, "stream" INTEGER NOT NULL,'
    ' "text" TEXT NOT NULL, PRIMARY KEY ("execution_id", "seq")) WITHOUT ROWID',
    'CREATE TABLE "scenario" ("id" INTEGER NOT NULL PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "scenario_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "description" TEXT NOT NULL, "labels" TEXT NOT NULL, "created_us" INTEGER NOT NULL,'
    ' "modified_us" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "scenario_resource_group_scenario_id"'
    ' ON "scenario" ("resource_group", "scenario_id")',
    'CREATE TABLE "transition" ("execution_id" TEXT NOT NULL, "seq" INTEGER NOT NULL,'
    ' "from_status" TEXT, "to_status" TEXT NOT NULL, "at_us" INTEGER NOT NULL,'
    ' "cause" TEXT NOT NULL, "message" TEXT NOT NULL, PRIMARY KEY ("execution_id", "seq"))',
)

# The same tables on PostgreSQL: BIGINT for every integer that SQLite stores in 64
# bits (times, sequence numbers, counts), identity columns for the integer keys,
# BOOLEAN and SMALLINT where the models declare them.
POSTGRESQL = (
    'CREATE TABLE "artifact" ("id" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "artifact_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "kind" TEXT NOT NULL, "url" TEXT NOT NULL, "scenario_id" TEXT NOT NULL,'
    ' "description" TEXT NOT NULL, "labels" TEXT NOT NULL, "execution_id" TEXT NOT NULL,'
    ' "created_us" BIGINT NOT NULL, "modified_us" BIGINT NOT NULL)',
    'CREATE UNIQUE INDEX "artifact_resource_group_artifact_id"'
    ' ON "artifact" ("resource_group", "artifact_id")',
    'CREATE INDEX "artifact_resource_group_execution_id"'
    ' ON "artifact" ("resource_group", "execution_id")',
    'CREATE TABLE "configuration" ("id" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "configuration_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "executable_id" TEXT NOT NULL, "executable_version" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "parameter_bindings" TEXT NOT NULL,'
    ' "input_artifact_bindings" TEXT NOT NULL, "created_us" BIGINT NOT NULL)',
    'CREATE UNIQUE INDEX "configuration_resource_group_configuration_id"'
    ' ON "configuration" ("resource_group", "configuration_id")',
    'CREATE INDEX "configuration_resource_group_executable_id"'
    ' ON "configuration" ("resource_group", "executable_id")',
    'CREATE TABLE "executable" ("id" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "executable_id" TEXT NOT NULL, "version" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "name" TEXT NOT NULL, "description" TEXT NOT NULL,'
    ' "deployable" BOOLEAN NOT NULL, "labels" TEXT NOT NULL, "definition" TEXT NOT NULL,'
    ' "digest" TEXT NOT NULL, "created_us" BIGINT NOT NULL, "modified_us" BIGINT NOT NULL)',
    'CREATE UNIQUE INDEX "executable_resource_group_executable_id_version"'
    ' ON "executable" ("resource_group", "executable_id", "version")',
    'CREATE INDEX "executable_resource_group_scenario_id_executable_id"'
    ' ON "executable" ("resource_group", "scenario_id", "executable_id")',
    'CREATE TABLE "execution_count" ("resource_group" TEXT NOT NULL, "status" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "executable_id" TEXT NOT NULL,'
    ' "configuration_id" TEXT NOT NULL, "n" BIGINT NOT NULL, PRIMARY KEY ("resource_group",'
    ' "status", "configuration_id", "scenario_id", "executable_id"))',
    'CREATE TABLE "execution" ("id" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "execution_id" TEXT NOT NULL,'
    ' "configuration_id" TEXT NOT NULL, "executable_id" TEXT NOT NULL,'
    ' "scenario_id" TEXT NOT NULL, "status" TEXT NOT NULL, "target_status" TEXT NOT NULL,'
    ' "status_message" TEXT NOT NULL, "step_details" TEXT NOT NULL,'
    ' "output_artifact_ids" TEXT NOT NULL, "created_us" BIGINT NOT NULL,'
    ' "submitted_us" BIGINT, "started_us" BIGINT, "completed_us" BIGINT,'
    ' "modified_us" BIGINT NOT NULL, "history_len" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "execution_execution_id" ON "execution" ("execution_id")',
    'CREATE INDEX "execution_resource_group_id" ON "execution" ("resource_group", "id")',
    'CREATE INDEX "execution_resource_group_status_id"'
    ' ON "execution" ("resource_group", "status", "id")',
    'CREATE INDEX "execution_resource_group_scenario_id_id"'
    ' ON "execution" ("resource_group", "scenario_id", "id")',
    'CREATE INDEX "execution_resource_group_executable_id_id"'
    ' ON "execution" ("resource_group", "executable_id", "id")',
    'CREATE INDEX "execution_resource_group_configuration_id_id"'
    ' ON "execution" ("resource_group", "configuration_id", "id")',
    'CREATE INDEX "execution_status_id" ON "execution" ("status", "id")',
    'CREATE TABLE "idempotency_key" ("resource_group" TEXT NOT NULL, "kind" TEXT NOT NULL,'
    ' "request_id" TEXT NOT NULL, "resource_id" TEXT NOT NULL,'
    ' "request_digest" TEXT NOT NULL, "created_us" BIGINT NOT NULL,'
    ' PRIMARY KEY ("resource_group", "kind", "request_id"))',
    'CREATE TABLE "log_line" ("execution_id" TEXT NOT NULL, "seq" BIGINT NOT NULL,'
    ' "at_us" BIGINT NOT NULL, "step" TEXT NOT NULL, "stream" SMALLINT NOT NULL,'
    ' "text" TEXT NOT NULL, PRIMARY KEY ("execution_id", "seq"))',
    'CREATE TABLE "scenario" ("id" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
    ' "resource_group" TEXT NOT NULL, "scenario_id" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "description" TEXT NOT NULL, "labels" TEXT NOT NULL, "created_us" BIGINT NOT NULL,'
    ' "modified_us" BIGINT NOT NULL)',
    'CREATE UNIQUE INDEX "scenario_resource_group_scenario_id"'
    ' ON "scenario" ("resource_group", "scenario_id")',
    'CREATE TABLE "transition" ("execution_id" TEXT NOT NULL, "seq" INTEGER NOT NULL,'
    ' "from_status" TEXT, "to_status" TEXT NOT NULL, "at_us" BIGINT NOT NULL,'
    ' "cause" TEXT NOT NULL, "message" TEXT NOT NULL, PRIMARY KEY ("execution_id", "seq"))',
)
