"""Secret values at rest: Fernet (``cryptography``: AES-128-CBC with HMAC-SHA256), with
the key in a file of its own, outside the database.

:func:`open_key_file` reads the key, or makes one on the server's first start: a new
random key, written with mode 0600 and linked into place (so that two servers starting
at once on one data directory end up with the same key). Replicas of
one database must share the key file (the same path on shared storage, or a copy of
it): a replica with another key cannot open the values, and an execution it starts
that needs them goes DEAD saying so. Losing the key loses the values (not the
secrets' names): keep it with the backups, never beside the database dump.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


class KeyFileError(RuntimeError):
    """The key file cannot be read, written or used; the message says which and why."""


class FernetCipher:
    """The SecretCipher port (server/domain/ports.py) on one Fernet key.

    The key is checked at once; ``cryptography`` is imported on the first seal or
    unseal (about 7 MB resident that a server using no secrets does without)."""

    def __init__(self, key: bytes):
        try:
            valid = len(base64.urlsafe_b64decode(key)) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise ValueError("not a Fernet key")
        self._key = key
        self._fernet: Fernet | None = None

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            from cryptography.fernet import Fernet

            self._fernet = Fernet(self._key)
        return self._fernet

    def seal(self, plain: bytes) -> str:
        return self._cipher().encrypt(plain).decode("ascii")

    def unseal(self, sealed: str) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return self._cipher().decrypt(sealed.encode("ascii"))
        except (InvalidToken, ValueError):
            raise ValueError(
                "its values cannot be opened with this server's secrets key file "
                "(written with another key?)"
            ) from None


def open_key_file(path: str | Path) -> FernetCipher:
    """The cipher of the key in ``path``, made (mode 0600) when the file is missing."""
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        key = _create(path)
    except OSError as exc:
        raise KeyFileError(f"secrets key file {path}: {exc.strerror or exc}") from None
    try:
        return FernetCipher(key)
    except ValueError:
        raise KeyFileError(
            f"secrets key file {path}: not a Fernet key (32 url-safe base64-encoded bytes)"
        ) from None


def _create(path: Path) -> bytes:
    """A new key, written whole to a private temporary file, then linked into place: a
    starter never reads a half-written key, and of two starters the second uses the
    first one's key."""
    # Fernet's key format (what Fernet.generate_key makes): 32 random bytes, url-safe
    # base64; made here so that a start needs no cryptography until a secret is used.
    key = base64.urlsafe_b64encode(os.urandom(32))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another starter made it meanwhile: use theirs
            return path.read_bytes().strip()
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise KeyFileError(f"secrets key file {path}: {exc.strerror or exc}") from None
    return key
