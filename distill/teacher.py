"""Train the teachers a recipe names (a LLaMA and a GPT-2 in the shipped recipes).

    accelerate launch -m distill.teacher recipes/tiny.yaml [key=value ...] [--only NAME] [--resume] [--force]
    python -m distill.teacher recipes/tiny.yaml        # the same, one process

:func:`run` checks everything before any training starts: the recipe, the corpus splits and the
tokenizer (both made first when missing; a stale tokenizer is refused) and unfinished runs. A
teacher whose finished folder is current (:func:`distill.artifacts.why_stale`: same tokenizer, same
recipe section) is skipped unless ``force``; otherwise the log says why it is retrained. A run
stopped by SIGTERM saves a checkpoint and exits with code 143; ``--resume`` continues it.
"""
from __future__ import annotations

import gc

from accelerate.utils import set_seed

from distill.artifacts import ModelInfo, manifest_sha256, must_make, refuse_unfinished, tokenizer_sha256
from distill.cli import add_peak_option, load, parse, recipe_parser
from distill.data import block_ids, load_blocks, unigram_perplexity
from distill.distributed import distributed_state
from distill.errors import DistillError, cli_entry
from distill.folder_lock import locks_output_dir
from distill.models import build_model
from distill.recipe import ModelConfig, Recipe, did_you_mean
from distill.tokenizer import require_current
from distill.training import train


def plan(recipe: Recipe, *, only: list[str] | None = None, force: bool = False, resume: bool = False) -> list[ModelConfig]:
    """The teachers to train, after every check that can fail on user input; logs why each is (re)trained."""
    names = [t.name for t in recipe.teachers]
    for name in only or []:
        if name not in names:
            raise DistillError(f"--only {name}: no such teacher in {recipe.source}{did_you_mean(name, names)}")
    chosen = [t for t in recipe.teachers if not only or t.name in only]
    for teacher in chosen:
        refuse_unfinished(recipe.paths.teacher(teacher.name), resume or force)
    state = distributed_state()
    main_log = print if state.is_main_process else (lambda message: None)
    return [teacher for teacher in chosen if must_make(recipe, "teacher", teacher.name, force=force, log=main_log)]


@locks_output_dir
def run(recipe: Recipe, *, only: list[str] | None = None, force: bool = False, resume: bool = False) -> dict[str, dict]:
    """Train the recipe's teachers (or ``only`` those named) that are not current; ``{name: metrics}``.

    Raises :class:`~distill.errors.TrainingInterrupted` (after saving a checkpoint) on SIGTERM.
    """
    state = distributed_state()
    with state.main_process_first():  # the corpus and tokenizer are made once, by the main process
        tokenizer = require_current(recipe, train_if_missing=True)
    todo = plan(recipe, only=only, force=force, resume=resume)
    if not todo:
        return {}
    with state.main_process_first():
        train_blocks = load_blocks(recipe, "train", tokenizer)
        val_blocks = load_blocks(recipe, "val", tokenizer)
    unigram = None
    if state.is_main_process:  # only the main process writes distill.json
        unigram = unigram_perplexity(block_ids(train_blocks), block_ids(val_blocks), recipe.tokenizer.vocab_size)
        print(
            f"data: {len(train_blocks)} train / {len(val_blocks)} val blocks of {recipe.data.seq_len} tokens; "
            f"unigram val perplexity {unigram:.1f}"
        )
    results = {}
    for teacher in todo:
        folder = recipe.paths.teacher(teacher.name)
        set_seed(teacher.training.seed)
        model = build_model(teacher, recipe.tokenizer.vocab_size, recipe.data.seq_len)
        info = ModelInfo(
            name=teacher.name, role="teacher", arch=teacher.arch, seq_len=recipe.data.seq_len, recipe=teacher.to_dict(),
            corpus_manifest_sha256=manifest_sha256(recipe), tokenizer_sha256=tokenizer_sha256(tokenizer),
            metrics={"unigram_val_ppl": unigram},
        )
        metrics = train(model, train_dataset=train_blocks, eval_dataset=val_blocks, training_cfg=teacher.training,
                        out_dir=folder, tokenizer=tokenizer, info=info, resume=resume, generate=recipe.generate)
        if state.is_main_process:
            print(
                f"teacher {teacher.name}: val loss {metrics['val_loss']:.4f}, perplexity {metrics['val_ppl']:.2f} "
                f"(unigram {unigram:.1f}), {metrics['steps']} steps, {metrics['wall_time_s']:.0f}s -> {folder}"
            )
        results[teacher.name] = metrics
        del model
        gc.collect()
    return results


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("python -m distill.teacher", "Train the recipe's teachers.", example="teachers.0.training.lr=3e-4",
                           force="retrain teachers even if their finished folder is current",
                           resume="continue unfinished runs from their newest checkpoint")
    parser.add_argument("--only", action="append", metavar="NAME", help="train only this teacher (repeatable)")
    add_peak_option(parser)
    args = parse(parser, argv)
    run(load(args), only=args.only, force=args.force, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
