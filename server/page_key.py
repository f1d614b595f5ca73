"""The page token key: from the key file when one is given (read, or made random with
mode 0600 when missing), else the one stored in the database, which the first server
to start on it makes, so that every replica of one database uses the same key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from server.domain.paging import KEY_BYTES, PageTokens
from server.store.async_store import AsyncStore

MIN_KEY_BYTES = 16


async def open_page_tokens(key_file: Path | None, store: AsyncStore) -> PageTokens:
    """The signer of ``key_file``'s key when given, else of the database's key."""
    if key_file is not None:
        return await asyncio.to_thread(load_page_tokens, key_file)
    key = await store.page_token_key(secrets.token_hex(KEY_BYTES))
    return PageTokens(key.encode())


def load_page_tokens(path: Path) -> PageTokens:
    """The signer of the key in ``path``, made first when the file does not exist (two
    servers starting on one data directory agree: the first to create it wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole under another name, then linked in place: a reader sees no
        # file or the whole key, never a part of one.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(KEY_BYTES).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"page token key file {path} holds {len(key)} bytes; at least"
            f" {MIN_KEY_BYTES} are needed (delete it to have a new one made)"
        )
    return PageTokens(key)
