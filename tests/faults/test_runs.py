"""Two runs on one output folder, and checkpoints that are damaged or planted.

Only one run at a time works in a recipe's output folder, whichever stage or command it is; a second
stops at once with one line naming the folder and the other run, having touched nothing. A resume
checks each checkpoint against its manifest, falls back to the newest intact one, and never
unpickles a file it finds there.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, Crash, crash_at, free_port, subprocess_env
from distill.__main__ import RUNS, main as pipeline_main
from distill.artifacts import ModelInfo
from distill.errors import DistillError
from distill.models import build_model
from distill.recipe import ModelConfig, TrainingConfig, load_recipe
from distill.teacher import main as teacher_main
from distill.training import train

LOCK = ".run.lock"


@contextlib.contextmanager
def held_by_another_run(folder: Path):
    """Hold ``folder``'s run lock through a file descriptor of its own, as another process would."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stage", list(RUNS))
def test_every_stage_refuses_a_folder_another_run_is_working_in(tiny_recipe, stage):
    recipe = load_recipe(tiny_recipe)
    root = recipe.paths.root
    with held_by_another_run(root):
        before = snapshot(root)
        with pytest.raises(DistillError) as refused:
            RUNS[stage](recipe, resume=True)
        assert snapshot(root) == before  # nothing touched
    message = str(refused.value)
    assert str(root) in message and "another run is working in this folder" in message and "\n" not in message


@pytest.mark.slow
def test_a_stage_command_and_the_pipeline_cannot_train_one_folder_at_once(tiny_recipe, capsys):
    """The issue's case: ``python -m distill.teacher --resume`` and ``python -m distill run`` together."""
    recipe = load_recipe(tiny_recipe)
    folder = recipe.paths.teacher("llama")
    cmd = [sys.executable, "-m", "distill.teacher", str(tiny_recipe), "teachers.llama.training.epochs=500", "--only", "llama"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (folder / "metrics.jsonl").is_file():  # training is under way
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        began = time.monotonic()
        assert pipeline_main(["run", str(tiny_recipe)]) == 2
        assert teacher_main([str(tiny_recipe), "--only", "llama", "--resume"]) == 2
        assert time.monotonic() - began < 30  # at once, not after training
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2, err
        for line in err:
            assert line.startswith(f"error: {recipe.paths.root}: another run is working in this folder")
            assert "python -m distill.teacher" in line and f"pid {proc.pid}" in line
        assert not recipe.paths.teacher("gpt2").exists() and not recipe.paths.student.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-3000:]
    steps = [row["step"] for row in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if row["split"] == "train"]
    assert steps == sorted(set(steps))  # one run wrote them: no step twice


@pytest.mark.slow
def test_a_two_process_launch_stops_at_once_in_a_locked_folder(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    root = recipe.paths.root
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), "-m", "distill.teacher", str(tiny_recipe), "--resume",
    ]  # fmt: skip
    with held_by_another_run(root):
        before = snapshot(root)
        proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert snapshot(root) == before
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all(f"{root}: another run is working in this folder" in line for line in errors), proc.stderr[-3000:]


VOCAB, SEQ = 64, 16


def train_tiny(out: Path, *, resume: bool = False, compute_loss=None, hidden_size: int = 32) -> torch.nn.Module:
    """12 steps over two epochs of a 2-layer GPT-2 (dropout: resuming must restore the RNG), a
    checkpoint every 2 steps but at the end of an epoch (step 6), the newest 3 kept."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="m", arch="gpt2", hidden_size=hidden_size, num_layers=2, num_heads=2, dropout=0.1), VOCAB, SEQ)
    rng = np.random.default_rng(0)
    data = [{"input_ids": rng.integers(3, VOCAB, SEQ).astype(np.int32)} for _ in range(24)]
    cfg = TrainingConfig(epochs=2, batch_size=4, lr=1e-2, warmup_steps=2, save_every=2, keep_checkpoints=3, log_every=1, seed=0)
    train(model, train_dataset=data, eval_dataset=data[:8], training_cfg=cfg, out_dir=out, compute_loss=compute_loss,
          resume=resume, info=ModelInfo(name="m"))
    return model


def train_rows(folder: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if row["split"] == "train"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its weights and train rows."""
    out = tmp_path_factory.mktemp("reference") / "m"
    model = train_tiny(out)
    return model.state_dict(), train_rows(out)


def crashed_run(out: Path) -> Path:
    """A run that died at step 10, leaving checkpoints step-2, step-4 and step-8; returns their folder."""
    with pytest.raises(Crash):
        train_tiny(out, compute_loss=crash_at(10))
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2", "step-4", "step-8"]
    return checkpoints


def largest_file(folder: Path) -> Path:
    return max((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(folder: Path) -> None:
    path = largest_file(folder)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(folder: Path) -> None:
    path = largest_file(folder)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor: the file still loads
    path.write_bytes(bytes(data))


def assert_same_run(model, out: Path, reference) -> None:
    state, rows = reference
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], msg=name)
    resumed = train_rows(out)
    assert [step for step, _ in resumed] == [step for step, _ in rows]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in rows], rel=1e-5)


@pytest.mark.parametrize("damage", [truncate, flip_a_byte])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, capsys, reference, damage):
    out = tmp_path / "m"
    checkpoints = crashed_run(out)
    damage(checkpoints / "step-8")  # the older one, step-4, is in the first epoch
    capsys.readouterr()
    model = train_tiny(out, resume=True)
    err = capsys.readouterr().err
    assert re.search(r"step-8\b.*damaged", err) and "step-4" in err, err
    assert_same_run(model, out, reference)


def test_no_intact_checkpoint_is_one_line_and_keeps_them(tmp_path):
    out = tmp_path / "m"
    checkpoints = crashed_run(out)
    for step in (2, 4, 8):
        truncate(checkpoints / f"step-{step}")
    with pytest.raises(DistillError) as refused:
        train_tiny(out, resume=True)
    message = str(refused.value)
    assert all(f"step-{step}" in message for step in (2, 4, 8)) and "--force" in message and "\n" not in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2", "step-4", "step-8"]  # nothing deleted


def test_a_checkpoint_of_another_model_size_is_one_line(tmp_path):
    out = tmp_path / "m"
    crashed_run(out)
    with pytest.raises(DistillError) as refused:
        train_tiny(out, resume=True, hidden_size=64)
    message = str(refused.value)
    assert "step-8: does not fit this run" in message and "--force" in message and "\n" not in message


class Planted:
    """Unpickling it creates ``marker``: stands for any code a planted pickle runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resuming_never_unpickles_a_planted_file(tmp_path, reference):
    out = tmp_path / "m"
    checkpoints = crashed_run(out)
    assert {p.suffix for p in (checkpoints / "step-8").iterdir()} == {".json", ".safetensors"}
    marker = tmp_path / "ran"
    for name in ["custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl"]:  # as Accelerate's load_state reads them
        torch.save({"state": Planted(marker)}, checkpoints / "step-8" / name)
    try:
        model = train_tiny(out, resume=True)
    finally:
        assert not marker.exists(), "resuming ran code from a planted pickle"
    assert_same_run(model, out, reference)


def test_no_code_in_distill_unpickles_a_file():
    unpickling = re.compile(
        r"\btorch\.load\(|\bpickle\.loads?\(|^\s*(import|from) (pickle|dill|cloudpickle|joblib)\b|\.load_state\("
        r"|weights_only\s*=\s*False|allow_pickle\s*=\s*True|\bload_custom_state\b",
        re.M,
    )
    found = [f"{path.relative_to(REPO)}: {m.group(0).strip()}" for path in sorted((REPO / "distill").rglob("*.py"))
             for m in unpickling.finditer(path.read_text(encoding="utf-8"))]
    assert found == []
