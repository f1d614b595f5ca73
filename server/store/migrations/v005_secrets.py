"""Schema version 5: the secrets of the resource groups. ``keys`` is the JSON list of
a secret's key names (what reads show); ``sealed`` holds its values, encrypted by the
server's cipher (a Fernet token: text), never plain. One secret per (group, name).

Frozen: this is the DDL that databases at version 5 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'CREATE TABLE "secret" ("resource_group" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "keys" TEXT NOT NULL, "sealed" TEXT NOT NULL, "created_us" INTEGER NOT NULL,'
    ' "modified_us" INTEGER NOT NULL, PRIMARY KEY ("resource_group", "name"))',
)

POSTGRESQL = (
    'CREATE TABLE "secret" ("resource_group" TEXT NOT NULL, "name" TEXT NOT NULL,'
    ' "keys" TEXT NOT NULL, "sealed" TEXT NOT NULL, "created_us" BIGINT NOT NULL,'
    ' "modified_us" BIGINT NOT NULL, PRIMARY KEY ("resource_group", "name"))',
)
