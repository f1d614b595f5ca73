"""Schema version 10: the changes of executions, numbered per resource group in the
order they committed, so that a watch of a set of executions resumes after its cursor
on any replica of the database.

``execution_event_counter`` holds the last number given in each resource group; a
write transaction that records changes adds their count to it (the row stays locked
until the transaction ends, so numbers follow the commit order). ``execution_event``
holds one row per change: ``kind`` created, transition, step or deleted; ``seq`` the
history entry of a created or transition change (0 otherwise); ``detail`` the step's
name of a step change, and ``status,scenario_id,configuration_id,executable_id`` of the
execution as it was for a deletion. ``at_us`` (when it was recorded) orders the purge
of old rows.

Frozen: this is the DDL that databases at version 10 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'CREATE TABLE "execution_event_counter" ("resource_group" TEXT NOT NULL PRIMARY KEY,'
    ' "number" INTEGER NOT NULL)',
    'CREATE TABLE "execution_event" ("resource_group" TEXT NOT NULL,'
    ' "number" INTEGER NOT NULL, "execution_id" TEXT NOT NULL, "kind" TEXT NOT NULL,'
    ' "seq" INTEGER NOT NULL, "detail" TEXT NOT NULL, "at_us" INTEGER NOT NULL,'
    ' PRIMARY KEY ("resource_group", "number"))',
    'CREATE INDEX "execution_event_at_us" ON "execution_event" ("at_us")',
)

POSTGRESQL = (
    'CREATE TABLE "execution_event_counter" ("resource_group" TEXT NOT NULL PRIMARY KEY,'
    ' "number" BIGINT NOT NULL)',
    'CREATE TABLE "execution_event" ("resource_group" TEXT NOT NULL,'
    ' "number" BIGINT NOT NULL, "execution_id" TEXT NOT NULL, "kind" TEXT NOT NULL,'
    ' "seq" INTEGER NOT NULL, "detail" TEXT NOT NULL, "at_us" BIGINT NOT NULL,'
    ' PRIMARY KEY ("resource_group", "number"))',
    'CREATE INDEX "execution_event_at_us" ON "execution_event" ("at_us")',
)
