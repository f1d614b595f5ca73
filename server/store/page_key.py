"""The page-token key of the database: one row, written by the first server to start
on it, read by every server (so that replicas of one database accept each other's
page tokens)."""

from __future__ import annotations

from server.store.rows import now_us


class PageKeyRepository:
    """Part of :class:`server.store.repository.Store`."""

    def page_token_key(self, candidate: str) -> str:
        """The database's page-token key (hex text): ``candidate`` when none was stored
        yet (it is stored, then), else the one stored first. Servers starting at the
        same time all get the key of the insert that won."""
        with self.atomic():
            self.execute(
                'INSERT INTO "page_token_key" ("id", "key", "created_us") VALUES (1, ?, ?)'
                ' ON CONFLICT ("id") DO NOTHING',
                (candidate, now_us()),
            )
            row = self.execute('SELECT "key" FROM "page_token_key" WHERE "id" = 1').fetchone()
        return row[0]
