"""The teacher stage end to end: two real processes, kill-and-resume, NaN stop, input errors."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from conftest import interrupt_at_checkpoint, REPO, free_port as _free_port, metrics_rows as _rows, steps_per_epoch, subprocess_env as _env
from distill.artifacts import expected_info, model_stale
from distill.recipe import load_recipe
from distill.teacher import main

RESUME_TOLERANCE = 1e-4  # val loss, resumed vs uninterrupted (single process on CPU: equal in practice)


@pytest.mark.slow
def test_two_processes_train_loadable_teachers(tiny_recipe, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    overrides = ["teachers.llama.training.epochs=3", "teachers.gpt2.training.epochs=3"]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(_free_port()), "-m", "distill.teacher", str(tiny_recipe), *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recipe = load_recipe(tiny_recipe, overrides)
    for teacher in recipe.teachers:
        folder = recipe.paths.teacher(teacher.name)
        info = json.loads((folder / "distill.json").read_text())
        assert info["role"] == "teacher" and info["arch"] == teacher.arch and info["name"] == teacher.name
        assert info["metrics"]["num_processes"] == 2
        assert info["recipe"]["hidden_size"] == 32 and info["seq_len"] == 32
        assert info["tokenizer_sha256"] and info["corpus_manifest_sha256"]
        # The small models already beat a context-free unigram model of the same text.
        assert info["metrics"]["val_ppl"] < info["metrics"]["unigram_val_ppl"]
        assert not (folder / "checkpoints").exists()
        rows = _rows(folder)
        assert [r["epoch"] for r in rows if r["split"] == "val"] == [1, 2, 3]
        assert all({"step", "epoch", "split", "loss"} <= set(r) for r in rows)
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        assert type(model).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[teacher.arch]
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
        generator = pipeline("text-generation", model=str(folder), device="cpu")
        out = generator("London was", max_new_tokens=5, do_sample=False)[0]["generated_text"]
        assert out.startswith("London was") and len(out) > len("London was")
    # A rerun skips finished teachers.
    assert main([str(tiny_recipe), *overrides]) == 0
    assert capsys.readouterr().out.count("skipping") == 2


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(tiny_recipe, capsys):
    # GPT-2 has dropout, so this also checks that the RNG streams continue exactly.
    overrides = ["teachers.gpt2.training.epochs=3", "teachers.gpt2.training.save_every=20", "--only", "gpt2"]
    recipe = load_recipe(tiny_recipe, overrides[:2])
    folder = recipe.paths.teacher("gpt2")
    stderr = interrupt_at_checkpoint([sys.executable, "-m", "distill.teacher", str(tiny_recipe), *overrides], folder / "checkpoints" / "step-20")
    assert "continue with --resume" in stderr
    assert not (folder / "distill.json").exists()
    stopped_at = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    total_steps = 3 * steps_per_epoch(tiny_recipe, recipe.teacher("gpt2").training.batch_size)  # 3 epochs
    assert 20 <= stopped_at < total_steps

    # Without --resume the unfinished run is pointed out before anything trains.
    assert main([str(tiny_recipe), *overrides]) == 2
    assert "--resume" in capsys.readouterr().err

    assert main([str(tiny_recipe), *overrides, "--resume"]) == 0
    resumed = json.loads((folder / "distill.json").read_text())["metrics"]
    resumed_rows = _rows(folder)
    shutil.move(folder, folder.with_name("gpt2-resumed"))

    assert main([str(tiny_recipe), *overrides]) == 0
    reference = json.loads((folder / "distill.json").read_text())["metrics"]
    assert resumed["steps"] == reference["steps"] == total_steps
    assert resumed["train_tokens"] == reference["train_tokens"]
    assert abs(resumed["val_loss"] - reference["val_loss"]) < RESUME_TOLERANCE
    reference_rows = _rows(folder)
    assert [(r["step"], r["split"]) for r in resumed_rows] == [(r["step"], r["split"]) for r in reference_rows]
    for a, b in zip(resumed_rows, reference_rows):
        assert a["loss"] == pytest.approx(b["loss"], abs=RESUME_TOLERANCE)


def test_nan_loss_stops_with_a_clear_error(tiny_recipe, capsys):
    code = main([str(tiny_recipe), "teachers.llama.training.lr=1e30", "teachers.llama.training.max_grad_norm=null", "--only", "llama"])
    assert code == 2
    err = capsys.readouterr().err
    assert "llama: training loss became" in err and "at step" in err and "lower training.lr" in err
    folder = load_recipe(tiny_recipe).paths.teacher("llama")
    assert not (folder / "distill.json").exists()


def test_input_errors_exit_2_before_training(tiny_recipe, capsys):
    recipe = load_recipe(tiny_recipe)
    assert main([str(tiny_recipe), "--only", "lama"]) == 2
    assert "did you mean 'llama'" in capsys.readouterr().err

    # A missing split is a cheap input: the stage rebuilds the corpus from corpus.source first.
    sample = load_recipe(tiny_recipe, [f"corpus.source={REPO / 'corpora' / 'britannica-1911-sample'}"])
    val = sample.paths.split("val")
    val.unlink()
    from distill import tokenizer

    tokenizer.run(sample)  # trained with vocab_size 400
    assert val.stat().st_size > 0 and (recipe.paths.corpus / "manifest.json").is_file()
    assert main([str(tiny_recipe), "tokenizer.vocab_size=500"]) == 2
    err = capsys.readouterr().err
    assert "trained with vocab_size 400 but the recipe says 500" in err and "--force" in err
    assert not recipe.paths.teacher("llama").exists()


def test_a_finished_teacher_is_out_of_date_with_another_tokenizer_or_other_settings(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe)
    teacher = recipe.teachers[0]
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")  # a finished folder has its config and weights
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "distill.json").write_text(json.dumps({"tokenizer_sha256": "a" * 64, "recipe": teacher.to_dict()}), encoding="utf-8")
    expected = expected_info(recipe, "teacher", teacher.name)
    assert model_stale(folder, dataclasses.replace(expected, tokenizer_sha256="a" * 64)) is None
    assert model_stale(folder, dataclasses.replace(expected, tokenizer_sha256="b" * 64)) == "it was trained with another tokenizer"
    changed = expected_info(load_recipe(tiny_recipe, ["teachers.llama.training.lr=1e-2"]), "teacher", teacher.name)
    lr = teacher.training.lr
    assert model_stale(folder, dataclasses.replace(changed, tokenizer_sha256="a" * 64)) == f"recipe key changed: training.lr {lr!r} -> 0.01"
