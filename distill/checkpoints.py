"""Training checkpoints: where they live, how one is saved, which is newest, and the graceful stop.

A run's checkpoints are ``out_dir/checkpoints/step-N/`` folders written by ``accelerator.save_state``
(model, optimizer, RNG states and whatever was ``register_for_checkpointing``-ed). Each is written
under a temporary name and renamed, so a ``step-N`` folder is always complete; only the newest
``keep`` are kept. On resume ``metrics.jsonl`` is cut back to the checkpoint's step.

No torch here: asking whether a folder holds a checkpoint must stay cheap.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from distill.atomic import atomic_write_text

CHECKPOINTS = "checkpoints"  # the folder inside a model folder
STEP_DIR = re.compile(r"^step-(\d+)$")  # one complete checkpoint; ``.step-N.tmp`` is a half-written one


def _step_folders(root: Path) -> list[tuple[int, Path]]:
    return [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete ``out_dir/checkpoints/step-N`` (half-written ones have a temp name)."""
    folder = Path(out_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = [(step, p) for step, p in _step_folders(folder) if p.is_dir()]
    return max(steps)[1] if steps else None


def save_checkpoint(accelerator, root: Path, step: int, keep: int) -> Path:
    """``save_state`` into a temp folder, then rename: a half-written checkpoint is never ``step-N``.

    Every process calls it (``save_state`` is collective); only the main one renames and drops the
    checkpoints older than the newest ``keep``.
    """
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = sorted((n, p) for n, p in _step_folders(root) if n < step)
        for _, path in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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
