"""Nothing lost, nothing crashes: ordinary data does not crash the block builder, folders we write
never take a user's files with them, and a killed or failed run leaves nothing behind that later
counts as a model."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import ASSETS, load_articles, subprocess_env, write_split_file
from distill import Student
from distill.artifacts import is_finished
from distill.atomic import write_folder
from distill.corpus.__main__ import main as corpus_main
from distill.corpus.combine import combine
from distill.corpus.convert import convert
from distill.data import blocks_from_texts, build_blocks, text_blocks
from distill.errors import DistillError
from distill.logit_cache import TeacherLogitCache
from distill.recipe import load_recipe
from distill.serve_models import find_model_dirs
from distill.tokenizer import BOS_ID, EOS_ID, train_tokenizer
from test_atomic import mode, umask

STUDENT = {
    "arch": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "alpha": 1.0,
    "training": {"epochs": 1, "batch_size": 8, "seed": 0, "save_every": 1000, "log_every": 5},
}  # fmt: skip
THESIS = "\\documentclass{article} my thesis\n"


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def thesis_in(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text(THESIS, encoding="utf-8")
    return folder / "thesis.tex"


def student(tiny_tokenizer_dir, output_dir, **kwargs) -> Student:
    return Student(STUDENT, tokenizer=tiny_tokenizer_dir, seq_len=32, output_dir=output_dir, **kwargs)


# 1. A split whose record count is a multiple of 256 (or zero) -------------------------------------


def reference_blocks(texts, tokenizer, seq_len):
    ids = []
    for text in texts:
        ids += [BOS_ID, *tokenizer(text, add_special_tokens=False)["input_ids"], EOS_ID]
    return [ids[i:i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]


def rows(dataset) -> list[list[int]]:
    return [[int(i) for i in row] for row in dataset["input_ids"]]


@pytest.mark.parametrize("records", [256, 512])
def test_text_blocks_of_a_multiple_of_256_records(tiny_tokenizer, records):
    texts = [f"London was a city {i}" for i in range(records)]
    blocks = [block["input_ids"] for block in text_blocks(texts, tiny_tokenizer, 16)]
    assert blocks == reference_blocks(texts, tiny_tokenizer, 16)


def test_split_file_and_texts_of_256_records_give_blocks(tiny_tokenizer, tmp_path):
    texts = [f"London was a city {i}" for i in range(256)]
    split = write_split_file(tmp_path / "train.txt", texts)
    expected = reference_blocks(texts, tiny_tokenizer, 16)
    assert rows(build_blocks(split, tiny_tokenizer, 16, tmp_path / "tokens")) == expected
    assert rows(blocks_from_texts(texts, tiny_tokenizer, 16)) == expected  # what Student.distill(texts) trains on


def test_an_empty_split_is_a_one_line_error_naming_the_file(tiny_tokenizer, tmp_path):
    split = tmp_path / "val.txt"
    split.write_text("", encoding="utf-8")
    with pytest.raises(DistillError) as err:
        build_blocks(split, tiny_tokenizer, 16, tmp_path / "tokens")
    message = one_line(err)
    assert message.startswith(f"{split}: ") and "no records" in message and "python -m distill.corpus" in message
    assert not (tmp_path / "tokens").exists()  # and no empty cache folder is left
    with pytest.raises(DistillError, match="no texts"):
        blocks_from_texts([], tiny_tokenizer, 16)


def test_the_teacher_stage_on_an_empty_val_split_exits_2_with_one_line(tiny_recipe, capsys):
    from distill.teacher import main as teacher_main

    recipe = load_recipe(tiny_recipe)
    val = recipe.paths.split("val")
    val.write_text("", encoding="utf-8")
    assert teacher_main([str(tiny_recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {val}: no records") and "Traceback" not in "".join(err)
    assert not (recipe.paths.root / "teachers").exists()  # failed before writing: no empty folder


# 2. Folders we write never take a user's files with them ------------------------------------------


def test_write_folder_refuses_a_folder_holding_foreign_files(tmp_path):
    out = tmp_path / "out"
    thesis = thesis_in(out)
    (out / "config.json").write_text("{}")
    with pytest.raises(DistillError) as err:
        with write_folder(out, ["config.json"], fix="choose another folder") as tmp:
            (tmp / "config.json").write_text("{}")
    message = one_line(err)
    assert message.startswith(f"{out}: ") and "thesis.tex" in message and "choose another folder" in message
    assert thesis.read_text() == THESIS and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_folder_merging_keeps_foreign_files_and_drops_its_stale_ones(tmp_path):
    out = tmp_path / "out"
    thesis = thesis_in(out)
    (out / "checkpoints").mkdir()
    (out / "distill.json").write_text("old")
    with write_folder(out, ["checkpoints", "*.json"], keep_others=True, last="distill.json") as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "distill.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "distill.json", "thesis.tex"]
    assert thesis.read_text() == THESIS and (out / "distill.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_folder_merging_never_overwrites_a_foreign_file(tmp_path):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "config.json").write_text("user's")
    with pytest.raises(DistillError, match="config.json"):
        with write_folder(out, [], keep_others=True) as tmp:
            (tmp / "config.json").write_text("{}")
    assert (out / "config.json").read_text() == "user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
@pytest.mark.parametrize("merge", [False, True])
def test_write_folder_modes_follow_the_umask(tmp_path, mask, file_mode, dir_mode, merge):
    out = tmp_path / "deep" / "out"
    if merge:
        thesis_in(out)
    with umask(mask):
        with write_folder(out, ["*.bin", "sub"], keep_others=merge) as tmp:
            fd = os.open(tmp / "w.bin", os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors writes its weights
            os.close(fd)
            (tmp / "sub").mkdir(mode=0o700)
    assert mode(out / "w.bin") == file_mode and mode(out / "sub") == dir_mode
    if not merge:
        assert mode(out) == dir_mode and mode(tmp_path / "deep") == dir_mode


def test_student_save_refuses_a_folder_with_a_user_file(tiny_tokenizer_dir, tmp_path):
    model = student(tiny_tokenizer_dir, tmp_path / "models" / "s")
    model.build_model()
    thesis = thesis_in(tmp_path / "mine")
    with pytest.raises(DistillError) as err:
        model.save(tmp_path / "mine")
    assert "thesis.tex" in one_line(err) and thesis.read_text() == THESIS
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]
    with umask(0o022):
        model.save(tmp_path / "fresh")
        model.save(tmp_path / "fresh")  # its own folder: replaced
    assert is_finished(tmp_path / "fresh")
    assert mode(tmp_path / "fresh") == 0o755 and mode(tmp_path / "fresh" / "model.safetensors") == 0o644


def test_distill_into_a_folder_with_a_user_file_keeps_it(tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "mine"
    thesis = thesis_in(out)
    articles = load_articles()
    model = student(tiny_tokenizer_dir, out, cache_dir=tmp_path / "tokens")
    model.distill(articles[:8], articles[-4:])
    assert thesis.read_text() == THESIS and is_finished(out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_logit_cache_refuses_a_folder_with_a_user_file_before_the_teachers_run(tmp_path):
    import torch

    class Teacher(torch.nn.Module):
        def forward(self, input_ids):
            raise AssertionError("the teachers must not run")

    out = tmp_path / "cache"
    thesis = thesis_in(out)
    with pytest.raises(DistillError) as err:
        TeacherLogitCache.build(
            [Teacher()], torch.zeros(4, 8, dtype=torch.long), out, temperature=2.0, top_k=4, vocab_size=16,
            teacher_hashes=["a" * 64], tokenizer_hash="b" * 64, verbose=False,
        )  # fmt: skip
    assert "thesis.tex" in one_line(err) and thesis.read_text() == THESIS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_the_tokenizer_refuses_a_folder_with_a_user_file(split_dir, tmp_path):
    thesis = thesis_in(tmp_path / "tok")
    with pytest.raises(DistillError) as err:
        train_tokenizer(split_dir / "train.txt", 400, 2, tmp_path / "tok")
    assert "thesis.tex" in one_line(err) and thesis.read_text() == THESIS


def test_convert_removes_only_files_it_wrote(tmp_path):
    out = tmp_path / "text"
    source = ASSETS / "corpus" / "eb1810-sample.json"
    convert(source, out)
    assert len(list(out.glob("*.txt"))) == 5
    mine = out / "zebra-0123456789.txt"  # a user's file that looks like an article file
    mine.write_text("my notes", encoding="utf-8")
    (out / "README.md").write_text("about", encoding="utf-8")
    convert(source, out, max_bytes=400)  # the two short articles only: its other three files go
    kept = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert kept == ["README.md", "marpurg-ff2fae53f5.txt", "mesaraic-vessels-ff3dd85f1c.txt", "zebra-0123456789.txt"]
    assert mine.read_text() == "my notes" and (out / "README.md").read_text() == "about"


def test_convert_refuses_to_overwrite_a_user_file_with_an_article_name(tmp_path):
    out = tmp_path / "text"
    source = ASSETS / "corpus" / "eb1810-sample.json"
    convert(source, tmp_path / "first")
    name = sorted(p.name for p in (tmp_path / "first").glob("*.txt"))[0]
    out.mkdir()
    (out / name).write_text("my own text", encoding="utf-8")
    with pytest.raises(DistillError) as err:
        convert(source, out)
    assert name in one_line(err) and (out / name).read_text() == "my own text"
    assert sorted(p.name for p in out.iterdir()) == [name]
    shutil.copy(tmp_path / "first" / name, out / name)  # the very bytes convert writes: nothing to lose
    convert(source, out)
    assert sorted(p.name for p in out.glob("*.txt")) == sorted(p.name for p in (tmp_path / "first").glob("*.txt"))


def test_combine_refuses_an_out_that_is_one_of_its_inputs(tmp_path, capsys):
    text = tmp_path / "text"
    text.mkdir()
    (text / "a-0000000001.txt").write_text("Alpha\nbody\n", encoding="utf-8")
    (text / "b-0000000002.txt").write_text("Beta\nbody\n", encoding="utf-8")
    with pytest.raises(DistillError, match="a-0000000001.txt"):
        combine(text, text / "a-0000000001.txt")
    assert (text / "a-0000000001.txt").read_text() == "Alpha\nbody\n"
    assert corpus_main(["combine", "--source", str(text), "--out", str(text / "combined.txt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--source" in err
    assert sorted(p.name for p in text.iterdir()) == ["a-0000000001.txt", "b-0000000002.txt"]


# 5. Leftovers: killed saves, failed runs, deleted weights ------------------------------------------

KILLED_SAVE = """
import os, signal, sys
from distill.atomic import write_folder
with write_folder(sys.argv[1], ["*.json"]) as tmp:
    (tmp / "distill.json").write_text("{}")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_save_killed_midway_leaves_a_temp_that_the_next_save_removes(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(out)], env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.") and left[0].endswith(".tmp")
    (tmp_path / ".out.0123abcd.tmp").mkdir()  # what an older version left
    (tmp_path / ".out.old").mkdir()
    (tmp_path / ".other.0123abcd.tmp").mkdir()  # another target's: not ours to judge
    with write_folder(out, ["*.json"]) as tmp:
        (tmp / "distill.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.0123abcd.tmp", "out"]


def test_a_live_writers_temp_is_left_alone(tmp_path):
    live = tmp_path / f".out.{os.getppid()}-0123abcd.tmp"
    live.mkdir()
    with write_folder(tmp_path / "out", ["*.json"]):
        pass
    assert live.is_dir()


def test_serve_lists_no_temp_folder(tmp_path, tiny_recipe, tiny_tokenizer_dir):
    recipe = load_recipe(tiny_recipe)
    teachers = recipe.paths.root / "teachers"
    model = student(tiny_tokenizer_dir, tmp_path / "s")
    model.build_model()
    model.save(teachers / "llama")
    shutil.copytree(teachers / "llama", teachers / ".llama.0123abcd.tmp")  # complete, but killed before its rename
    assert find_model_dirs([tiny_recipe]) == [teachers / "llama"]


def test_is_finished_needs_the_weights_and_config(tiny_tokenizer_dir, tmp_path):
    model = student(tiny_tokenizer_dir, tmp_path / "s")
    model.build_model()
    folder = model.save(tmp_path / "m")
    assert is_finished(folder)
    (folder / "model.safetensors").unlink()
    assert not is_finished(folder)
    model.save(folder)
    (folder / "config.json").unlink()
    assert not is_finished(folder)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    model.save(folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"")
    assert not is_finished(folder)  # a shard is missing
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert is_finished(folder)


def test_a_run_that_fails_before_writing_leaves_no_folder(tiny_tokenizer_dir, tmp_path):
    model = student(tiny_tokenizer_dir, tmp_path / "run" / "student", cache_dir=tmp_path / "run" / "tokens")
    with pytest.raises(DistillError, match="missing"):
        model.distill(tmp_path / "missing.txt", tmp_path / "missing.txt")
    with pytest.raises(DistillError):
        with write_folder(tmp_path / "a" / "b" / "out", ["*"]) as tmp:
            (tmp / "x").write_text("half")
            raise DistillError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
