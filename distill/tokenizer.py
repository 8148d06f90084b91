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

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Iterator

from distill.atomic import atomic_dir
from distill.errors import DistillError, cli_entry
from distill.recipe import Recipe, load_recipe

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2, in this order
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
STAMP = "distill_tokenizer.json"


def iter_records(path: str | Path) -> Iterator[str]:
    """Stream the article texts of a split file (records ``<s> TEXT </s>\\n``), markers removed.

    A record may span several lines (paragraphs are separated by a single newline).
    """
    path = Path(path)
    lines: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not lines:
                if not line.strip():
                    continue
                if not line.startswith("<s>"):
                    raise DistillError(f"{path}: a record must start with '<s> '; rebuild the split with python -m distill.corpus")
                line = line[3:].lstrip(" ")
            if line.endswith("</s>"):
                lines.append(line[: -len("</s>")].rstrip(" "))
                yield "\n".join(lines)
                lines = []
            else:
                lines.append(line)
    if lines:
        raise DistillError(f"{path}: the last record has no closing '</s>'; rebuild the split with python -m distill.corpus")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """A stable hash of the vocabulary, merges and special tokens.

    ``tokenizer`` is a folder, a ``tokenizer.json`` path, a transformers tokenizer or a
    ``tokenizers.Tokenizer``. Two tokenizers with the same hash turn any text into the same ids.
    """
    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise DistillError(f"{path}: no tokenizer here; train one with python -m distill.tokenizer RECIPE.yaml")
        spec = json.loads(path.read_text(encoding="utf-8"))
    else:
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    canonical = {
        "type": model.get("type"),
        "vocab": sorted(model.get("vocab", {}).items(), key=lambda kv: kv[1]),
        "merges": merges,
        "added": sorted((t["id"], t["content"]) for t in spec.get("added_tokens", [])),
    }
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def train_tokenizer(train_path: str | Path, vocab_size: int, min_frequency: int, out_dir: str | Path):
    """Train byte-level BPE on one split file and save it to ``out_dir`` (atomically); return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    train_path = Path(train_path)
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
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
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
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return load_tokenizer(out_dir)


def load_tokenizer(path: str | Path):
    """Load a saved tokenizer folder with ``AutoTokenizer`` and check the special ids."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise DistillError(f"{path}: no tokenizer here; train one with python -m distill.tokenizer RECIPE.yaml")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    if ids != (PAD_ID, BOS_ID, EOS_ID):
        raise DistillError(f"{path}: special ids (pad, bos, eos) are {ids}, expected (0, 1, 2); retrain with python -m distill.tokenizer RECIPE.yaml --force")
    return tokenizer


def read_stamp(path: str | Path) -> dict | None:
    stamp = Path(path) / STAMP
    if not stamp.is_file():
        return None
    try:
        return json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def stale_reason(recipe: Recipe) -> str | None:
    """Why the recipe's tokenizer folder does not match its recipe and train split (None if it does)."""
    folder = recipe.paths.tokenizer
    if not (folder / "tokenizer.json").is_file():
        return "missing"
    stamp = read_stamp(folder)
    if stamp is None:
        return f"{folder / STAMP} is missing, so it is unknown what the tokenizer was trained on"
    if stamp.get("vocab_size") != recipe.tokenizer.vocab_size:
        return f"it was trained with vocab_size {stamp.get('vocab_size')} but the recipe says {recipe.tokenizer.vocab_size}"
    if stamp.get("min_frequency") != recipe.tokenizer.min_frequency:
        return f"it was trained with min_frequency {stamp.get('min_frequency')} but the recipe says {recipe.tokenizer.min_frequency}"
    train = recipe.paths.split("train")
    if train.is_file() and stamp.get("train_sha256") != file_sha256(train):
        return f"{train} changed since the tokenizer was trained on it"
    return None


def require_train_split(recipe: Recipe) -> Path:
    train = recipe.paths.split("train")
    if not train.is_file():
        raise DistillError(
            f"{train}: corpus split missing; build it with python -m distill.corpus all --recipe {recipe.command_hint()}"
        )
    return train


def ensure_tokenizer(recipe: Recipe, force: bool = False):
    """Train the recipe's tokenizer unless one trained on the same split and settings exists; load it."""
    train = require_train_split(recipe)
    reason = "forced" if force else stale_reason(recipe)
    if reason is None:
        return load_tokenizer(recipe.paths.tokenizer)
    if reason != "missing":
        print(f"retraining the tokenizer: {reason}", file=sys.stderr)
    return train_tokenizer(train, recipe.tokenizer.vocab_size, recipe.tokenizer.min_frequency, recipe.paths.tokenizer)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.tokenizer", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. tokenizer.vocab_size=8000")
    parser.add_argument("--force", action="store_true", help="retrain even if an up-to-date tokenizer exists")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    reason = "forced" if args.force else (stale_reason(recipe) if recipe.paths.split("train").is_file() else "missing")
    tokenizer = ensure_tokenizer(recipe, force=args.force)
    verb = "trained" if reason else "up to date:"
    print(f"tokenizer {verb} {recipe.paths.tokenizer} ({len(tokenizer)} tokens, sha256 {tokenizer_sha256(tokenizer)[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
