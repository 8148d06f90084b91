"""Knowledge-distillation losses: three divergences and the blended CE + KD loss, plain and chunked.

The loss is the one in ARCHITECTURE.md ("The distillation loss"). Per token t over the set M of
positions whose next-token label is not ``-100``, with student logits s_t, teacher logits z_k,t and
the loss temperature T::

    p_t  = softmax(sum_k w_k z_k,t / T)            ensemble="logits" (BabyLlama's mean of logits)
         = sum_k w_k softmax(z_k,t / T)            ensemble="probs"
    q_t  = softmax(s_t / T)
    KL_t = sum_v p_t(v) (log p_t(v) - log q_t(v))  divergence="forward_kl" (default)
    KL   = T^2 * (1 / |M|) * sum_{t in M} KL_t
    CE   = (1 / |M|) * sum_{t in M} cross_entropy(s_t, label_{t+1})      (at temperature 1)
    loss = alpha * CE + (1 - alpha) * KL

Weights w_k are normalised to sum to 1 (uniform when not given). Everything is computed in fp32
(float64 inputs stay float64), whatever the dtype of the model.

Labels are Hugging Face style: ``labels = input_ids`` (B, T) with ``-100`` at ignored positions, and
the loss shifts them itself (``shift=True``): the logits at position t are scored against the label
at t+1, so the last position of each row never counts. Pass ``shift=False`` when the labels are
already aligned with the logits.

``num_valid_tokens`` is the count of |M| over the whole optimizer step: all gradient-accumulation
micro-batches and all data-parallel ranks (:func:`count_valid_tokens` per micro-batch, summed and
all-reduced). Sums are divided by it instead of the local count, so a batch of 8 gives the same
loss and gradients as two accumulated batches of 4, however the padding is spread. Note that
``accelerator.backward`` divides the loss by the accumulation steps and DDP averages gradients
over ranks: multiply the loss by ``grad_accum * num_processes`` before ``backward`` to undo both.

The settings (alpha, T, divergence, ensemble, weights, KL reduction, chunk size) are one frozen
:class:`LossConfig`, checked when it is made; ``StudentConfig.loss`` gives the recipe's. The
teacher side (ensemble, sparse cached target, per-chunk teacher heads) is :mod:`distill.teacher_target`.

Two implementations share the per-chunk arithmetic (:func:`_chunk_sums`), so they agree to
rounding: :func:`blended_kd_loss` takes logits and is the readable reference; :func:`chunked_kd_loss`
takes the hidden states before the lm_head and never holds more than one chunk of (tokens, V)
fp32 intermediates, in forward or backward.

Shapes: B batch, T sequence, V vocabulary (the tokenizer's size), H hidden size, N = B*T
positions, M selected positions, k cached entries per token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.teacher_target import (
    ENSEMBLES,
    SparseTarget,
    TeacherTarget,
    check_target,
    compute_dtype,
    normalise_weights,
    sparse_bucket_log_probs,
    target_rows,
)

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
KL_REDUCTIONS = ("token_mean", "legacy_batchmean")
IGNORE_INDEX = -100


class KDLoss(NamedTuple):
    """The blended loss and its parts, each a 0-dim tensor; ``num_tokens`` is the local |M|.

    ``ce`` and ``kl`` are already normalised (``kl`` includes the T^2 factor), so
    ``loss == alpha * ce + (1 - alpha) * kl``. Log all three.
    """

    loss: Tensor
    ce: Tensor
    kl: Tensor
    num_tokens: int


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class LossConfig:
    """The settings of the blended KD loss, checked once here (ValueError naming the setting).

    ``dataclasses.replace(config, alpha=...)`` gives a changed copy, checked again.
    """

    alpha: float  # weight of CE; 1 - alpha weighs the divergence (1 = plain CE, no teachers)
    temperature: float  # the loss temperature T (not a sampling temperature)
    divergence: str = "forward_kl"  # forward_kl | reverse_kl | jsd (all scaled by T^2)
    ensemble: str = "logits"  # logits (mean of teacher logits, BabyLlama's) | probs (mean of probabilities)
    teacher_weights: Optional[tuple[float, ...]] = None  # per-teacher weights, normalised; None = the mean
    kl_reduction: str = "token_mean"  # token_mean (ours: mean over M) | legacy_batchmean (BabyLlama's, below)
    chunk_size: int = 1024  # tokens per chunk in chunked_kd_loss (blended_kd_loss has no chunks)

    def __post_init__(self):
        _check_choice("divergence", self.divergence, DIVERGENCES)
        _check_choice("ensemble", self.ensemble, ENSEMBLES)
        _check_choice("kl_reduction", self.kl_reduction, KL_REDUCTIONS)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.teacher_weights is not None:
            weights = tuple(float(w) for w in self.teacher_weights)
            normalise_weights(weights, len(weights))  # finite, >= 0, not all 0
            object.__setattr__(self, "teacher_weights", weights)

    @property
    def uses_teachers(self) -> bool:
        """Whether the divergence term counts (alpha < 1); alpha == 1 is plain CE."""
        return self.alpha < 1

    @property
    def legacy(self) -> bool:
        """BabyLlama's KL reduction: summed over all positions, divided by the batch size."""
        return self.kl_reduction == "legacy_batchmean"


def forward_kl(target_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """KL(p || q) per row: sum_v p (log p - log q). (..., V), (..., V) -> (...)."""
    return (target_log_probs.exp() * (target_log_probs - student_log_probs)).sum(-1)


def reverse_kl(target_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """KL(q || p) per row: sum_v q (log q - log p). Mode-seeking. (..., V), (..., V) -> (...)."""
    return (student_log_probs.exp() * (student_log_probs - target_log_probs)).sum(-1)


def jsd(target_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """Jensen-Shannon divergence per row with beta = 0.5: 0.5 KL(p||m) + 0.5 KL(q||m), m = (p+q)/2.

    Symmetric and bounded by log 2. (..., V), (..., V) -> (...).
    """
    log_m = torch.logaddexp(target_log_probs, student_log_probs) - math.log(2.0)
    return 0.5 * forward_kl(target_log_probs, log_m) + 0.5 * forward_kl(student_log_probs, log_m)


_DIVERGENCE_FNS = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "jsd": jsd}


def divergence_per_token(name: str, target_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """The divergence ``name`` (one of :data:`DIVERGENCES`) per row. (..., V), (..., V) -> (...)."""
    _check_choice("divergence", name, DIVERGENCES)
    return _DIVERGENCE_FNS[name](target_log_probs, student_log_probs)


def count_valid_tokens(labels: Tensor, shift: bool = True) -> Tensor:
    """|M| for one micro-batch, as a 0-dim long tensor on ``labels``' device.

    ``labels`` (B, T) with -100 at ignored positions. With ``shift`` the first label of each row is
    never a target. Sum it over accumulation micro-batches and all-reduce it over ranks
    (``accelerator.reduce(n, "sum")``) to get ``num_valid_tokens``.
    """
    if shift:
        labels = labels[..., 1:]
    return (labels != IGNORE_INDEX).sum()


def _rows_and_targets(labels: Tensor, num_positions: int, shift: bool, kl_reduction: str) -> tuple[Tensor, Tensor]:
    """Which of the N flat positions enter the loss, and each one's CE target.

    Returns rows (M,) long indices into the flat (B*T) positions and targets (M,) long (-100 where a
    row has no CE target; only ``legacy_batchmean`` keeps such rows, for its unmasked KL).
    """
    if shift:
        if labels.dim() != 2:
            raise ValueError(f"shift=True needs labels of shape (B, T), got {tuple(labels.shape)}")
        nxt = torch.full_like(labels, IGNORE_INDEX)
        nxt[:, :-1] = labels[:, 1:]  # (B, T): position t is scored on label t+1
        flat = nxt.reshape(-1)
    else:
        flat = labels.reshape(-1)
    if flat.numel() != num_positions:
        raise ValueError(f"labels have {flat.numel()} positions but the student has {num_positions}")
    flat = flat.long()
    if kl_reduction == "legacy_batchmean":
        return torch.arange(num_positions, device=flat.device), flat
    rows = (flat != IGNORE_INDEX).nonzero().squeeze(-1)  # (M,)
    return rows, flat[rows]


def _denominators(num_ce: int, num_valid_tokens, legacy_batch: Optional[int]) -> tuple[float, float]:
    """(CE divisor, KL divisor); an empty count becomes 1 (the sums are 0 then)."""
    if num_valid_tokens is None:
        ce_den = float(num_ce)
    else:
        ce_den = float(num_valid_tokens.item() if isinstance(num_valid_tokens, Tensor) else num_valid_tokens)
    ce_den = max(ce_den, 1.0)
    kl_den = float(legacy_batch) if legacy_batch is not None else ce_den
    return ce_den, kl_den


class _Selection(NamedTuple):
    rows: Tensor  # (M,) flat positions that enter the loss
    targets: Tensor  # (M,) their CE targets, -100 = none
    num_ce: int  # local |M| of CE targets
    ce_den: float
    kl_den: float


def _select(labels: Tensor, num_positions: int, batch: int, config: LossConfig, shift: bool, num_valid_tokens) -> _Selection:
    """The positions of a (B, T) or (N,) student input that enter the loss, with both divisors."""
    rows, targets = _rows_and_targets(labels, num_positions, shift, config.kl_reduction)
    num_ce = int((targets != IGNORE_INDEX).sum())
    ce_den, kl_den = _denominators(num_ce, num_valid_tokens, batch if config.legacy else None)
    return _Selection(rows, targets, num_ce, ce_den, kl_den)


def _chunk_sums(logits: Tensor, targets: Tensor, target, config: LossConfig) -> tuple[Tensor, Tensor]:
    """Summed CE and summed (unscaled) divergence over the rows of one chunk.

    logits (c, V) in the compute dtype, targets (c,) with -100 = no CE, target (c, V) log-probs or a
    SparseTarget with c rows. Returns two 0-dim tensors.
    """
    student_log_probs = F.log_softmax(logits if config.temperature == 1.0 else logits / config.temperature, dim=-1)  # (c, V)
    # CE is nll_loss(log_softmax(logits)), as F.cross_entropy computes it: at T = 1 the divergence's
    # log-softmax serves it too (one pass over V, not two). With alpha = 0 it is only logged, so no
    # gradient flows through it.
    ce_log_probs = student_log_probs if config.temperature == 1.0 else F.log_softmax(logits, dim=-1)
    if config.alpha == 0.0:
        ce_log_probs = ce_log_probs.detach()
    ce_sum = F.nll_loss(ce_log_probs, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    if isinstance(target, SparseTarget):
        p, q = sparse_bucket_log_probs(student_log_probs, target)  # (c, k+1) each
        per_token = divergence_per_token(config.divergence, p, q)
    else:
        per_token = divergence_per_token(config.divergence, target.to(logits.dtype), student_log_probs)
    return ce_sum, per_token.sum()


def _target_at(target: TeacherTarget, rows: Tensor, vocab: int, config: LossConfig):
    return target_rows(target, rows, vocab, temperature=config.temperature, mode=config.ensemble, weights=config.teacher_weights)


def blended_kd_loss(
    student_logits: Tensor,
    teacher_logits: TeacherTarget,
    labels: Tensor,
    config: LossConfig,
    *,
    vocab_size: Optional[int] = None,
    num_valid_tokens: Union[int, Tensor, None] = None,
    shift: bool = True,
) -> KDLoss:
    """``alpha * CE + (1 - alpha) * KL`` from full logits (the reference implementation).

    Args:
      student_logits: (B, T, V') or (N, V'); V' >= ``vocab_size`` (extra padded rows are sliced off).
      teacher_logits: K tensors shaped like ``student_logits`` (each may have its own V' >= V), or a
        :class:`SparseTarget` with N rows (then ``ensemble``/``weights`` are already baked in).
      labels: (B, T) (or (N,) with ``shift=False``), -100 = ignored. See the module docstring.
      config: the loss settings (:class:`LossConfig`; ``chunk_size`` is not used here).
      vocab_size: the tokenizer's size; logits are sliced to it. None = the student's V'.
      num_valid_tokens: the global |M| for this optimizer step (see module docstring).
      shift: labels are input ids to be shifted (HF style); False = already aligned.

    ``kl_reduction="legacy_batchmean"`` reproduces BabyLlama's ``DistillationTrainer.compute_loss``
    (distill-ensemble-pretraining-baby-llama.py)::

        avg_teacher_logits = torch.stack(all_teacher_logits).mean(dim=0)   # plain mean of logits
        loss_logits = nn.KLDivLoss(reduction="batchmean")(
            F.log_softmax(student_logits / T, dim=-1), F.softmax(avg_teacher_logits / T, dim=-1)) * T**2
        loss = alpha * outputs_student.loss + (1 - alpha) * loss_logits

    on (B, T, V) logits: the KL is summed over every position of every row, the last position and
    padding included (no mask, no shift), and divided by B only (``batchmean`` divides by
    ``input.size(0)``), so it weighs the KL about T_seq times more than alpha says. CE stays HF's
    shifted mean over labels != -100. Here the KL rows are all N positions, the divisor is the
    leading dimension of ``student_logits`` (B, or N for 2-D input) and ``num_valid_tokens`` only
    changes the CE divisor. With ``ensemble="logits"`` and no weights it equals the code above.

    Returns :class:`KDLoss`; the loss and the KL are differentiable, and the CE too unless ``alpha``
    is 0 (then it is only logged). With no valid token the loss is 0 (still connected to
    ``student_logits``, so backward gives zero gradients, not NaN).
    """
    vocab = vocab_size or student_logits.shape[-1]
    if student_logits.shape[-1] < vocab:
        raise ValueError(f"student has {student_logits.shape[-1]} logits per token, fewer than vocab_size {vocab}")
    flat = student_logits.reshape(-1, student_logits.shape[-1])  # (B, T, V') -> (N, V')
    check_target(teacher_logits, flat.shape[0], config.temperature, config.divergence)
    sel = _select(labels.to(flat.device), flat.shape[0], student_logits.shape[0], config, shift, num_valid_tokens)
    dtype = compute_dtype(student_logits.dtype)
    if sel.rows.numel() == 0:
        zero = student_logits.sum().to(dtype) * 0.0
        return KDLoss(zero, zero.detach(), zero.detach(), 0)
    logits = flat[sel.rows][:, :vocab].to(dtype)  # (M, V)
    ce_sum, kl_sum = _chunk_sums(logits, sel.targets, _target_at(teacher_logits, sel.rows, vocab, config), config)
    ce = ce_sum / sel.ce_den
    kl = kl_sum * (config.temperature**2) / sel.kl_den
    return KDLoss(config.alpha * ce + (1.0 - config.alpha) * kl, ce, kl, sel.num_ce)


class _FusedLinearKD(torch.autograd.Function):
    """lm_head + blended loss over chunks of rows; gradients are computed chunk by chunk in forward.

    Each chunk builds its (c, V) logits, its target and its loss, takes the gradient of its share
    of the blended loss with ``torch.autograd.grad`` and frees everything before the next chunk,
    so one chunk of (c, V) intermediates is alive at a time. Backward only scales the stored
    gradients ((M, H) for the hidden rows, (V, H) for the weight), so nothing is recomputed.
    """

    @staticmethod
    def forward(ctx, hidden_rows, weight, bias, plan):
        loss, ce, kl, grads = _run_chunks(hidden_rows, weight, bias, plan, ctx.needs_input_grad[:3])
        ctx.grads = grads
        ctx.mark_non_differentiable(ce, kl)
        return loss, ce, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, grad_ce, grad_kl):
        out = []
        for grad in ctx.grads:
            out.append(None if grad is None else grad * grad_loss.to(grad.dtype))
        return out[0], out[1], out[2], None


@dataclass
class _Plan:
    sel: _Selection
    target: object
    vocab: int
    config: LossConfig
    dtype: torch.dtype

    @property
    def ce_scale(self) -> float:
        return self.config.alpha / self.sel.ce_den

    @property
    def kl_scale(self) -> float:
        return (1.0 - self.config.alpha) * self.config.temperature**2 / self.sel.kl_den


def _run_chunks(hidden_rows: Tensor, weight: Tensor, bias: Optional[Tensor], plan: _Plan, want: Sequence[bool]):
    """The chunk loop behind :func:`chunked_kd_loss`. Returns loss, ce, kl and the input gradients."""
    want_h, want_w, want_b = bool(want[0]), bool(want[1]), bool(want[2]) and bias is not None
    any_grad = want_h or want_w or want_b
    vocab, dtype = plan.vocab, plan.dtype
    w = weight.detach()[:vocab].to(dtype)  # (V, H); a no-op view when already fp32
    b = bias.detach()[:vocab].to(dtype) if bias is not None else None
    if want_w:
        w = w.detach().requires_grad_(True)
    if want_b:
        b = b.detach().requires_grad_(True)
    grad_h = torch.zeros(hidden_rows.shape, dtype=dtype, device=hidden_rows.device) if want_h else None
    grad_w = torch.zeros_like(w) if want_w else None
    grad_b = torch.zeros_like(b) if want_b else None
    ce_total = torch.zeros((), dtype=dtype, device=hidden_rows.device)
    kl_total = torch.zeros((), dtype=dtype, device=hidden_rows.device)
    num_rows = hidden_rows.shape[0]
    chunk_size = plan.config.chunk_size
    for start in range(0, num_rows, chunk_size):
        end = min(start + chunk_size, num_rows)
        h = hidden_rows[start:end].detach().to(dtype)  # (c, H)
        if want_h:
            h.requires_grad_(True)
        with torch.enable_grad() if any_grad else torch.no_grad():
            logits = F.linear(h, w, b)  # (c, H) @ (H, V) -> (c, V)
            target = _target_at(plan.target, plan.sel.rows[start:end], vocab, plan.config)
            ce_sum, kl_sum = _chunk_sums(logits, plan.sel.targets[start:end], target, plan.config)
            if any_grad:
                blend = ce_sum * plan.ce_scale + kl_sum * plan.kl_scale
                inputs = [x for x, on in ((h, want_h), (w, want_w), (b, want_b)) if on]
                grads = list(torch.autograd.grad(blend, inputs))
                if want_h:
                    grad_h[start:end] = grads.pop(0)
                if want_w:
                    grad_w += grads.pop(0)
                if want_b:
                    grad_b += grads.pop(0)
        ce_total += ce_sum.detach()
        kl_total += kl_sum.detach()
        del logits, target, ce_sum, kl_sum
    ce = ce_total / plan.sel.ce_den
    kl = kl_total * plan.config.temperature**2 / plan.sel.kl_den
    loss = ce_total * plan.ce_scale + kl_total * plan.kl_scale
    grads = (
        grad_h.to(hidden_rows.dtype) if want_h else None,
        _pad_rows(grad_w, weight) if want_w else None,
        _pad_rows(grad_b, bias) if want_b else None,
    )
    return loss, ce, kl, grads


def _pad_rows(grad: Tensor, like: Tensor) -> Tensor:
    """Gradient of the first V rows -> gradient of the whole (V', ...) parameter (zeros beyond V)."""
    if grad.shape[0] == like.shape[0]:
        return grad.to(like.dtype)
    full = torch.zeros(like.shape, dtype=like.dtype, device=like.device)
    full[: grad.shape[0]] = grad
    return full


def chunked_kd_loss(
    student_hidden: Tensor,
    lm_head_weight: Tensor,
    lm_head_bias: Optional[Tensor],
    labels: Tensor,
    target: TeacherTarget,
    config: LossConfig,
    *,
    vocab_size: Optional[int] = None,
    num_valid_tokens: Union[int, Tensor, None] = None,
    shift: bool = True,
) -> KDLoss:
    """:func:`blended_kd_loss` fused with the student's lm_head, chunk by chunk over tokens.

    Args:
      student_hidden: (B, T, H) or (N, H), the final hidden states (after the last norm), i.e.
        ``model.model(input_ids).last_hidden_state`` for a LLaMA.
      lm_head_weight: (V', H) and lm_head_bias: (V',) or None; rows beyond ``vocab_size`` are ignored.
      labels: (B, T) (or (N,) with ``shift=False``), -100 = ignored.
      target: one of
        * K teacher logit tensors, each shaped (B, T, V'_k) or (N, V'_k) like the student's positions;
        * a callable ``rows -> [K tensors (len(rows), V'_k)]`` giving the teachers' logits at the
          flat positions ``rows`` (M,) (see :func:`distill.teacher_target.teacher_head_target`, which never materialises
          the teachers' full logits either);
        * a :class:`SparseTarget` with N rows (e.g. from ``TeacherLogitCache``).
      config: the loss settings; ``config.chunk_size`` is the tokens per chunk. Peak memory is about
        7.5 fp32 (chunk_size, V) tensors (logits, log-probs, the target and their gradients; 470 MiB
        at 1024 x 16000), whatever N is
        (bench/bench_loss_memory.py), plus the (M, H) and (V, H) gradients kept for backward.
      Other arguments: as :func:`blended_kd_loss`.

    Masked positions are dropped before the lm_head. Then, for each chunk, logits = h @ W^T are
    computed in fp32 (autocast off), the chunk's loss is formed and its gradient with respect to
    h, W and b is taken at once; backward scales these stored gradients. Equal to
    ``blended_kd_loss(h @ W^T + b, ...)`` in value and gradients to ~1e-6 (fp32).

    Returns :class:`KDLoss`; only ``loss`` is differentiable (``ce``/``kl`` are for logging), and
    double backward is not supported.
    """
    vocab = vocab_size or lm_head_weight.shape[0]
    if lm_head_weight.shape[0] < vocab:
        raise ValueError(f"lm_head has {lm_head_weight.shape[0]} rows, fewer than vocab_size {vocab}")
    if student_hidden.shape[-1] != lm_head_weight.shape[1]:
        raise ValueError(f"hidden size {student_hidden.shape[-1]} does not match lm_head weight {tuple(lm_head_weight.shape)}")
    flat = student_hidden.reshape(-1, student_hidden.shape[-1])  # (B, T, H) -> (N, H)
    check_target(target, flat.shape[0], config.temperature, config.divergence)
    sel = _select(labels.to(flat.device), flat.shape[0], student_hidden.shape[0], config, shift, num_valid_tokens)
    dtype = compute_dtype(torch.promote_types(student_hidden.dtype, lm_head_weight.dtype))
    if sel.rows.numel() == 0:
        zero = student_hidden.sum().to(dtype) * 0.0 + lm_head_weight.sum().to(dtype) * 0.0
        if lm_head_bias is not None:
            zero = zero + lm_head_bias.sum().to(dtype) * 0.0
        return KDLoss(zero, zero.detach(), zero.detach(), 0)
    hidden_rows = flat[sel.rows]  # (M, H): masked positions dropped before the lm_head
    plan = _Plan(sel=sel, target=target, vocab=vocab, config=config, dtype=dtype)
    with torch.autocast(device_type=flat.device.type, enabled=False):
        needs_grad = torch.is_grad_enabled() and any(
            x is not None and x.requires_grad for x in (hidden_rows, lm_head_weight, lm_head_bias)
        )
        if needs_grad:
            loss, ce, kl = _FusedLinearKD.apply(hidden_rows, lm_head_weight, lm_head_bias, plan)
        else:
            loss, ce, kl, _ = _run_chunks(hidden_rows, lm_head_weight, lm_head_bias, plan, (False,) * 3)
    return KDLoss(loss, ce, kl, sel.num_ce)
