"""distill.text_quality: hand-computed repetition, distinct-n and loop length; judge perplexity against a plain reference."""
from __future__ import annotations

import math

import pytest
import torch

from distill.text_quality import distinct, judge_perplexity, length_before_loop, ngrams, repetition
from test_generate import tiny_model, train_tiny_tokenizer

A, B, C, D = 1, 2, 3, 4


def test_ngrams():
    assert ngrams([A, B, C], 2) == [(A, B), (B, C)]
    assert ngrams([A, B], 3) == []
    with pytest.raises(ValueError):
        ngrams([A], 0)


def test_repetition_seq_rep_n():
    assert repetition([A, B, A, B, A, B], 3) == 0.5  # trigrams aba bab aba bab: 2 unique of 4
    assert repetition([A, B, C, D], 3) == 0.0
    assert repetition([A, A, A, A, A], 3) == pytest.approx(1 - 1 / 3)  # aaa x3
    assert repetition([A, B, A, B, A, B], 2) == pytest.approx(1 - 2 / 5)
    assert repetition([A, B], 3) is None  # no trigram at all


def test_distinct_is_over_all_texts_together():
    assert distinct([[A, B, A, B], [A, B, C]], 2) == pytest.approx(3 / 5)  # ab ba ab | ab bc
    assert distinct([[A, B, C, D]], 1) == 1.0
    assert distinct([[A, A], [A]], 1) == pytest.approx(1 / 3)
    assert distinct([[A], []], 2) is None


def test_length_before_loop():
    assert length_before_loop([A, B, C, A, B, C, A], 3) == 3  # "a b c" at 3 repeats the one at 0
    assert length_before_loop([A, B, C, D], 3) == 4  # never repeats: the whole text
    assert length_before_loop([A, A, A, A, A], 4) == 1
    assert length_before_loop([], 4) == 0


def test_a_looping_text_scores_worse_than_a_varied_one():
    loop = [A, B, C] * 8
    varied = list(range(5, 29))
    assert repetition(loop) > 0.8 > repetition(varied) == 0.0
    assert length_before_loop(loop) == 3 < length_before_loop(varied) == 24
    assert distinct([loop], 2) < distinct([varied], 2) == 1.0


@pytest.fixture(scope="module")
def judge():
    tokenizer = train_tiny_tokenizer()
    return tiny_model(len(tokenizer), seed=3), tokenizer


def reference_ppl(model, prompts, continuations) -> float:
    """One row at a time, no padding: log_softmax at each continuation position."""
    total, count = 0.0, 0
    for prompt, continuation in zip(prompts, continuations):
        ids = torch.tensor([prompt + continuation])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].double(), -1)
        for i, tok in enumerate(continuation):
            total -= logprobs[len(prompt) + i - 1, tok].item()
            count += 1
    return math.exp(total / count)


def test_judge_perplexity_matches_unbatched_reference(judge):
    model, tokenizer = judge
    prompts = [[1, 40, 41], [1, 50], [1, 60, 61, 62, 63]]
    continuations = [[70, 71, 72, 73, 74], [80], []]  # the empty one is skipped
    want = reference_ppl(model, prompts[:2], continuations[:2])
    assert judge_perplexity(model, tokenizer, prompts, continuations, batch_size=2) == pytest.approx(want, rel=1e-4)
    assert judge_perplexity(model, tokenizer, prompts, continuations, batch_size=1) == pytest.approx(want, rel=1e-4)
    assert judge_perplexity(model, tokenizer, [[1]], [[]]) is None


def test_a_judge_that_knows_nothing_scores_the_vocabulary_size(judge):
    _, tokenizer = judge
    blank = tiny_model(len(tokenizer), seed=3)
    with torch.no_grad():
        blank.lm_head.weight.zero_()  # every logit 0: each token has probability 1/V
    assert judge_perplexity(blank, tokenizer, [[1, 40]], [[50, 51, 52]]) == pytest.approx(len(tokenizer), rel=1e-5)
