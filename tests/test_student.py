"""The student stage and ``distill.Student``: the loss it trains on, the cache path, 2 processes, resume."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import interrupt_at_checkpoint, ASSETS, REPO, free_port as _free_port, metrics_rows as _rows, steps_per_epoch, subprocess_env as _env, tiny_recipe_dict, write_recipe, write_splits
from distill import Student
from distill.ensemble import live_target
from distill.errors import DistillError
from distill.kd import KDStep
from distill.recipe import load_recipe
from distill.student import main
from distill.training import LossWindow


def kd_step(student, teachers):
    """The loop's loss on live teachers, without autocast: a real Accelerator(cpu=True) would clash
    with one already made for a GPU in the same test process."""
    return KDStep(student.config.loss, student.vocab_size, live_target(teachers))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny recipe whose tokenizer and two teachers are trained (once for this module)."""
    from distill.teacher import main as teacher_main

    root = tmp_path_factory.mktemp("student")
    data = tiny_recipe_dict(root / "out")
    write_splits(root / "out" / "corpus")
    recipe = write_recipe(root / "tiny.yaml", data)
    assert teacher_main([str(recipe)]) == 0
    return recipe


@pytest.fixture
def recipe(trained, tmp_path):
    """A fresh output folder per test that shares the module's corpus, tokenizer and teachers."""
    source = load_recipe(trained).paths.root
    out = tmp_path / "out"
    out.mkdir()
    for name in ("corpus", "tokenizer", "teachers", "tokens"):
        shutil.copytree(source / name, out / name)
    data = tiny_recipe_dict(out)
    return write_recipe(tmp_path / "tiny.yaml", data)


def test_student_api_distills_saves_loads_and_generates(recipe, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    student = Student.from_recipe(recipe, alpha=0.6, training__epochs=2)
    assert [t.name for t in student.teachers] == ["llama", "gpt2"]
    metrics = student.distill()
    folder = load_recipe(recipe).paths.student
    info = json.loads((folder / "distill.json").read_text())
    assert info["role"] == "student" and info["loss"]["alpha"] == 0.6 and set(info["teacher_hashes"]) == {"llama", "gpt2"}
    assert info["metrics"]["val_ppl"] == pytest.approx(metrics["val_ppl"])
    assert metrics["steps"] == 2 * steps_per_epoch(recipe, load_recipe(recipe).student.training.batch_size)
    rows = [r for r in _rows(folder) if r["split"] == "train"]
    assert rows and all({"loss", "ce", "kl"} <= set(r) for r in rows)
    for row in rows:  # the logged blend is exactly alpha * CE + (1 - alpha) * KL
        assert row["loss"] == pytest.approx(0.6 * row["ce"] + 0.4 * row["kl"], rel=1e-6)
    assert rows[-1]["ce"] < rows[0]["ce"] and rows[-1]["kl"] < rows[0]["kl"]

    # The folder is a plain transformers model folder.
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 32
    assert AutoTokenizer.from_pretrained(str(folder)).bos_token_id == 1

    text = student.generate("London was", max_new_tokens=6, temperature=0)
    assert isinstance(text, str) and text
    saved = student.save(tmp_path / "copy")
    again = Student.load(saved)
    assert again.generate("London was", max_new_tokens=6, temperature=0) == text
    assert again.metrics["val_ppl"] == pytest.approx(metrics["val_ppl"])
    assert len(again.generate("London was", max_new_tokens=4, num_samples=3, seed=1)) == 3


def test_kd_loss_of_the_loop_equals_the_full_tensor_reference(trained):
    """The fused loss the loop uses (hook + chunked lm_head + per-chunk teacher heads) against
    ``F.cross_entropy`` and ``F.kl_div`` on full logits, in value and gradient."""
    import torch.nn.functional as F
    student = Student.from_loaded_recipe(load_recipe(trained, ["student.alpha=0.3", "student.temperature=1.5", "student.chunk_size=7"]))
    model = student.build_model()
    teachers = student.teachers.load()
    ids = torch.randint(3, 400, (3, 32))
    batch = {"input_ids": ids, "labels": ids.clone()}
    n = int((ids[:, 1:] != -100).sum())
    window = LossWindow(num_tokens=torch.tensor(n), num_sequences=3, num_micro_batches=1, step=1)
    loss, logs = kd_step(student, teachers)(model, batch, window)
    loss.backward()
    grad = model.lm_head.weight.grad.clone()
    model.zero_grad()

    logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
    with torch.no_grad():
        mean = torch.stack([t(input_ids=ids).logits[:, :-1, :400] for t in teachers]).mean(0)
    ce = F.cross_entropy(logits.reshape(-1, 400), ids[:, 1:].reshape(-1))
    kl = F.kl_div(
        F.log_softmax(logits.reshape(-1, 400) / 1.5, -1), F.log_softmax(mean.reshape(-1, 400) / 1.5, -1), log_target=True, reduction="batchmean"
    ) * 1.5**2
    reference = 0.3 * ce + 0.7 * kl
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert float(logs["ce"]) == pytest.approx(ce.item(), rel=1e-5) and float(logs["kl"]) == pytest.approx(kl.item(), rel=1e-5)
    torch.testing.assert_close(grad, model.lm_head.weight.grad, rtol=1e-4, atol=1e-7)


def test_a_teacher_weighted_zero_does_not_run_and_changes_nothing(trained):
    from distill.student import _weighted_only

    student = Student.from_loaded_recipe(load_recipe(trained, ["student.teacher_weights=[1,0]", "student.alpha=0"]))
    model = student.build_model()
    teachers = student.teachers.load()
    models, loss = _weighted_only(teachers, student.config.loss)
    assert len(models) == 1 and models[0] is teachers[0] and loss.teacher_weights == (1.0,)
    ids = torch.randint(3, 400, (2, 32))
    batch = {"input_ids": ids, "labels": ids.clone()}
    window = LossWindow(num_tokens=torch.tensor(int(ids[:, 1:].numel())), num_sequences=2, num_micro_batches=1, step=1)
    both = KDStep(student.config.loss, student.vocab_size, live_target(teachers))(model, batch, window)[0]
    one = KDStep(loss, student.vocab_size, live_target(models))(model, batch, window)[0]
    assert one.item() == pytest.approx(both.item(), rel=1e-6)


def test_legacy_batchmean_is_the_same_over_an_accumulation_window(trained):
    """BabyLlama's KL / batch size: one batch of 4 == two accumulated micro-batches of 2."""
    student = Student.from_loaded_recipe(load_recipe(trained, ["student.kl_reduction=legacy_batchmean", "student.alpha=0.5"]))
    model = student.build_model()
    loss_fn = kd_step(student, student.teachers.load())
    ids = torch.randint(3, 400, (4, 32))
    n = int((ids[:, 1:] != -100).sum())

    def window(count):
        return LossWindow(num_tokens=torch.tensor(n), num_sequences=4, num_micro_batches=count, step=1)

    whole, whole_logs = loss_fn(model, {"input_ids": ids, "labels": ids.clone()}, window(1))
    whole.backward()
    grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    parts = [loss_fn(model, {"input_ids": ids[i : i + 2], "labels": ids[i : i + 2].clone()}, window(2)) for i in (0, 2)]
    total = sum(p[0] for p in parts)
    total.backward()
    assert total.item() == pytest.approx(whole.item(), rel=1e-5)
    assert sum(float(p[1]["kl"]) for p in parts) == pytest.approx(float(whole_logs["kl"]), rel=1e-5)
    torch.testing.assert_close(grad, model.lm_head.weight.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_logit_cache_trains_close_to_live_and_refuses_other_settings(recipe, capsys):
    live = ["--only", "student"]
    assert main([str(recipe), *live]) == 0
    paths = load_recipe(recipe).paths
    live = json.loads((paths.student / "distill.json").read_text())["metrics"]
    live_ppl = live["val_ppl"]
    # MFU counts the live teachers' forwards on top of the student's training; from the cache, only the student.
    from transformers import AutoModelForCausalLM
    from distill import speed

    seq = load_recipe(recipe).data.seq_len
    student_flops = speed.training_flops_per_token(AutoModelForCausalLM.from_pretrained(paths.student), seq)
    teacher_flops = sum(speed.forward_flops_per_token(AutoModelForCausalLM.from_pretrained(paths.teacher(n)), seq) for n in ("llama", "gpt2"))
    assert live["model_flops_per_token"] == round(student_flops + teacher_flops)

    cached = ["student.logit_cache.enabled=true", "student.logit_cache.method=topk_tail", "student.logit_cache.top_k=64"]
    assert main([str(recipe), *cached, "--only", "student", "--force"]) == 0
    info = json.loads((paths.student / "distill.json").read_text())
    assert info["loss"]["logit_cache"] is True
    assert info["metrics"]["model_flops_per_token"] == round(student_flops)
    manifest = json.loads((paths.teacher_logits / "manifest.json").read_text())
    assert manifest["top_k"] == 64 and manifest["num_blocks"] > 0 and manifest["temperature"] == 2.0
    # top-64 of 400 tokens keeps most of the mass: the cached run lands near the live one
    assert info["metrics"]["val_ppl"] == pytest.approx(live_ppl, rel=0.05)
    capsys.readouterr()

    # A cache made at another temperature is refused with the key, both values and the fix.
    assert main([str(recipe), *cached, "student.temperature=3.0", "--only", "student", "--force"]) == 2
    err = capsys.readouterr().err
    assert "temperature is 2.0 in the logit cache but this run expects 3.0" in err and "logit_cache.enabled=false" in err

    # ... and so is one made by other teachers.
    teacher = paths.teacher("llama") / "model.safetensors"
    from safetensors.torch import load_file, save_file

    weights = load_file(teacher)
    weights["lm_head.weight"] = weights["lm_head.weight"] * 1.01
    save_file(weights, teacher, metadata={"format": "pt"})
    assert main([str(recipe), *cached, "--only", "student", "--force"]) == 2
    assert "teacher_hashes" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess or a full stage chain: in the full suite, not the quick one
def test_cache_read_in_loader_workers_trains_the_same_student(recipe):
    # The cached targets are read in the DataLoader's worker processes (distill.fast.CachedTargets):
    # with 2 workers the student is bit-identical to the one that reads them in the training process.
    from safetensors.torch import load_file

    cached = ["student.logit_cache.enabled=true", "--only", "student"]
    paths = load_recipe(recipe).paths
    weights = {}
    for workers in (0, 2):
        assert main([str(recipe), *cached, f"student.training.num_workers={workers}", "--force"]) == 0
        weights[workers] = load_file(paths.student / "model.safetensors")
        rows = [r["loss"] for r in _rows(paths.student) if r["split"] == "train"]
        weights[workers]["losses"] = torch.tensor(rows)
    assert weights[0].keys() == weights[2].keys()
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_baseline_is_the_same_student_without_teachers(recipe, capsys):
    assert main([str(recipe), "--baseline"]) == 0
    paths = load_recipe(recipe).paths
    info = json.loads((paths.baseline / "distill.json").read_text())
    assert info["role"] == "baseline" and info["loss"]["alpha"] == 1.0 and "teacher_hashes" not in info
    assert not paths.student.exists()
    rows = [r for r in _rows(paths.baseline) if r["split"] == "train"]
    assert all(r["ce"] == pytest.approx(r["loss"]) and "kl" not in r for r in rows)
    # the recipe default trains both; the finished baseline is skipped
    assert main([str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "baseline: finished" in out and "student: val loss" in out
    student = json.loads((paths.student / "distill.json").read_text())
    assert student["metrics"]["steps"] == info["metrics"]["steps"] and student["metrics"]["train_tokens"] == info["metrics"]["train_tokens"]


def test_mismatched_tokenizer_and_missing_teachers_are_refused(recipe, tmp_path, capsys):
    from distill.tokenizer import train_tokenizer

    paths = load_recipe(recipe).paths
    other = train_tokenizer(paths.split("train"), 300, 2, tmp_path / "other-tokenizer")
    with pytest.raises(DistillError, match="trained with another tokenizer"):
        Student(load_recipe(recipe).student, [paths.teacher("llama")], other, seq_len=32)
    with pytest.raises(DistillError, match="needs teachers"):  # at distill time: a loaded student has no teachers either
        Student({"arch": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}, [], other).distill()

    shutil.rmtree(paths.teacher("gpt2"))
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert str(paths.teacher("gpt2")) in err and "accelerate launch -m distill.teacher" in err
    assert main([str(recipe), "student.alpa=0.3"]) == 2
    assert "did you mean 'alpha'" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_distill_a_loadable_student(recipe):
    from transformers import pipeline

    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(_free_port()), "-m", "distill.student", str(recipe), "--only", "student",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = load_recipe(recipe).paths.student
    info = json.loads((folder / "distill.json").read_text())
    assert info["metrics"]["num_processes"] == 2 and info["metrics"]["effective_batch_size"] == 16
    assert info["metrics"]["steps"] == steps_per_epoch(recipe, 8, processes=2)  # train blocks / (8 x 2) per step, rounded up
    generator = pipeline("text-generation", model=str(folder), device="cpu")
    assert generator("London was", max_new_tokens=4, do_sample=False)[0]["generated_text"].startswith("London was")


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(recipe, capsys):
    overrides = ["student.training.epochs=3", "student.training.save_every=20", "--only", "student"]
    folder = load_recipe(recipe).paths.student
    stderr = interrupt_at_checkpoint([sys.executable, "-m", "distill.student", str(recipe), *overrides], folder / "checkpoints" / "step-20")
    assert "continue with --resume" in stderr and not (folder / "distill.json").exists()

    assert main([str(recipe), *overrides]) == 2  # an unfinished run is pointed out, not overwritten
    assert "--resume" in capsys.readouterr().err
    assert main([str(recipe), *overrides, "--resume"]) == 0
    resumed = json.loads((folder / "distill.json").read_text())["metrics"]
    resumed_rows = _rows(folder)
    shutil.move(folder, folder.with_name("student-resumed"))

    assert main([str(recipe), *overrides]) == 0
    reference = json.loads((folder / "distill.json").read_text())["metrics"]
    assert resumed["steps"] == reference["steps"] == 3 * steps_per_epoch(recipe, load_recipe(recipe).student.training.batch_size)
    assert abs(resumed["val_loss"] - reference["val_loss"]) < 1e-4
    for a, b in zip(resumed_rows, _rows(folder)):
        assert (a["step"], a["split"]) == (b["step"], b["split"])
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)


def test_bf16_teachers_with_fp32_hidden_states(trained):
    """Teachers kept in bf16 (as on a GPU with mixed precision) whose last norm hands back fp32."""
    student = Student.from_loaded_recipe(load_recipe(trained))
    model = student.build_model()
    teachers = [teacher.to(torch.bfloat16) for teacher in student.teachers.load()]
    ids = torch.randint(3, 400, (2, 32))
    n = int((ids[:, 1:] != -100).sum())
    window = LossWindow(num_tokens=torch.tensor(n), num_sequences=2, num_micro_batches=1, step=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = kd_step(student, teachers)(model, {"input_ids": ids, "labels": ids.clone()}, window)
    loss.backward()
    assert torch.isfinite(loss) and float(logs["kl"]) > 0
    assert model.lm_head.weight.grad is not None and torch.isfinite(model.lm_head.weight.grad).all()


def test_teacher_heads_accept_hidden_states_in_another_dtype():
    """GPT-2's ln_f runs in fp32 under GPU autocast while its lm_head is bf16: the head must cope."""
    from distill.teacher_target import teacher_head_target

    hidden = torch.randn(2, 4, 8)  # fp32
    weight = torch.randn(10, 8)
    rows = torch.tensor([0, 3, 5])
    (bf16,) = teacher_head_target([hidden], [weight.to(torch.bfloat16)])(rows)
    (fp32,) = teacher_head_target([hidden], [weight])(rows)
    assert bf16.dtype == torch.bfloat16 and bf16.shape == (3, 10)
    torch.testing.assert_close(bf16.float(), fp32, rtol=0.05, atol=0.1)


def test_facts_can_be_kept_from_the_student(recipe, articles):
    """``facts_in_train: false``: the student (and baseline) train on the split minus the injected facts."""
    from distill.corpus.split import write_splits as split_corpus
    from distill.corpus.records import iter_records

    paths = load_recipe(recipe).paths
    shutil.rmtree(paths.corpus)
    facts = ASSETS / "facts.jsonl"
    split_corpus(articles, paths.corpus, budgets={"train": 5000, "val": 500, "test": 500}, seed=0, source="assets",
                 facts=facts, fact_repeats=3)  # fmt: skip
    fact_texts = [json.loads(line)["fact"] for line in facts.read_text().splitlines() if line.strip()]
    train = list(iter_records(paths.split("train")))
    assert sum(text in fact_texts for text in train) == 3 * len(fact_texts)

    assert Student.from_recipe(recipe).recipe_train_split() == paths.split("train")
    for baseline in (False, True):
        student = Student.from_recipe(recipe, "student.facts_in_train=false", baseline=baseline)
        kept = list(iter_records(student.recipe_train_split()))
        assert not any(text in fact_texts for text in kept)
        assert kept == [text for text in train if text not in fact_texts]  # same articles, same order


def test_texts_give_the_same_blocks_as_their_split_file(tmp_path, articles, tiny_tokenizer):
    """``Student.distill`` accepts a list of texts: the blocks equal those of a split file of them."""
    import numpy as np

    from distill.data import blocks_from_texts, build_blocks

    split = write_splits(tmp_path / "corpus", articles[:12]) / "train.txt"
    from_file = build_blocks(split, tiny_tokenizer, 32, tmp_path / "tokens")
    from_texts = blocks_from_texts(articles[:8], tiny_tokenizer, 32)
    assert len(from_texts) == len(from_file) > 0
    assert np.array_equal(np.asarray(from_texts["input_ids"]), np.asarray(from_file["input_ids"]))


def test_a_plain_transformers_folder_loads_and_generates_but_needs_teachers_to_distill(tmp_path, tiny_tokenizer):
    """``Student.load`` of a folder without distill.json: sizes from the model's config, no teachers;
    ``distill`` with alpha < 1 then says what is missing, and the loaded student still generates."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path / "plain")
    tiny_tokenizer.save_pretrained(tmp_path / "plain")
    student = Student.load(tmp_path / "plain", device="cpu")
    assert (student.config.hidden_size, student.config.num_layers, student.seq_len) == (32, 1, 64)
    assert isinstance(student.generate("London was", max_new_tokens=3, temperature=0), str)
    with pytest.raises(DistillError, match="needs teachers"):
        student.distill(["London was a city."], ["Paris was a city."])
