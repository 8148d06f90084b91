"""The byte-level BPE tokenizer: special ids, AutoTokenizer loading, stable hash, CLI skip."""
from __future__ import annotations

import json

import pytest

from conftest import load_articles, write_split_file
from distill.artifacts import TOKENIZER_STAMP as STAMP
from distill.artifacts import file_sha256, tokenizer_sha256
from distill.corpus.records import iter_records
from distill.errors import DistillError
from distill.tokenizer import load_tokenizer, main, train_tokenizer


def test_special_tokens_and_autotokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    assert [tok.convert_tokens_to_ids(t) for t in ("<pad>", "<s>", "</s>")] == [0, 1, 2]
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert len(tok) == 400
    # Prompts get <s> in front, as every article had in training; bare ids on request.
    ids = tok("London was")["input_ids"]
    assert ids[0] == 1 and 1 not in ids[1:]
    assert tok("London was", add_special_tokens=False)["input_ids"] == ids[1:]
    # The markers of the split files are single special ids.
    marked = tok("<s> DYNASTY, a race </s>", add_special_tokens=False)["input_ids"]
    assert marked[0] == 1 and marked[-1] == 2 and marked.count(1) == 1 and marked.count(2) == 1


def test_byte_level_round_trip(tiny_tokenizer):
    text = load_articles()[0][:2000] + "\nŒuvre — naïve ∑ 東京"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert max(ids) < 400


def test_hash_is_stable(tiny_tokenizer_dir, tiny_tokenizer, tmp_path):
    stamp = json.loads((tiny_tokenizer_dir / STAMP).read_text())
    assert tokenizer_sha256(tiny_tokenizer_dir) == tokenizer_sha256(tiny_tokenizer) == stamp["tokenizer_sha256"]
    assert stamp["vocab_size"] == 400 and stamp["min_frequency"] == 2
    # Training is deterministic: the same split gives the same tokenizer.
    train = tmp_path / "train.txt"
    train.write_text((tiny_tokenizer_dir.parent / "corpus" / "train.txt").read_text(encoding="utf-8"), encoding="utf-8")
    again = train_tokenizer(train, 400, 2, tmp_path / "tok")
    assert tokenizer_sha256(again) == stamp["tokenizer_sha256"]
    other = train_tokenizer(train, 300, 2, tmp_path / "tok300")
    assert tokenizer_sha256(other) != stamp["tokenizer_sha256"]


def test_iter_records_multi_line_and_malformed(tmp_path):
    path = write_split_file(tmp_path / "s.txt", ["ABBEY, a monastery.\nIts second paragraph.", "ACRE, a measure."])
    assert list(iter_records(path)) == ["ABBEY, a monastery.\nIts second paragraph.", "ACRE, a measure."]
    bad = tmp_path / "bad.txt"
    bad.write_text("<s> no end\n", encoding="utf-8")
    with pytest.raises(DistillError, match="no closing"):
        list(iter_records(bad))
    bad.write_text("no start </s>\n", encoding="utf-8")
    with pytest.raises(DistillError, match="must start with"):
        list(iter_records(bad))


def test_cli_trains_once_on_train_only(tiny_recipe, capsys):
    from distill.recipe import load_recipe

    recipe = load_recipe(tiny_recipe)
    assert main([str(tiny_recipe)]) == 0
    assert "trained" in capsys.readouterr().out
    folder = recipe.paths.tokenizer
    stamp = json.loads((folder / STAMP).read_text())
    assert stamp["train_sha256"] == file_sha256(recipe.paths.split("train"))
    before = (folder / "tokenizer.json").stat().st_mtime_ns
    assert main([str(tiny_recipe)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (folder / "tokenizer.json").stat().st_mtime_ns == before
    assert load_tokenizer(folder).bos_token_id == 1
    # A changed setting retrains.
    assert main([str(tiny_recipe), "tokenizer.vocab_size=300"]) == 0
    assert json.loads((folder / STAMP).read_text())["vocab_size"] == 300


def test_cli_missing_split_builds_the_corpus_first(tiny_recipe, capsys):
    from conftest import REPO
    from distill.recipe import load_recipe

    train = load_recipe(tiny_recipe).paths.split("train")
    train.unlink()
    # The fixture's corpus.source holds no articles: a one-line error naming it, no tokenizer.
    assert main([str(tiny_recipe)]) == 2
    err = capsys.readouterr().err
    assert "tests/assets/teacher: holds no .txt or .json article files" in err and len(err.strip().splitlines()) == 1
    assert not load_recipe(tiny_recipe).paths.tokenizer.exists()
    # A real source: the splits are built, then the tokenizer is trained on them.
    source = f"corpus.source={REPO / 'corpora' / 'britannica-1911-sample'}"
    assert main([str(tiny_recipe), source]) == 0
    assert train.stat().st_size > 0 and "tokenizer trained" in capsys.readouterr().out
