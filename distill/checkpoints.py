"""Training checkpoints: where they live, how one is saved and checked, which to resume, and the graceful stop.

A run's checkpoints are ``out_dir/checkpoints/step-N/`` folders (what is in one:
:mod:`distill.checkpoint_state`). Each is written under a temporary name, gets its manifest
``checkpoint.json`` (every file's size and sha256) last, and is renamed, so a ``step-N`` folder is
complete when made; only the newest ``keep`` are kept. A resume checks the manifest before loading
anything and falls back to the newest intact checkpoint, naming each damaged one (a disk error, a
copy cut short, a file changed or missing). On resume ``metrics.jsonl`` is cut back to the
checkpoint's step.

No torch here: asking whether a folder holds a checkpoint must stay cheap.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any, Callable, Iterable

from distill.atomic import atomic_write_text
from distill.errors import DistillError

CHECKPOINTS = "checkpoints"  # the folder inside a model folder
STEP_DIR = re.compile(r"^step-(\d+)$")  # one complete checkpoint; ``.step-N.tmp`` is a half-written one
MANIFEST = "checkpoint.json"  # written last into a checkpoint: its step, and each file's size and sha256


def _step_folders(root: Path) -> list[tuple[int, Path]]:
    return [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete ``out_dir/checkpoints/step-N`` (half-written ones have a temp name)."""
    folder = Path(out_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = [(step, p) for step, p in _step_folders(folder) if p.is_dir()]
    return max(steps)[1] if steps else None


def save_checkpoint(accelerator, root: Path, step: int, keep: int, write: Callable[[Path], None]) -> Path:
    """``write(folder)`` into a temp folder, the manifest, then rename: a half-written checkpoint is never ``step-N``.

    Every process calls it and writes its part; only the main one writes the manifest, renames and
    drops the checkpoints older than the newest ``keep``.
    """
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_manifest(tmp, step)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = sorted((n, p) for n, p in _step_folders(root) if n < step)
        for _, path in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _write_manifest(folder: Path, step: int) -> None:
    from distill.artifacts import file_sha256  # artifacts imports this module

    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(folder.iterdir()) if p.is_file()}
    atomic_write_text(folder / MANIFEST, json.dumps({"step": step, "files": files}, indent=2) + "\n")


def checkpoint_problem(folder: Path, required: Iterable[str] = ()) -> str | None:
    """Why ``folder`` cannot be resumed from (no manifest, a file missing, cut short or changed since
    it was saved, a ``required`` file not in it), or None when it is intact."""
    from distill.artifacts import file_sha256  # artifacts imports this module

    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in manifest["files"].items()}
    except FileNotFoundError:
        return f"no {MANIFEST}: saved by an older version of distill, or not by distill"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is unreadable"
    for name in required:
        if name not in files:
            return f"{name} is not in {MANIFEST}"
    for name, (size, sha256) in files.items():
        path = folder / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when saved"
        if file_sha256(path) != sha256:
            return f"{name} changed since it was saved (sha256)"
    return None


def resume_checkpoint(out_dir: str | Path, required: Iterable[str], log: Callable[[str], None]) -> Path | None:
    """The newest intact checkpoint of ``out_dir`` (None when it has none); each damaged newer one is
    skipped with a line to ``log``. DistillError when there are checkpoints but none is intact:
    they stay, for the user to look at, until a run with ``--force`` starts over."""
    folder = Path(out_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    required = tuple(required)
    damaged = []
    for _, path in sorted(_step_folders(folder), reverse=True):
        if not path.is_dir():
            continue
        problem = checkpoint_problem(path, required)
        if problem is None:
            return path
        damaged.append(f"{path.name}: {problem}")
        log(f"warning: checkpoint {path} is damaged ({problem}); trying the one before it")
    if damaged:
        raise DistillError(f"{folder}: no intact checkpoint to resume from ({'; '.join(damaged)}); "
                           "start over with --force")
    return None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint being resumed, so the file reads as one run."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class StopSignal:
    """Turns the first SIGTERM/SIGINT into a flag; a second one acts as the default would.

    ``with StopSignal() as stop:`` then ``stop.signum`` is None until a signal arrives; the loop
    saves a checkpoint at the next step boundary and stops.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread: no handlers, no graceful stop
            pass
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
