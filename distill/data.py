"""Tokenized fixed-length blocks through ``datasets``, cached on disk.

Every record of a split becomes ``[<s>] + ids(TEXT) + [</s>]``; the records are concatenated and cut
into blocks of ``seq_len`` tokens (the last partial block is dropped). Labels are the inputs: the
models shift them. The blocks are saved with ``save_to_disk`` under
``{output_dir}/tokens/<split>-<key>``, where the key hashes the tokenizer, the split file and
``seq_len``, so a second run loads them instead of tokenizing again, and any change to one of the
three builds a fresh cache. Build them inside ``accelerator.main_process_first()`` (or
``PartialState().main_process_first()``) so only one process tokenizes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from distill.artifacts import file_sha256, tokenizer_sha256
from distill.atomic import write_folder
from distill.corpus.records import iter_records
from distill.errors import DistillError
from distill.recipe import Recipe
from distill.tokenizer import BOS_ID, EOS_ID

FORMAT_VERSION = 1  # bump when the block layout changes, so old caches are not trusted
META = "distill_blocks.json"
CACHE_FILES = ("data-*.arrow", "dataset_info.json", "state.json", META)  # what save_to_disk and build_blocks write
_RECORDS_PER_BATCH = 256


def cache_key(tokenizer_hash: str, split_hash: str, seq_len: int) -> str:
    text = f"v{FORMAT_VERSION}|{tokenizer_hash}|{split_hash}|{seq_len}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _blocks(split_path: str, tokenizer, seq_len: int) -> Iterator[dict]:
    """Yield ``{"input_ids": [...seq_len ids]}`` over the concatenated records of one split."""
    records = iter_records(split_path)
    first = next(records, None)
    if first is None:
        raise DistillError(
            f"{split_path}: no records, so nothing to tokenize; give this split a word budget (corpus.<split>_words) "
            "and rebuild it with python -m distill.corpus all --recipe RECIPE.yaml"
        )
    yield from text_blocks(itertools.chain([first], records), tokenizer, seq_len)


def text_blocks(texts: Iterable[str], tokenizer, seq_len: int) -> Iterator[dict]:
    """Yield ``{"input_ids": [...seq_len ids]}`` over ``[<s>] + ids(text) + [</s>]`` of every text,
    concatenated; the last partial block is dropped."""
    buffer: list[int] = []

    def encode(chunk: list[str]) -> None:
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            buffer.append(BOS_ID)
            buffer.extend(ids)
            buffer.append(EOS_ID)

    texts = iter(texts)
    # Batches of up to 256 texts; the tokenizer is never called with an empty one (it fails on []).
    while batch := list(itertools.islice(texts, _RECORDS_PER_BATCH)):
        encode(batch)
        while len(buffer) >= seq_len:
            yield {"input_ids": buffer[:seq_len]}
            del buffer[:seq_len]


def build_blocks(split_path: str | Path, tokenizer, seq_len: int, cache_root: str | Path):
    """Tokenize one split file into blocks, or load them from ``cache_root`` if already built.

    Returns a ``datasets.Dataset`` with one column ``input_ids`` (int32, ``seq_len`` long), in numpy
    format. The cache folder name is ``<split stem>-<key>``; see :func:`cache_key`.
    """
    split_path = Path(split_path)
    if not split_path.is_file():
        raise DistillError(f"{split_path}: corpus split missing; build it with python -m distill.corpus all --recipe RECIPE.yaml")
    tok_hash = tokenizer_sha256(tokenizer)
    split_hash = file_sha256(split_path)
    folder = Path(cache_root) / f"{split_path.stem}-{cache_key(tok_hash, split_hash, seq_len)}"
    if (folder / META).is_file():
        return datasets.load_from_disk(str(folder)).with_format("numpy")
    print(f"tokenizing {split_path} into blocks of {seq_len} -> {folder}", file=sys.stderr)
    datasets.disable_progress_bars()
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"), length=seq_len)})
    with write_folder(folder, CACHE_FILES, fix="delete that cache folder and run again") as tmp:
        scratch = tmp / ".scratch"  # datasets' own cache, inside ours so a killed run leaves one temporary only
        try:
            dataset = datasets.Dataset.from_generator(
                _blocks,
                gen_kwargs={"split_path": str(split_path), "tokenizer": tokenizer, "seq_len": seq_len},
                features=features,
                cache_dir=str(scratch),
            )
        except datasets.exceptions.DatasetGenerationError as err:
            if isinstance(err.__cause__, DistillError):  # a malformed split file: say so plainly
                raise err.__cause__ from None
            raise
        except ValueError as err:  # datasets' way of saying the generator yielded nothing
            if "corresponds to no data" not in str(err):
                raise
            dataset = []
        if len(dataset) == 0:
            raise DistillError(
                f"{split_path}: fewer than seq_len={seq_len} tokens, so not one block; "
                "give the split a larger word budget or lower data.seq_len"
            )
        dataset.save_to_disk(str(tmp))
        meta = {
            "split": str(split_path),
            "split_sha256": split_hash,
            "tokenizer_sha256": tok_hash,
            "seq_len": seq_len,
            "blocks": len(dataset),
            "tokens": len(dataset) * seq_len,
            "format_version": FORMAT_VERSION,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        del dataset  # release the scratch Arrow files before the folder is removed
        shutil.rmtree(scratch)
    return datasets.load_from_disk(str(folder)).with_format("numpy")


def load_blocks(recipe: Recipe, split: str, tokenizer):
    """The recipe's ``split`` ("train", "val", "test") as cached blocks of ``recipe.data.seq_len``."""
    path = recipe.paths.split(split)
    if not path.is_file():
        raise DistillError(
            f"{path}: corpus split missing; build it with python -m distill.corpus all --recipe {recipe.command_hint()}"
        )
    return build_blocks(path, tokenizer, recipe.data.seq_len, recipe.paths.tokens)


def blocks_from_texts(texts: Iterable[str], tokenizer, seq_len: int):
    """Blocks of ``seq_len`` from in-memory texts, laid out as :func:`build_blocks` lays out a split file
    of the same texts (not cached). Returns a ``datasets.Dataset`` with ``input_ids``, in numpy format."""
    texts = list(texts)
    if not texts:
        raise DistillError("no texts to train on: the list is empty; pass at least one text, a split file or a block dataset")
    blocks = [block["input_ids"] for block in text_blocks(texts, tokenizer, seq_len)]
    if not blocks:
        raise DistillError(f"the texts give fewer than seq_len={seq_len} tokens; give more text or a lower seq_len")
    return datasets.Dataset.from_dict({"input_ids": blocks}).with_format("numpy")


def as_blocks(data, tokenizer, seq_len: int, cache_root: str | Path):
    """Training blocks from a ``datasets.Dataset`` with ``input_ids`` (used as it is), a split file
    (:func:`build_blocks`, cached under ``cache_root``) or an iterable of texts (:func:`blocks_from_texts`)."""
    if data is None:
        raise DistillError("no training data; pass a split file, a list of texts or a block dataset")
    if hasattr(data, "column_names"):
        if "input_ids" not in data.column_names:
            raise DistillError(f"dataset has columns {data.column_names}, no input_ids; pass blocks from distill.data.build_blocks")
        return data
    if isinstance(data, (str, Path)):
        return build_blocks(data, tokenizer, seq_len, cache_root)
    if isinstance(data, Iterable):
        return blocks_from_texts(data, tokenizer, seq_len)
    raise DistillError(f"cannot train on a {type(data).__name__}; pass a split file, a list of texts or a block dataset")


class IndexedBlocks:
    """A block dataset whose items also carry their index, ``block_index`` (what the logit cache is keyed by)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.dataset[index]["input_ids"], "block_index": index}


def block_ids(dataset) -> np.ndarray:
    """All token ids of a block dataset as one flat integer array."""
    return np.asarray(dataset.with_format("numpy")["input_ids"]).reshape(-1)


def read_blocks(blocks: Any, start: int, end: int) -> np.ndarray:
    """Blocks ``start:end`` as an (n, seq_len) int64 array, from a ``datasets.Dataset`` with an
    ``input_ids`` column, a 2-D array or tensor, or a list of equal-length id lists."""
    if isinstance(blocks, torch.Tensor):
        return blocks[start:end].cpu().numpy().astype(np.int64)
    part = blocks[start:end]
    if isinstance(part, dict):
        part = part["input_ids"]
    if isinstance(part, torch.Tensor):
        part = part.cpu().numpy()
    if isinstance(part, list) and part and isinstance(part[0], torch.Tensor):
        part = [row.cpu().numpy() for row in part]
    array = np.asarray(part)
    if array.ndim != 2:
        raise ValueError(f"blocks {start}:{end} are not a 2-D array of token ids (got shape {array.shape})")
    return array.astype(np.int64)


def blocks_sha256(blocks: Any, batch: int = 4096) -> str:
    """sha256 of all token ids of ``blocks`` (as int32, in order) and their shape.

    The teacher-logit cache (:mod:`distill.logit_cache`) stores it as ``dataset_sha256``: pass the
    same value to ``open(expect=...)`` so that row i of the cache is certain to belong to block i of the dataset the loop trains on.
    """
    digest = hashlib.sha256()
    total = len(blocks)
    seq_len = None
    for start in range(0, total, batch):
        array = read_blocks(blocks, start, min(start + batch, total))
        seq_len = array.shape[1]
        digest.update(np.ascontiguousarray(array, dtype="<i4").tobytes())
    digest.update(f"|{total}x{seq_len}".encode())
    return digest.hexdigest()


def collate_blocks(items: list[dict]) -> dict:
    """Stack blocks into ``{"input_ids": (B, T) long, "labels": (B, T) long}`` (labels = inputs), plus
    ``block_index`` (B,) long for the items of :class:`IndexedBlocks`."""
    input_ids = torch.as_tensor(np.stack([np.asarray(item["input_ids"]) for item in items]), dtype=torch.long)
    batch = {"input_ids": input_ids, "labels": input_ids.clone()}
    if "block_index" in items[0]:
        batch["block_index"] = torch.tensor([item["block_index"] for item in items], dtype=torch.long)
    return batch


def unigram_perplexity(train_ids: Iterable[int] | np.ndarray, val_ids: Iterable[int] | np.ndarray, vocab_size: int | None = None) -> float:
    """Perplexity of ``val_ids`` under the add-one-smoothed unigram distribution of ``train_ids``.

    The floor every language model must beat: a model that ignores context entirely.
    ``vocab_size`` defaults to one more than the largest id seen.
    """
    train = (train_ids if isinstance(train_ids, np.ndarray) else np.asarray(list(train_ids), dtype=np.int64)).reshape(-1)
    val = (val_ids if isinstance(val_ids, np.ndarray) else np.asarray(list(val_ids), dtype=np.int64)).reshape(-1)
    if val.size == 0:
        raise ValueError("unigram_perplexity: no validation tokens")
    size = int(vocab_size or 0)
    size = max(size, int(train.max(initial=-1)) + 1, int(val.max()) + 1)
    counts = np.bincount(train, minlength=size).astype(np.float64) + 1.0
    log_probs = np.log(counts) - math.log(counts.sum())
    return float(math.exp(-log_probs[val].mean()))


class EpochShuffleSampler(Sampler[int]):
    """A permutation that depends only on ``seed`` and the epoch, so a resumed run sees the same order."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items
