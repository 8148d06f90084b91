"""The headline commands on a fresh recipe: each stage makes its cheap inputs, and an error's
suggested command works as printed."""
from __future__ import annotations

import json
import shlex

import pytest

from conftest import REPO, tiny_recipe_dict, write_recipe
from distill import student, teacher
from distill.artifacts import is_finished, why_stale
from distill.recipe import load_recipe

SAMPLE = REPO / "corpora" / "britannica-1911-sample"


@pytest.mark.slow  # a subprocess or a full stage chain: in the full suite, not the quick one
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


def test_bookkeeping_settings_do_not_make_a_model_stale(tiny_recipe, tmp_path):
    from distill.artifacts import expected_info, model_stale

    recipe = load_recipe(tiny_recipe)
    teacher = recipe.teachers[0]
    folder = tmp_path / "llama"
    folder.mkdir()
    for name, data in (("config.json", "{}"), ("model.safetensors", "")):
        (folder / name).write_text(data, encoding="utf-8")
    expected = expected_info(recipe, "teacher", teacher.name)
    (folder / "distill.json").write_text(json.dumps({"tokenizer_sha256": expected.tokenizer_sha256, "recipe": teacher.to_dict()}),
                                         encoding="utf-8")
    logs = load_recipe(tiny_recipe, ["teachers.llama.training.log_every=1", "teachers.llama.training.save_every=3",
                                     "teachers.llama.training.log_with=tensorboard"])
    assert model_stale(folder, expected_info(logs, "teacher", teacher.name)) is None
    lr = load_recipe(tiny_recipe, ["teachers.llama.training.lr=0.01"])
    assert model_stale(folder, expected_info(lr, "teacher", teacher.name)).startswith("recipe key changed: training.lr")


def test_a_recipe_key_newer_than_the_model_counts_as_its_default(tiny_recipe, tmp_path):
    """A folder trained before a recipe key existed stays current while the key keeps its default,
    and a disabled logit cache's other settings never matter."""
    from distill.artifacts import expected_info, model_stale

    recipe = load_recipe(tiny_recipe)
    folder = tmp_path / "student"
    folder.mkdir()
    for name, data in (("config.json", "{}"), ("model.safetensors", "")):
        (folder / name).write_text(data, encoding="utf-8")
    expected = expected_info(recipe, "student")
    old = recipe.student.to_dict()
    del old["training"]["max_grad_norm"], old["logit_cache"]["top_k"]  # keys an older version did not write
    saved = {"tokenizer_sha256": expected.tokenizer_sha256, "teacher_hashes": expected.teacher_hashes, "recipe": old}
    (folder / "distill.json").write_text(json.dumps(saved), encoding="utf-8")
    assert model_stale(folder, expected) is None
    assert model_stale(folder, expected_info(load_recipe(tiny_recipe, ["student.logit_cache.top_k=8"]), "student")) is None
    changed = model_stale(folder, expected_info(load_recipe(tiny_recipe, ["student.training.max_grad_norm=0.5"]), "student"))
    assert changed.startswith("recipe key changed: training.max_grad_norm")
    cached = model_stale(folder, expected_info(load_recipe(tiny_recipe, ["student.logit_cache.enabled=true"]), "student"))
    assert cached.startswith("recipe key") and "logit_cache" in cached
    # a cache saved before logit_cache.method existed was top-k + tail: the sampled default retrains it
    enabled = load_recipe(tiny_recipe, ["student.logit_cache.enabled=true"])
    old = enabled.student.to_dict()
    del old["logit_cache"]["method"]
    (folder / "distill.json").write_text(json.dumps(dict(saved, recipe=old)), encoding="utf-8")
    assert "logit_cache.method 'topk_tail' -> 'sampled'" in model_stale(folder, expected_info(enabled, "student"))
    assert model_stale(folder, expected_info(load_recipe(tiny_recipe, ["student.logit_cache.enabled=true",
                                                                       "student.logit_cache.method=topk_tail"]), "student")) is None


def test_the_baseline_does_not_depend_on_kd_settings(tiny_recipe):
    """alpha = 1 has no KD term: changing the temperature or the teachers' weights retrains the
    student, not the baseline."""
    from distill.artifacts import trained_by

    recipe = load_recipe(tiny_recipe)
    other = load_recipe(tiny_recipe, ["student.temperature=1", "student.teacher_weights=[1,0]", "student.divergence=jsd"])
    assert trained_by(recipe.student.as_baseline().to_dict()) == trained_by(other.student.as_baseline().to_dict())
    assert trained_by(recipe.student.to_dict()) != trained_by(other.student.to_dict())
    wider = load_recipe(tiny_recipe, ["student.training.lr=0.01"])
    assert trained_by(recipe.student.as_baseline().to_dict()) != trained_by(wider.student.as_baseline().to_dict())
