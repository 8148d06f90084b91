"""Write files and folders so an interrupted run never leaves a half-written one behind.

Everything is written under a temporary name in the same folder and then renamed with
``os.replace``, which is atomic on POSIX: a reader sees the old file or the new one, never a part.

The temporary file and folder are created with modes 0666 and 0777 and the kernel applies the
user's umask, as for any ``open()``/``mkdir``: outputs get 0644/0755 under umask 022 and stay private
under 077. (``tempfile.mkstemp``/``mkdtemp`` would force 0600/0700. Creating with the mode, rather
than reading the umask and chmod-ing afterwards, needs no ``os.umask`` set-and-restore, which
briefly changes the umask of every thread, nor ``/proc``, and keeps a folder's default ACLs.)
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

_T = TypeVar("_T")
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_beside(path: Path, create: Callable[[Path], _T]) -> tuple[Path, _T]:
    """Create a fresh ``.NAME.<random>.tmp`` beside ``path`` with ``create``; retry on a name clash."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, create(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: could not find a free temporary name for {path.name}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it.

    The file gets mode ``0666 & ~umask``, like one made by ``open(path, "w")``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_beside(path, lambda name: os.open(name, _FILE_FLAGS, 0o666))
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` when the block succeeds.

    An existing ``path`` is replaced only after the new folder is complete. Use it for outputs
    that later stages trust as finished (model folders, split folders). The folder gets mode
    ``0777 & ~umask``, like one made by ``mkdir``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, _ = _create_beside(path, lambda name: os.mkdir(name, 0o777))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
