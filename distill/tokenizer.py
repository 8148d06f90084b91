"""The byte-level BPE tokenizer, trained on the train split only.

``<pad>``=0, ``<s>``=1, ``</s>``=2; every byte is in the base alphabet, so no text is ever unknown.
The tokenizer adds ``<s>`` in front of every text it encodes (like LLaMA's): a prompt then looks
like the start of an article, which is how the models saw articles in training. Use
``add_special_tokens=False`` to get the bare ids.

The folder holds ``tokenizer.json`` and ``tokenizer_config.json`` (what ``AutoTokenizer`` loads) and
``distill_tokenizer.json``: the settings and the sha256 of the train split it was trained on, so a
rerun on the same split skips training.

    python -m distill.tokenizer recipes/tiny.yaml [key=value ...] [--force]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from distill.artifacts import NOT_MADE, TOKENIZER_FILES, TOKENIZER_STAMP, file_sha256, tokenizer_sha256, why_stale
from distill.atomic import check_folder, write_folder
from distill.cli import load, parse, recipe_parser
from distill.corpus.build import run as build_corpus
from distill.corpus.records import iter_records
from distill.errors import DistillError, cli_entry
from distill.folder_lock import locks_output_dir
from distill.recipe import Recipe

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2, in this order
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FOLDER_FILES = (*TOKENIZER_FILES, TOKENIZER_STAMP)


def train_tokenizer(train_path: str | Path, vocab_size: int, min_frequency: int, out_dir: str | Path):
    """Train byte-level BPE on one split file and save it to ``out_dir`` (atomically); return it."""
    train_path = Path(train_path)
    out_dir = Path(out_dir)
    check_folder(out_dir, FOLDER_FILES)  # before training, not after
    train_hash = file_sha256(train_path)
    backend = Tokenizer(models.BPE())
    # add_prefix_space=False: an article's first word has no leading space in training or prompts.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(iter_records(train_path), trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert backend.token_to_id(token) == token_id, (token, backend.token_to_id(token))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    size = backend.get_vocab_size()
    if size < vocab_size:
        print(
            f"note: {train_path} supports only {size} tokens at min_frequency {min_frequency} "
            f"(asked {vocab_size}); the models keep {vocab_size} embedding rows",
            file=sys.stderr,
        )
    with write_folder(out_dir, FOLDER_FILES) as tmp:
        tokenizer.save_pretrained(tmp)
        # The generic class name also loads with transformers 4.x.
        config_path = tmp / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        stamp = {
            "train_sha256": train_hash,
            "train_path": str(train_path),
            "vocab_size": vocab_size,
            "min_frequency": min_frequency,
            "actual_vocab_size": size,
            "tokenizer_sha256": tokenizer_sha256(backend),
        }
        (tmp / TOKENIZER_STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return load_tokenizer(out_dir)


def load_tokenizer(path: str | Path):
    """Load a saved tokenizer folder with ``AutoTokenizer`` and check the special ids."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise DistillError(f"{path}: no tokenizer here; train one with python -m distill.tokenizer RECIPE.yaml")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    if ids != (PAD_ID, BOS_ID, EOS_ID):
        raise DistillError(f"{path}: special ids (pad, bos, eos) are {ids}, expected (0, 1, 2); retrain with python -m distill.tokenizer RECIPE.yaml --force")
    return tokenizer


@locks_output_dir
def run(recipe: Recipe, *, force: bool = False, resume: bool = False):
    """The recipe's tokenizer, trained unless one trained on the same split and settings exists.

    The corpus splits are built first when missing (a cheap input). ``resume`` is accepted like
    every stage's ``run``; a tokenizer trains in one go.
    """
    if not all(recipe.paths.split(name).is_file() for name in ("train", "val")):
        build_corpus(recipe)
    reason = "forced" if force else why_stale(recipe, "tokenizer")
    if reason is None:
        return load_tokenizer(recipe.paths.tokenizer)
    if reason != NOT_MADE:
        print(f"retraining the tokenizer: {reason}", file=sys.stderr)
    return train_tokenizer(recipe.paths.split("train"), recipe.tokenizer.vocab_size, recipe.tokenizer.min_frequency, recipe.paths.tokenizer)


def require_current(recipe: Recipe, *, train_if_missing: bool = False):
    """The recipe's tokenizer for a training stage: made when missing (with the corpus, if
    ``train_if_missing``), refused with the fix when it does not match the recipe."""
    reason = why_stale(recipe, "tokenizer")
    if reason not in (None, NOT_MADE):
        raise DistillError(
            f"{recipe.paths.tokenizer}: does not match the recipe: {reason}; retrain it with "
            f"python -m distill.tokenizer {recipe.command_hint()} --force (models trained with the old one "
            "must be retrained), or change tokenizer.* to match it"
        )
    if reason == NOT_MADE and not train_if_missing:
        raise DistillError(f"{recipe.paths.tokenizer}: no tokenizer yet; train it with python -m distill.tokenizer {recipe.command_hint()}")
    tokenizer = run(recipe)
    if len(tokenizer) > recipe.tokenizer.vocab_size:
        raise DistillError(
            f"{recipe.paths.tokenizer}: has {len(tokenizer)} tokens but tokenizer.vocab_size is "
            f"{recipe.tokenizer.vocab_size}; set tokenizer.vocab_size={len(tokenizer)} or retrain it with --force"
        )
    return tokenizer


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("python -m distill.tokenizer", __doc__.split("\n\n")[0], example="tokenizer.vocab_size=8000",
                           force="retrain even if an up-to-date tokenizer exists")
    args = parse(parser, argv)
    recipe = load(args)
    reason = "forced" if args.force else why_stale(recipe, "tokenizer")
    tokenizer = run(recipe, force=args.force)
    verb = "trained" if reason else "up to date:"
    print(f"tokenizer {verb} {recipe.paths.tokenizer} ({len(tokenizer)} tokens, sha256 {tokenizer_sha256(tokenizer)[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
