"""``python -m distill sweep RECIPE student.KEY=V1,V2 ... --seeds 0 1 2``: a grid of student settings over seeds.

    python -m distill sweep recipes/tiny.yaml student.alpha=0.1,0.5,0.9 --seeds 0 1 2
    python -m distill sweep recipes/tiny.yaml student.alpha=0,0.5 student.temperature=1,2 --out models/tiny/report/kd
    python -m distill sweep recipes/tiny.yaml student.teacher_weights=null,[1,0] student.logit_cache.enabled=true

Each ``key=v1,v2,...`` (commas inside ``[...]`` belong to one value) is one axis of the grid; a
``key=value`` without a top-level comma is applied to every variant, like an override of ``run``.
Swept keys are student settings (``student.*``): the corpus, the tokenizer and the teachers are
made once, by the pipeline's own stages under the recipe's ``output_dir``, and every variant
shares them. Each variant and seed (``student.training.seed``: initial weights and data order)
trains its student in ``{output_dir}/sweep/runs/v-<hash>/seed-<s>/student``; the no-distillation
baseline is trained once per seed and per distinct baseline (a sweep over KD settings such as
alpha or temperature has one), in ``sweep/runs/baseline-<hash>/seed-<s>/baseline``. With
``student.logit_cache.enabled: true`` the variants that share the cache's settings (temperature,
ensemble, weights, method, k or samples) share one cache in ``sweep/teacher_logits/<hash>``.

A variant's folder is named by a hash of the student section that trains it (``variant.json`` in it
says which settings), so a later sweep, or a benchmark, with an overlapping grid reuses the
variants it shares. Every finished model is evaluated once (perplexity
on the recipe's ``evaluate.splits``, BLiMP when ``evaluate.blimp_dir`` is set; the result is kept
next to the model, keyed by its ``distill.json``), so a rerun skips finished variants and an
interrupted sweep (Ctrl-C saves a checkpoint) resumes where it stopped: run the same command again.

The summary (:mod:`distill.sweep_report`) goes to ``--out`` (default ``{output_dir}/report``):
``sweep.md`` (per variant: mean and 95% interval over seeds of val/test perplexity, BLiMP,
student/baseline perplexity ratio and training time), ``sweep.json`` and ``plots/sweep_*.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from distill import generation_eval, student as student_stage
from distill.artifacts import file_sha256, is_finished, json_sha256, read_info, trained_by, why_stale
from distill.atomic import atomic_write_json
from distill.cli import add_peak_option
from distill.checkpoints import latest_checkpoint
from distill.errors import DistillError, TrainingInterrupted
from distill.evaluate import evaluate_models
from distill.folder_lock import folder_lock
from distill.pipeline import check_one_precision, run_stage
from distill.recipe import Recipe, load_recipe
from distill.sweep_report import write_sweep_report

SHARED_STAGES = ("corpus", "tokenizer", "teachers")
# keys that are not axes: the seed comes from --seeds, the folders from the variant
_RESERVED = ("student.training.seed", "student.baseline", "student.logit_cache.dir", "student.name", "output_dir")
_CACHE_KEYS = ("temperature", "ensemble", "teacher_weights", "facts_in_train")
RESULT_FILE = "eval.json"


def split_values(text: str) -> list[str]:
    """``"0.1,0.5"`` -> ``["0.1", "0.5"]``; commas inside brackets stay: ``"null,[1,0]"`` -> ``["null", "[1,0]"]``."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``key=value`` strings -> (overrides for every variant, ``{swept key: values}`` in the given order)."""
    fixed, axes = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DistillError(f"{item}: expected key=value or key=v1,v2,... (e.g. student.alpha=0.1,0.5,0.9)")
        values = split_values(value)
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
            continue
        if not key.startswith("student.") or key in _RESERVED:
            why = "give seeds with --seeds" if key == "student.training.seed" else "a sweep shares the corpus, tokenizer and teachers, so only student.* keys vary"
            raise DistillError(f"{item}: {key} cannot be swept ({why}); run another recipe or output_dir for the rest")
        if key in axes:
            raise DistillError(f"{item}: {key} is swept twice; give all its values in one key=v1,v2,...")
        if "" in values or len(set(values)) != len(values):
            raise DistillError(f"{item}: {key} needs distinct, non-empty values separated by commas")
        axes[key] = values
    for item in fixed:
        if item.split("=", 1)[0] == "student.training.seed":
            raise DistillError(f"{item}: the sweep sets student.training.seed itself; give seeds with --seeds")
    return fixed, axes


@dataclass
class Variant:
    """One point of the grid: ``{swept key: value}`` (strings, as given on the command line)."""

    settings: dict[str, str]

    @property
    def label(self) -> str:
        return ", ".join(f"{key.removeprefix('student.')}={value}" for key, value in self.settings.items()) or "recipe"

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.settings.items()]


@dataclass
class Job:
    """Train and evaluate one model: a variant's student, or a seed's baseline."""

    role: str  # "student" or "baseline"
    seed: int
    recipe: Recipe
    variant: Variant | None = None
    label: str = ""
    baseline: Path | None = None  # the folder of the baseline a student is compared with (same seed)

    @property
    def folder(self) -> Path:
        return self.recipe.paths.student if self.role == "student" else self.recipe.paths.baseline


@dataclass
class Sweep:
    base: Recipe
    axes: dict[str, list[str]]
    seeds: list[int]
    variants: list[Variant]
    jobs: list[Job] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.base.paths.root / "sweep"


def _trained_by(section: dict) -> dict:
    """What names a variant's folder: the student section that trains it, but its seed (:func:`trained_by`)."""
    section = trained_by(section)
    section["training"].pop("seed", None)
    return section


def _variant_recipe(recipe_path: str | Path, fixed: list[str], variant: Variant, seed: int, root: Path) -> Recipe:
    """The variant's recipe for one seed: its own output folder, the shared inputs, the seed."""
    probe = load_recipe(recipe_path, [*fixed, *variant.overrides])
    section = probe.student.to_dict()
    name = f"v-{json_sha256(_trained_by(section))[:8]}"  # the same training is the same folder, whatever the grid
    overrides = [*fixed, *variant.overrides, f"student.training.seed={seed}", "student.baseline=false",
                 f"output_dir={root / 'runs' / name / f'seed-{seed}'}"]
    cache = probe.student.logit_cache
    if cache.enabled and cache.dir is None:
        keys = {key: section[key] for key in _CACHE_KEYS} | {k: v for k, v in section["logit_cache"].items() if k not in ("dir", "enabled")}
        overrides.append(f"student.logit_cache.dir={root / 'teacher_logits' / json_sha256(keys)[:12]}")
    recipe = load_recipe(recipe_path, overrides)
    return dataclasses.replace(recipe, inputs_dir=probe.paths.inputs)


def _baseline_recipe(variant_recipe: Recipe, recipe_path, fixed: list[str], variant: Variant, seed: int, root: Path) -> Recipe:
    """The baseline of a variant's recipe for one seed, in a folder shared by every variant with the same one."""
    key = _trained_by(variant_recipe.student.as_baseline().to_dict())  # alpha 1: no KD-only keys (trained_by)
    folder = root / "runs" / f"baseline-{json_sha256(key)[:8]}" / f"seed-{seed}"
    recipe = load_recipe(recipe_path, [*fixed, *variant.overrides, f"student.training.seed={seed}", f"output_dir={folder}"])
    return dataclasses.replace(recipe, inputs_dir=variant_recipe.inputs_dir)


def plan(recipe_path: str | Path, overrides: Sequence[str], seeds: Sequence[int],
         variants: Sequence[dict[str, str]] | None = None) -> Sweep:
    """The grid and its jobs, seed by seed (so an early stop has every variant at the first seeds).

    ``variants`` (``[{key: value}, ...]``) replaces the grid's product by an explicit list, for
    comparisons that are not a grid (e.g. live teachers, top-k at several k, sampled at several N).
    """
    fixed, axes = parse_grid(overrides)
    if variants is not None:
        if axes:
            raise DistillError(f"give either swept keys ({', '.join(axes)}) or a list of variants, not both")
        axes = {key: list(dict.fromkeys(v[key] for v in variants if key in v)) for key in dict.fromkeys(k for v in variants for k in v)}
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise DistillError(f"--seeds {' '.join(map(str, seeds))}: give distinct seeds of 0 or more, e.g. --seeds 0 1 2")
    base = load_recipe(recipe_path, fixed)
    check_one_precision(base)
    generation_eval.check_recipe_judge(base)
    grid = [Variant(dict(zip(axes, values))) for values in product(*axes.values())]
    sweep = Sweep(base, axes, list(seeds), grid if variants is None else [Variant(dict(v)) for v in variants])
    seen: set[Path] = set()
    for seed in seeds:
        for variant in sweep.variants:
            recipe = _variant_recipe(recipe_path, fixed, variant, seed, sweep.root)
            baseline = _baseline_recipe(recipe, recipe_path, fixed, variant, seed, sweep.root) if base.student.baseline else None
            if baseline is not None and baseline.paths.baseline not in seen:
                seen.add(baseline.paths.baseline)
                sweep.jobs.append(Job("baseline", seed, baseline, None, f"baseline, seed {seed}"))
            job = Job("student", seed, recipe, variant, f"{variant.label}, seed {seed}")
            if baseline is not None:
                job.baseline = baseline.paths.baseline
                if not recipe.student.uses_teachers:  # alpha = 1 is the baseline itself: its folder, trained once
                    job = dataclasses.replace(job, role="baseline", recipe=baseline)
            sweep.jobs.append(job)
    return sweep


def _eval_plan(recipe: Recipe, judge: Path | None) -> dict[str, Any]:
    """How every model of the sweep is scored: the recipe's splits, BLiMP and generation settings;
    the texts are judged by ``judge`` (the best teacher) unless the recipe names a judge."""
    evaluate = recipe.evaluate
    generation = generation_eval.plan_from_recipe(recipe)
    if generation is not None and generation.judge is None and judge is not None:
        generation = dataclasses.replace(generation, judge=judge)
    return {"splits": {name: recipe.paths.split(name) for name in evaluate.splits},
            "blimp_dir": evaluate.blimp_dir, "seq_len": recipe.data.seq_len, "generation": generation}


def evaluated(models: dict[str, Path], recipe: Recipe, out_dir: Path, judge: Path | None = None) -> dict[str, dict]:
    """The evaluation entries of finished models, from ``out_dir/eval.json`` when made from the same
    ``distill.json`` files and settings, else computed (:func:`distill.evaluate.evaluate_models`,
    which also writes its report.md there) and kept."""
    settings = _eval_plan(recipe, judge)
    files = [*(folder / "distill.json" for folder in models.values()), *settings["splits"].values()]
    files += [Path(settings["generation"].judge) / "distill.json"] if settings["generation"] and settings["generation"].judge else []
    key = json_sha256({"files": [file_sha256(path) if path.is_file() else None for path in files], "settings": settings})
    path = out_dir / RESULT_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None  # not made yet, or cut short: evaluate again
    if isinstance(saved, dict) and saved.get("key") == key:
        return saved["entries"]
    report = evaluate_models(models, out_dir=out_dir, log=lambda message: None, **settings)
    atomic_write_json(path, {"key": key, "models": {name: str(folder) for name, folder in models.items()}, "entries": report["models"]})
    return report["models"]


def _train(job: Job) -> None:
    """Train the job's model unless its folder is current; an unfinished run continues from its checkpoint."""
    folder = job.folder
    if why_stale(job.recipe, job.role) is None:
        return
    resume = latest_checkpoint(folder) is not None and not is_finished(folder)
    student_stage.run(job.recipe, only=job.role, resume=resume)


def _note_variant(job: Job) -> None:
    """``variant.json`` beside a variant's seed folders: which settings made them (written when it changes)."""
    path = job.folder.parent.parent / "variant.json"
    note = {"settings": job.variant.settings, "student": job.recipe.student.to_dict()}
    try:
        if json.loads(path.read_text(encoding="utf-8")) == note:
            return
    except (OSError, ValueError):
        pass
    atomic_write_json(path, note)


def run_job(job: Job, judge: Path | None = None) -> dict:
    """Train (when needed) and evaluate one job (``judge`` scores its text); its result row for the report."""
    _train(job)
    if job.variant is not None:
        _note_variant(job)
    entry = evaluated({job.role: job.folder}, job.recipe, job.folder.parent / f"{job.role}-report", judge)[job.role]
    info = read_info(job.folder)
    return {"role": job.role, "seed": job.seed, "variant": job.variant.settings if job.variant else None,
            "folder": str(job.folder), "baseline": str(job.baseline) if job.baseline else None, "entry": entry, "wall_time_s": (info.metrics or {}).get("wall_time_s") if info else None}


def _shared_stages(base: Recipe) -> int:
    """Corpus, tokenizer and teachers of the base recipe, as ``python -m distill run`` makes them."""
    for index, stage in enumerate(SHARED_STAGES):
        code = run_stage(base, stage, f"[{index + 1}/{len(SHARED_STAGES)}] {stage}", False)
        if code:
            return code
    return 0


def _teachers(base: Recipe) -> tuple[dict[str, dict], Path | None]:
    """The teachers' evaluation (one report, in ``sweep/teachers``) and the judge of generated text."""
    paths = base.paths
    entries = evaluated({t.name: paths.teacher(t.name) for t in base.teachers}, base, paths.root / "sweep" / "teachers")
    judge = base.evaluate.generation.judge
    return entries, Path(judge) if judge else generation_eval.pick_judge(entries)[1]


def execute(sweep: Sweep) -> tuple[list[dict], dict[str, dict]] | int:
    """Make the shared stages, then train and evaluate every job not yet done: ``(rows, teachers)``,
    or the exit code of a failed shared stage (130 after Ctrl-C)."""
    print(f"sweep: {len(sweep.variants)} variants x {len(sweep.seeds)} seeds = {len(sweep.jobs)} models to train and "
          f"evaluate (skipping finished ones) under {sweep.root}", flush=True)
    code = _shared_stages(sweep.base)
    if code:
        return code
    with folder_lock(sweep.root):
        teachers, judge = _teachers(sweep.base)
        rows = _run_jobs(sweep, judge)
    return 130 if rows is None else (rows, teachers)


def run_sweep(recipe_path: str | Path, overrides: Sequence[str], seeds: Sequence[int], *, out_dir: str | Path | None = None,
              command: str | None = None) -> int:
    """Plan, train and evaluate every job not yet done, then write the report; the exit code."""
    sweep = plan(recipe_path, overrides, seeds)
    out = Path(out_dir) if out_dir else sweep.base.paths.report
    started = time.monotonic()
    done = execute(sweep)
    if isinstance(done, int):
        return done
    rows, teachers = done
    command = command or _command(recipe_path, overrides, seeds)
    summary = write_sweep_report(sweep, rows, teachers, out, command=command, wall_s=time.monotonic() - started)
    print(summary, flush=True)
    print(f"\nsweep report: {out / 'sweep.md'}", flush=True)
    return 0


def _run_jobs(sweep: Sweep, judge: Path | None = None) -> list[dict] | None:
    rows = []
    bar = tqdm(sweep.jobs, desc="sweep", unit="model", dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.label)
        began = time.monotonic()
        try:
            rows.append(run_job(job, judge))
        except TrainingInterrupted as stop:
            bar.close()
            print(f"{stop}\nsweep: stopped at {job.label}; its checkpoint is kept: rerun the same command to resume", flush=True)
            raise
        except KeyboardInterrupt:
            bar.close()
            print(f"\nsweep: interrupted at {job.label}; rerun the same command to resume", flush=True)
            return None
        ppl = rows[-1]["entry"]["perplexity"]
        first = next(iter(ppl.values()), {}).get("ppl")
        bar.write(f"sweep: {job.label}: {job.role} val ppl {first:.2f} ({time.monotonic() - began:.0f}s)" if first else
                  f"sweep: {job.label}: done")
    bar.close()
    return rows


def _command(recipe_path, overrides: Sequence[str], seeds: Sequence[int]) -> str:
    return shlex.join(["python", "-m", "distill", "sweep", str(recipe_path), *overrides, "--seeds", *map(str, seeds)])


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``sweep`` subcommand of ``python -m distill``."""
    parser = sub.add_parser("sweep", help="train and compare students over a grid of settings and seeds",
                            description=__doc__.split("\n\n", 1)[1].replace("``", ""),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=v1,v2",
                        help="swept student keys (comma lists) and fixed recipe overrides")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED", help="student seeds (default: 0)")
    parser.add_argument("--out", metavar="DIR", help="where sweep.md, sweep.json and plots go (default {output_dir}/report)")
    add_peak_option(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    try:
        return run_sweep(args.recipe, args.overrides, args.seeds, out_dir=args.out)
    except TrainingInterrupted:
        return 143
    finally:
        sys.stdout.flush()
