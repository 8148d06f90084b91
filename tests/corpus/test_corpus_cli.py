"""python -m distill.corpus end to end: all on the shipped sample, the stage chain, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_recipe_dict, write_recipe
from distill.corpus import build_splits, read_split
from distill.corpus.__main__ import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "corpora" / "britannica-1911-sample"
BUDGETS = ["--train-words", "60k", "--val-words", "6k", "--test-words", "6_000", "--seed", "7"]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_all_on_the_shipped_sample_is_byte_identical_on_rerun(tmp_path, capsys):
    assert main(["all", "--source", str(SAMPLE), "--out", str(tmp_path / "a"), *BUDGETS]) == 0
    first = files(tmp_path / "a")
    assert sorted(first) == ["manifest.json", "test.txt", "train.txt", "val.txt"]
    assert main(["all", "--source", str(SAMPLE), "--out", str(tmp_path / "a"), *BUDGETS]) == 0
    assert files(tmp_path / "a") == first
    manifest = build_splits(SAMPLE, tmp_path / "b", train_words="60k", val_words=6000, test_words="6k", seed=7)
    assert files(tmp_path / "b") == first  # the Python API writes the same bytes
    assert 59_000 <= manifest["train"]["words"] <= 60_000 and manifest["val"]["words"] <= 6000


def test_stage_by_stage_equals_all(tmp_path):
    assert main(["combine", "--source", str(SAMPLE), "--out", str(tmp_path / "combined.txt")]) == 0
    assert main(["clean", "--input", str(tmp_path / "combined.txt"), "--out", str(tmp_path / "cleaned.txt")]) == 0
    assert main(["split", "--input", str(tmp_path / "cleaned.txt"), "--out", str(tmp_path / "s"), *BUDGETS]) == 0
    assert main(["all", "--source", str(SAMPLE), "--out", str(tmp_path / "a"), *BUDGETS]) == 0
    for name in ("train.txt", "val.txt", "test.txt"):
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    texts = read_split(tmp_path / "cleaned.txt")
    assert len(texts) == len(list(SAMPLE.glob("*.txt")))  # one record per article file, none merged


def corpus_recipe(tmp_path: Path, **corpus) -> Path:
    """A valid recipe writing under ``tmp_path/run`` whose corpus: section reads the shipped sample."""
    data = tiny_recipe_dict(tmp_path / "run")
    data["corpus"] = {"source": str(SAMPLE), "train_words": "50k", "val_words": 5000, "test_words": 5000, "seed": 1, **corpus}
    return write_recipe(tmp_path / "r.yaml", data)


def test_all_reads_the_recipe_corpus_section(tmp_path, capsys):
    facts = REPO / "tests" / "assets" / "facts.jsonl"
    recipe = corpus_recipe(tmp_path, facts=str(facts), fact_repeats=2)
    assert main(["all", "--recipe", str(recipe)]) == 0
    train = read_split(tmp_path / "run" / "corpus" / "train.txt")
    assert train.count("The capital of Zarnovia is Quellport.") == 2
    out = capsys.readouterr().out
    assert out.startswith("corpus: train ") and out.rstrip().endswith(f"-> {tmp_path / 'run' / 'corpus'}")


def test_all_takes_recipe_overrides_and_flags_win(tmp_path, capsys):
    recipe = corpus_recipe(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    # Overrides may stand before or after the options.
    assert main(["all", "--recipe", str(recipe), f"output_dir={elsewhere}", "--seed", "2", "corpus.val_words=3k"]) == 0
    assert sorted(p.name for p in (elsewhere / "corpus").iterdir()) == ["manifest.json", "test.txt", "train.txt", "val.txt"]
    assert not (tmp_path / "run").exists()
    manifest = json.loads((elsewhere / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == 2 and manifest["budgets"] == {"train": 50_000, "val": 3000, "test": 5000}
    # The same build as the library call with those settings.
    build_splits(SAMPLE, tmp_path / "lib", train_words="50k", val_words=3000, test_words=5000, seed=2)
    for name in ("train.txt", "val.txt", "test.txt"):
        assert (elsewhere / "corpus" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()


@pytest.mark.slow  # a subprocess: in the full suite, not the quick one
def test_all_runs_as_a_program_with_overrides(tmp_path):
    recipe = corpus_recipe(tmp_path)
    run = subprocess.run([sys.executable, "-m", "distill.corpus", "all", "--recipe", str(recipe), f"output_dir={tmp_path / 'try'}"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("corpus: train ") and (tmp_path / "try" / "corpus" / "train.txt").is_file()


def test_all_refuses_a_bad_recipe_or_override(tmp_path, capsys):
    recipe = corpus_recipe(tmp_path)
    bad(tmp_path, capsys, ["all", "--recipe", str(recipe), "corpus.train_wrds=1k"], "corpus.train_wrds: unknown key", "did you mean 'train_words'?")
    bad(tmp_path, capsys, ["all", "--recipe", str(recipe), "corpus.seed=x"], "corpus.seed")
    bad(tmp_path, capsys, ["all", "--source", str(SAMPLE), "--out", str(tmp_path / "out"), "--train-words", "1k", "seed=1"], "seed=1", "--recipe")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["scrape", "convert", "combine", "clean", "split", "all"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def bad(tmp_path, capsys, args: list[str], *needles: str) -> None:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out").exists()


def test_an_empty_path_is_refused_not_read_as_the_working_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["convert", "--source", "", "--out", "out"], ["convert", "--source", str(SAMPLE), "--out", " "],
                 ["fetch-gutenberg", "--out", "", "--from-dir", str(tmp_path)], ["all", "--source", "", "--out", "out", "--train-words", "1k"]):
        assert main(args) == 2
        assert "is empty; give a file or folder path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_one_line_exit_2_without_output(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    bad(tmp_path, capsys, ["all", "--source", str(empty), "--out", out, "--train-words", "1k"], str(empty), "no .txt or .json")
    bad(tmp_path, capsys, ["all", "--source", str(tmp_path / "missing"), "--out", out, "--train-words", "1k"], str(tmp_path / "missing"), "not found")
    bad(tmp_path, capsys, ["combine", "--source", str(empty), "--out", str(tmp_path / "out" / "c.txt")], str(empty))
    bad(tmp_path, capsys, ["all", "--source", str(SAMPLE), "--out", out, "--train-words", "lots"], "--train-words", "'lots' is not a word count")
    bad(tmp_path, capsys, ["all", "--source", str(SAMPLE), "--out", out, "--train-words", "10M", "--val-words", "1M"], str(SAMPLE), "--allow-short")
    bad(tmp_path, capsys, ["split", "--input", str(tmp_path / "nope.txt"), "--out", out, "--train-words", "1k"], str(tmp_path / "nope.txt"))
    bad(tmp_path, capsys, ["all", "--recipe", str(tmp_path / "nope.yaml")], str(tmp_path / "nope.yaml"))
    bad(tmp_path, capsys, ["all", "--source", str(SAMPLE), "--out", out, "--train-words", "1k", "--facts", str(tmp_path / "f.jsonl"), "--fact-repeats", "2"], "f.jsonl")


@pytest.mark.slow  # a subprocess: in the full suite, not the quick one
def test_module_runs_as_a_program(tmp_path):
    run = subprocess.run([sys.executable, "-m", "distill.corpus", "split", "--input", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o"), "--train-words", "1k"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "x.txt" in run.stderr


def test_a_recipe_whose_corpus_is_not_built_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # corpus.source is relative: corpora/britannica-1911 does not exist here
    code = main(["all", "--recipe", str(REPO / "recipes" / "britannica-22m.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: corpora/britannica-1911: not found")
    assert "python -m distill.corpus fetch-gutenberg --out corpora/eb1911-gutenberg" in err
    assert "python -m distill.corpus convert --source corpora/eb1911-gutenberg --out corpora/britannica-1911" in err
    assert not (tmp_path / "models").exists()
