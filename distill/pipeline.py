"""The pipeline's stages, checked and run one by one: shared by ``python -m distill run`` and ``sweep``.

:func:`check` says whether a stage's outputs are current (:func:`distill.artifacts.why_stale`) and
:func:`run_stage` runs one stage when they are not, printing one progress line and turning the
stage's errors into exit codes (2 for a user error, 143 for a stop with a checkpoint, 130 for Ctrl-C).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from distill import evaluate, generation_eval, samples, student, teacher, tokenizer
from distill.artifacts import NOT_MADE, why_stale
from distill.checkpoints import latest_checkpoint
from distill.corpus import build
from distill.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, DistillError, TrainingInterrupted
from distill.folder_lock import folder_lock
from distill.recipe import Recipe

STAGES = ("corpus", "tokenizer", "teachers", "student", "evaluate", "samples")


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Check:
    done: bool  # outputs complete and made from the current inputs with the recipe's settings
    resume: bool = False  # an unfinished training run left a checkpoint
    why: str | None = None  # why existing outputs are redone


def _models_check(recipe: Recipe, outputs: dict[str, tuple[str, str | None, Path]]) -> Check:
    """Done when every model folder is current; resume when an unfinished one left a checkpoint."""
    pending, resume, why = [], False, []
    for label, (stage, name, folder) in outputs.items():
        reason = why_stale(recipe, stage, name)
        if reason is None:
            continue
        pending.append(label)
        if reason == NOT_MADE:
            resume = resume or latest_checkpoint(folder) is not None
        else:
            why.append(f"{label}: {reason}")
    return Check(done=not pending, resume=resume, why="; ".join(why) or None)


def check(recipe: Recipe, stage: str) -> Check:
    """Whether ``stage`` is done for ``recipe``, and if not, why (:func:`distill.artifacts.why_stale`)."""
    paths = recipe.paths
    if stage == "teachers":
        return _models_check(recipe, {t.name: ("teacher", t.name, paths.teacher(t.name)) for t in recipe.teachers})
    if stage == "student":
        runs = {"student": ("student", None, paths.student)}
        if recipe.student.baseline:
            runs["baseline"] = ("baseline", None, paths.baseline)
        return _models_check(recipe, runs)
    reason = why_stale(recipe, stage)
    return Check(done=reason is None, why=None if reason in (None, NOT_MADE) else reason)


RUNS: dict[str, Callable[..., object]] = {
    "corpus": build.run, "tokenizer": tokenizer.run, "teachers": teacher.run,
    "student": student.run, "evaluate": evaluate.run, "samples": samples.run,
}


def check_one_precision(recipe: Recipe) -> None:
    """One process holds one Accelerate state, so every model of a pipeline run shares one mixed precision."""
    sections = {f"teachers[{i}]": t.training for i, t in enumerate(recipe.teachers)} | {"student": recipe.student.training}
    values = {key: cfg.mixed_precision for key, cfg in sections.items()}
    if len(set(values.values())) > 1:
        shown = ", ".join(f"{key}.training.mixed_precision={value}" for key, value in values.items())
        raise DistillError(f"{shown}: python -m distill run trains every model in one process, so they need one value; "
                           "give them the same one, or run the teacher and student stages with their own commands")


def run_pipeline(recipe: Recipe, *, force: bool = False, start: str | None = None) -> int:
    """Run every stage that is not complete; return 0, or the exit code of the first failing stage."""
    check_one_precision(recipe)
    generation_eval.check_recipe_judge(recipe)
    with folder_lock(recipe.paths.root):
        return _run_stages(recipe, force=force, start=start)


def run_stage(recipe: Recipe, stage: str, label: str, forced: bool) -> int:
    """Check and, when needed, run one stage; print its progress line; return its exit code."""
    try:
        state = Check(done=False) if forced else check(recipe, stage)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        print(f"{label} ... failed (exit code {EXIT_USER_ERROR})", flush=True)
        return EXIT_USER_ERROR
    if state.done:
        print(f"{label} ... skipped (already done)", flush=True)
        return 0
    notes = ["--force"] if forced else []
    notes += ["--resume: continuing from a checkpoint"] if state.resume and not forced else []
    notes += [f"out of date: {state.why}"] if state.why and not forced else []
    detail = f" ({'; '.join(notes)})" if notes else ""
    print(f"{label} ... running{detail}", flush=True)
    began = time.monotonic()
    try:
        RUNS[stage](recipe, force=forced, resume=state.resume and not forced)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        print(f"{label} ... failed (exit code {EXIT_USER_ERROR}) after {duration(time.monotonic() - began)}", flush=True)
        return EXIT_USER_ERROR
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr, flush=True)
        print(f"{label} ... stopped after {duration(time.monotonic() - began)}; a checkpoint was saved: "
              "rerun the same command to resume", flush=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"\n{label} ... interrupted after {duration(time.monotonic() - began)}; rerun the same command to go on", flush=True)
        return 130
    print(f"{label} ... done in {duration(time.monotonic() - began)}", flush=True)
    return 0


def _run_stages(recipe: Recipe, *, force: bool, start: str | None) -> int:
    first_forced = 0 if force else (STAGES.index(start) if start else len(STAGES))
    started = time.monotonic()
    for index, stage in enumerate(STAGES):
        code = run_stage(recipe, stage, f"[{index + 1}/{len(STAGES)}] {stage}", index >= first_forced)
        if code:
            return code
    print(f"pipeline finished in {duration(time.monotonic() - started)}: {recipe.paths.root}", flush=True)
    return 0
