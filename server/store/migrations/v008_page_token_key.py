"""Schema version 8: the key that signs page tokens, one row (``id`` is always 1) that
the first server to start on the database writes, so that every replica of the
database signs and checks page tokens with the same key. ``key`` is its hex text.

Frozen: this is the DDL that databases at version 8 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'CREATE TABLE "page_token_key" ("id" INTEGER NOT NULL PRIMARY KEY CHECK ("id" = 1),'
    ' "key" TEXT NOT NULL, "created_us" INTEGER NOT NULL)',
)

POSTGRESQL = (
    'CREATE TABLE "page_token_key" ("id" INTEGER NOT NULL PRIMARY KEY CHECK ("id" = 1),'
    ' "key" TEXT NOT NULL, "created_us" BIGINT NOT NULL)',
)
