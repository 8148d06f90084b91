"""Write files and folders so an interrupted run never leaves a half-written one behind.

Everything is written under a temporary name in the same folder and then renamed with
``os.replace``, which is atomic on POSIX: a reader sees the old file or the new one, never a part.

The temporary file and folder are created with modes 0666 and 0777 and the kernel applies the
user's umask, as for any ``open()``/``mkdir``: outputs get 0644/0755 under umask 022 and stay private
under 077. (``tempfile.mkstemp``/``mkdtemp`` would force 0600/0700. Creating with the mode, rather
than reading the umask and chmod-ing afterwards, needs no ``os.umask`` set-and-restore, which
briefly changes the umask of every thread, nor ``/proc``, and keeps a folder's default ACLs.)

:func:`write_folder` is the one way to write a whole output folder. It never deletes a file it did
not write: each kind of folder names its own entries (``ours``), and a folder that also holds
anything else is refused with a one-line :class:`~distill.errors.DistillError`, or merged into
(``keep_others=True``: the other files stay where they are). A temporary folder left by a killed
writer of the same target is removed when that target is next written.
"""
from __future__ import annotations

import contextlib
import filecmp
import fnmatch
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from distill.errors import DistillError

_T = TypeVar("_T")
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_beside(path: Path, create: Callable[[Path], _T]) -> tuple[Path, _T]:
    """Create a fresh ``.NAME.<pid>-<random>.tmp`` beside ``path`` with ``create``; retry on a name clash.

    The pid tells a later writer whether the temporary is still being written (see :func:`_remove_stale`)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
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
    made = _make_parents(path.parent)
    try:
        tmp, fd = _create_beside(path, lambda name: os.open(name, _FILE_FLAGS, 0o666))
    except BaseException:
        _remove_if_empty(made)
        raise
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
        _remove_if_empty(made)
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


_FIX = "move them elsewhere or give an empty or new folder"
_TEMP = r"(?:(?P<pid>\d+)-)?[0-9a-f]{8}\.tmp"  # what _create_beside appends (without the pid before this version)


def not_a_folder(path: str | os.PathLike) -> str | None:
    """Why ``path`` can never be a folder to write into (it, or a folder above it, is a file, or the
    file system refuses the name); None when it can be."""
    path = Path(path)
    try:
        for where in (path, *path.parents):
            if where.is_dir():
                return None
            if where.exists():
                return f"{path} exists and is not a folder" if where == path else f"{where} is a file, so {path} cannot be a folder"
    except OSError as err:  # a name longer than the file system allows, say
        return f"{path} cannot be a folder here ({err.strerror})"
    return None


def check_folder(path: str | os.PathLike, ours: Iterable[str], *, fix: str = _FIX, record: str | None = None) -> None:
    """DistillError naming ``path``, its entries that ``ours`` (fnmatch patterns) does not cover, and
    ``fix``; nothing when ``path`` is missing or holds only our entries. Call it before expensive
    work whose output :func:`write_folder` will put there."""
    path = Path(path)
    if problem := not_a_folder(path):
        raise DistillError(f"{problem}; give a folder path")
    others = _foreign(path, _owner(path, tuple(ours), record))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise DistillError(f"{path}: holds other files, not written by distill ({shown}); {fix}")


@contextlib.contextmanager
def write_folder(
    path: str | os.PathLike,
    ours: Iterable[str],
    *,
    keep_others: bool = False,
    last: str | None = None,
    record: str | None = None,
    fix: str = _FIX,
) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; when the block succeeds it becomes ``path``.

    ``ours``: fnmatch patterns of the entries this kind of folder holds (``"config.json"``,
    ``"*.safetensors"``, ``"checkpoints"``). An existing ``path`` that holds only such entries is
    replaced whole (atomically: the old folder is renamed away, the new one in, the old removed). One
    that holds anything else is refused before the block runs and again before the swap
    (:func:`check_folder`); with ``keep_others`` it is merged into instead: the new entries move in,
    our old entries that were not rewritten go, the other files stay, and an entry of the same name
    that is not ours is never replaced unless its bytes are the same. ``last`` (``distill.json``, a
    manifest) is removed first and moved in last, so the folder counts as finished only when
    complete. ``record``: a JSON file in the folder listing the entries it was written with, which
    then count as ours too (for folders whose entries have no fixed names).

    Files and folders get the modes of a plain ``open()``/``mkdir`` under the user's umask, whatever
    the writer in the block used (safetensors forces 0600). Parent folders that the call made are
    removed again when it fails, and stale temporaries of ``path`` left by killed writers are removed.
    """
    path = Path(path)
    patterns = tuple(ours)
    if keep_others:
        check_folder(path, ["*"])  # only "not a folder"
    else:
        check_folder(path, patterns, fix=fix, record=record)
    made = _make_parents(path.parent)
    try:
        _remove_stale(path)
        tmp, _ = _create_beside(path, lambda name: os.mkdir(name, 0o777))
    except BaseException:
        _remove_if_empty(made)
        raise
    try:
        yield tmp
        _follow_umask(tmp)
        if not keep_others:
            check_folder(path, patterns, fix=fix, record=record)  # a file may have appeared meanwhile
        owned = _owner(path, patterns, record)
        if record:
            atomic_write_json(tmp / record, sorted(os.listdir(tmp)))
        if _foreign(path, owned) or path.is_symlink():  # a link is written through, not replaced
            _merge(tmp, path, owned, last, record)
        else:
            _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_empty(made)
        raise


def _owner(path: Path, patterns: tuple[str, ...], record: str | None) -> Callable[[str], bool]:
    """``name -> is it ours?``: our patterns, the names ``record`` lists, and temporaries of either."""
    recorded = set(_recorded(path, record))

    def owned(name: str) -> bool:
        temp = re.fullmatch(r"\.(.+)\." + _TEMP, name)  # a killed atomic_write of one of ours
        name = temp.group(1) if temp else name
        return name == record or name in recorded or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    return owned


def _recorded(path: Path, record: str | None) -> list[str]:
    if record is None:
        return []
    try:
        names = json.loads((path / record).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and os.sep not in n]


def _foreign(path: Path, owned: Callable[[str], bool]) -> list[str]:
    return sorted(name for name in os.listdir(path) if not owned(name)) if path.is_dir() else []


def _swap(tmp: Path, path: Path) -> None:
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def _merge(tmp: Path, path: Path, owned: Callable[[str], bool], last: str | None, record: str | None) -> None:
    """Move ``tmp``'s entries into ``path``; drop our old entries that were not rewritten; keep the rest."""
    new = sorted(os.listdir(tmp))
    for name in new:
        target = path / name
        if (target.exists() or target.is_symlink()) and not owned(name) and not _same_bytes(tmp / name, target):
            raise DistillError(f"{target}: not written by distill, and this run would replace it; move it elsewhere or give an empty or new folder")
    if record:  # until the moves are done, the new entries are ours too
        atomic_write_json(path / record, sorted(set(_recorded(path, record)) | set(new)))
    if last:
        (path / last).unlink(missing_ok=True)
    final = [name for name in (last, record) if name in new]
    for name in [n for n in new if n not in final]:
        _move(tmp / name, path / name)
    for name in os.listdir(path):
        if owned(name) and name not in new:
            _remove(path / name)
    for name in final:
        _move(tmp / name, path / name)
    os.rmdir(tmp)


def _move(source: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink() or source.is_dir():
        _remove(target)  # os.replace moves a folder only onto an empty one, and a file not onto a folder
    os.replace(source, target)


def _same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and not b.is_symlink() and filecmp.cmp(a, b, shallow=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_stale(path: Path) -> None:
    """Remove ``.NAME.<pid>-<random>.tmp`` and ``.NAME.old`` beside ``path`` whose writer is gone."""
    stale = re.compile(re.escape(f".{path.name}.") + rf"(?:{_TEMP}|old)")
    for entry in os.scandir(path.parent):
        match = stale.fullmatch(entry.name)
        if match and not (match["pid"] and _alive(int(match["pid"]))):
            _remove(Path(entry.path))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a temporary of another machine's writer on a
    shared disk is taken for stale)."""
    if os.name != "posix" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _make_parents(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents like ``mkdir`` does; return the ones made, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made = []
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        made.append(path)
    return made


def _remove_if_empty(folders: list[Path]) -> None:
    for path in reversed(folders):
        try:
            os.rmdir(path)
        except OSError:
            return


def _follow_umask(folder: Path) -> None:
    """Give everything under ``folder`` the mode that ``open()``/``mkdir`` give under the umask:
    ``folder``'s own (made with 0777) for folders, that of a probe file made with 0666 for files."""
    dir_mode = stat.S_IMODE(os.stat(folder).st_mode)
    probe, fd = _create_beside(folder / "mode", lambda name: os.open(name, _FILE_FLAGS, 0o666))
    os.close(fd)
    file_mode = stat.S_IMODE(os.stat(probe).st_mode)
    os.unlink(probe)
    for root, dirs, files in os.walk(folder):
        for name, wanted in [(d, dir_mode) for d in dirs] + [(f, file_mode) for f in files]:
            entry = os.path.join(root, name)
            info = os.lstat(entry)
            if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) != wanted:
                os.chmod(entry, wanted)
