"""Knowledge-distillation losses: a teacher-ensemble target, three divergences, the blended loss.

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
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
ENSEMBLES = ("logits", "probs")
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
    """

    indices: Tensor
    logprobs: Tensor
    tail_logprob: Tensor
    temperature: Optional[float] = None

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
        )

    def to(self, device) -> "SparseTarget":
        return SparseTarget(self.indices.to(device), self.logprobs.to(device), self.tail_logprob.to(device), self.temperature)

    @classmethod
    def from_log_probs(cls, log_probs: Tensor, top_k: int, temperature: Optional[float] = None) -> "SparseTarget":
        """Keep the ``top_k`` largest of ``log_probs`` (N, V) and the log of the remaining mass.

        ``log_probs`` is the ensemble target at the loss temperature (see :func:`ensemble_log_probs`).
        The tail is a logsumexp over the non-top-k entries, so it stays exact when it is tiny.
        """
        log_probs = log_probs.to(_compute_dtype(log_probs.dtype))
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


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16 -> fp32; float64 stays float64 (gradcheck)
    return torch.promote_types(dtype, torch.float32)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


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
    _check_choice("ensemble", mode, ENSEMBLES)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(teacher_logits, Tensor):
        teacher_logits = [teacher_logits]
    w = normalise_weights(weights, len(teacher_logits))
    shape = teacher_logits[0].shape
    for z in teacher_logits:
        if z.shape != shape:
            raise ValueError(f"teacher logits differ in shape: {tuple(shape)} vs {tuple(z.shape)}; slice them to one vocab_size")
    dtype = _compute_dtype(teacher_logits[0].dtype)
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


def sparse_bucket_log_probs(student_log_probs: Tensor, target: SparseTarget) -> tuple[Tensor, Tensor]:
    """Teacher and student log-probs over the target's buckets: (M, V) -> (M, k+1), (M, k+1).

    Buckets are the k cached tokens and, when k < V, one bucket for all other tokens. The teacher
    side is renormalised (fp16 storage rounds the sum away from 1 by ~1e-3).
    """
    vocab = student_log_probs.shape[-1]
    dtype = student_log_probs.dtype
    idx = target.indices.long()
    if idx.numel() and int(idx.max()) >= vocab:
        raise ValueError(f"sparse target has token ids >= vocab size {vocab}")
    q_top = student_log_probs.gather(-1, idx)  # (M, k)
    p_top = target.logprobs.to(dtype)
    if target.k < vocab:
        q_tail = student_log_probs.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)  # (M, 1)
        q_buckets = torch.cat([q_top, q_tail], dim=-1)
        p_buckets = torch.cat([p_top, target.tail_logprob.to(dtype).unsqueeze(-1)], dim=-1)
    else:  # every token has its own bucket: no tail
        q_buckets, p_buckets = q_top, p_top
    p_buckets = p_buckets - p_buckets.logsumexp(-1, keepdim=True)
    return p_buckets, q_buckets


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


def _target_for_rows(target: TeacherTarget, rows: Tensor, vocab: int, temperature: float, ensemble: str, weights):
    """The target at ``rows``: (M, V) ensemble log-probs, or a :class:`SparseTarget` with M rows."""
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
    return ensemble_log_probs(sliced, temperature, ensemble, weights)


def _chunk_sums(logits: Tensor, targets: Tensor, target, temperature: float, divergence: str) -> tuple[Tensor, Tensor]:
    """Summed CE and summed (unscaled) divergence over the rows of one chunk.

    logits (c, V) in the compute dtype, targets (c,) with -100 = no CE, target (c, V) log-probs or a
    SparseTarget with c rows. Returns two 0-dim tensors.
    """
    ce_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    student_log_probs = F.log_softmax(logits / temperature, dim=-1)  # (c, V)
    if isinstance(target, SparseTarget):
        p, q = sparse_bucket_log_probs(student_log_probs, target)  # (c, k+1) each
        per_token = divergence_per_token(divergence, p, q)
    else:
        per_token = divergence_per_token(divergence, target.to(logits.dtype), student_log_probs)
    return ce_sum, per_token.sum()


def _validate(alpha, temperature, divergence, ensemble, kl_reduction, target, chunk_size=1) -> None:
    _check_choice("divergence", divergence, DIVERGENCES)
    _check_choice("ensemble", ensemble, ENSEMBLES)
    _check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(target, SparseTarget) and target.temperature is not None:
        if not math.isclose(target.temperature, temperature, rel_tol=1e-6):
            raise ValueError(
                f"the sparse target was made at temperature {target.temperature} but the loss uses {temperature}; "
                "rebuild the logit cache at this temperature"
            )


def _check_sparse_rows(target, num_positions: int) -> None:
    if isinstance(target, SparseTarget) and target.num_rows != num_positions:
        raise ValueError(f"sparse target has {target.num_rows} rows but the student has {num_positions} positions")


def blended_kd_loss(
    student_logits: Tensor,
    teacher_logits: TeacherTarget,
    labels: Tensor,
    *,
    alpha: float,
    temperature: float,
    divergence: str = "forward_kl",
    ensemble: str = "logits",
    weights: Optional[Sequence[float]] = None,
    kl_reduction: str = "token_mean",
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
      alpha: weight of CE; 1 - alpha weighs the divergence.
      temperature: the loss temperature T (not a sampling temperature).
      divergence: "forward_kl" | "reverse_kl" | "jsd" (all scaled by T^2).
      ensemble: "logits" | "probs"; weights: per-teacher weights, normalised, None = mean.
      kl_reduction: "token_mean" (ours: mean over M) or "legacy_batchmean" (BabyLlama's, below).
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

    Returns :class:`KDLoss`; all three values are differentiable. With no valid token the loss is 0
    (still connected to ``student_logits``, so backward gives zero gradients, not NaN).
    """
    _validate(alpha, temperature, divergence, ensemble, kl_reduction, teacher_logits)
    vocab = vocab_size or student_logits.shape[-1]
    if student_logits.shape[-1] < vocab:
        raise ValueError(f"student has {student_logits.shape[-1]} logits per token, fewer than vocab_size {vocab}")
    flat = student_logits.reshape(-1, student_logits.shape[-1])  # (B, T, V') -> (N, V')
    num_positions = flat.shape[0]
    _check_sparse_rows(teacher_logits, num_positions)
    rows, targets = _rows_and_targets(labels.to(flat.device), num_positions, shift, kl_reduction)
    dtype = _compute_dtype(student_logits.dtype)
    if rows.numel() == 0:
        zero = student_logits.sum().to(dtype) * 0.0
        return KDLoss(zero, zero.detach(), zero.detach(), 0)
    legacy_batch = student_logits.shape[0] if kl_reduction == "legacy_batchmean" else None
    num_ce = int((targets != IGNORE_INDEX).sum())
    ce_den, kl_den = _denominators(num_ce, num_valid_tokens, legacy_batch)
    logits = flat[rows][:, :vocab].to(dtype)  # (M, V)
    target = _target_for_rows(teacher_logits, rows, vocab, temperature, ensemble, weights)
    ce_sum, kl_sum = _chunk_sums(logits, targets, target, temperature, divergence)
    ce = ce_sum / ce_den
    kl = kl_sum * (temperature**2) / kl_den
    return KDLoss(alpha * ce + (1.0 - alpha) * kl, ce, kl, num_ce)


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
    rows: Tensor
    targets: Tensor
    target: object
    vocab: int
    temperature: float
    divergence: str
    ensemble: str
    weights: Optional[Sequence[float]]
    chunk_size: int
    ce_den: float
    kl_den: float
    alpha: float
    dtype: torch.dtype

    @property
    def ce_scale(self) -> float:
        return self.alpha / self.ce_den

    @property
    def kl_scale(self) -> float:
        return (1.0 - self.alpha) * self.temperature**2 / self.kl_den


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
    for start in range(0, num_rows, plan.chunk_size):
        end = min(start + plan.chunk_size, num_rows)
        h = hidden_rows[start:end].detach().to(dtype)  # (c, H)
        if want_h:
            h.requires_grad_(True)
        with torch.enable_grad() if any_grad else torch.no_grad():
            logits = F.linear(h, w, b)  # (c, H) @ (H, V) -> (c, V)
            target = _target_for_rows(plan.target, plan.rows[start:end], vocab, plan.temperature, plan.ensemble, plan.weights)
            ce_sum, kl_sum = _chunk_sums(logits, plan.targets[start:end], target, plan.temperature, plan.divergence)
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
    ce = ce_total / plan.ce_den
    kl = kl_total * plan.temperature**2 / plan.kl_den
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
    *,
    alpha: float,
    temperature: float,
    divergence: str = "forward_kl",
    ensemble: str = "logits",
    weights: Optional[Sequence[float]] = None,
    kl_reduction: str = "token_mean",
    vocab_size: Optional[int] = None,
    num_valid_tokens: Union[int, Tensor, None] = None,
    shift: bool = True,
    chunk_size: int = 1024,
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
          flat positions ``rows`` (M,) (see :func:`teacher_head_target`, which never materialises
          the teachers' full logits either);
        * a :class:`SparseTarget` with N rows (e.g. from ``TeacherLogitCache``).
      chunk_size: tokens per chunk. Peak memory is about 7.5 fp32 (chunk_size, V) tensors (logits,
        log-probs, the target and their gradients; 470 MiB at 1024 x 16000), whatever N is
        (bench/bench_loss_memory.py), plus the (M, H) and (V, H) gradients kept for backward.
      Other arguments: as :func:`blended_kd_loss`.

    Masked positions are dropped before the lm_head. Then, for each chunk, logits = h @ W^T are
    computed in fp32 (autocast off), the chunk's loss is formed and its gradient with respect to
    h, W and b is taken at once; backward scales these stored gradients. Equal to
    ``blended_kd_loss(h @ W^T + b, ...)`` in value and gradients to ~1e-6 (fp32).

    Returns :class:`KDLoss`; only ``loss`` is differentiable (``ce``/``kl`` are for logging), and
    double backward is not supported.
    """
    _validate(alpha, temperature, divergence, ensemble, kl_reduction, target, chunk_size)
    vocab = vocab_size or lm_head_weight.shape[0]
    if lm_head_weight.shape[0] < vocab:
        raise ValueError(f"lm_head has {lm_head_weight.shape[0]} rows, fewer than vocab_size {vocab}")
    if student_hidden.shape[-1] != lm_head_weight.shape[1]:
        raise ValueError(f"hidden size {student_hidden.shape[-1]} does not match lm_head weight {tuple(lm_head_weight.shape)}")
    flat = student_hidden.reshape(-1, student_hidden.shape[-1])  # (B, T, H) -> (N, H)
    num_positions = flat.shape[0]
    _check_sparse_rows(target, num_positions)
    rows, targets = _rows_and_targets(labels.to(flat.device), num_positions, shift, kl_reduction)
    dtype = _compute_dtype(torch.promote_types(student_hidden.dtype, lm_head_weight.dtype))
    if rows.numel() == 0:
        zero = student_hidden.sum().to(dtype) * 0.0 + lm_head_weight.sum().to(dtype) * 0.0
        if lm_head_bias is not None:
            zero = zero + lm_head_bias.sum().to(dtype) * 0.0
        return KDLoss(zero, zero.detach(), zero.detach(), 0)
    legacy_batch = student_hidden.shape[0] if kl_reduction == "legacy_batchmean" else None
    num_ce = int((targets != IGNORE_INDEX).sum())
    ce_den, kl_den = _denominators(num_ce, num_valid_tokens, legacy_batch)
    hidden_rows = flat[rows]  # (M, H): masked positions dropped before the lm_head
    plan = _Plan(
        rows=rows, targets=targets, target=target, vocab=vocab, temperature=temperature, divergence=divergence,
        ensemble=ensemble, weights=weights, chunk_size=chunk_size,
        ce_den=ce_den, kl_den=kl_den, alpha=alpha, dtype=dtype,
    )
    with torch.autocast(device_type=flat.device.type, enabled=False):
        needs_grad = torch.is_grad_enabled() and any(
            x is not None and x.requires_grad for x in (hidden_rows, lm_head_weight, lm_head_bias)
        )
        if needs_grad:
            loss, ce, kl = _FusedLinearKD.apply(hidden_rows, lm_head_weight, lm_head_bias, plan)
        else:
            loss, ce, kl, _ = _run_chunks(hidden_rows, lm_head_weight, lm_head_bias, plan, (False,) * 3)
    return KDLoss(loss, ce, kl, num_ce)


def teacher_head_target(
    hidden_states: Sequence[Tensor],
    weights: Sequence[Tensor],
    biases: Optional[Sequence[Optional[Tensor]]] = None,
) -> Callable[[Tensor], list[Tensor]]:
    """A ``target`` for :func:`chunked_kd_loss` that applies each teacher's lm_head per chunk.

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
