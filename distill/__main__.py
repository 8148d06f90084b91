"""``python -m distill run RECIPE [key=value ...] [--force] [--from STAGE]``: the whole pipeline.

    python -m distill run recipes/tiny.yaml
    python -m distill run recipes/tiny.yaml student.alpha=0.7 output_dir=models/tiny-a07
    python -m distill run recipes/tiny.yaml --from student     # retrain the student, then evaluate again

The stages, in order; each reads the previous ones' files under the recipe's ``output_dir`` and is
the same as its own command:

    1 corpus     corpus/{train,val,test}.txt, manifest.json   python -m distill.corpus all --recipe RECIPE
    2 tokenizer  tokenizer/                                   python -m distill.tokenizer RECIPE
    3 teachers   teachers/<name>/                             accelerate launch -m distill.teacher RECIPE
    4 student    student/ (and baseline/)                     accelerate launch -m distill.student RECIPE
    5 evaluate   report/report.{json,md}, report/plots/       python -m distill.evaluate RECIPE
    6 samples    report/samples.md (three samples)            python -m distill.generate MODEL_DIR PROMPT

A stage whose outputs are complete is skipped. Outputs that are out of date are redone, as the
stage commands do it, and the log says why (:func:`distill.artifacts.why_stale`): a corpus built with other budgets, seed or facts, a tokenizer trained on
another train split or with another vocabulary size, a model trained with another tokenizer, other
teachers or other settings in its recipe section; the report and the samples whenever a model or
their settings change (``run.json`` in ``output_dir`` records what they were made from). So give
a run with other settings its own ``output_dir=...`` to keep the first one. Training that stopped
with a checkpoint (SIGTERM, exit code 143) continues with ``--resume``. ``--from STAGE`` redoes
STAGE and every later one; ``--force`` redoes everything. The run stops at the first failing stage
and exits with its code. While one run works in an output folder (this command or any stage's), a
second one there stops at once.

Every stage runs in this one process, through the stage modules' ``run`` functions, with one
Accelerate state (one process group, one mixed precision for every model): right for a CPU or one
GPU. With several GPUs run the training stages yourself, e.g. ``accelerate launch
--multi_gpu --num_processes 4 -m distill.teacher RECIPE`` (and ``-m distill.student``), then this
command to do the rest; it skips what is done.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from distill import evaluate, samples, student, teacher, tokenizer
from distill.artifacts import NOT_MADE, why_stale
from distill.checkpoints import latest_checkpoint
from distill.cli import ArgumentParser
from distill.corpus import build
from distill.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, DistillError, TrainingInterrupted, cli_entry
from distill.folder_lock import folder_lock
from distill.recipe import Recipe, load_recipe

STAGES = ("corpus", "tokenizer", "teachers", "student", "evaluate", "samples")

STAGE_COMMANDS = """stage commands (each also runs on its own; see its --help):
  python -m distill.corpus {scrape,convert,combine,clean,split,all}   build the corpus splits
  python -m distill.tokenizer RECIPE                                  train the BPE tokenizer
  accelerate launch -m distill.teacher RECIPE                         train the teachers
  accelerate launch -m distill.student RECIPE                         distill the student (and the baseline)
  python -m distill.evaluate RECIPE                                   report.json, report.md, plots
  python -m distill.generate MODEL_DIR "London was"                   text from a trained model
  python -m distill.serve RECIPE                                      a local web page to try the models"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m distill",
        description="Train small language models by knowledge distillation, from raw encyclopedia text.",
        epilog=STAGE_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run}", parser_class=ArgumentParser)
    run = sub.add_parser(
        "run",
        help="the whole pipeline on a recipe: corpus, tokenizer, teachers, student, evaluate, samples",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    run.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="recipe overrides, e.g. student.alpha=0.7")
    run.add_argument("--force", action="store_true", help="redo every stage, even those whose outputs are complete")
    run.add_argument("--from", dest="start", choices=STAGES, metavar="STAGE",
                     help=f"redo STAGE and every later one ({', '.join(STAGES)}); earlier ones run only when not up to date")
    return parser


def _duration(seconds: float) -> str:
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
    with folder_lock(recipe.paths.root):
        return _run_stages(recipe, force=force, start=start)


def _run_stage(recipe: Recipe, stage: str, label: str, forced: bool) -> int:
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
        print(f"{label} ... failed (exit code {EXIT_USER_ERROR}) after {_duration(time.monotonic() - began)}", flush=True)
        return EXIT_USER_ERROR
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr, flush=True)
        print(f"{label} ... stopped after {_duration(time.monotonic() - began)}; a checkpoint was saved: "
              "rerun the same command to resume", flush=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"\n{label} ... interrupted after {_duration(time.monotonic() - began)}; rerun the same command to go on", flush=True)
        return 130
    print(f"{label} ... done in {_duration(time.monotonic() - began)}", flush=True)
    return 0


def _run_stages(recipe: Recipe, *, force: bool, start: str | None) -> int:
    first_forced = 0 if force else (STAGES.index(start) if start else len(STAGES))
    started = time.monotonic()
    for index, stage in enumerate(STAGES):
        code = _run_stage(recipe, stage, f"[{index + 1}/{len(STAGES)}] {stage}", index >= first_forced)
        if code:
            return code
    print(f"pipeline finished in {_duration(time.monotonic() - started)}: {recipe.paths.root}", flush=True)
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.force and args.start:
        raise DistillError("--force and --from: give one (--force redoes every stage, --from STAGE redoes STAGE and later ones)")
    return run_pipeline(load_recipe(args.recipe, args.overrides), force=args.force, start=args.start)


if __name__ == "__main__":
    raise SystemExit(main())
