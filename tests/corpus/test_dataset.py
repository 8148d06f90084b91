"""The corpus splits as a Hugging Face dataset: load_from_disk, the json loader and the card agree with the split files."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ASSETS, REPO, tiny_recipe_dict, write_recipe
from distill.corpus import build_splits
from distill.corpus.__main__ import main
from distill.corpus.convert import Article, write_articles
from distill.corpus.dataset import dataset_folder, sources_of_article_files
from distill.corpus.records import count_words, iter_records, record_title
from distill.errors import DistillError

datasets = pytest.importorskip("datasets")
SAMPLE = REPO / "corpora" / "britannica-1911-sample"
SPLITS = ("train", "val", "test")


def sample_slice(out: Path, files: int = 65) -> Path:
    """Every tenth article file of the shipped sample, the first ``files`` of them (all 65: 35,040 words)."""
    out.mkdir()
    for path in sorted(SAMPLE.glob("*.txt"))[::10][:files]:
        shutil.copy(path, out / path.name)
    return out


def rows(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The corpus stage of a recipe on a slice of the shipped sample, with facts injected: its output folder."""
    tmp = tmp_path_factory.mktemp("dataset")
    data = tiny_recipe_dict(tmp / "run")
    data["corpus"] = {"source": str(sample_slice(tmp / "articles")), "train_words": 20_000, "val_words": 3000,
                      "test_words": 3000, "seed": 3, "facts": str(ASSETS / "facts.jsonl"), "fact_repeats": 2}
    assert main(["all", "--recipe", str(write_recipe(tmp / "r.yaml", data))]) == 0
    return tmp / "run"


def test_load_from_disk_gives_the_records_of_the_split_files_with_the_manifest_counts(built):
    manifest = json.loads((built / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    splits = datasets.load_from_disk(str(built / "corpus_dataset"))
    assert list(splits) == list(SPLITS)
    facts = {json.loads(line)["fact"] for line in (ASSETS / "facts.jsonl").read_text(encoding="utf-8").splitlines()}
    for name in SPLITS:
        texts = list(iter_records(built / "corpus" / f"{name}.txt"))
        got = rows(splits[name])
        assert [row["text"] for row in got] == texts
        assert [row["words"] for row in got] == [count_words(text) for text in texts]
        assert sum(row["words"] for row in got) == manifest[name]["words"]
        articles = [row for row in got if row["source"] != "facts"]
        assert len(articles) == manifest[name]["articles"]
        assert [row["title"] for row in articles] == manifest[name]["titles"] == [record_title(row["text"]) for row in articles]
        assert {row["source"] for row in articles} == {"gutenberg"}  # the sample's files are named by their Gutenberg keys
        assert all(row["volume"] is None for row in got)
        injected = [row for row in got if row["source"] == "facts"]
        assert len(injected) == (manifest["facts"]["records"] if name == "train" else 0)
        assert all(row["title"] is None and row["text"] in facts for row in injected)


def test_the_json_loader_and_the_folder_give_the_same_rows(built, tmp_path):
    folder = built / "corpus_dataset"
    from_disk = datasets.load_from_disk(str(folder))
    files = {name: str(folder / "data" / f"{name}.jsonl") for name in SPLITS}
    from_json = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "cache"))
    by_card = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))  # the card's configs name the JSONL files
    for name in SPLITS:
        assert rows(from_json[name]) == rows(from_disk[name]) == rows(by_card[name])
    assert by_card["train"].features == from_disk["train"].features  # the card's features, not the json loader's guess


def test_the_card_parses_with_its_metadata_and_counts(built):
    from huggingface_hub import DatasetCard

    manifest = json.loads((built / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    splits = datasets.load_from_disk(str(built / "corpus_dataset"))
    card = DatasetCard.load(built / "corpus_dataset" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "public-domain"
    assert data["language"] == ["en"] and data["task_categories"] == ["text-generation"] and data["size_categories"] == ["n<1K"]
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": n, "path": f"data/{n}.jsonl"} for n in SPLITS]}]
    assert {s["name"]: s["num_examples"] for s in data["dataset_info"]["splits"]} == {n: len(splits[n]) for n in SPLITS}
    assert [f["name"] for f in data["dataset_info"]["features"]] == ["title", "text", "words", "source", "volume"]
    for name in SPLITS:
        split = manifest[name]
        assert f"| {name} | {len(splits[name]):,} | {split['articles']:,} | {split['words']:,} | {manifest['budgets'][name]:,} |" in card.text
    assert "random.Random(3)" in card.text and "Project Gutenberg" in card.text
    assert f"{manifest['facts']['records']} injected fact records" in card.text


def test_a_rebuild_writes_the_same_bytes_and_an_empty_split_is_left_out(tmp_path, capsys):
    source = sample_slice(tmp_path / "articles", files=16)
    args = ["all", "--source", str(source), "--out", str(tmp_path / "corpus"), "--train-words", "5k", "--test-words", "1k"]
    assert main([*args, "--dataset", str(tmp_path / "ds")]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == str(tmp_path / "ds")
    first = {p.relative_to(tmp_path / "ds"): p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    assert main([*args, "--dataset", str(tmp_path / "ds")]) == 0
    assert {p.relative_to(tmp_path / "ds"): p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()} == first
    assert list(datasets.load_from_disk(str(tmp_path / "ds"))) == ["train", "test"]  # val had a budget of 0
    assert sorted(p.name for p in (tmp_path / "ds" / "data").iterdir()) == ["test.jsonl", "train.jsonl"]
    capsys.readouterr()
    # Without --dataset the command writes the splits only.
    assert main(["all", "--source", str(source), "--out", str(tmp_path / "plain"), "--train-words", "5k"]) == 0
    assert "dataset" not in json.loads(capsys.readouterr().out) and not dataset_folder(tmp_path / "plain").exists()


def test_a_dataset_folder_holding_other_files_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DistillError, match="holds other files, not written by distill"):
        build_splits(sample_slice(tmp_path / "articles", files=8), tmp_path / "corpus", train_words="2k", dataset=tmp_path / "ds")
    for inside in (tmp_path / "corpus", tmp_path / "corpus" / "ds"):
        with pytest.raises(DistillError, match="is, holds or lies in the split folder"):
            build_splits(tmp_path / "articles", tmp_path / "corpus", train_words="2k", dataset=inside)
    assert not (tmp_path / "corpus").exists() and sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["notes.txt"]


def test_sources_come_from_convert_keys_in_memory_or_file_names(tmp_path):
    write_articles([Article("Abbey", "ABBEY, a monastery.", "1911 Encyclopædia Britannica/Abbey"),
                    Article("Capri", "CAPRI, an island.", "eb1911-gutenberg/Capri/2"),
                    Article("Dynasty", "DYNASTY, a race of kings.", "eb1810/vol7/12")], tmp_path / "text")
    assert sources_of_article_files(tmp_path / "text") == {"Abbey": "wikisource", "Capri": "gutenberg"}  # an 1810 file does not tell
    build_splits(ASSETS / "corpus" / "eb1810-sample.json", tmp_path / "corpus", train_words=300, dataset=tmp_path / "ds")
    assert {row["source"] for row in datasets.load_from_disk(str(tmp_path / "ds"))["train"]} == {"eb1810"}
    # A record file says nothing about its articles.
    assert main(["split", "--input", str(tmp_path / "corpus" / "train.txt"), "--out", str(tmp_path / "again"),
                 "--train-words", "250", "--dataset", str(tmp_path / "ds2")]) == 0
    assert {row["source"] for row in datasets.load_from_disk(str(tmp_path / "ds2"))["train"]} == {None}


@pytest.mark.slow  # a subprocess: in the full suite, not the quick one
def test_the_corpus_command_does_not_import_datasets_until_it_writes_one():
    code = "import sys, distill.corpus.__main__, distill.corpus.build; print('datasets' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr
