"""How fast a run trains: model FLOPs per token, the device's peak, and MFU.

Model FLOPs utilisation (MFU, PaLM: Chowdhery et al. 2022, appendix B) is the FLOPs a run's tokens
need by the model's arithmetic, per second, over the peak the hardware could do. It counts what the
model needs, not what the kernels did: recomputation, padding and the loss's softmax are not in it,
so it compares runs and machines fairly.

* A forward pass costs ``2 * N + 4 * L * W * T`` FLOPs per token: ``N`` the weights of every matrix
  product (each linear / Conv1D layer, the lm_head included, embedding lookups not), ``L`` layers of
  attention ``W`` wide (heads x head size) over ``T`` positions (``QK^T`` and ``AV``, each
  ``2 * T * W`` per token; PaLM's convention counts the full square, not the causal half).
* Training costs three forwards (``6 * N + 12 * L * W * T``): the backward pass is twice the forward.
* The student with live teachers adds each teacher's forward; from the logit cache it adds nothing
  (the teachers ran once, when the cache was built).

The peak is per device, from :data:`PEAK_TFLOPS` (dense tensor-core figures from the vendors' data
sheets, bf16/fp16 under mixed precision, fp32 without), or ``--peak-tflops`` / the environment
variable ``DISTILL_PEAK_TFLOPS`` (TFLOP/s per device), which wins. A CPU has no entry: its MFU is
left out (``null``) unless a peak is given.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Optional

if TYPE_CHECKING:  # torch is imported where it is used: every command's argument parsing loads this module
    import torch

PEAK_ENV = "DISTILL_PEAK_TFLOPS"

# Dense TFLOP/s per device: (bf16/fp16 tensor cores, fp32 without TF32). First match of the device
# name wins, so the more specific names come first.
PEAK_TFLOPS: list[tuple[str, float, float]] = [
    ("GB200", 2500.0, 80.0),
    ("B200", 2250.0, 80.0),
    ("GH200", 989.4, 67.0),
    ("H200", 989.4, 67.0),
    ("H100 PCIe", 756.0, 51.2),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 67.0),  # SXM
    ("H800", 989.4, 67.0),
    ("A100", 312.0, 19.5),
    ("A800", 312.0, 19.5),
    ("L40S", 362.1, 91.6),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 30.3),
    ("A10G", 70.0, 31.2),
    ("A10", 125.0, 31.2),
    ("RTX 4090", 165.2, 82.6),
    ("RTX 3090", 71.0, 35.6),
    ("V100", 125.0, 15.7),  # fp16 only
    ("T4", 65.0, 8.1),  # fp16 only
    ("MI300X", 1307.4, 163.4),
    ("MI250X", 383.0, 47.9),
]


def _matmul_modules(model: torch.nn.Module) -> Iterable[torch.nn.Module]:
    import torch
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            yield module


def matmul_params(model: torch.nn.Module) -> int:
    """Weights of every matrix product of a forward pass: linear (and GPT-2 Conv1D) layers, the
    lm_head included even when tied to the input embeddings; embedding lookups and norms excluded."""
    return sum(module.weight.numel() for module in _matmul_modules(model))


def _attention_width(config) -> tuple[int, int]:
    """(layers, heads x head size) of a transformers config."""
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    return layers, heads * int(head_dim)


def forward_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """FLOPs of one forward pass per token at context ``seq_len``: ``2 N + 4 L W T`` (module docstring)."""
    layers, width = _attention_width(inner_model(model).config)
    return 2.0 * matmul_params(model) + 4.0 * layers * width * seq_len


def training_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """FLOPs of forward + backward per trained token: three forwards."""
    return 3.0 * forward_flops_per_token(model, seq_len)


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def peak_override() -> Optional[float]:
    """TFLOP/s per device from ``DISTILL_PEAK_TFLOPS`` (set by ``--peak-tflops``), or None."""
    text = os.environ.get(PEAK_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{PEAK_ENV}={text!r}: give the device's peak in TFLOP/s, a positive number, e.g. 989")
    return value


def device_name(device: torch.device | str) -> str:
    """What the device calls itself: the GPU's name, or ``cpu``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return device.type


def peak_tflops(device: torch.device | str, mixed_precision: Optional[str] = None) -> Optional[float]:
    """Peak dense TFLOP/s of one device at this precision: the override, else the table, else None."""
    override = peak_override()
    if override is not None:
        return override
    name = device_name(device)
    if name == "cpu":
        return None
    for key, half, single in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return half if mixed_precision in ("bf16", "fp16") else single
    return None


def mfu(positions_per_s: float, flops_per_token: Optional[float], peak: Optional[float], devices: int = 1) -> Optional[float]:
    """Model FLOPs utilisation, a fraction: achieved model FLOP/s over ``devices`` x the peak (TFLOP/s)."""
    if not flops_per_token or not peak:
        return None
    return positions_per_s * flops_per_token / (peak * 1e12 * max(devices, 1))


def figures(tokens: int, positions: int, seconds: float, flops_per_token: Optional[float], peak: Optional[float],
            devices: int = 1) -> dict:
    """A training row's speed over ``seconds`` of training steps: ``tokens_per_s`` (target tokens, all
    processes), ``tflops`` (model TFLOP/s per device, when the FLOPs per token are known) and ``mfu``
    (a fraction of the peak, when that is known too)."""
    seconds = max(seconds, 1e-9)
    out = {"tokens_per_s": round(tokens / seconds, 1)}
    if flops_per_token:
        out["tflops"] = round(positions / seconds * flops_per_token / max(devices, 1) / 1e12, 4)
        utilisation = mfu(positions / seconds, flops_per_token, peak, devices)
        if utilisation is not None:
            out["mfu"] = round(utilisation, 4)
    return out


def set_peak_from_cli(peak: Optional[float]) -> None:
    """``--peak-tflops``: checked, then passed on through the environment (to every stage and
    process of the command, ``accelerate launch``'s workers included)."""
    from distill.errors import DistillError

    if peak is None:
        try:
            peak_override()  # a bad DISTILL_PEAK_TFLOPS is refused before anything runs
        except ValueError as err:
            raise DistillError(str(err)) from None
        return
    if not peak > 0:
        raise DistillError(f"--peak-tflops {peak:g}: give the device's peak in TFLOP/s, a positive number, e.g. 989 for an H100")
    os.environ[PEAK_ENV] = repr(float(peak))
