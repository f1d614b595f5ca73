"""Schema version 4: the log purge queue. Deleting an execution removes its row, its
history and its metrics at once, and queues its log lines here: a background purger
deletes them in short chunks, then the queue row. ``queued_us`` orders the queue.

Frozen: this is the DDL that databases at version 4 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'CREATE TABLE "log_purge" ("execution_id" TEXT NOT NULL PRIMARY KEY,'
    ' "queued_us" INTEGER NOT NULL)',
)

POSTGRESQL = (
    'CREATE TABLE "log_purge" ("execution_id" TEXT NOT NULL PRIMARY KEY,'
    ' "queued_us" BIGINT NOT NULL)',
)
