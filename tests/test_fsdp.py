"""FSDP (``recipes/accelerate/fsdp.yaml``, :mod:`distill.fsdp`): the config, the wrapping of each
teacher, whole-weight checkpoints, and real FSDP runs: on the CPU through ``tests/fsdp_on_cpu.py``
(Accelerate shards only on GPUs; torch's ``fully_shard`` runs on the CPU over gloo), and on GPUs as shipped.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model

from conftest import REPO, free_port, steps_per_epoch, subprocess_env
from distill import checkpoint_state, fsdp
from distill.models import build_model
from distill.recipe import ModelConfig, load_recipe

CONFIG = REPO / "recipes" / "accelerate" / "fsdp.yaml"
# Two processes of 8 blocks a step under FSDP against one process of 16: the same blocks in every step
# (Accelerate deals the 8-block batches out in turn) and no dropout in the LLaMA, so only the order of
# float sums differs (the gradients' reduce-scatter, the per-token mean): 1.2e-7 in the weights and
# equal val losses when written. WHOLE_STEPS: only whole global batches (an epoch's last, short one
# is padded with repeated blocks under 2 processes, not in one).
WHOLE_STEPS = 36
MATCH_TOLERANCE = 1e-5  # val loss and weights, FSDP vs one process
RESUME_TOLERANCE = 1e-6  # weights, resumed vs uninterrupted FSDP run (bitwise equal on the CPU)


def _tiny(arch: str) -> torch.nn.Module:
    extra = {"intermediate_size": 64} if arch == "llama" else {}
    return build_model(ModelConfig(name=arch, arch=arch, hidden_size=32, num_layers=2, num_heads=2, **extra), 64, 16)


def test_config_is_fsdp2_full_shard_of_the_decoder_layers():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(CONFIG))
    assert config.distributed_type == DistributedType.FSDP and config.num_machines == 1
    assert config.mixed_precision == "bf16" and not config.use_cpu
    fsdp_config = config.fsdp_config
    assert fsdp_config["fsdp_version"] == 2 and fsdp_config["fsdp_reshard_after_forward"] is True
    assert fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",") == ["LlamaDecoderLayer", "GPT2Block"]
    assert fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT" and not fsdp_config["fsdp_cpu_ram_efficient_loading"]
    header = "\n".join(line for line in CONFIG.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
    assert "accelerate launch --config_file recipes/accelerate/fsdp.yaml -m distill.teacher RECIPE" in header


def test_each_model_is_wrapped_at_its_own_layers():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    llama, gpt2 = _tiny("llama"), _tiny("gpt2")
    # Without distill.fsdp the plugin keeps the first model's classes and refuses the second model.
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    plugin.set_auto_wrap_policy(llama)
    with pytest.raises(ValueError, match="Could not find the transformer layer class LlamaDecoderLayer"):
        fsdp2_prepare_auto_wrap_policy(plugin, gpt2)

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["LlamaDecoderLayer", "GPT2Block"])
    for model, layer in [(llama, "LlamaDecoderLayer"), (gpt2, "GPT2Block"), (llama, "LlamaDecoderLayer")]:
        assert fsdp._wrap_layers_of(plugin, model) == [layer]
        plugin.set_auto_wrap_policy(model)  # what Accelerate's prepare does next
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        assert [type(m).__name__ for m in model.modules() if policy(m)] == [layer, layer]


def test_whole_weights_are_written_and_read_as_save_model_does(tmp_path):
    model = _tiny("gpt2")  # ties lm_head.weight to transformer.wte.weight
    assert fsdp.aliases(model) == [["lm_head.weight", "transformer.wte.weight"]]
    save_model(model, str(tmp_path / "reference.safetensors"))
    # Gathered weights share no storage: the tie is known from the model, not from the tensors.
    gathered = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    checkpoint_state._save_weights(gathered, fsdp.aliases(model), tmp_path / "whole.safetensors")
    with safe_open(str(tmp_path / "reference.safetensors"), "pt") as ref, safe_open(str(tmp_path / "whole.safetensors"), "pt") as whole:
        assert sorted(whole.keys()) == sorted(ref.keys()) and whole.metadata() == ref.metadata()
    for name, tensor in load_file(str(tmp_path / "whole.safetensors")).items():
        assert torch.equal(tensor, gathered[name])
    back = checkpoint_state._load_weights(tmp_path / "reference.safetensors", fsdp.aliases(model))
    assert back.keys() == gathered.keys() and all(torch.equal(back[n], gathered[n]) for n in gathered)


def _launch(args: list[str], *, on_cpu: bool) -> list[str]:
    """``accelerate launch --config_file recipes/accelerate/fsdp.yaml ...``; on the CPU through the shim."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
              "--main_process_port", str(free_port())]
    if on_cpu:
        return [*launch, "--num_processes", "2", "--mixed_precision", "no", str(REPO / "tests" / "fsdp_on_cpu.py"), "distill.teacher", *args]
    return [*launch, "--num_processes", str(min(torch.cuda.device_count(), 2)), "-m", "distill.teacher", *args]


def _run(cmd: list[str], env: dict) -> str:
    """Run ``cmd`` to the end; its stdout and stderr."""
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _stop_at(cmd: list[str], checkpoint: Path) -> str:
    """Run ``cmd``, SIGTERM the launcher once ``checkpoint`` exists (it passes the signal to every
    process, which save a checkpoint and stop), and return its stdout and stderr."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not checkpoint.is_dir():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "continue with --resume" in stderr, stderr[-3000:]
    return stdout + stderr


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).state_dict()


def _assert_whole_model(folder: Path, teacher, recipe) -> None:
    """The folder loads with from_pretrained, with every tensor at its full (unsharded) size."""
    expected = build_model(teacher, recipe.tokenizer.vocab_size, recipe.data.seq_len).state_dict()
    weights = _weights(folder)
    assert {n: tuple(t.shape) for n, t in weights.items()} == {n: tuple(t.shape) for n, t in expected.items()}
    assert (folder / "distill.json").is_file() and not (folder / "checkpoints").exists()


@pytest.mark.slow
def test_fsdp_on_cpu_matches_one_process_and_resumes_exactly(tiny_recipe, tmp_path):
    overrides = [f"teachers.llama.training.max_steps={WHOLE_STEPS}", "teachers.llama.training.save_at_words=[3k]",
                 "teachers.gpt2.training.epochs=3", "teachers.gpt2.training.save_every=20"]
    recipe = load_recipe(tiny_recipe, overrides)
    llama_folder, gpt2_folder = recipe.paths.teacher("llama"), recipe.paths.teacher("gpt2")
    cmd = _launch([str(tiny_recipe), *overrides], on_cpu=True)

    # Both teachers in one launch (GPT-2 wrapped after LLaMA); stopped during GPT-2, then resumed.
    output = _stop_at(cmd, gpt2_folder / "checkpoints" / "step-20")
    assert "FSDP: LlamaForCausalLM sharded over 2 processes, each LlamaDecoderLayer its own unit" in output
    assert "FSDP: GPT2LMHeadModel sharded over 2 processes, each GPT2Block its own unit" in output
    assert (llama_folder / "distill.json").is_file() and not (gpt2_folder / "distill.json").exists()
    output = _run([*cmd, "--resume"], subprocess_env())
    assert "gpt2: resuming from" in output and "skipping" in output  # the finished LLaMA is kept
    for teacher in recipe.teachers:
        _assert_whole_model(recipe.paths.teacher(teacher.name), teacher, recipe)
        assert json.loads((recipe.paths.teacher(teacher.name) / "distill.json").read_text())["metrics"]["num_processes"] == 2
    _assert_whole_model(llama_folder / "words" / "3k", recipe.teacher("llama"), recipe)  # training.save_at_words
    resumed = _weights(gpt2_folder)

    # Resumed == uninterrupted, both under FSDP (GPT-2's dropout: the RNG streams continue too).
    gpt2_folder.rename(tmp_path / "gpt2-resumed")
    _run([*cmd, "--only", "gpt2"], subprocess_env())
    uninterrupted = _weights(gpt2_folder)
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=RESUME_TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")

    # FSDP over 2 processes of 8 blocks == one process of 16 (same seed, same blocks each step).
    single = load_recipe(tiny_recipe, [*overrides, "teachers.llama.training.batch_size=16", f"output_dir={tmp_path / 'single'}"])
    for part in ("corpus", "tokenizer"):
        shutil.copytree(recipe.paths.root / part, tmp_path / "single" / part)
    env = {k: v for k, v in subprocess_env().items() if k != "ACCELERATE_USE_CPU"}
    _run([sys.executable, "-m", "distill.teacher", str(tiny_recipe), *overrides, "teachers.llama.training.batch_size=16",
          f"output_dir={tmp_path / 'single'}", "--only", "llama"], env)
    one = json.loads((single.paths.teacher("llama") / "distill.json").read_text())["metrics"]
    two = json.loads((llama_folder / "distill.json").read_text())["metrics"]
    assert steps_per_epoch(tiny_recipe, 16) > WHOLE_STEPS  # the steps compared are all whole batches
    assert (one["steps"], one["effective_batch_size"]) == (two["steps"], two["effective_batch_size"]) == (WHOLE_STEPS, 16)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=MATCH_TOLERANCE)
    reference = _weights(single.paths.teacher("llama"))
    for name, tensor in _weights(llama_folder).items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=MATCH_TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: Accelerate shards with FSDP only on GPUs")
def test_fsdp_on_gpus_as_shipped(tiny_recipe):
    """The shipped config as a user runs it: bf16, one process per GPU (at most 2), no shim."""
    env = {k: v for k, v in subprocess_env().items() if k != "ACCELERATE_USE_CPU"}
    overrides = ["teachers.gpt2.training.save_every=20"]
    output = _run(_launch([str(tiny_recipe), *overrides], on_cpu=False), env)
    assert "FSDP: LlamaForCausalLM sharded" in output and "FSDP: GPT2LMHeadModel sharded" in output
    recipe = load_recipe(tiny_recipe, overrides)
    for teacher in recipe.teachers:
        folder = recipe.paths.teacher(teacher.name)
        expected = build_model(teacher, recipe.tokenizer.vocab_size, recipe.data.seq_len).state_dict()
        assert {n: tuple(t.shape) for n, t in _weights(folder).items()} == {n: tuple(t.shape) for n, t in expected.items()}
