"""Sampled teacher targets: N draws per token from the teacher ensemble, kept as token ids and counts.

Random-sampling KD (Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge Distillation
in LLMs", ACL 2025, arXiv 2503.16870), the ``student.logit_cache.method: sampled`` form of
:class:`distill.logit_cache.TeacherLogitCache` next to the top-k + tail one.

The estimator. For each token, draw v_1 .. v_N i.i.d. from p = p_T, the ensemble distribution at
the loss temperature T (:func:`distill.teacher_target.ensemble_log_probs`, the target the top-k
cache keeps too), and train on the empirical distribution p^(v) = count(v) / N, with no tail
mass. Against the student's q = softmax(s / T), the forward KL
``KL(p^ || q) = sum_v p^(v) log p^(v) - sum_v p^(v) log q(v)`` has the gradient
``(q - p^) / T`` on the student logits s (every token, sampled or not, since q is the full softmax),
T (q - p^) after the loss's T^2 scale.

Why it is unbiased. count(v) ~ Binomial(N, p(v)), so E[p^(v)] = p(v); the gradient is linear in p^,
so E[(q - p^) / T] = (q - p) / T: the gradient of the full forward KL, in expectation, for any N.
Plain top-k renormalised is biased (it pushes every other token to 0), and so is the top-k + tail
target inside the tail (:class:`distill.teacher_target.SparseTarget`). The argument needs the
gradient to be linear in the target, which holds for forward KL only: reverse KL and JSD take
log p^ (infinite for a token never drawn) and are biased, so the recipe and the loss refuse
``method: sampled`` with them.

Its variance. Var[p^(v)] = p(v) (1 - p(v)) / N, so each logit's gradient has variance
p(v) (1 - p(v)) / (N T^2), and summed over the vocabulary (1 - sum_v p(v)^2) / (N T^2) per token:
largest for a flat teacher, and averaged away over the tokens of a batch and over steps. Measured
in tests/test_sampled_cache.py (V=300, ensemble entropy ~3.8 nats at T=2, N=4): one draw's gradient
has cosine 0.42-0.58 with the live one, the mean of 1000 draws 0.9987, while plain top-4
renormalised stays at 0.90.

The loss value is biased even though its gradient is not: E[KL(p^ || q)] = KL(p || q) + H(p) -
E[H(p^)], and E[H(p^)] <= H(p) (H is concave; H(p^) <= log N), so the logged ``kl`` is too high
by the entropy gap, a constant that does not depend on the student and so adds no gradient.
Compare it with a run on the same cache, never with the top-k or live ``kl``.

Storage per token: N slots of (token id, count), the distinct sampled ids in ascending order
and then empty slots (id 0, count 0); ids are uint16 (int32 when V > 65536), counts uint8, so
N must be 1 .. 255. That is 3N bytes (N = 12: 36 bytes; 5N with int32 ids), against
k * (2 + 2) + 4 bytes for top-k + tail (k = 64: 260 bytes, fp16 log-probs; k * 6 + 4 in fp32).

Every shard has its own ``torch.Generator`` seeded from the cache's ``seed`` and the shard number
(:func:`shard_generator`), so a resumed or multi-process build draws the same shards as a single
uninterrupted one on the same device and batch size.
"""
from __future__ import annotations

import hashlib
import math
from typing import Optional

import torch
from torch import Tensor

from distill.errors import DistillError
from distill.teacher_target import SparseTarget

SAMPLED = "sampled"  # the cache's method name
MAX_SAMPLES = 255  # counts are stored as uint8


def sampled_settings(samples: int, seed: int) -> dict:
    """The manifest keys of a sampled cache; DistillError naming the recipe key when ``samples`` is out of range."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise DistillError(
            f"student.logit_cache.samples: {samples} must be between 1 and {MAX_SAMPLES} (counts are stored as uint8), e.g. 12"
        )
    return {"method": SAMPLED, "samples": int(samples), "seed": int(seed)}


def sampled_layout(manifest: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """A sampled shard's files: kind -> (shape per token, dtype)."""
    n = int(manifest["samples"])
    return {"indices": ((n,), manifest["index_dtype"]), "counts": ((n,), "uint8")}


def shard_seed(seed: int, number: int) -> int:
    """The generator seed of shard ``number`` of a cache made with ``seed`` (0 .. 2**63 - 1)."""
    digest = hashlib.sha256(f"distill.logit_sampling:{int(seed)}:{int(number)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shard_generator(seed: int, number: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for shard ``number`` (see :func:`shard_seed`)."""
    return torch.Generator(device=device).manual_seed(shard_seed(seed, number))


def draw_counts(log_probs: Tensor, samples: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Draw ``samples`` tokens per row from ``exp(log_probs)`` and count them.

    ``log_probs``: (M, V) the ensemble target at the loss temperature. Returns ids (M, N) and counts
    (M, N), both long, N = ``samples``: each row's distinct drawn ids in ascending order with their
    counts, then empty slots (id 0, count 0). Counts sum to N per row and no id repeats in a row
    (among slots with a count), so :func:`sampled_target` needs no de-duplication.
    """
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be in [1, {MAX_SAMPLES}], got {samples}")
    probs = log_probs.detach().float().exp()  # (M, V); multinomial renormalises each row
    draws = torch.multinomial(probs, samples, replacement=True, generator=generator)  # (M, N)
    draws, _ = draws.sort(dim=-1)
    first = torch.ones_like(draws, dtype=torch.bool)
    first[:, 1:] = draws[:, 1:] != draws[:, :-1]  # (M, N): a draw that starts a run of equal ids
    slot = first.long().cumsum(-1) - 1  # (M, N): the distinct-id slot each draw counts towards
    ids = torch.zeros_like(draws).scatter_(-1, slot, draws)  # the draws of one run write the same id
    counts = torch.zeros_like(draws).scatter_add_(-1, slot, torch.ones_like(draws))
    return ids, counts


def sampled_target(indices: Tensor, counts: Tensor, samples: int, temperature: Optional[float] = None) -> SparseTarget:
    """The empirical distribution of stored draws as a :class:`~distill.teacher_target.SparseTarget`.

    ``indices``, ``counts``: (M, N) as :func:`draw_counts` gives them (any integer dtype).
    ``logprobs`` = log(count / N), -inf on empty slots; ``tail_logprob`` = -inf; ``sampled=True``,
    so the loss uses no tail bucket and the empty slots add nothing (see
    :func:`distill.teacher_target.sparse_bucket_log_probs`). Its forward-KL gradient on the student
    logits, (q - p^) / T, equals the full one in expectation since E[p^] = p (module docstring).
    """
    logprobs = counts.float().log() - math.log(samples)  # log 0 = -inf on empty slots
    tail = torch.full(counts.shape[:-1], float("-inf"), dtype=torch.float32, device=counts.device)
    return SparseTarget(indices.long(), logprobs, tail, temperature, sampled=True)


def sampled_arrays(log_probs: Tensor, samples: int, generator: Optional[torch.Generator]) -> dict[str, Tensor]:
    """What a sampled cache stores for (M, V) ensemble log-probs: ``indices`` and ``counts``, (M, N)."""
    ids, counts = draw_counts(log_probs, samples, generator)
    return {"indices": ids, "counts": counts}
