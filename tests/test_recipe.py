"""Recipe loading, overrides and validation: every shipped recipe loads, bad ones say what to fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ASSETS, REPO, tiny_recipe_dict, write_recipe
from distill.errors import DistillError
from distill.recipe import Recipe, load_recipe, recipe_from_dict

SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))  # recipes/accelerate/ holds accelerate configs, not recipes
BAD = sorted((ASSETS / "recipes").glob("*.yaml"))


def test_shipped_recipes_exist():
    names = {p.name for p in SHIPPED}
    assert {"tiny.yaml", "babylm-10m.yaml", "britannica-22m.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_recipe_is_valid(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.output_dir.is_absolute()
    assert recipe.teachers and recipe.student
    header = path.read_text(encoding="utf-8").splitlines()
    assert header[0].startswith("#"), "a recipe starts with a comment giving its launch command"
    comment = "\n".join(line for line in header if line.startswith("#"))
    assert "distill.teacher" in comment and path.name in comment


def _expectations(path: Path) -> tuple[list[str], int | None]:
    expected, count = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect: "):
            expected.append(line[len("# expect: "):])
        elif line.startswith("# problems: "):
            count = int(line[len("# problems: "):])
    return expected, count


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_recipe_names_every_problem(path):
    expected, count = _expectations(path)
    assert expected, f"{path} needs '# expect: ' lines"
    with pytest.raises(DistillError) as err:
        load_recipe(path)
    message = str(err.value)
    assert message.startswith(str(path))
    for text in expected:
        assert text in message
    if count is not None:
        listed = [line for line in message.splitlines() if line.startswith("  - ")]
        assert len(listed) == count or (count == 1 and len(message.splitlines()) == 1), message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(DistillError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(DistillError, match="not valid YAML"):
        load_recipe(bad)


def test_overrides(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe_dict(tmp_path / "out"))
    recipe = load_recipe(
        path,
        [
            "teachers.0.training.lr=3e-4",  # YAML 1.1 reads 3e-4 as a string; float fields accept it
            "student.alpha=0.7",
            "teachers.gpt2.num_layers=3",  # a list item by its name
            "teachers[1].training.max_steps=5",
            "student.teacher_weights=[1, 3]",
            "corpus.train_words=10M",
            "student.logit_cache.dir=null",
        ],
    )
    assert recipe.teachers[0].training.lr == pytest.approx(3e-4)
    assert recipe.student.alpha == 0.7
    assert recipe.teachers[1].num_layers == 3
    assert recipe.teachers[1].training.max_steps == 5
    assert recipe.student.teacher_weights == [1.0, 3.0]
    assert recipe.corpus.train_words == 10_000_000
    assert recipe.overrides[1] == "student.alpha=0.7"


def test_override_errors_are_collected(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe_dict(tmp_path / "out"))
    with pytest.raises(DistillError) as err:
        load_recipe(
            path,
            ["teachers.5.training.lr=1", "student.alpah=0.7", "teachers.0.lr=1", "no-equals", "teachers.1.hidden_size=1000", "teachers.1.num_heads=16"],
        )
    message = str(err.value)
    assert "5 problems" in message
    assert "teachers.5: pick an index 0..1 or a name (llama, gpt2)" in message
    assert "student.alpah: unknown key; did you mean 'alpha'?" in message
    assert "teachers[0].lr: unknown key; did you mean 'training.lr'?" in message
    assert "expected key=value" in message
    assert "teachers[1].hidden_size: 1000 is not divisible by num_heads 16; pick a multiple of 16" in message


def test_yaml_underscore_integers_and_budget_strings(tmp_path):
    data = tiny_recipe_dict(tmp_path / "out")
    data["corpus"].update(train_words="38M", val_words="500k")
    path = tmp_path / "r.yaml"
    path.write_text(
        __import__("yaml").safe_dump(data, sort_keys=False).replace("test_words: 500", "test_words: 400_000"), encoding="utf-8"
    )
    corpus = load_recipe(path).corpus
    assert (corpus.train_words, corpus.val_words, corpus.test_words) == (38_000_000, 500_000, 400_000)


def test_a_string_that_is_not_a_whole_count_is_the_wrong_type(tmp_path):
    data = tiny_recipe_dict(tmp_path / "out")
    data["corpus"].update(train_words="1.5", val_words="x")
    with pytest.raises(DistillError) as err:
        recipe_from_dict(data)
    assert "corpus.train_words: expected an integer, got '1.5'" in str(err.value)
    assert "corpus.val_words: expected an integer, got 'x'" in str(err.value)


def test_output_dir_default_and_paths_relative_to_cwd(tmp_path, monkeypatch):
    data = tiny_recipe_dict(tmp_path / "ignored")
    del data["output_dir"]
    data["corpus"]["source"] = "corpora/sample"
    (tmp_path / "sub").mkdir()
    path = write_recipe(tmp_path / "sub" / "r.yaml", data)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("sub/r.yaml")
    assert recipe.output_dir == tmp_path / "models" / "test-tiny"
    assert recipe.corpus.source == tmp_path / "corpora" / "sample"  # the cwd, not the recipe's folder
    paths = recipe.paths
    root = recipe.output_dir
    assert paths.corpus == root / "corpus" and paths.split("val") == root / "corpus" / "val.txt"
    assert paths.tokenizer == root / "tokenizer" and paths.tokens == root / "tokens"
    assert paths.teacher("llama") == root / "teachers" / "llama"
    assert (paths.student, paths.baseline) == (root / "student", root / "baseline")
    assert paths.teacher_logits == root / "teacher_logits" and paths.report == root / "report"
    assert path.exists()


def test_to_dict_round_trips(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe_dict(tmp_path / "out")))
    data = recipe.to_dict()
    assert "source" not in data and "overrides" not in data
    assert data["teachers"][1]["intermediate_size"] == 128  # gpt2 default: 4 * hidden_size
    again = recipe_from_dict(data)
    assert again.to_dict() == data


def test_teacher_lookup_suggests_name(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe_dict(tmp_path / "out")))
    assert recipe.teacher("gpt2").arch == "gpt2"
    with pytest.raises(DistillError, match="did you mean 'llama'"):
        recipe.teacher("lama")


def test_teachers_must_share_mixed_precision(tmp_path):
    data = tiny_recipe_dict(tmp_path / "out")
    data["teachers"][0]["training"] = dict(data["teachers"][0]["training"], mixed_precision="bf16")
    with pytest.raises(DistillError, match="mixed_precision"):
        recipe_from_dict(data)


def test_cli_prints_one_error_and_exits_2(capsys):
    from distill.tokenizer import main

    assert main([str(ASSETS / "recipes" / "typo.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'alpha'" in err and "Traceback" not in err


def test_generate_temperature_zero_is_greedy_and_negative_is_refused(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe_dict(tmp_path / "out"))
    assert load_recipe(path, ["generate.temperature=0"]).generate.temperature == 0.0  # greedy, as distill.generate does
    with pytest.raises(DistillError, match=r"generate.temperature: -0.5 is negative; use 0 for greedy"):
        load_recipe(path, ["generate.temperature=-0.5"])
    with pytest.raises(DistillError, match=r"generate.prompts: \[\] must be a list of non-empty prompts"):
        load_recipe(path, ["generate.prompts=[]"])


def test_save_at_words_are_counts_from_small_to_large_each_once(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe_dict(tmp_path / "out"))
    recipe = load_recipe(path, ["student.training.save_at_words=[50k, 1M, 2_500_000]"])
    assert recipe.student.training.save_at_words == [50_000, 1_000_000, 2_500_000]
    assert recipe.teachers[0].training.save_at_words == []  # the default: no folders
    cases = {
        "[2M, 1M]": r"student.training.save_at_words: \[2M, 1M\] is not in increasing order; list the counts from small to large: \[1M, 2M\]",
        "[1M, 1_000_000]": r"student.training.save_at_words: \[1M, 1M\] lists 1M more than once; give each count once",
        "[0, 1M]": r"student.training.save_at_words: 0 in \[0, 1M\] is not positive",
        "[ten]": r"student.training.save_at_words\[0\]: expected an integer, got 'ten'",
        "1M": r"student.training.save_at_words: expected a list of an integer",
    }
    for value, message in cases.items():
        with pytest.raises(DistillError, match=message):
            load_recipe(path, [f"student.training.save_at_words={value}"])

