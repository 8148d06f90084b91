"""One run at a time in a recipe's output folder: ``with folder_lock(root):``, or ``@locks_output_dir``
on a stage's ``run(recipe, ...)``.

Every stage that writes into a recipe's output folder (the pipeline, and each stage's ``run``) holds
an ``flock`` on ``output_dir/.run.lock`` while it works. A second run there, whatever its command,
stops at once with one line that names the folder and the run holding it, before touching anything.

* Re-entrant within a process: the pipeline holds the lock and calls the stages' ``run``, which ask
  for it again (an ``flock`` through a second descriptor of the same file would conflict).
* Under ``accelerate launch`` the processes of one launch are one run: the main process takes the
  lock and broadcasts whether it got it, so all of them go on or all stop. So every process enters
  the outermost ``folder_lock`` (each stage's ``run`` runs on every process).
* Nothing is written into the lock: the message names the holder from ``/proc/locks`` (Linux), so
  a rerun that finds everything done leaves every timestamp as it was. The kernel drops an ``flock``
  when its process dies, so a killed run leaves no stale lock.
* A run that made the output folder for its lock and then made nothing in it (it failed on its
  inputs) removes the lock and the folder again: a failed command leaves no trace.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from distill.errors import DistillError

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

LOCK_FILE = ".run.lock"
_held: set[Path] = set()  # folders this process holds the lock of

_Run = TypeVar("_Run", bound=Callable)


@contextlib.contextmanager
def folder_lock(root: str | Path) -> Iterator[None]:
    """Hold ``root/.run.lock`` (``root`` is created if missing); DistillError when another run holds it."""
    root = Path(root)
    key = root.resolve()
    if key in _held:  # the pipeline, or an outer stage, of this process holds it
        yield
        return
    made = [folder for folder in (root, *root.parents) if not folder.exists()]  # deepest first
    fd = _acquire(root)
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        if fd is not None:
            _release(root, fd, made)


def locks_output_dir(run: _Run) -> _Run:
    """Decorate a stage's ``run(recipe, ...)`` so that it holds ``recipe.paths.root``'s lock."""

    @functools.wraps(run)
    def locked(recipe, *args, **kwargs):
        with folder_lock(recipe.paths.root):
            return run(recipe, *args, **kwargs)

    return locked  # type: ignore[return-value]


def _acquire(root: Path) -> int | None:
    """The locked descriptor (None without ``fcntl``, and on the processes other than the main one)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world == 1:
        return _take(root)
    # Imported here: the corpus and tokenizer commands need neither torch nor accelerate.
    from accelerate.utils import broadcast_object_list

    from distill.distributed import distributed_state

    fd, refusal = None, None
    if distributed_state().is_main_process:
        try:
            fd = _take(root)
        except DistillError as err:
            refusal = str(err)
    refusal = broadcast_object_list([refusal])[0]
    if refusal:
        raise DistillError(refusal)
    return fd


def _take(root: Path) -> int | None:
    if fcntl is None:
        return None
    lock = root / LOCK_FILE
    while True:
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise DistillError(f"{lock}: cannot create the run lock ({err.strerror}); check the folder's permissions") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DistillError(f"{root}: another run is working in this folder{_holder(lock)}; wait for it to finish, "
                               "or give this run its own output_dir=...") from None
        except OSError as err:  # a file system without locks (some network mounts): go on, unguarded
            os.close(fd)
            print(f"warning: {lock}: cannot lock ({err.strerror}); nothing stops a second run in this folder", file=sys.stderr)
            return None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                return fd
        os.close(fd)  # the run before removed the file between our open and flock (see _release): again


def _release(root: Path, fd: int, made: list[Path]) -> None:
    """Drop the lock; when this run made ``root`` and nothing is in it but the lock, remove both (and
    the folders above it that it made). The file goes while still locked, so a run that opened it
    meanwhile sees it gone and takes a new one."""
    try:
        unused = bool(made) and [p.name for p in root.iterdir()] == [LOCK_FILE]
        if unused:
            (root / LOCK_FILE).unlink()
    except OSError:
        unused = False
    os.close(fd)
    if unused:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty (another run's by now): keep it and those above
                break


def _holder(lock: Path) -> str:
    """`` (COMMAND, pid N)`` of the process that holds ``lock``, from ``/proc/locks``; nothing elsewhere."""
    try:
        st = lock.stat()
        where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if where in fields and "->" not in fields:  # "->" marks a waiter, not the holder
                pid = fields[fields.index(where) - 1]
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
                if not argv:
                    return f" (pid {pid})"
                if "python" in Path(argv[0]).name:
                    argv[0] = "python"
                return f" ({' '.join(shlex.join(argv).split())}, pid {pid})"  # one line, whatever the arguments hold
    except (OSError, ValueError, IndexError):
        pass
    return ""
