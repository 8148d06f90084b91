"""Tokenized blocks: layout, the on-disk cache (no second tokenization), unigram perplexity."""
from __future__ import annotations

import math

import numpy as np
import pytest

import distill.data as data
from conftest import load_articles
from distill.errors import DistillError
from distill.recipe import load_recipe


def test_blocks_concatenate_records_with_markers(split_dir, tiny_tokenizer, tmp_path):
    blocks = data.build_blocks(split_dir / "val.txt", tiny_tokenizer, 32, tmp_path / "tokens")
    texts = load_articles()[-4:-2]
    stream = []
    for text in texts:
        stream += [1, *tiny_tokenizer(text, add_special_tokens=False)["input_ids"], 2]
    n = len(stream) // 32
    assert len(blocks) == n
    ids = data.block_ids(blocks)
    assert ids.dtype.kind == "i" and ids.tolist() == stream[: n * 32]
    assert blocks[0]["input_ids"].shape == (32,)


def test_second_build_reads_the_cache(split_dir, tiny_tokenizer, tmp_path, monkeypatch):
    first = data.build_blocks(split_dir / "val.txt", tiny_tokenizer, 32, tmp_path / "tokens")
    calls = []
    original = data._blocks

    def counting(*args, **kwargs):
        calls.append(args)
        yield from original(*args, **kwargs)

    monkeypatch.setattr(data, "_blocks", counting)
    second = data.build_blocks(split_dir / "val.txt", tiny_tokenizer, 32, tmp_path / "tokens")
    assert calls == [], "tokenized again"
    assert np.array_equal(data.block_ids(first), data.block_ids(second))
    # A different seq_len is a different cache entry.
    data.build_blocks(split_dir / "val.txt", tiny_tokenizer, 16, tmp_path / "tokens")
    assert len(calls) == 1
    folders = sorted(p.name for p in (tmp_path / "tokens").iterdir() if not p.name.startswith("."))
    assert len(folders) == 2 and all(name.startswith("val-") for name in folders)


def test_load_blocks_missing_split(tiny_recipe, tiny_tokenizer):
    recipe = load_recipe(tiny_recipe)
    recipe.paths.split("test").unlink()
    with pytest.raises(DistillError, match="python -m distill.corpus all --recipe"):
        data.load_blocks(recipe, "test", tiny_tokenizer)
    assert len(data.load_blocks(recipe, "val", tiny_tokenizer)) > 0


def test_too_short_split_is_refused(tmp_path, tiny_tokenizer):
    path = tmp_path / "val.txt"
    path.write_text("<s> A. </s>\n", encoding="utf-8")
    with pytest.raises(DistillError, match="fewer than seq_len=32 tokens, so not one block"):
        data.build_blocks(path, tiny_tokenizer, 32, tmp_path / "tokens")
    assert not (tmp_path / "tokens").exists()  # not even an empty cache folder is left


def test_collate_blocks():
    batch = data.collate_blocks([{"input_ids": np.arange(4, dtype=np.int32)}, {"input_ids": np.arange(4, 8, dtype=np.int32)}])
    assert batch["input_ids"].shape == (2, 4) and str(batch["input_ids"].dtype) == "torch.int64"
    assert batch["labels"].tolist() == batch["input_ids"].tolist()


def test_unigram_perplexity():
    # Add-one counts over vocab 3: train [0, 0, 1] -> (3, 2, 1) / 6.
    assert data.unigram_perplexity([0, 0, 1], [0], vocab_size=3) == pytest.approx(2.0)
    assert data.unigram_perplexity([0, 0, 1], [2, 1], vocab_size=3) == pytest.approx(math.exp(-(math.log(1 / 6) + math.log(2 / 6)) / 2))
    # Uniform train counts: perplexity is the vocabulary size.
    assert data.unigram_perplexity(np.arange(10).repeat(5), np.arange(10), vocab_size=10) == pytest.approx(10.0)
