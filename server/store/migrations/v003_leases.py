"""Schema version 3: who runs an execution. ``owner`` is the replica that claimed it,
``lease_expires_us`` when its claim lapses unless renewed, ``fence`` a token that
every claim and take-over increments: the owner's writes carry the token they were
given, so a replica that lost its lease cannot write over its successor.

Frozen: this is the DDL that databases at version 3 were built with. Never edit it; a
change to the schema is a new numbered module.
"""

SQLITE = (
    'ALTER TABLE "execution" ADD COLUMN "owner" TEXT',
    'ALTER TABLE "execution" ADD COLUMN "lease_expires_us" INTEGER',
    'ALTER TABLE "execution" ADD COLUMN "fence" INTEGER NOT NULL DEFAULT 0',
)

POSTGRESQL = (
    'ALTER TABLE "execution" ADD COLUMN "owner" TEXT',
    'ALTER TABLE "execution" ADD COLUMN "lease_expires_us" BIGINT',
    'ALTER TABLE "execution" ADD COLUMN "fence" BIGINT NOT NULL DEFAULT 0',
)
