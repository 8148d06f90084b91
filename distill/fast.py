"""What keeps an accelerator busy without changing the loss: compiled layers, loader workers, pinned memory.

The training loop (:mod:`distill.training`) and the student's live teachers use these; each is
decided from the recipe's ``training`` section and the device, so one recipe runs on a laptop's
CPU and on a GPU.

* ``training.compile`` (``auto`` | ``true`` | ``false``): ``torch.compile`` of each transformer layer
  in place, as torchtune does (``training.compile_model``): the layers are the same module class, so
  one graph serves them all and compilation takes seconds, and the code around them (the
  transformers model's own Python, the KD step's hook on the final hidden states, the chunked loss)
  stays eager, so nothing breaks the graph. ``auto`` compiles on CUDA only: on a CPU the inductor's
  C++ build costs more than it saves on the small models trained there. Before the first step a
  probe compiles and runs a two-op function on the device; when that fails (no C++ compiler, no
  Triton, an unsupported GPU) the run warns once with the reason and trains eagerly: same loss, slower.
  When the probe passes but the layers' own graph fails to compile in the first step, that step is
  undone and rerun eagerly, with the same kind of warning (:func:`eager_if_it_fails`).
* ``training.num_workers``: DataLoader worker processes that read the blocks and, for a student
  trained from the logit cache, the cached targets (:class:`CachedTargets`), so the read overlaps
  the step. ``null`` (auto) is 4 on CUDA (at most the CPUs per process) and 0 on a CPU, where the
  workers would take cores from the step itself.
* Pinned host memory and non-blocking copies on CUDA (``pin_memory`` of the loaders, Accelerate's
  ``non_blocking``), the fused AdamW kernel (:func:`fused_adamw`), and a larger batch for the
  teachers' forward when the logit cache is built (:func:`cache_build_batch`).

None of these changes what is computed: the tests that pin the loss run with them on and off.
"""
from __future__ import annotations

import functools
import os
import warnings
import weakref
from typing import Callable, Optional, TypeVar

import torch

from distill.data import collate_blocks
from distill.errors import DistillError

T = TypeVar("T")
_COMPILED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()  # layers compiled by compile_layers, for the fallback


def _device_type(device) -> str:
    return torch.device(device).type


def wants_compile(setting, device) -> bool:
    """``training.compile`` resolved for this device: ``auto`` means CUDA only."""
    if setting == "auto":
        return _device_type(device) == "cuda"
    return bool(setting)


@functools.lru_cache(maxsize=None)
def compile_problem(device_type: str) -> Optional[str]:
    """Why ``torch.compile`` does not work on this kind of device (None: it does), from a probe."""
    try:
        probe = torch.compile(lambda x: torch.nn.functional.silu(x) * 2.0, dynamic=False)
        out = probe(torch.ones(8, device=device_type))
        if not torch.allclose(out.cpu(), torch.nn.functional.silu(torch.ones(8)) * 2.0):
            return "the compiled probe gave a wrong result"
    except Exception as err:  # any failure of the toolchain: the run goes on eagerly
        return " ".join(f"{type(err).__name__}: {err}".split())[:300]
    return None


def layers_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks of a transformers causal LM (LLaMA ``model.layers``, GPT-2
    ``transformer.h``): the largest ``ModuleList`` of the base model."""
    base = getattr(model, "base_model", model)
    lists = [m for m in base.children() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def compile_layers(model: torch.nn.Module, setting, device, name: str = "model") -> bool:
    """Compile ``model``'s transformer layers in place when ``setting`` asks for it on ``device``
    and the compiler works there; True when compiled. The state dict is unchanged."""
    if not wants_compile(setting, device):
        return False
    problem = compile_problem(_device_type(device))
    if problem is None and not layers_of(model):
        problem = f"{type(model).__name__} has no list of transformer layers to compile"
    if problem is not None:
        shown = {True: "true", False: "false"}.get(setting, setting)
        warnings.warn(f"{name}: training.compile={shown} but torch.compile does not work here ({problem}); "
                      "training without it (same loss, slower); set training.compile=false to silence this", stacklevel=2)
        return False
    for layer in layers_of(model):
        _compile_layer(layer)
        _COMPILED.add(layer)
    return True


def _compile_layer(layer: torch.nn.Module) -> None:
    layer.compile()


def uncompile_all() -> bool:
    """Back to eager for every layer :func:`compile_layers` compiled; True when there were any."""
    layers = list(_COMPILED)
    for layer in layers:
        layer._compiled_call_impl = None  # what nn.Module.compile set; __call__ is eager again
    _COMPILED.clear()
    torch._dynamo.reset()
    return bool(layers)


def eager_if_it_fails(step: Callable[[], T], name: str, undo: Callable[[], None]) -> T:
    """Run the first training step of compiled layers; when compiling fails there (the probe passed
    but the model's own graph did not: an unsupported op, a Triton or inductor error), warn once, go
    back to eager (:func:`uncompile_all`), ``undo`` the partial step (its gradients) and run it again.
    A failure that is not the compiler's fails the eager rerun too, and is raised from there."""
    try:
        return step()
    except (DistillError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - whatever the compiler raised; the eager rerun tells
        if not uncompile_all():
            raise
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        warnings.warn(f"{name}: torch.compile failed on the first step ({reason}); training without it "
                      "(same loss, slower); set training.compile=false to silence this", stacklevel=2)
        undo()
        return step()


def num_workers(setting: Optional[int], device) -> int:
    """``training.num_workers`` resolved: the setting, else on CUDA 4 (fewer when the machine's CPUs,
    shared by the processes of this node, are short: one stays with each training process), 0 on a CPU."""
    if setting is not None:
        return setting
    if _device_type(device) != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(0, min(4, cpus // max(processes, 1) - 1))


def fused_adamw(device) -> bool:
    """Use AdamW's fused kernel: on CUDA (one launch for all parameters instead of several per tensor)."""
    return _device_type(device) == "cuda"


def cache_build_batch(batch_size: int, device) -> int:
    """Blocks per teacher forward when building the logit cache: 4x the training batch on CUDA
    (no gradients or activations are kept, so the forward alone fills the chip), the batch on a CPU."""
    return max(batch_size, 1) * (4 if _device_type(device) == "cuda" else 1)


class CachedTargets:
    """A collate function that also reads each batch's cached teacher target, in the loader's worker.

    ``batch["teacher_target"]`` is the :class:`~distill.teacher_target.SparseTarget` of the batch's
    blocks (``block_index``, from :class:`distill.data.IndexedBlocks`); the loader moves it to the
    device with the rest. Batches without ``block_index`` (validation) are plain blocks. Pickles
    without its open files (:class:`~distill.logit_cache.TeacherLogitCache` reopens them per process).
    """

    def __init__(self, cache):
        self.cache = cache

    def __call__(self, items: list[dict]) -> dict:
        batch = collate_blocks(items)
        if "block_index" in batch:
            batch["teacher_target"] = self.cache[batch["block_index"]]
        return batch
