"""The headline commands on a fresh recipe: each stage makes its cheap inputs, and an error's
suggested command works as printed."""
from __future__ import annotations

import shlex

from conftest import REPO, tiny_recipe_dict, write_recipe
from distill import student, teacher
from distill.artifacts import is_finished, why_stale
from distill.recipe import load_recipe

SAMPLE = REPO / "corpora" / "britannica-1911-sample"


def test_teacher_then_student_on_a_fresh_output_dir(tmp_path, capsys):
    data = tiny_recipe_dict(tmp_path / "unused")
    data["corpus"]["source"] = str(SAMPLE)
    for section in [*data["teachers"], data["student"]]:
        section["training"]["max_steps"] = 3
    recipe_path = write_recipe(tmp_path / "fresh.yaml", data)
    out = tmp_path / "try"
    override = f"output_dir={out}"

    # The student needs trained teachers (expensive): a one-line error whose command works as printed.
    assert student.main([str(recipe_path), override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not trained yet" in err
    command = err.split("train it with ", 1)[1]
    words = shlex.split(command)
    assert words[:3] == ["accelerate", "launch", "-m"] and words[3] == "distill.teacher"

    # That command on the fresh folder builds the corpus splits and the tokenizer first.
    assert teacher.main(words[4:]) == 0
    recipe = load_recipe(recipe_path, [override])
    assert all(recipe.paths.split(name).is_file() for name in ("train", "val", "test"))
    assert why_stale(recipe, "tokenizer") is None
    assert all(is_finished(recipe.paths.teacher(t.name)) for t in recipe.teachers)

    assert student.main([str(recipe_path), override]) == 0
    assert is_finished(recipe.paths.student) and why_stale(recipe, "student") is None

    # A rerun with a changed setting says which key changed.
    capsys.readouterr()
    assert teacher.main([str(recipe_path), override, "teachers.llama.training.lr=0.001"]) == 0
    out_text = capsys.readouterr().out
    assert "teacher llama: retraining" in out_text and "recipe key changed: training.lr 0.003 -> 0.001" in out_text
    assert "teacher gpt2: finished" in out_text
    changed = load_recipe(recipe_path, [override, "teachers.llama.training.lr=0.001"])
    assert why_stale(changed, "student") == "its teachers have changed (llama)"
