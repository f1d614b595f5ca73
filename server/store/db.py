"""Database set-up: opening a database by URL, its dialect, the numbered migrations.

The only modules that import peewee are in this package. The models are bound to
each database by its store (``tables.bind``), never here, and never process-wide.
The backends' differences live in server/store/dialects.py.
"""

from __future__ import annotations

from server.store.dialects import SQLITE_PRAGMAS, Dialect, open_database
from server.store.migrations import SCHEMA_VERSION, SchemaTooNew, migrate

__all__ = [
    "SCHEMA_VERSION",
    "SQLITE_PRAGMAS",
    "Dialect",
    "SchemaTooNew",
    "migrate",
    "open_database",
]
