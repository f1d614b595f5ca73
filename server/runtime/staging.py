"""Input artifact staging and output collection.

Every function here does blocking file work: the runtime calls them through
``asyncio.to_thread``, never on the event loop.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse


class StagingError(Exception):
    """An artifact cannot be staged or collected; the message says why."""


def local_path(url: str) -> Path:
    """The local file or directory an artifact URL names.

    The local runtime reads ``file://`` URLs (no host, or ``localhost``) and absolute
    paths; any other scheme is a :class:`StagingError`.
    """
    if url.startswith("/"):
        return Path(url)
    parsed = urlparse(url)
    if parsed.scheme != "file":
        scheme = parsed.scheme or "(none)"
        raise StagingError(
            f"unsupported URL scheme {scheme!r} in {url}: the local runtime reads file:// "
            f"URLs and absolute paths"
        )
    if parsed.netloc not in ("", "localhost"):
        raise StagingError(f"{url} names host {parsed.netloc!r}: file URLs must be local")
    return Path(unquote(parsed.path))


def check_source(url: str) -> Path:
    """The local path of ``url``; StagingError unless it exists."""
    path = local_path(url)
    if not path.exists():
        raise StagingError(f"{url}: no such file or directory")
    return path


def copy_into(source: Path, dest: Path) -> int:
    """Copy a file or a directory tree to ``dest``; returns the bytes copied."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
            return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        shutil.copyfile(source, dest)
        return dest.stat().st_size
    except OSError as exc:
        raise StagingError(f"cannot copy {source} to {dest}: {exc}") from None


def write_raw(dest: Path, data: str) -> int:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise StagingError(f"cannot write {dest}: {exc}") from None


def write_script(path: Path, source: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    except OSError as exc:
        raise StagingError(f"cannot write the script {path}: {exc}") from None


def collect(source: Path, dest_dir: Path) -> Path:
    """Move a step's output into ``dest_dir`` (the artifact store), keeping its name.

    Idempotent: when an earlier attempt moved it already, the moved copy is returned.
    """
    dest = dest_dir / source.name
    if not source.exists():
        if dest.exists():
            return dest
        raise StagingError(f"{source}: no such file or directory")
    try:
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(source, dest)
    except OSError as exc:
        raise StagingError(f"cannot move {source} to {dest}: {exc}") from None
    return dest


def reset_dir(path: Path) -> None:
    """Make ``path`` an empty directory."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
