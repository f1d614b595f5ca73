"""The secrets' repository: one row per (resource group, name), the values sealed by
the domain before they get here. Every read and write is scoped by group."""

from __future__ import annotations

from collections.abc import Sequence

import peewee as pw

from server.domain.audit import AuditEvent
from server.domain.errors import AlreadyExists, NotFound
from server.domain.models import Page, Secret
from server.domain.paging import PageRequest
from server.store.rows import _str_key, now_us, to_dt


def _secret(row) -> Secret:
    return Secret(
        name=row.name,
        resource_group=row.resource_group,
        keys=list(row.keys or []),
        sealed=row.sealed,
        created_at=to_dt(row.created_us),
        modified_at=to_dt(row.modified_us),
    )


def _not_found(name: str) -> NotFound:
    return NotFound.of("secret", name)


class SecretRepository:
    """Part of :class:`server.store.repository.Store`."""

    def create_secret(self, secret: Secret, audit: AuditEvent | None = None) -> Secret:
        at = now_us()
        row = self.t.SecretRow(
            resource_group=secret.resource_group,
            name=secret.name,
            keys=list(secret.keys),
            sealed=secret.sealed,
            created_us=at,
            modified_us=at,
        )
        try:
            with self.atomic():
                row.save(force_insert=True)
                self._audit((audit,))
        except pw.IntegrityError:
            raise AlreadyExists(
                message=f"secret {secret.name!r} already exists",
                resource_type="secret",
                resource_name=secret.name,
            ) from None
        return _secret(row)

    def update_secret(self, secret: Secret, audit: AuditEvent | None = None) -> Secret:
        table = self.t.SecretRow
        with self.atomic():
            changed = (
                table.update(keys=list(secret.keys), sealed=secret.sealed, modified_us=now_us())
                .where(
                    (table.resource_group == secret.resource_group) & (table.name == secret.name)
                )
                .execute()
            )
            if not changed:
                raise _not_found(secret.name)
            self._audit((audit,))
            row = table.get(
                (table.resource_group == secret.resource_group) & (table.name == secret.name)
            )
        return _secret(row)

    def get_secrets(self, resource_group: str, names: Sequence[str]) -> dict[str, Secret]:
        if not names:
            return {}
        table = self.t.SecretRow
        rows = table.select().where(
            (table.resource_group == resource_group) & (table.name.in_(list(names)))
        )
        return {row.name: _secret(row) for row in rows}

    def list_secrets(self, resource_group: str, page: PageRequest) -> Page[Secret]:
        table = self.t.SecretRow
        where = table.resource_group == resource_group
        total = table.select().where(where).count()
        query = table.select().where(where)
        if page.after is not None:
            query = query.where(table.name > _str_key(page.after, 1)[0])
        rows = list(query.order_by(table.name).limit(page.size + 1))
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = page.next_token([rows[-1].name]) if more else ""
        return Page([_secret(r) for r in rows], token, total)

    def delete_secret(
        self, resource_group: str, name: str, audit: AuditEvent | None = None
    ) -> None:
        table = self.t.SecretRow
        with self.atomic():
            deleted = (
                table.delete()
                .where((table.resource_group == resource_group) & (table.name == name))
                .execute()
            )
            if not deleted:
                raise _not_found(name)
            self._audit((audit,))
