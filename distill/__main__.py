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
stage commands do it: a corpus built with other budgets, seed or facts, a tokenizer trained on
another train split or with another vocabulary size, a model trained with another tokenizer, other
teachers or other settings in its recipe section; the report and the samples whenever a model or
their settings change (``run.json`` in ``output_dir`` records what they were made from). So give
a run with other settings its own ``output_dir=...`` to keep the first one. Training that stopped
with a checkpoint (SIGTERM, exit code 143) continues with ``--resume``. ``--from STAGE`` redoes
STAGE and every later one; ``--force`` redoes everything. The run stops at the first failing stage
and exits with its code. While one run works in an output folder, a second one there stops at once.

Every stage runs in this one process, through the stage modules' ``main`` functions: right for a
CPU or one GPU. With several GPUs run the training stages yourself, e.g. ``accelerate launch
--multi_gpu --num_processes 4 -m distill.teacher RECIPE`` (and ``-m distill.student``), then this
command to do the rest; it skips what is done.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from distill.atomic import atomic_write_json, atomic_write_text
from distill.errors import DistillError, cli_entry
from distill.recipe import Recipe, load_recipe

STAGES = ("corpus", "tokenizer", "teachers", "student", "evaluate", "samples")
NUM_SAMPLES = 3
RUN_STAMP = "run.json"  # in output_dir: the inputs the report and the samples were made from

STAGE_COMMANDS = """stage commands (each also runs on its own; see its --help):
  python -m distill.corpus {scrape,convert,combine,clean,split,all}   build the corpus splits
  python -m distill.tokenizer RECIPE                                  train the BPE tokenizer
  accelerate launch -m distill.teacher RECIPE                         train the teachers
  accelerate launch -m distill.student RECIPE                         distill the student (and the baseline)
  python -m distill.evaluate RECIPE                                   report.json, report.md, plots
  python -m distill.generate MODEL_DIR "London was"                   text from a trained model
  python -m distill.serve RECIPE                                      a local web page to try the models"""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2 through :func:`cli_entry`."""

    def error(self, message: str):
        raise DistillError(f"{message}; see {self.prog} --help")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m distill",
        description="Train small language models by knowledge distillation, from raw encyclopedia text.",
        epilog=STAGE_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run}", parser_class=_Parser)
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


# ----------------------------------------------------------------------------- small helpers


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _differences(saved: dict, wanted: dict, limit: int = 3) -> list[str]:
    """``key saved -> wanted`` for the settings that differ (at most ``limit``, then a count)."""
    old, new = _flat(saved), _flat(wanted)
    diffs = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    return diffs[:limit] + ([f"{len(diffs) - limit} more"] if len(diffs) > limit else [])


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (as the recipe wrote it)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _checkpoint(folder: Path) -> Path | None:
    from distill.training import latest_checkpoint

    return latest_checkpoint(folder)


def _finished(folder: Path) -> bool:
    from distill.training import is_finished

    return is_finished(folder)


# ----------------------------------------------------------------------------- stage checks


@dataclass
class Check:
    done: bool  # outputs complete and made from the current inputs with the recipe's settings
    resume: bool = False  # an unfinished training run left a checkpoint
    why: str | None = None  # why existing outputs are redone


def check_corpus(recipe: Recipe) -> Check:
    """Done when ``manifest.json`` records the recipe's source, budgets, seed and facts."""
    manifest_path = recipe.paths.corpus / "manifest.json"
    if not manifest_path.is_file():
        return Check(done=False)
    manifest = _read_json(manifest_path)
    corpus = recipe.corpus
    saved_source = manifest.get("source")
    budgets = manifest.get("requested_budgets") or manifest.get("budgets") or {}
    facts = manifest.get("facts") or None
    saved = {
        "source": str((Path.cwd() / saved_source).resolve()) if isinstance(saved_source, str) else saved_source,
        "train_words": budgets.get("train"),
        "val_words": budgets.get("val"),
        "test_words": budgets.get("test"),
        "seed": manifest.get("seed"),
        "facts": facts.get("sha256") if facts else None,
        "fact_repeats": facts.get("repeats") if facts else 0,
    }
    with_facts = corpus.facts is not None and corpus.fact_repeats > 0 and Path(corpus.facts).is_file()
    wanted = {
        "source": str(Path(corpus.source).resolve()),
        "train_words": corpus.train_words,
        "val_words": corpus.val_words,
        "test_words": corpus.test_words,
        "seed": corpus.seed,
        "facts": _sha256_file(corpus.facts) if with_facts else None,
        "fact_repeats": corpus.fact_repeats if with_facts else 0,
    }
    diffs = _differences(saved, wanted)
    missing = [name for name in ("train", "val", "test") if not recipe.paths.split(name).is_file()]
    if missing:
        diffs.append(f"{', '.join(missing)} split missing")
    return Check(done=not diffs, why=f"built with other settings: {'; '.join(diffs)}" if diffs else None)


def check_tokenizer(recipe: Recipe) -> Check:
    from distill.tokenizer import stale_reason

    reason = stale_reason(recipe)
    return Check(done=reason is None, why=None if reason in (None, "missing") else reason)


def _tokenizer_hash(recipe: Recipe) -> str | None:
    from distill.tokenizer import tokenizer_sha256

    return tokenizer_sha256(recipe.paths.tokenizer) if (recipe.paths.tokenizer / "tokenizer.json").is_file() else None


def check_teachers(recipe: Recipe) -> Check:
    """Done when every teacher is finished and up to date by :func:`distill.teacher.out_of_date`."""
    from distill.teacher import out_of_date

    tok_hash = _tokenizer_hash(recipe)
    pending, resume, why = [], False, []
    for teacher in recipe.teachers:
        folder = recipe.paths.teacher(teacher.name)
        if not _finished(folder):
            pending.append(teacher.name)
            resume = resume or _checkpoint(folder) is not None
        elif reason := out_of_date(folder, teacher, tok_hash):
            pending.append(teacher.name)
            why.append(f"{teacher.name}: {reason}")
    return Check(done=not pending, resume=resume, why="; ".join(why) or None)


def _student_out_of_date(recipe: Recipe, folder: Path, baseline: bool, tok_hash: str | None) -> str | None:
    """The rule ``distill.student`` applies to a finished folder: same tokenizer, teachers and settings."""
    info = _read_json(folder / "distill.json")
    if info.get("tokenizer_sha256") != tok_hash:
        return "it was trained with another tokenizer"
    section = recipe.student.to_dict()
    if baseline:
        section["alpha"] = 1.0
    if section["alpha"] < 1:
        from distill.logit_cache import model_folder_sha256

        hashes = {t.name: model_folder_sha256(recipe.paths.teacher(t.name)) for t in recipe.teachers}
        if info.get("teacher_hashes") != hashes:
            return "its teachers have changed"
    if info.get("recipe") != section:
        return "the recipe's student section has changed"
    return None


def check_student(recipe: Recipe) -> Check:
    tok_hash = _tokenizer_hash(recipe)
    runs = {"student": recipe.paths.student}
    if recipe.student.baseline:
        runs["baseline"] = recipe.paths.baseline
    pending, resume, why = [], False, []
    for name, folder in runs.items():
        if not _finished(folder):
            pending.append(name)
            resume = resume or _checkpoint(folder) is not None
        elif reason := _student_out_of_date(recipe, folder, name == "baseline", tok_hash):
            pending.append(name)
            why.append(f"{name}: {reason}")
    return Check(done=not pending, resume=resume, why="; ".join(why) or None)


def _report_models(recipe: Recipe) -> list[Path]:
    paths = recipe.paths
    folders = [paths.teacher(t.name) for t in recipe.teachers] + [paths.student]
    if recipe.student.baseline:
        folders.append(paths.baseline)
    return [folder for folder in folders if _finished(folder)]


def evaluate_inputs(recipe: Recipe) -> str:
    """A hash of everything the report depends on: the models, the splits, BLiMP and fact files, seq_len."""
    evaluate = recipe.evaluate
    files = {f"model:{folder.relative_to(recipe.paths.root)}": _sha256_file(folder / "distill.json") for folder in _report_models(recipe)}
    for split in evaluate.splits:
        path = recipe.paths.split(split)
        files[f"split:{split}"] = _sha256_file(path) if path.is_file() else None
    if evaluate.blimp_dir is not None and Path(evaluate.blimp_dir).is_dir():
        for path in sorted(Path(evaluate.blimp_dir).glob("*.jsonl")):
            files[f"blimp:{path.name}"] = _sha256_file(path)
    facts = evaluate.facts or recipe.corpus.facts
    if facts is not None and Path(facts).is_file():
        files["facts"] = _sha256_file(facts)
    return _sha256_json({"files": files, "seq_len": recipe.data.seq_len, "evaluate": recipe.evaluate.to_dict()})


def samples_inputs(recipe: Recipe) -> str:
    student = recipe.paths.student / "distill.json"
    return _sha256_json({
        "student": _sha256_file(student) if student.is_file() else None,
        "generate": recipe.generate.to_dict(),
        "samples": NUM_SAMPLES,
    })


def _stamp(recipe: Recipe) -> dict:
    return _read_json(recipe.paths.root / RUN_STAMP)


def _write_stamp(recipe: Recipe, stage: str, inputs: str) -> None:
    stamp = _stamp(recipe)
    stamp[stage] = {"inputs_sha256": inputs, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(recipe.paths.root / RUN_STAMP, stamp)


def check_evaluate(recipe: Recipe) -> Check:
    report = recipe.paths.report
    if not ((report / "report.json").is_file() and (report / "report.md").is_file()):
        return Check(done=False)
    saved = _stamp(recipe).get("evaluate", {}).get("inputs_sha256")
    return Check(done=saved == evaluate_inputs(recipe), why="not made from the current models and evaluation settings")


def check_samples(recipe: Recipe) -> Check:
    if not (recipe.paths.report / "samples.md").is_file():
        return Check(done=False)
    saved = _stamp(recipe).get("samples", {}).get("inputs_sha256")
    return Check(done=saved == samples_inputs(recipe), why="not made from the current student and generate settings")


# ----------------------------------------------------------------------------- stage runs


def _stage_args(recipe: Recipe, force: bool, resume: bool) -> list[str]:
    args = [str(recipe.source), *recipe.overrides]
    if force:
        args.append("--force")
    elif resume:
        args.append("--resume")
    return args


def run_corpus(recipe: Recipe, force: bool, resume: bool) -> int:
    from distill.corpus.build import build_splits

    corpus = recipe.corpus
    try:
        manifest = build_splits(
            corpus.source, recipe.paths.corpus, train_words=corpus.train_words, val_words=corpus.val_words,
            test_words=corpus.test_words, seed=corpus.seed, facts=corpus.facts, fact_repeats=corpus.fact_repeats,
        )
    except DistillError as err:
        # The budget error suggests a flag of the corpus command; here the recipe holds the budgets.
        message = str(err).replace("or pass --allow-short to scale them down", "(corpus.train_words, corpus.val_words, corpus.test_words)")
        raise DistillError(message) from None
    parts = [f"{name} {manifest[name]['words']:,} words ({manifest[name]['articles']} articles)" for name in ("train", "val", "test")]
    print(f"corpus: {', '.join(parts)} -> {recipe.paths.corpus}")
    return 0


def run_tokenizer(recipe: Recipe, force: bool, resume: bool) -> int:
    from distill.tokenizer import main

    return main(_stage_args(recipe, force, False))


def run_teachers(recipe: Recipe, force: bool, resume: bool) -> int:
    from distill.teacher import main

    return main(_stage_args(recipe, force, resume))


def run_student(recipe: Recipe, force: bool, resume: bool) -> int:
    from distill.student import main

    return main(_stage_args(recipe, force, resume))


def run_evaluate(recipe: Recipe, force: bool, resume: bool) -> int:
    from distill.evaluate import main

    inputs = evaluate_inputs(recipe)
    code = main([str(recipe.source), *recipe.overrides])
    if code == 0:
        _write_stamp(recipe, "evaluate", inputs)
    return code


def render_samples(recipe: Recipe, samples: list[dict]) -> str:
    """``samples.md``: the settings, then each sample with the command that gives it again."""
    settings = recipe.generate
    folder = _shown(recipe.paths.student)
    flags = (f"--temperature {settings.temperature} --top-k {settings.top_k} --top-p {settings.top_p} "
             f"--repetition-penalty {settings.repetition_penalty} --max-new-tokens {settings.max_new_tokens}")
    lines = [
        "# Samples from the student",
        "",
        f"Model `{folder}`, sampled with the recipe's `generate:` settings: temperature {settings.temperature}"
        f"{' (greedy)' if settings.temperature == 0 else ''}, top_k {settings.top_k}, top_p {settings.top_p}, "
        f"repetition_penalty {settings.repetition_penalty}, max_new_tokens {settings.max_new_tokens}.",
        "",
    ]
    for number, sample in enumerate(samples, 1):
        text = sample["prompt"] + sample["text"]
        fence = "```"
        while fence in text:
            fence += "`"
        command = f"python -m distill.generate {folder} {json.dumps(sample['prompt'], ensure_ascii=False)} --seed {sample['seed']} {flags}"
        lines += [f"## Sample {number}", "", f"{fence}text", text, fence, "", f"`{command}`", ""]
    return "\n".join(lines)


def generate_samples(recipe: Recipe) -> list[dict]:
    """Three samples from the student with the recipe's ``generate`` settings.

    Sample i continues prompt ``i mod len(prompts)`` with seed ``generate.seed + i // len(prompts)``, so
    with three or more prompts each sample is what ``python -m distill.generate`` gives for its prompt.
    """
    from distill.generate import ContextLengthWarning, generate, load_model

    settings = recipe.generate
    model, tokenizer, _ = load_model(recipe.paths.student)
    samples = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContextLengthWarning)
        for i in range(NUM_SAMPLES):
            prompt = settings.prompts[i % len(settings.prompts)]
            seed = settings.seed + i // len(settings.prompts)
            text = generate(model, tokenizer, prompt, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_k=settings.top_k, top_p=settings.top_p, repetition_penalty=settings.repetition_penalty, seed=seed)[0]
            samples.append({"prompt": prompt, "seed": seed, "text": text})
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ContextLengthWarning)):
        print(f"warning: {message}", file=sys.stderr)
    return samples


def run_samples(recipe: Recipe, force: bool, resume: bool) -> int:
    inputs = samples_inputs(recipe)
    samples = generate_samples(recipe)
    path = recipe.paths.report / "samples.md"
    atomic_write_text(path, render_samples(recipe, samples))
    _write_stamp(recipe, "samples", inputs)
    for number, sample in enumerate(samples, 1):
        print(f"--- sample {number}/{len(samples)} (seed {sample['seed']}) ---")
        print(sample["prompt"] + sample["text"])
    print(f"samples: {path}")
    return 0


CHECKS: dict[str, Callable[[Recipe], Check]] = {
    "corpus": check_corpus, "tokenizer": check_tokenizer, "teachers": check_teachers,
    "student": check_student, "evaluate": check_evaluate, "samples": check_samples,
}
RUNS: dict[str, Callable[[Recipe, bool, bool], int]] = {
    "corpus": run_corpus, "tokenizer": run_tokenizer, "teachers": run_teachers,
    "student": run_student, "evaluate": run_evaluate, "samples": run_samples,
}


def _fresh_accelerate_state() -> None:
    """Let the next stage set its own mixed precision, as it could in its own process.

    Accelerate keeps one ``AcceleratorState`` per process and refuses a second ``Accelerator`` with
    another mixed precision; the process group and device (``PartialState``) are kept.
    """
    if "accelerate" not in sys.modules:
        return
    from accelerate.state import AcceleratorState

    reset = getattr(AcceleratorState, "_reset_state", None)
    if reset is not None:
        reset()


# ----------------------------------------------------------------------------- the pipeline


def _guarded(step: Callable[[], Any]) -> tuple[Any, int]:
    """``(result, 0)``, or ``(None, 2)`` after printing a DistillError as every command does."""
    try:
        return step(), 0
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return None, 2


@contextlib.contextmanager
def _exclusive(root: Path):
    """Hold ``root/.run.lock`` so that a second run on the same folder stops instead of clashing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DistillError(f"{root}: another python -m distill run is working in this folder; wait for it, "
                               "or give this run its own output_dir=...") from None
        yield
    finally:
        os.close(fd)


def run_pipeline(recipe: Recipe, *, force: bool = False, start: str | None = None) -> int:
    """Run every stage that is not complete; return 0, or the exit code of the first failing stage."""
    with _exclusive(Path(recipe.paths.root)):
        return _run_stages(recipe, force=force, start=start)


def _run_stages(recipe: Recipe, *, force: bool, start: str | None) -> int:
    first_forced = 0 if force else (STAGES.index(start) if start else len(STAGES))
    started = time.monotonic()
    for index, stage in enumerate(STAGES):
        label = f"[{index + 1}/{len(STAGES)}] {stage}"
        forced = index >= first_forced
        check, code = (Check(done=False), 0) if forced else _guarded(lambda: CHECKS[stage](recipe))
        if code:
            print(f"{label} ... failed (exit code {code})", flush=True)
            return code
        if check.done:
            print(f"{label} ... skipped (already done)", flush=True)
            continue
        notes = ["--force" if forced else "", "--resume: continuing from a checkpoint" if check.resume and not forced else ""]
        notes.append(f"out of date: {check.why}" if check.why and not forced else "")
        notes = [note for note in notes if note]
        detail = f" ({'; '.join(notes)})" if notes else ""
        print(f"{label} ... running{detail}", flush=True)
        began = time.monotonic()
        try:
            result, code = _guarded(lambda: RUNS[stage](recipe, forced, check.resume))
        except KeyboardInterrupt:
            print(f"\n{label} ... interrupted after {_duration(time.monotonic() - began)}; rerun the same command to go on", flush=True)
            return 130
        code = code or result or 0
        took = _duration(time.monotonic() - began)
        _fresh_accelerate_state()
        if code == 143:
            print(f"{label} ... stopped after {took}; a checkpoint was saved: rerun the same command to resume", flush=True)
            return code
        if code != 0:
            print(f"{label} ... failed (exit code {code}) after {took}", flush=True)
            return code
        print(f"{label} ... done in {took}", flush=True)
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
    recipe = load_recipe(args.recipe, args.overrides)
    return run_pipeline(recipe, force=args.force, start=args.start)


if __name__ == "__main__":
    raise SystemExit(main())
