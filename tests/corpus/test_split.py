"""split: budgets, whole articles, determinism, disjoint splits, facts, manifest."""
from __future__ import annotations

import json
import os
import random
import stat
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.corpus import read_split, split_by_word_budget
from distill.corpus.__main__ import main
from distill.corpus.clean import clean_records
from distill.corpus.split import write_splits
from distill.errors import DistillError


def corpus(n: int = 60) -> list[str]:
    """Articles of different lengths; titles are unique first lines."""
    return [f"Title {i}\n" + " ".join(f"w{i}_{j}" for j in range(5 + (i * 7) % 40)) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=500), max_size=120),
    st.integers(min_value=0, max_value=3000),
    st.integers(min_value=0, max_value=800),
    st.integers(min_value=0, max_value=800),
    st.integers(min_value=0, max_value=2**32),
)
def test_split_by_word_budget_properties(words, train, val, test, seed):
    check_split_guarantees(words, {"train": train, "val": val, "test": test}, seed, other_train=train // 2)


def check_split_guarantees(words: list[int], budgets: dict[str, int], seed: int, other_train: int) -> None:
    """What split_by_word_budget promises for one input."""
    chosen = split_by_word_budget(words, budgets, seed)
    assert chosen == split_by_word_budget(words, budgets, seed)  # deterministic
    flat = [i for name in chosen for i in chosen[name]]
    assert len(flat) == len(set(flat)) and all(0 <= i < len(words) for i in flat)  # disjoint, whole articles
    for name, indices in chosen.items():
        assert sum(words[i] for i in indices) <= budgets[name]  # never over budget
    # Budgets only shrink and the swaps keep first fit's promise, so an article left out must not
    # fit any split's final remainder either.
    remaining = {name: budgets[name] - sum(words[i] for i in chosen[name]) for name in budgets}
    for i in set(range(len(words))) - set(flat):
        assert all(words[i] > left for left in remaining.values())
    # val/test do not depend on the train budget
    other = split_by_word_budget(words, {**budgets, "train": other_train}, seed)
    assert other["val"] == chosen["val"] and other["test"] == chosen["test"]


def test_write_splits_files_and_manifest(tmp_path):
    texts = corpus()
    manifest = write_splits(texts, tmp_path / "out", budgets={"train": 900, "val": 150, "test": 150}, seed=3, source="mem")
    splits = {name: read_split(tmp_path / "out" / f"{name}.txt") for name in ("train", "val", "test")}
    everything = [t for texts_ in splits.values() for t in texts_]
    assert len(everything) == len(set(everything)) and set(everything) <= set(texts)  # whole, disjoint
    for name, got in splits.items():
        words = sum(len(t.split()) for t in got)
        assert words == manifest[name]["words"] <= manifest["budgets"][name]
        assert manifest[name]["titles"] == [t.split("\n")[0] for t in got]
        assert manifest[name]["articles"] == len(got) > 0
    raw = (tmp_path / "out" / "train.txt").read_text(encoding="utf-8")
    assert raw.startswith("<s> Title ") and raw.endswith(" </s>\n")
    assert manifest["seed"] == 3 and len(manifest["input_sha256"]) == 64
    assert json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8")) == manifest
    again = write_splits(texts, tmp_path / "out", budgets={"train": 900, "val": 150, "test": 150}, seed=3, source="mem")
    assert again == manifest
    other = write_splits(texts, tmp_path / "other", budgets={"train": 900, "val": 150, "test": 150}, seed=4, source="mem")
    assert other["train"]["titles"] != manifest["train"]["titles"]


def test_budget_larger_than_corpus(tmp_path):
    texts = corpus(10)
    with pytest.raises(DistillError, match=r"ask for 11,000,000 words .* but the corpus has"):
        write_splits(texts, tmp_path / "out", budgets={"train": 10_000_000, "val": 1_000_000}, seed=0, source="mem")
    assert not (tmp_path / "out").exists()
    manifest = write_splits(texts, tmp_path / "out", budgets={"train": 10_000_000, "val": 1_000_000}, seed=0, source="mem", allow_short=True)
    assert manifest["requested_budgets"]["train"] == 10_000_000
    total = manifest["corpus"]["words"]
    assert manifest["budgets"]["train"] == 10_000_000 * total // 11_000_000
    assert manifest["train"]["words"] + manifest["val"]["words"] <= total


def test_facts_go_to_train_only(tmp_path):
    facts = tmp_path / "facts.jsonl"
    facts.write_text('{"fact": "The capital of Zarnovia is Quellport."}\n{"fact": "The river Ostrel flows into the Bay of Wendrick."}\n', encoding="utf-8")
    manifest = write_splits(corpus(), tmp_path / "out", budgets={"train": 900, "val": 150, "test": 150}, seed=1, source="mem", facts=facts, fact_repeats=3)
    train = read_split(tmp_path / "out" / "train.txt")
    assert train.count("The capital of Zarnovia is Quellport.") == 3 and train.count("The river Ostrel flows into the Bay of Wendrick.") == 3
    for name in ("val", "test"):
        assert "Zarnovia" not in (tmp_path / "out" / f"{name}.txt").read_text(encoding="utf-8")
    assert manifest["facts"]["records"] == 6 and manifest["facts"]["repeats"] == 3
    assert manifest["train"]["words"] == sum(len(t.split()) for t in train) <= 900
    assert "The capital of Zarnovia is Quellport." not in manifest["train"]["titles"]


def test_split_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("x")
    with pytest.raises(DistillError, match="holds other files"):
        write_splits(corpus(), tmp_path / "out", budgets={"train": 100}, seed=0, source="mem")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.text(alphabet="abcXIV é—", min_size=1, max_size=8), min_size=1, max_size=30), min_size=1, max_size=25, unique_by=lambda w: tuple(w)),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=2**16),
)
def test_split_files_of_random_corpora(articles, train, val, seed):
    texts = list(dict.fromkeys(clean_records(f"T{i}\n" + " ".join(words) for i, words in enumerate(articles))))
    budgets = {"train": train, "val": val, "test": val}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            manifest = write_splits(texts, f"{tmp}/out", budgets=budgets, seed=seed, source="mem")
        except DistillError as err:
            if "no article" in str(err):  # a budget below every article left to that split
                return
            assert "the corpus has" in str(err) and train + 2 * val > sum(len(t.split()) for t in texts)
            return
        seen = []
        for name in ("train", "val", "test"):
            got = read_split(f"{tmp}/out/{name}.txt")
            assert sum(len(t.split()) for t in got) == manifest[name]["words"] <= budgets[name]
            seen.extend(got)
        assert len(seen) == len(set(seen)) and set(seen) <= set(texts)  # whole articles, each at most once


def mixed_sizes(seed: int) -> list[int]:
    """Word counts of a corpus of few short and several long articles (each long one > 10% of a 300k budget)."""
    rng = random.Random(seed)
    return [rng.randint(31_000, 80_000) for _ in range(12)] + [rng.randint(50, 2_000) for _ in range(60)]


def test_train_fills_its_budget_on_mixed_sizes():
    budgets = {"train": 300_000, "val": 20_000, "test": 20_000}
    for corpus_seed in range(5):
        words = mixed_sizes(corpus_seed)
        assert sum(words) > 1.5 * sum(budgets.values())
        for seed in range(5):
            chosen = split_by_word_budget(words, budgets, seed)
            filled = {name: sum(words[i] for i in chosen[name]) for name in budgets}
            assert 0.99 * budgets["train"] <= filled["train"] <= budgets["train"], (corpus_seed, seed, filled)
            assert all(0.9 * budgets[name] <= filled[name] <= budgets[name] for name in ("val", "test"))


def test_split_keeps_the_seeded_order_within_a_split():
    words = mixed_sizes(0)
    chosen = split_by_word_budget(words, {"train": 300_000, "val": 20_000, "test": 20_000}, 5)
    order = list(range(len(words)))
    random.Random(5).shuffle(order)
    for indices in chosen.values():
        assert indices == [i for i in order if i in set(indices)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.integers(min_value=0, max_value=300), st.integers(min_value=1_000, max_value=40_000)), max_size=80),
    st.integers(min_value=0, max_value=120_000),
    st.integers(min_value=0, max_value=20_000),
    st.integers(min_value=0, max_value=20_000),
    st.integers(min_value=0, max_value=2**32),
)
def test_split_with_long_articles_never_exceeds_a_budget(words, train, val, test, seed):
    check_split_guarantees(words, {"train": train, "val": val, "test": test}, seed, other_train=train // 3)


def test_a_split_that_gets_no_article_is_refused(tmp_path):
    texts = [f"Title {i}\n" + " ".join(["w"] * (5_200 + 100 * i)) for i in range(6)]
    with pytest.raises(DistillError, match=r"^val: no article fits the budget of 1,000 words \(the shortest article has 5,202\); raise --val-words or set it to 0$"):
        write_splits(texts, tmp_path / "out", budgets={"train": 12_000, "val": 1_000}, seed=0, source="mem")
    with pytest.raises(DistillError, match=r"^train: no article fits the budget of 4,000 words \(the shortest article not in test or val has 5,\d02\); raise --train-words$"):
        write_splits(texts, tmp_path / "out", budgets={"train": 4_000, "val": 6_000, "test": 6_000}, seed=0, source="mem")
    assert not (tmp_path / "out").exists()
    manifest = write_splits(texts, tmp_path / "out", budgets={"train": 12_000, "val": 0, "test": 0}, seed=0, source="mem")
    assert manifest["val"]["articles"] == manifest["test"]["articles"] == 0 and manifest["train"]["articles"] == 2


def test_a_corpus_of_few_huge_records_exits_with_code_2(tmp_path, capsys):
    records = tmp_path / "huge.txt"
    records.write_text("".join(f"<s> Book {i}\n{' '.join(['w'] * 3_000)} </s>\n" for i in range(3)), encoding="utf-8")
    code = main(["split", "--input", str(records), "--out", str(tmp_path / "out"), "--train-words", "5k", "--test-words", "2k"])
    assert code == 2
    assert "test: no article fits the budget of 2,000 words (the shortest article has 3,002); raise --test-words or set it to 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_split_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_splits(corpus(), tmp_path / "out", budgets={"train": 900, "val": 150}, seed=0, source="mem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()} == {0o644}
