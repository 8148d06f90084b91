"""Nothing crashes on bad input: every command answers a bad file, folder, value or argument with one
``error:`` line and exit code 2, never a traceback, and fails before the expensive work."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import load_articles, tiny_recipe_dict, write_recipe, write_split_file, write_splits
from test_generate import build_tiny_model_dir, tiny_model, train_tiny_tokenizer  # tests/test_generate.py

from distill.__main__ import main as pipeline_main
from distill.corpus.__main__ import main as corpus_main
from distill.errors import DistillError
from distill.evaluate import main as evaluate_main
from distill.generate import main as generate_main
from distill.recipe import load_recipe
from distill.serve import main as serve_main
from distill.student import main as student_main
from distill.teacher import main as teacher_main
from distill.tokenizer import main as tokenizer_main

NOT_UTF8 = b"\xe9t\xe9"  # "été" in Latin-1


def one_error_line(capsys, *words: str) -> str:
    """stderr is exactly one ``error:`` line holding every one of ``words``; returns it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    tokenizer = train_tiny_tokenizer()
    return build_tiny_model_dir(tmp_path_factory.mktemp("good") / "model", tiny_model(len(tokenizer)), tokenizer)


@pytest.fixture(scope="module")
def val_split(tmp_path_factory) -> Path:
    return write_split_file(tmp_path_factory.mktemp("split") / "val.txt", load_articles()[-4:])


def copy_model(good: Path, folder: Path) -> Path:
    shutil.copytree(good, folder)
    return folder


WEIGHTS = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x89not safetensors\x00" * 64,
}


@pytest.fixture(params=sorted(WEIGHTS))
def broken_weights(request, good_model, tmp_path) -> Path:
    folder = copy_model(good_model, tmp_path / f"{request.param}-model")
    weights = folder / "model.safetensors"
    weights.write_bytes(WEIGHTS[request.param](weights.read_bytes()))
    return folder


# 1. A recipe that is not UTF-8 -------------------------------------------------------------------

RECIPE_COMMANDS = {
    "run": lambda recipe: pipeline_main(["run", recipe]),
    "tokenizer": lambda recipe: tokenizer_main([recipe]),
    "serve": lambda recipe: serve_main([recipe, "--port", "0"]),
    "corpus-all": lambda recipe: corpus_main(["all", "--recipe", recipe]),
}


@pytest.mark.parametrize("command", sorted(RECIPE_COMMANDS))
def test_a_recipe_that_is_not_utf8_is_one_line_naming_the_file(command, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_recipe_dict(tmp_path / "out"))
    recipe.write_bytes(recipe.read_bytes() + b"# r" + NOT_UTF8 + b"sum\xe9\n")
    assert RECIPE_COMMANDS[command](str(recipe)) == 2
    one_error_line(capsys, str(recipe), "UTF-8", "0xe9")
    assert not (tmp_path / "out").exists()


# 2. An output_dir that can never be a folder -----------------------------------------------------

@pytest.mark.parametrize("where", ["/dev/null", "a file", "below a file"])
def test_an_output_dir_that_is_a_file_is_refused_when_the_recipe_is_read(where, tiny_recipe, capsys):
    afile = tiny_recipe.parent / "notes.txt"
    afile.write_text("mine\n", encoding="utf-8")
    output_dir = {"/dev/null": "/dev/null", "a file": str(afile), "below a file": str(afile / "run")}[where]
    assert pipeline_main(["run", str(tiny_recipe), f"output_dir={output_dir}"]) == 2
    one_error_line(capsys, "output_dir", output_dir)
    assert afile.read_text(encoding="utf-8") == "mine\n"
    with pytest.raises(DistillError, match="output_dir"):
        load_recipe(tiny_recipe, [f"output_dir={output_dir}"])


# 3. Model folders with broken weights or config --------------------------------------------------

def test_generate_on_broken_weights_is_one_line_naming_the_file(broken_weights, capsys):
    assert generate_main([str(broken_weights), "London was", "--max-new-tokens", "2", "--device", "cpu"]) == 2
    one_error_line(capsys, str(broken_weights / "model.safetensors"))


def test_serve_on_broken_weights_is_one_line_naming_the_file(broken_weights, capsys):
    assert serve_main([str(broken_weights), "--port", "0", "--device", "cpu"]) == 2
    one_error_line(capsys, str(broken_weights / "model.safetensors"))


def test_evaluate_on_broken_weights_fails_before_scoring_any_model(broken_weights, good_model, val_split, tmp_path, capsys):
    out = tmp_path / "report"
    argv = [str(good_model), str(broken_weights), "--split", f"val={val_split}", "--out", str(out), "--device", "cpu"]
    assert evaluate_main(argv) == 2
    one_error_line(capsys, str(broken_weights / "model.safetensors"))  # no "evaluate: <model>" log line before it
    assert not out.exists()


def test_the_student_stage_with_a_broken_teacher_is_one_line_naming_its_weights(broken_weights, tmp_path, capsys):
    data = tiny_recipe_dict(tmp_path / "out")
    data["teachers"] = data["teachers"][:1]
    recipe = write_recipe(tmp_path / "tiny.yaml", data)
    write_splits(tmp_path / "out" / "corpus")
    assert tokenizer_main([str(recipe)]) == 0
    capsys.readouterr()
    teacher = tmp_path / "out" / "teachers" / "llama"
    shutil.copytree(broken_weights, teacher)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the recipe's tokenizer, as a trained teacher has it
        shutil.copy(tmp_path / "out" / "tokenizer" / name, teacher / name)
    assert student_main([str(recipe), "--only", "student"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {teacher / 'model.safetensors'}: ") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out" / "student").exists()


CONFIGS = {
    "not an object": lambda config: "[1, 2]\n",
    "mismatched shapes": lambda config: json.dumps({**config, "hidden_size": 64}),
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_generate_on_a_bad_config_is_one_line_naming_it(kind, good_model, tmp_path, capsys):
    folder = copy_model(good_model, tmp_path / "model")
    config = folder / "config.json"
    config.write_text(CONFIGS[kind](json.loads(config.read_text(encoding="utf-8"))), encoding="utf-8")
    assert generate_main([str(folder), "London was", "--max-new-tokens", "2", "--device", "cpu"]) == 2
    line = one_error_line(capsys, str(folder))
    if kind == "mismatched shapes":
        assert "model.safetensors" in line and "config.json" in line and "(400, 32)" in line and "(400, 64)" in line


def test_a_teacher_whose_config_does_not_match_its_weights_is_refused_when_loaded(good_model, tmp_path):
    from distill.ensemble import TeacherEnsemble
    from transformers import AutoTokenizer

    folder = copy_model(good_model, tmp_path / "teacher")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}), encoding="utf-8")
    ensemble = TeacherEnsemble([folder], AutoTokenizer.from_pretrained(str(good_model)))
    with pytest.raises(DistillError, match=r"mlp\.\w+_proj\.weight"):
        ensemble.load()


# 4. generate's arguments -------------------------------------------------------------------------

GENERATE_ARGS = {  # case: (prompt, options, a word of the error)
    "cuda without CUDA": ("London was", ["--device", "cuda"], "CUDA"),
    "bogus device": ("London was", ["--device", "bogus"], "bogus"),
    "seed too large": ("London was", ["--seed", "99999999999999999999999"], "seed"),
    "prompt not UTF-8": ("caf\udce9 was", [], "0xe9"),  # how Python keeps the byte 0xe9 of a Latin-1 command line
}


@pytest.mark.parametrize("case", sorted(GENERATE_ARGS))
def test_generate_refuses_a_bad_argument_in_one_line(case, good_model, capsys):
    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    prompt, options, word = GENERATE_ARGS[case]
    assert generate_main([str(good_model), prompt, "--max-new-tokens", "2", *options]) == 2
    one_error_line(capsys, word)


# 5. The corpus commands on files that are not UTF-8 or JSON nested too deep ----------------------

@pytest.mark.parametrize("command", ["split", "clean"])
def test_split_and_clean_on_a_file_that_is_not_utf8_name_its_line(command, tmp_path, capsys):
    records = tmp_path / "cleaned.txt"
    records.write_bytes(b"<s> First\nfine text </s>\n<s> Second\nsome " + NOT_UTF8 + b" text </s>\n")
    out = tmp_path / "out"
    extra = ["--train-words", "2"] if command == "split" else []
    assert corpus_main([command, "--input", str(records), "--out", str(out), *extra]) == 2
    one_error_line(capsys, f"{records}:4:", "UTF-8", "0xe9")
    assert not out.exists()


def test_convert_on_json_nested_too_deep_is_one_line_naming_the_file(tmp_path, capsys):
    source = tmp_path / "raw"
    source.mkdir()
    (source / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert corpus_main(["convert", "--source", str(source), "--out", str(tmp_path / "text")]) == 2
    one_error_line(capsys, str(source / "deep.json"), "nested")


def test_a_seed_that_is_not_a_number_in_the_recipe_is_one_line(tmp_path, capsys):
    data = tiny_recipe_dict(tmp_path / "out")
    data["corpus"]["seed"] = "abc"
    recipe = write_recipe(tmp_path / "tiny.yaml", data)
    assert corpus_main(["all", "--recipe", str(recipe)]) == 2
    one_error_line(capsys, "corpus.seed", "'abc'")


# 6. evaluate's arguments, checked before any model is scored -------------------------------------

def test_evaluate_on_a_binary_split_fails_before_scoring(good_model, tmp_path, capsys):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "report"
    assert evaluate_main([str(good_model), "--split", f"val={binary}", "--out", str(out), "--device", "cpu"]) == 2
    one_error_line(capsys, str(binary))
    assert not out.exists()


def test_evaluate_refuses_a_seq_len_past_the_models_positions(good_model, val_split, tmp_path, capsys):
    out = tmp_path / "report"
    argv = [str(good_model), "--split", f"val={val_split}", "--out", str(out), "--seq-len", "100000", "--device", "cpu"]
    assert evaluate_main(argv) == 2
    one_error_line(capsys, "100000", "64")
    assert not out.exists()


def test_evaluate_refuses_an_out_that_is_a_file_before_scoring(good_model, val_split, tmp_path, capsys):
    out = tmp_path / "report.md"
    out.write_text("my notes\n", encoding="utf-8")
    assert evaluate_main([str(good_model), "--split", f"val={val_split}", "--out", str(out), "--device", "cpu"]) == 2
    one_error_line(capsys, str(out), "not a folder")  # one line: no model was loaded or scored first
    assert out.read_text(encoding="utf-8") == "my notes\n"


# 7. Values a recipe must refuse ------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("teachers.0.training.lr=inf", "teachers[0].training.lr"),
    ("student.temperature=.inf", "student.temperature"),
    ("student.training.lr=-.inf", "student.training.lr"),
    ("student.alpha=.nan", "student.alpha"),
    ("teachers.0.training.max_grad_norm=.nan", "teachers[0].training.max_grad_norm"),
    ("generate.seed=99999999999999999999999", "generate.seed"),
    ("teachers.0.training.seed=-1", "teachers[0].training.seed"),
])  # fmt: skip
def test_a_recipe_refuses_non_finite_numbers_and_seeds_out_of_range(override, key, tiny_recipe):
    with pytest.raises(DistillError) as err:
        load_recipe(tiny_recipe, [override])
    assert f": {key}: " in str(err.value) and "\n" not in str(err.value)


# 8. Usage errors: one line, for every command and subcommand -------------------------------------

USAGE = [
    (pipeline_main, ["run"]), (pipeline_main, ["bogus"]), (pipeline_main, ["run", "r.yaml", "--from", "bogus"]),
    (corpus_main, []), (corpus_main, ["bogus"]), (corpus_main, ["split"]), (corpus_main, ["clean", "--input"]),
    (corpus_main, ["all", "--bogus"]), (corpus_main, ["scrape", "--out", "x", "--limit", "abc"]), (corpus_main, ["convert"]),
    (corpus_main, ["combine", "--bogus"]), (corpus_main, ["fetch-gutenberg"]),
    (serve_main, []), (serve_main, ["x", "--port", "abc"]), (generate_main, []), (generate_main, ["x", "y", "--top-k", "abc"]),
    (evaluate_main, []), (evaluate_main, ["x", "--seq-len", "abc"]), (tokenizer_main, []), (tokenizer_main, ["r.yaml", "--bogus"]),
    (teacher_main, []), (teacher_main, ["r.yaml", "--bogus"]), (student_main, []), (student_main, ["r.yaml", "--bogus"]),
]  # fmt: skip


@pytest.mark.parametrize("main, argv", USAGE, ids=[f"{main.__module__}:{' '.join(argv)}" for main, argv in USAGE])
def test_a_usage_error_is_one_line_pointing_at_help(main, argv, capsys):
    assert main(argv) == 2
    assert one_error_line(capsys).endswith(" --help")


def test_every_command_parser_and_subparser_has_one_line_errors():
    import argparse

    from distill import __main__ as pipeline, serve
    from distill.cli import ArgumentParser
    from distill.corpus import __main__ as corpus

    def walk(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    parsers = [*walk(pipeline.build_parser()), *walk(corpus.build_parser()), serve.build_parser()]
    assert len(parsers) == 3 + 8 + 1  # python -m distill, run, sweep; the corpus commands; serve
    assert all(type(parser) is ArgumentParser for parser in parsers)


def test_a_bug_keeps_its_traceback():
    from distill.errors import cli_entry

    @cli_entry
    def main(argv=None):
        return {}["missing"]  # a bug, not a user error: nothing turns it into exit 2

    with pytest.raises(KeyError):
        main([])
