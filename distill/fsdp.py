"""Fully sharded data parallel (FSDP2: torch's ``fully_shard``) for a model too big for one GPU under DDP.

    accelerate launch --config_file recipes/accelerate/fsdp.yaml -m distill.teacher RECIPE

Under DDP every process holds the whole model, its gradients and AdamW's two moments (16 bytes a
parameter in fp32, before activations); FSDP keeps 1/N of each on each of N processes and gathers a
decoder layer's weights only while it runs. The loop is the same; what changes lives here:

* Wrapping (:func:`prepare`): Accelerate keeps one FSDP plugin per process and it remembers the layer
  classes of the first model it wrapped, so the second teacher of a stage (GPT-2 after LLaMA) would be
  refused ("Could not find the transformer layer class LlamaDecoderLayer in the model"). Before each
  model is wrapped the plugin is pointed at that model's own decoder layers: the classes of
  ``fsdp_transformer_layer_cls_to_wrap`` it has, else its ``_no_split_modules``.
* Checkpoints (:func:`full_model_state`, :func:`full_optimizer_state`, :func:`load_model_state`,
  :func:`load_optimizer_state`): the shards are gathered into whole tensors on the main process's CPU
  and written as a checkpoint without FSDP is (:mod:`distill.checkpoint_state`: safetensors and JSON,
  no pickle, unlike ``torch.distributed.checkpoint``'s metadata), and cut back into this process's
  shards on resume. A checkpoint resumes the same under FSDP, DDP or in one process.
* The finished folder (:func:`model_to_save`): ``save_pretrained`` and the model card's samples run on
  the main process alone, which a sharded model cannot do (its every forward needs all processes), so
  the main process gets a plain copy of the model holding the gathered weights.

Accelerate turns FSDP on only for GPUs and other accelerators: on the CPU its state stays
``MULTI_CPU``, the plugin is ignored and the processes train with plain data parallelism (a warning
says so). torch's ``fully_shard`` itself runs on the CPU over gloo, which ``tests/fsdp_on_cpu.py``
uses to test all of this without a GPU.
"""
from __future__ import annotations

import copy
import functools
import os
import sys
import warnings

import torch
from accelerate.utils import DistributedType


def is_sharded(accelerator) -> bool:
    """True when ``accelerator`` shards models with FSDP."""
    return accelerator.distributed_type == DistributedType.FSDP


def _asked_for() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def prepare(accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """``accelerator.prepare(model, optimizer)``, wrapping ``model``'s own decoder layers under FSDP."""
    if is_sharded(accelerator):
        layers = _wrap_layers_of(accelerator.state.fsdp_plugin, model)
        if accelerator.is_main_process:
            print(f"FSDP: {type(model).__name__} sharded over {accelerator.num_processes} processes"
                  f"{', each ' + ' and '.join(layers) + ' its own unit' if layers else ''}", file=sys.stderr)
    elif _asked_for() and accelerator.is_main_process:
        warnings.warn(
            f"FSDP was asked for (an FSDP accelerate config) but Accelerate shards models only on GPUs; "
            f"these {accelerator.num_processes} {accelerator.device.type} processes each hold the whole model (data parallel)",
            stacklevel=2,
        )
    return accelerator.prepare(model, optimizer)


def _wrap_layers_of(plugin, model: torch.nn.Module) -> list[str]:
    """Point a transformer-based auto-wrap policy at ``model``'s decoder layer classes; returns their names."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    policy = plugin.auto_wrap_policy
    if (policy.func if isinstance(policy, functools.partial) else policy) is not transformer_auto_wrap_policy:
        return []  # size-based or none: nothing that depends on the model
    if not hasattr(plugin, "_distill_layer_names"):  # the launch's list, before Accelerate narrows it
        plugin._distill_layer_names = list(plugin.transformer_cls_names_to_wrap or [])
    present = {type(module).__name__ for module in model.modules()}
    names = [name for name in plugin._distill_layer_names if name in present]
    plugin.transformer_cls_names_to_wrap = names or list(getattr(model, "_no_split_modules", None) or [])
    plugin.auto_wrap_policy = transformer_auto_wrap_policy
    return plugin.transformer_cls_names_to_wrap


def aliases(model: torch.nn.Module) -> list[list[str]]:
    """Names that share one tensor (tied embeddings), each group sorted: ``[["lm_head.weight", "transformer.wte.weight"]]``."""
    groups: dict[int, list[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(tensor), []).append(name)
    return [sorted(names) for names in groups.values() if len(names) > 1]


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights of a sharded model, on the CPU, on the main process ({} on the others).
    Every process calls it (the shards are all-gathered)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole weights (every name of the model's ``state_dict``) into a sharded model, each process
    keeping its shards. Every process calls it; ValueError names a tensor that does not fit."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(state[name].shape)}, the model's is {shape}")
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def full_optimizer_state(optimizer, is_main: bool) -> dict | None:
    """``optimizer.state_dict()`` with each sharded tensor gathered whole onto the CPU: the same
    layout as without FSDP (state keyed by parameter index). Every process calls it (each sharded
    tensor is all-gathered, in the same order everywhere); None on all but the main process."""
    from torch.distributed.tensor import DTensor

    state = optimizer.state_dict()
    whole: dict = {}
    for index in sorted(state["state"]):
        entry = {}
        for key, value in state["state"][index].items():
            if isinstance(value, DTensor):
                value = value.full_tensor()
                value = value.cpu() if is_main else None
            entry[key] = value
        whole[index] = entry
    return {**state, "state": whole} if is_main else None


def load_optimizer_state(optimizer, state: dict) -> None:
    """Load a whole optimizer state (as :func:`full_optimizer_state` returns it, or one saved without
    FSDP) into the optimizer of a sharded model, each process keeping the shards of its parameters."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [param for group in optimizer.param_groups for param in group["params"]]
    sizes = [len(group["params"]) for group in state["param_groups"]]
    if sizes != [len(group["params"]) for group in optimizer.param_groups]:
        raise ValueError(f"the saved optimizer has parameter groups of {sizes} tensors, this one "
                         f"{[len(group['params']) for group in optimizer.param_groups]}")
    entries = {}
    for index, entry in state["state"].items():
        param = params[index]
        entries[index] = {
            key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
            if isinstance(param, DTensor) and isinstance(value, torch.Tensor) and value.shape == param.shape else value
            for key, value in entry.items()
        }
    optimizer.load_state_dict({**state, "state": entries})


def model_to_save(accelerator, model: torch.nn.Module, state_dict: dict | None):
    """What the main process hands to ``save_model_folder``: the unwrapped model, or under FSDP a
    plain copy on the CPU holding ``state_dict`` (the gathered weights: ``accelerator.get_state_dict``).
    None on the other processes under FSDP."""
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    if not is_sharded(accelerator):
        return unwrapped
    if not accelerator.is_main_process:
        return None
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_config(unwrapped.config)
    plain.load_state_dict(state_dict, strict=True)
    plain.generation_config = copy.deepcopy(unwrapped.generation_config)
    plain.train(unwrapped.training)
    return plain
