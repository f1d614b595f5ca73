"""Schema version 7: re-runs. ``rerun_of`` is the execution a re-run was made from
(NULL for a first run); the index lists the re-runs of one execution in its group.

Frozen: this is the DDL that databases at version 7 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'ALTER TABLE "execution" ADD COLUMN "rerun_of" TEXT',
    'CREATE INDEX "execution_resource_group_rerun_of" ON "execution"'
    ' ("resource_group", "rerun_of")',
)

POSTGRESQL = (
    'ALTER TABLE "execution" ADD COLUMN "rerun_of" TEXT',
    'CREATE INDEX "execution_resource_group_rerun_of" ON "execution"'
    ' ("resource_group", "rerun_of")',
)
