"""How good is generated text: repetition, diversity and a judge model's perplexity, over token ids.

Every function takes token ids: the continuation a model wrote (the prompt left out), encoded with
that model's tokenizer, so the numbers are tokenizer-level like the literature's seq-rep-n. An
n-gram is ``n`` consecutive ids of one text; n-grams never span two texts.

* :func:`repetition` — seq-rep-n (Welleck et al. 2019, "Neural text degeneration with unlikelihood
  training"): the share of a text's n-grams that repeat an earlier one; 0 = no repeats.
* :func:`distinct` — distinct-n (Li et al. 2016, "A diversity-promoting objective function"): unique
  n-grams over all n-grams of *all* texts together (corpus level); 1 = nothing repeats anywhere.
* :func:`length_before_loop` — tokens written before the first n-gram that already occurred.
* :func:`judge_perplexity` — exp of the mean NLL of the continuations under a judge model, each
  conditioned on its prompt.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from distill.generate import model_vocab_limit


def ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """The ``len(ids) - n + 1`` n-grams of ``ids`` in order; ``[]`` when it is shorter than ``n``.

    ``ngrams([5, 6, 7], 2) == [(5, 6), (6, 7)]``.
    """
    if n < 1:
        raise ValueError(f"n: {n} must be 1 or more")
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def repetition(ids: Sequence[int], n: int = 3) -> float | None:
    """seq-rep-n: ``1 - unique n-grams / n-grams`` of one text; None when it has no n-gram.

    ``a b a b a b`` (ids ``[1, 2, 1, 2, 1, 2]``) with n=3 has 4 trigrams ``aba bab aba bab``, 2 of
    them unique: ``1 - 2/4 = 0.5``. A text that never repeats a trigram scores 0.
    """
    grams = ngrams(ids, n)
    if not grams:
        return None
    return 1.0 - len(set(grams)) / len(grams)


def distinct(texts: Sequence[Sequence[int]], n: int) -> float | None:
    """distinct-n over all ``texts`` together (corpus level): unique n-grams / n-grams; None when none.

    ``distinct([[1, 2, 1, 2], [1, 2, 3]], 2)``: bigrams ``(1,2) (2,1) (1,2)`` and ``(1,2) (2,3)``,
    3 unique of 5, so 0.6. A bigram that recurs in another text counts once, as in a single text.
    """
    grams = [gram for ids in texts for gram in ngrams(ids, n)]
    if not grams:
        return None
    return len(set(grams)) / len(grams)


def length_before_loop(ids: Sequence[int], n: int = 4) -> int:
    """Tokens before the first n-gram that already occurred earlier in ``ids``; ``len(ids)`` when none does.

    With n=3, ``a b c a b c a`` (``[1, 2, 3, 1, 2, 3, 1]``): the trigram at position 3, ``a b c``,
    repeats the one at 0, so 3 tokens came before the loop. ``a b c d`` never repeats: 4.
    """
    seen: set[tuple[int, ...]] = set()
    for start, gram in enumerate(ngrams(ids, n)):
        if gram in seen:
            return start
        seen.add(gram)
    return len(ids)


def _continuation_nll(model, tokenizer, rows: list[tuple[list[int], list[int]]], device) -> list[tuple[float, int]]:
    """``(summed NLL, tokens)`` of each row's continuation after its prompt, one right-padded batch.

    Padding, an attention mask and explicit position ids make each row score as it would alone.
    """
    width = max(len(p) + len(c) for p, c in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)  # which targets are continuation tokens
    for row, (prompt, continuation) in enumerate(rows):
        ids = prompt + continuation
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        scored[row, len(prompt) : len(ids)] = True
    input_ids, mask, scored = input_ids.to(device), mask.to(device), scored.to(device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    logits = logits[:, :-1, : model_vocab_limit(model, tokenizer)].float()  # (B, W-1, V): position t predicts t+1
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # (B, W-1)
    keep = scored[:, 1:]
    sums = (nll.double() * keep).sum(1)
    return [(float(sums[row]), int(keep[row].sum())) for row in range(len(rows))]


def judge_perplexity(judge_model, tokenizer, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]], *,
                     batch_size: int = 16) -> float | None:
    """exp(mean NLL) of every continuation token under ``judge_model``, each after its own prompt.

    ``prompt_ids[i]`` (with ``<s>`` in front) conditions ``continuation_ids[i]``; only continuation
    tokens are scored, and the mean is over all of them together (token-weighted, as perplexity is).
    Both are ids of the judge's ``tokenizer``. A judge whose every next-token probability is 1/4
    scores 4. Rows are batched by length; a model with a fixed position table (GPT-2's
    ``n_positions``) sees each row cut to fit it. None when there is no continuation token at all.
    """
    limit = getattr(judge_model.config, "n_positions", None)
    rows = []
    for prompt, continuation in zip(prompt_ids, continuation_ids, strict=True):
        prompt, continuation = list(prompt), list(continuation)
        if limit is not None:
            prompt, continuation = prompt[:limit], continuation[: max(0, limit - len(prompt))]
        if continuation:
            rows.append((prompt, continuation))
    if not rows:
        return None
    rows.sort(key=lambda r: len(r[0]) + len(r[1]))
    device = next(judge_model.parameters()).device
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            for nll, count in _continuation_nll(judge_model, tokenizer, rows[start : start + batch_size], device):
                total, tokens = total + nll, tokens + count
    return math.exp(total / tokens)
