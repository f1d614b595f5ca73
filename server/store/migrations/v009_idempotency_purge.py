"""Schema version 9: an index on ``idempotency_key.created_us``, so that the purge of
request ids past their retention (``--idempotency-retention``: DELETE ... WHERE
created_us < ?) reads only the expired rows instead of scanning the whole table.

Frozen: this is the DDL that databases at version 9 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'CREATE INDEX "idempotency_key_created_us" ON "idempotency_key" ("created_us")',
)

POSTGRESQL = (
    'CREATE INDEX "idempotency_key_created_us" ON "idempotency_key" ("created_us")',
)
