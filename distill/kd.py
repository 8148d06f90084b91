"""One distillation step's loss, the ``compute_loss`` of :func:`distill.training.train`.

:class:`KDStep` is the blended loss ``alpha * CE + (1 - alpha) * T^2 * KL`` on the fused chunked
path (:func:`distill.losses.chunked_kd_loss`): the student runs with ``logits_to_keep=1``, so no
(B, T, V) logits exist, and a forward hook keeps its final hidden states for the chunked lm_head.
The target comes per batch from the teachers (:mod:`distill.ensemble`: live or cached).
:func:`ce_step` is the no-distillation baseline's loss.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from distill.losses import LossConfig, chunked_kd_loss
from distill.speed import inner_model
from distill.teacher_target import TeacherTarget
from distill.training import LossWindow, causal_lm_loss


def ce_step(model, batch: dict, window: LossWindow):
    """The baseline's loss: next-token CE (logged as ``ce`` too, for the report's curves)."""
    loss, _ = causal_lm_loss(model, batch, window)
    return loss, {"ce": loss.detach()}


class KDStep:
    """``(model, batch, window) -> (loss, {"ce", "kl"})`` for :func:`distill.training.train`.

    Args:
        loss: the loss settings.
        vocab_size: the tokenizer's vocabulary; logits and lm_head rows beyond it are padding.
        target: ``batch -> TeacherTarget`` (:func:`distill.ensemble.live_target` or
            :func:`distill.ensemble.cached_target`).
        extra_flops: ``seq_len -> FLOPs`` per position that ``target`` spends (the live teachers'
            forwards, :func:`distill.speed.forward_flops_per_token`; None from a cache), for MFU.
    """

    def __init__(self, loss: LossConfig, vocab_size: int, target: Callable[[dict], TeacherTarget],
                 extra_flops: Optional[Callable[[int], float]] = None):
        self.loss = loss
        self.vocab_size = vocab_size
        self.target = target
        self.extra_flops = extra_flops
        self._hidden = None
        self._hooked = None

    def _keep(self, module, args, output) -> None:
        self._hidden = output[0]

    def _window_loss(self, batch_size: int, window: LossWindow) -> tuple[LossConfig, float, float]:
        """The loss settings for this micro-batch, the scale that undoes their change and the KL's share.

        BabyLlama divides the KL by the batch size; over a window of micro-batches and processes
        that is the window's sequence count. chunked_kd_loss divides by the local B, so the KL share
        is scaled by r = B_local / window.num_sequences through alpha:
        a' * CE + (1 - a') * KL = c * (a * CE + (1 - a) * r * KL) with c = 1 / (a + (1 - a) r).
        """
        if not self.loss.legacy:
            return self.loss, 1.0, 1.0
        ratio = batch_size / max(window.num_sequences, 1)
        scale = 1.0 / (self.loss.alpha + (1.0 - self.loss.alpha) * ratio)
        return dataclasses.replace(self.loss, alpha=self.loss.alpha * scale), scale, ratio

    def __call__(self, model, batch: dict, window: LossWindow):
        unwrapped = inner_model(model)
        if self._hooked is not unwrapped.base_model:
            unwrapped.base_model.register_forward_hook(self._keep)
            self._hooked = unwrapped.base_model
        input_ids = batch["input_ids"]
        model(input_ids=input_ids, attention_mask=batch.get("attention_mask"), use_cache=False, logits_to_keep=1)
        hidden, self._hidden = self._hidden, None  # (B, T, H)
        head = unwrapped.get_output_embeddings()
        config, scale, ratio = self._window_loss(input_ids.shape[0], window)
        out = chunked_kd_loss(
            hidden, head.weight, head.bias, batch["labels"], self.target(batch), config,
            vocab_size=self.vocab_size, num_valid_tokens=window.num_tokens,
        )  # fmt: skip
        loss = out.loss if ratio == 1.0 else out.loss / scale
        return loss, {"ce": out.ce, "kl": out.kl * ratio}
