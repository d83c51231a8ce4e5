"""Atomic writes: a crash leaves the previous file or directory intact, never a half-written one.

Files: write to a temp file in the same directory, fsync, `os.replace` (atomic on POSIX).
Directories the program owns entirely (a training checkpoint): build everything in `.<name>.tmp-*`, then swap it
in with renames; the old directory is removed only after the new one is in place (`atomic_dir`).
Directories a user may share with other files (an exported model): `atomic_files` builds the new files in a temp
directory, then moves each one into place (each replace atomic), touching no other file: a crash mid-save leaves
every file either old or new, and never a half-written one; files the save does not write are never removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)  # mkstemp creates 0600; give the file the permissions a plain open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp directory; on normal exit it replaces `path` (which may already exist).

    >>> with atomic_dir("ckpt") as tmp:
    ...     (tmp / "model.safetensors").write_bytes(b"...")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    umask = os.umask(0)  # mkdtemp creates 0700; give the directory the permissions a plain mkdir would
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp directory; on normal exit its files replace same-named files in `path`.

    A missing `path` is created by one rename (all files appear together). An existing one (even `.`) keeps
    every file the save does not write; the temp directory lives inside it and is always removed.

    >>> with atomic_files("out/model") as tmp:
    ...     (tmp / "config.json").write_text("{}")
    """
    path = Path(path)
    if not path.exists():
        with atomic_dir(path) as tmp:
            yield tmp
        return
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(dir=path, prefix=".lmstack-save.tmp-"))
    try:
        yield tmp
        for f in sorted(tmp.iterdir()):
            assert f.is_file(), f"atomic_files handles flat directories; {f} is not a file"
            umask = os.umask(0)  # mkstemp-style 0600 files get the permissions a plain open() would give
            os.umask(umask)
            os.chmod(f, 0o666 & ~umask)
            os.replace(f, path / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
