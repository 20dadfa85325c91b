"""Atomic file output (results appear under their final name only when complete), and `-` for stdin."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import Evo2LiteError


def check_overwrite(path: str | os.PathLike, force: bool) -> None:
    if Path(path).exists() and not force:
        raise Evo2LiteError(f"{path} exists; pass --force to overwrite it")


def check_output(path: str | os.PathLike, force: bool) -> None:
    """Before long work: the output may be written (folder exists, no file there unless --force)."""
    check_overwrite(path, force)
    folder = Path(path).parent
    if not folder.is_dir():
        raise Evo2LiteError(f"cannot write {path}: the folder {folder} does not exist")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` (same suffix); rename it onto `path` if the block succeeds,
    delete it otherwise."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise Evo2LiteError(f"cannot write {path}: the folder {path.parent} does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes[-1:]),
                                dir=path.parent or ".")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600; give the result the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory beside `directory` (its parents made); if the block succeeds it replaces
    `directory`, otherwise it is deleted and `directory` is left as it was."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def spool_stdin(suffix: str = ".fa") -> Path:
    """Copy stdin to a temporary file (the readers detect the format and compression from the first
    bytes, so they need a seekable file); the caller deletes it."""
    tmp = tempfile.NamedTemporaryFile(prefix="evo2lite-stdin-", suffix=suffix, delete=False)
    with tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp, length=1 << 20)
    return Path(tmp.name)


@contextlib.contextmanager
def input_path(path: str | os.PathLike) -> Iterator[Path]:
    """The input file to read: `path` itself, or for `-` stdin spooled to a temporary file that is deleted
    afterwards."""
    if str(path) != "-":
        yield Path(path)
        return
    spooled = spool_stdin()
    try:
        yield spooled
    finally:
        spooled.unlink(missing_ok=True)
