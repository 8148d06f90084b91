"""What the KD loss matches the student to: the teacher ensemble's distribution at the loss temperature.

A :data:`TeacherTarget` comes in three forms, all read through :func:`target_rows`:

* K teacher logit tensors (each (B, T, V'_k) or (N, V'_k)), mixed by :func:`ensemble_log_probs`;
* a callable ``rows -> K logit tensors (M, V'_k)``: :func:`teacher_head_target` applies each
  teacher's lm_head to its hidden states one chunk of rows at a time, so no (N, V) logits exist;
* a :class:`SparseTarget`: the mixed distribution kept as top-k entries plus the tail mass, or as
  the empirical distribution of N draws from it (``sampled``; :mod:`distill.logit_sampling`), as
  :class:`distill.logit_cache.TeacherLogitCache` stores them.

Shapes: B batch, T sequence, V vocabulary (the tokenizer's size), V' >= V a model's output rows,
H hidden size, N = B*T positions, M selected positions, k cached entries per token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

ENSEMBLES = ("logits", "probs")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the losses compute in: fp16/bf16 -> fp32; float64 stays float64 (gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class SparseTarget:
    """A teacher-ensemble distribution kept as its top k entries plus one bucket for the rest.

    Fields (N rows, one per position, in the same flat (B*T) layout as the student's input):
      indices:      (N, k) integer token ids of the k most probable tokens under p_t.
      logprobs:     (N, k) log p_t(v) of those tokens (fp16 or fp32), at ``temperature``.
      tail_logprob: (N,) log of the remaining mass, log(1 - sum_topk p_t); -inf when k == V.
      temperature:  the temperature p_t was made at (None: unknown, not checked).

    The divergence against a sparse target is the divergence between the two distributions
    coarsened to k+1 buckets (each top-k token alone, all other tokens together): for forward KL,
    ``sum_{v in topk} p(v) (log p(v) - log q(v)) + p_tail (log p_tail - log q_tail)`` with
    ``q_tail = 1 - sum_{v in topk} q(v)``, computed as a logsumexp over the student's non-top-k
    log-probs (no cancellation). Why this is a fair approximation:

    * It is the exact KL between coarsened distributions, so by the chain rule
      ``KL(p||q) = KL_buckets + p_tail * KL(p(.|tail) || q(.|tail))``: a lower bound on the full KL
      (data-processing inequality), with the gap exactly the teacher's tail mass times the
      divergence inside the tail.
    * The gradient with respect to a top-k logit is exactly the full-KL gradient, (q(v) - p(v))/T.
      For a tail logit it is (q(v) - q(v) p_tail / q_tail)/T: the total tail mass is pulled to the
      teacher's, spread like the student's own tail. Plain top-k renormalised instead drops the
      tail, pushes every tail token to zero and over-sharpens the student, which the Sparse Logit
      Sampling paper (Anshumann et al., ACL 2025, arXiv 2503.16870) shows to be biased.
    * Measured (tests/test_logit_cache.py, k=32 of V=300, two tiny LLaMA teachers whose ensemble
      has entropy ~3.9 nats at T=2 and 25% of its mass outside the top 32): the KL on the cached
      target is 10.5% below the live KL and the blended loss (alpha=0.5) 5.8% below, but the
      gradient, which is what trains the student, has cosine 0.999 with the live gradient (0.996
      for the KL term alone). The test bounds these at 8% / 0.995 (blend) and 15% / 0.99 (KL).
      The gap shrinks with the tail mass: with 2% tail mass the KL is 0.7% low. With k = V
      the loss equals the live one to 1e-5 (fp32 log-probs) or 2e-3 (fp16).

    Ensemble, weights and temperature are baked in when the target is made; the loss refuses a
    target made at another temperature.

    ``sampled=True`` marks the other cached form, the empirical distribution of N draws from p_t
    (:func:`distill.logit_sampling.sampled_target`): ``logprobs`` are log(count/N), -inf on empty
    padding slots, ``tail_logprob`` is -inf and there is no tail bucket. It is an unbiased estimate
    of the forward-KL gradient, not a coarsening; :mod:`distill.logit_sampling` says why.
    """

    indices: Tensor
    logprobs: Tensor
    tail_logprob: Tensor
    temperature: Optional[float] = None
    sampled: bool = False  # the empirical distribution of draws from p_t: no tail bucket

    @property
    def num_rows(self) -> int:
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    def select(self, rows: Tensor) -> "SparseTarget":
        """The rows ``rows`` (M,) of this target, moved to the device of ``rows``."""
        local = rows.to(self.indices.device)
        device = rows.device
        return SparseTarget(
            self.indices[local].to(device=device, dtype=torch.long),
            self.logprobs[local].to(device),
            self.tail_logprob[local].to(device),
            self.temperature,
            self.sampled,
        )

    def to(self, device, non_blocking: bool = False) -> "SparseTarget":
        move = dict(device=device, non_blocking=non_blocking)
        return SparseTarget(self.indices.to(**move), self.logprobs.to(**move), self.tail_logprob.to(**move), self.temperature,
                            self.sampled)

    def pin_memory(self) -> "SparseTarget":
        """In page-locked host memory (what a DataLoader with ``pin_memory`` calls), for non-blocking copies."""
        return SparseTarget(self.indices.pin_memory(), self.logprobs.pin_memory(), self.tail_logprob.pin_memory(),
                            self.temperature, self.sampled)

    @classmethod
    def from_log_probs(cls, log_probs: Tensor, top_k: int, temperature: Optional[float] = None) -> "SparseTarget":
        """Keep the ``top_k`` largest of ``log_probs`` (N, V) and the log of the remaining mass.

        ``log_probs`` is the ensemble target at the loss temperature (see :func:`ensemble_log_probs`).
        The tail is a logsumexp over the non-top-k entries, so it stays exact when it is tiny.
        """
        log_probs = log_probs.to(compute_dtype(log_probs.dtype))
        vocab = log_probs.shape[-1]
        if not 1 <= top_k <= vocab:
            raise ValueError(f"top_k must be in [1, {vocab}], got {top_k}")
        values, indices = log_probs.topk(top_k, dim=-1)  # (N, k) each
        if top_k < vocab:
            tail = log_probs.scatter(-1, indices, float("-inf")).logsumexp(-1)  # (N,)
        else:
            tail = torch.full(log_probs.shape[:-1], float("-inf"), dtype=log_probs.dtype, device=log_probs.device)
        return cls(indices, values, tail, temperature)


TeacherTarget = Union[Sequence[Tensor], Tensor, SparseTarget, Callable[[Tensor], Sequence[Tensor]]]


def normalise_weights(weights: Optional[Sequence[float]], num_teachers: int) -> list[float]:
    """Per-teacher weights scaled to sum to 1; ``None`` gives the plain mean (1/K each)."""
    if num_teachers < 1:
        raise ValueError("need at least one teacher")
    if weights is None:
        return [1.0 / num_teachers] * num_teachers
    weights = [float(w) for w in weights]
    if len(weights) != num_teachers:
        raise ValueError(f"got {len(weights)} teacher weights for {num_teachers} teachers")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"teacher weights must be finite, >= 0 and not all 0; got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def ensemble_log_probs(
    teacher_logits: Sequence[Tensor],
    temperature: float,
    mode: str = "logits",
    weights: Optional[Sequence[float]] = None,
) -> Tensor:
    """Log-probabilities of the teacher ensemble at ``temperature``: K tensors (..., V) -> (..., V).

    ``mode="logits"``: log_softmax(sum_k w_k z_k / T) (BabyLlama averages logits).
    ``mode="probs"``:  log(sum_k w_k softmax(z_k / T)), as a logsumexp over teachers so that no
    probability underflows. Weights are normalised; ``None`` means the mean. Computed in fp32.
    """
    if mode not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}; got {mode!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(teacher_logits, Tensor):
        teacher_logits = [teacher_logits]
    w = normalise_weights(weights, len(teacher_logits))
    shape = teacher_logits[0].shape
    for z in teacher_logits:
        if z.shape != shape:
            raise ValueError(f"teacher logits differ in shape: {tuple(shape)} vs {tuple(z.shape)}; slice them to one vocab_size")
    dtype = compute_dtype(teacher_logits[0].dtype)
    if mode == "logits":
        mixed = None
        for wk, z in zip(w, teacher_logits):
            term = z.detach().to(dtype) * wk
            mixed = term if mixed is None else mixed.add_(term)
        return F.log_softmax(mixed / temperature, dim=-1)
    log_mix = None
    for wk, z in zip(w, teacher_logits):
        if wk == 0:  # log(0) = -inf adds nothing
            continue
        term = F.log_softmax(z.detach().to(dtype) / temperature, dim=-1) + math.log(wk)
        log_mix = term if log_mix is None else torch.logaddexp(log_mix, term)
    return log_mix


def sparse_bucket_log_probs(student_log_probs: Tensor, target: SparseTarget) -> tuple[Tensor, Tensor]:
    """Teacher and student log-probs over the target's buckets: (M, V) -> (M, k+1), (M, k+1).

    Buckets are the k cached tokens and, when k < V and the target is not ``sampled``, one bucket
    for all other tokens. The teacher side is renormalised (fp16 storage rounds the sum away from 1
    by ~1e-3); its -inf entries (a sampled target's empty slots) become the most negative finite
    value, whose exp is exactly 0, so they add 0 to the divergence and its gradient where
    0 * -inf would be NaN.
    """
    vocab = student_log_probs.shape[-1]
    dtype = student_log_probs.dtype
    idx = target.indices.long()
    if idx.numel() and int(idx.max()) >= vocab:
        raise ValueError(f"sparse target has token ids >= vocab size {vocab}")
    q_top = student_log_probs.gather(-1, idx)  # (M, k)
    p_top = target.logprobs.to(dtype)
    if target.k < vocab and not target.sampled:
        q_tail = student_log_probs.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)  # (M, 1)
        q_buckets = torch.cat([q_top, q_tail], dim=-1)
        p_buckets = torch.cat([p_top, target.tail_logprob.to(dtype).unsqueeze(-1)], dim=-1)
    else:  # every token has its own bucket, or a sampled target has no tail mass: no tail bucket
        q_buckets, p_buckets = q_top, p_top
    p_buckets = p_buckets - p_buckets.logsumexp(-1, keepdim=True)
    return p_buckets.clamp(min=torch.finfo(dtype).min), q_buckets


def teacher_head_target(
    hidden_states: Sequence[Tensor],
    weights: Sequence[Tensor],
    biases: Optional[Sequence[Optional[Tensor]]] = None,
) -> Callable[[Tensor], list[Tensor]]:
    """A target for :func:`distill.losses.chunked_kd_loss` that applies each teacher's lm_head per chunk.

    ``hidden_states``: K tensors (B, T, H_k) or (N, H_k) (the teachers' final hidden states);
    ``weights``: K lm_head weights (V'_k, H_k); ``biases``: K biases or None. The returned callable
    maps flat positions ``rows`` (M,) to K logit tensors (M, V'_k) in the teachers' own dtype, so
    the teachers' (N, V) logits are never held in memory.
    """
    biases = list(biases) if biases is not None else [None] * len(weights)
    if not len(hidden_states) == len(weights) == len(biases):
        raise ValueError("need one hidden-state tensor, one weight and one bias (or None) per teacher")
    flats = [h.detach().reshape(-1, h.shape[-1]) for h in hidden_states]
    heads = [(w.detach(), None if b is None else b.detach()) for w, b in zip(weights, biases)]

    def target(rows: Tensor) -> list[Tensor]:
        # A teacher in bf16 may hand over fp32 hidden states (its final LayerNorm runs in fp32 under
        # autocast): each head runs in its own weight's dtype.
        return [F.linear(h[rows.to(h.device)].to(w.dtype), w, b).to(rows.device) for h, (w, b) in zip(flats, heads)]

    return target


def check_target(target: TeacherTarget, num_positions: int, temperature: float, divergence: str = "forward_kl") -> None:
    """ValueError when a sparse target does not fit the student's positions, the loss temperature
    or (a sampled target) the divergence."""
    if not isinstance(target, SparseTarget):
        return
    if target.sampled and divergence != "forward_kl":
        raise ValueError(
            f"a sampled target is an unbiased estimate for forward_kl only, not {divergence}; "
            "use divergence forward_kl or a top-k + tail target"
        )
    if target.num_rows != num_positions:
        raise ValueError(f"sparse target has {target.num_rows} rows but the student has {num_positions} positions")
    if target.temperature is not None and not math.isclose(target.temperature, temperature, rel_tol=1e-6):
        raise ValueError(
            f"the sparse target was made at temperature {target.temperature} but the loss uses {temperature}; "
            "rebuild the logit cache at this temperature"
        )


def target_rows(
    target: TeacherTarget, rows: Tensor, vocab: int, *, temperature: float, mode: str, weights: Optional[Sequence[float]]
) -> Union[Tensor, SparseTarget]:
    """The target at flat positions ``rows`` (M,): (M, V) ensemble log-probs, or a SparseTarget with M rows."""
    if isinstance(target, SparseTarget):
        return target.select(rows)
    if callable(target) and not isinstance(target, Tensor):
        teachers = list(target(rows))
    else:
        teachers = [target] if isinstance(target, Tensor) else list(target)
        teachers = [z.reshape(-1, z.shape[-1])[rows.to(z.device)].to(rows.device) for z in teachers]  # (N, Vk) -> (M, Vk)
    sliced = []
    for i, z in enumerate(teachers):
        if z.shape[-1] < vocab:
            raise ValueError(f"teacher {i} has {z.shape[-1]} logits per token, fewer than vocab_size {vocab}")
        sliced.append(z[..., :vocab])  # padded embedding rows are dropped, never padded
    return ensemble_log_probs(sliced, temperature, mode, weights)
