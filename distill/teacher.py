"""Train the teachers a recipe names (a LLaMA and a GPT-2 in the shipped recipes).

    accelerate launch -m distill.teacher recipes/tiny.yaml [key=value ...] [--only NAME] [--resume] [--force]
    python -m distill.teacher recipes/tiny.yaml        # the same, one process

Setup checks everything before any training starts: the recipe, the corpus splits, the tokenizer
(trained here if missing; a stale one is refused) and unfinished runs. A teacher whose finished
folder exists (``distill.json``) for the current tokenizer and recipe section is skipped unless
``--force``; one made with another tokenizer or other settings is retrained. A run stopped by
SIGTERM saves a checkpoint and exits with code 143; ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
from pathlib import Path

from distill.errors import DistillError, cli_entry
from distill.recipe import ModelConfig, Recipe, did_you_mean, load_recipe
from distill.tokenizer import ensure_tokenizer, require_train_split, stale_reason, tokenizer_sha256
from distill.training import TrainingInterrupted, distributed_state, is_finished, refuse_unfinished, train


def manifest_sha256(recipe: Recipe) -> str | None:
    """sha256 of the corpus ``manifest.json`` (None when the split folder has none)."""
    manifest = recipe.paths.corpus / "manifest.json"
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill.teacher", description="Train the recipe's teachers.")
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. teachers.0.training.lr=3e-4")
    parser.add_argument("--only", action="append", metavar="NAME", help="train only this teacher (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs from their newest checkpoint")
    parser.add_argument("--force", action="store_true", help="retrain teachers even if their finished folder exists")
    return parser.parse_intermixed_args(argv)  # overrides may come after options


def out_of_date(folder: Path, teacher: ModelConfig, tok_hash: str) -> str | None:
    """Why a finished teacher folder must be retrained (None: same tokenizer and same recipe section)."""
    info = json.loads((folder / "distill.json").read_text(encoding="utf-8"))
    if info.get("tokenizer_sha256") != tok_hash:
        return "it was trained with another tokenizer"
    if info.get("recipe") != teacher.to_dict():
        return "the recipe's section for this teacher has changed"
    return None


def _check_tokenizer(recipe: Recipe) -> None:
    reason = stale_reason(recipe)
    if reason not in (None, "missing"):
        raise DistillError(
            f"{recipe.paths.tokenizer}: does not match the recipe: {reason}; retrain it with "
            f"python -m distill.tokenizer {recipe.command_hint()} --force (models trained with the old one "
            "must be retrained), or change tokenizer.* to match it"
        )


def _plan(recipe: Recipe, args: argparse.Namespace) -> list[ModelConfig]:
    """The teachers to train, after every check that can fail on user input."""
    names = [t.name for t in recipe.teachers]
    for name in args.only or []:
        if name not in names:
            raise DistillError(f"--only {name}: no such teacher in {recipe.source}{did_you_mean(name, names)}")
    require_train_split(recipe)
    for split in ("val",):
        path = recipe.paths.split(split)
        if not path.is_file():
            raise DistillError(f"{path}: corpus split missing; build it with python -m distill.corpus all --recipe {recipe.command_hint()}")
    _check_tokenizer(recipe)
    chosen = [t for t in recipe.teachers if not args.only or t.name in args.only]
    for teacher in chosen:
        refuse_unfinished(recipe.paths.teacher(teacher.name), args.resume or args.force)
    return chosen


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    chosen = _plan(recipe, args)

    from accelerate.utils import set_seed

    from distill.data import block_ids, load_blocks, unigram_perplexity
    from distill.models import build_model

    state = distributed_state()
    with state.main_process_first():
        tokenizer = ensure_tokenizer(recipe)
    tok_hash = tokenizer_sha256(tokenizer)
    if len(tokenizer) > recipe.tokenizer.vocab_size:
        raise DistillError(
            f"{recipe.paths.tokenizer}: has {len(tokenizer)} tokens but tokenizer.vocab_size is "
            f"{recipe.tokenizer.vocab_size}; set tokenizer.vocab_size={len(tokenizer)} or retrain it with --force"
        )

    todo = []
    for teacher in chosen:
        folder = recipe.paths.teacher(teacher.name)
        if is_finished(folder) and not args.force:
            reason = out_of_date(folder, teacher, tok_hash)
            if reason is None:
                if state.is_main_process:
                    print(f"{teacher.name}: finished in {folder}, skipping (--force retrains it)")
                continue
            if state.is_main_process:
                print(f"{teacher.name}: {folder} is out of date ({reason}); retraining", file=sys.stderr)
        todo.append(teacher)
    if not todo:
        return 0

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

    for teacher in todo:
        folder = recipe.paths.teacher(teacher.name)
        set_seed(teacher.training.seed)
        model = build_model(teacher, recipe.tokenizer.vocab_size, recipe.data.seq_len)
        metadata = {
            "name": teacher.name,
            "role": "teacher",
            "arch": teacher.arch,
            "seq_len": recipe.data.seq_len,
            "recipe": teacher.to_dict(),
            "corpus_manifest_sha256": manifest_sha256(recipe),
            "tokenizer_sha256": tok_hash,
            "metrics": {"unigram_val_ppl": unigram},
        }
        try:
            metrics = train(
                model,
                train_dataset=train_blocks,
                eval_dataset=val_blocks,
                training_cfg=teacher.training,
                out_dir=folder,
                tokenizer=tokenizer,
                extra_metadata=metadata,
                resume=args.resume,
                model_name=teacher.name,
                role="teacher",
            )
        except TrainingInterrupted as stop:
            if state.is_main_process:
                print(f"{stop}", file=sys.stderr)
            return 143
        if state.is_main_process:
            print(
                f"{teacher.name}: val loss {metrics['val_loss']:.4f}, perplexity {metrics['val_ppl']:.2f} "
                f"(unigram {unigram:.1f}), {metrics['steps']} steps, {metrics['wall_time_s']:.0f}s -> {folder}"
            )
        del model
        gc.collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
