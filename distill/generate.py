"""Text from any trained model folder (teacher, student or baseline): a thin layer over ``model.generate``.

    python -m distill.generate MODEL_DIR "London was" [--max-new-tokens 60] [--temperature 0.8]
        [--top-k 50] [--top-p 0.95] [--repetition-penalty 1.1] [--seed 0] [--num-samples 1]

The prompt is encoded as the corpus records were in training: ``<s>`` then the text's own tokens
(never an ``</s>``), and sampling stops at ``</s>``. ``--temperature 0`` decodes greedily. A
:class:`ContextLengthWarning` says when prompt plus new tokens run past the context the model was
trained on (``seq_len`` in ``distill.json``, else the config's position limit).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
import warnings
from typing import Iterator

import torch
from transformers import (
    GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer,
)

from distill.cli import ArgumentParser
from distill.errors import DistillError, cli_entry
from distill.model_folder import load_model
from distill.recipe import MAX_SAMPLING_SEED, GenerateConfig

_DEFAULTS = GenerateConfig()  # one home for the sampling defaults: the recipe's generate: section


class ContextLengthWarning(UserWarning):
    """Prompt plus new tokens run past the context the model was trained on."""


def trained_context(model, seq_len: int | None = None) -> int | None:
    """Tokens of context the model was trained on: ``seq_len`` (``ModelInfo.seq_len``), else the config's limit."""
    if isinstance(seq_len, int) and seq_len > 0:
        return seq_len
    return _position_limit(model)


def _position_limit(model) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _hard_position_limit(model) -> int | None:
    """Learned absolute positions (GPT-2) cannot go past their table; RoPE (LLaMA) can."""
    if getattr(getattr(model, "config", None), "model_type", None) == "gpt2":
        return _position_limit(model)
    return None


def encode_prompt(tokenizer, text: str) -> list[int]:
    """``<s>`` then the text's ids, as a corpus record starts in training (no ``</s>``)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise DistillError("the tokenizer has no bos token; use the tokenizer saved with the model (<s> = 1)")
    return [bos] + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def model_vocab_limit(model, tokenizer) -> int:
    """Rows of the output that are real tokens; rows past the tokenizer's size are padding."""
    return min(model.get_output_embeddings().weight.shape[0], len(tokenizer))


def check_generation_args(prompt: str, *, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                          repetition_penalty: float, seed: int, num_samples: int = 1) -> None:
    """DistillError (one line naming the setting and the fix) for an unusable generation request."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise DistillError('prompt: empty; give some text to continue, e.g. "London was"')
    if "</s>" in prompt or "<pad>" in prompt:
        raise DistillError("prompt: contains '</s>' or '<pad>'; remove them (the prompt gets <s> in front, generation stops at </s>)")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        # Python keeps the bytes of a command line that is not UTF-8 as lone surrogates (U+DC80-U+DCFF).
        char = ord(prompt[err.start])
        what = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"lone surrogate U+{char:04X}"
        raise DistillError(f"prompt: not UTF-8 text ({what} at character {err.start + 1}); give the prompt as UTF-8, "
                           "e.g. set the terminal to UTF-8 (LANG=C.UTF-8)") from None

    def number(name, value, integer=False):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DistillError(f"{name}: {value!r} is not {'a whole number' if integer else 'a number'}")
        if isinstance(value, float) and not math.isfinite(value):  # never float() an int: 10**400 overflows
            raise DistillError(f"{name}: {value!r} is not a finite number")
        if integer and isinstance(value, float) and not value.is_integer():
            raise DistillError(f"{name}: {value!r} is not a whole number")

    for name, value in (("temperature", temperature), ("top_p", top_p), ("repetition_penalty", repetition_penalty)):
        number(name, value)
    for name, value in (("max_new_tokens", max_new_tokens), ("top_k", top_k), ("seed", seed), ("num_samples", num_samples)):
        number(name, value, integer=True)
    if max_new_tokens < 1:
        raise DistillError(f"max_new_tokens: {max_new_tokens} must be 1 or more")
    if temperature < 0:
        raise DistillError(f"temperature: {temperature} is negative; use 0 for greedy decoding or a positive value such as 0.8")
    if top_k < 0:
        raise DistillError(f"top_k: {top_k} must be 0 (no limit) or more")
    if not 0 < top_p <= 1:
        raise DistillError(f"top_p: {top_p} must be in (0, 1]; 1.0 means no limit")
    if repetition_penalty <= 0:
        raise DistillError(f"repetition_penalty: {repetition_penalty} must be positive; 1.0 means none")
    if num_samples < 1:
        raise DistillError(f"num_samples: {num_samples} must be 1 or more")
    if not 0 <= seed <= MAX_SAMPLING_SEED:
        raise DistillError(f"seed: {seed} is out of range; give a seed from 0 to {MAX_SAMPLING_SEED}")


def _prepare(model, tokenizer, prompt, max_new_tokens, context_length):
    """Prompt ids as a (1, L) tensor on the model's device, after the context checks."""
    ids = encode_prompt(tokenizer, prompt)
    hard = _hard_position_limit(model)
    if hard is not None and len(ids) >= hard:
        raise DistillError(f"prompt: {len(ids)} tokens, but this model has only {hard} positions; shorten the prompt")
    context = trained_context(model, context_length)
    if context is not None and len(ids) + max_new_tokens > context:
        warnings.warn(
            f"prompt ({len(ids)} tokens incl. <s>) + max_new_tokens ({max_new_tokens}) = {len(ids) + max_new_tokens} "
            f"exceeds the {context}-token context the model was trained on; text past it is unreliable",
            ContextLengthWarning,
            stacklevel=3,
        )
    if hard is not None and len(ids) + max_new_tokens > hard:
        warnings.warn(
            f"this model has only {hard} positions: generating {hard - len(ids)} new tokens, not {max_new_tokens}",
            ContextLengthWarning,
            stacklevel=3,
        )
        max_new_tokens = hard - len(ids)
    device = next(model.parameters()).device
    return torch.tensor([ids], dtype=torch.long, device=device), max_new_tokens


def _generate_kwargs(model, tokenizer, input_ids, *, max_new_tokens, temperature, top_k, top_p, repetition_penalty, num_samples, stopping_criteria=None):
    limit = model_vocab_limit(model, tokenizer)

    class _MaskPaddedVocab(LogitsProcessor):
        # Embedding rows past the tokenizer's vocabulary are no token at all: never sample them.
        def __call__(self, input_ids, scores):
            scores[:, limit:] = -float("inf")
            return scores

    greedy = temperature == 0
    sampling = {} if greedy else {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p)}
    config = GenerationConfig(
        max_new_tokens=int(max_new_tokens),
        do_sample=not greedy,
        num_return_sequences=1 if greedy else int(num_samples),
        repetition_penalty=float(repetition_penalty),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    processors = LogitsProcessorList([_MaskPaddedVocab()] if limit < model.get_output_embeddings().weight.shape[0] else [])
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=config,
        logits_processor=processors,
    )
    if stopping_criteria is not None:
        kwargs["stopping_criteria"] = stopping_criteria
    return kwargs


@contextlib.contextmanager
def _seeded_rng(model, seed: int):
    """Seed the model device's generator inside a forked RNG, leaving the caller's random state as it was."""
    device = next(model.parameters()).device
    index = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else None
    with torch.random.fork_rng(devices=[] if index is None else [index]):
        torch.default_generator.manual_seed(seed)
        if index is not None:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _decode(tokenizer, ids: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def generate(model, tokenizer, prompt: str, *, max_new_tokens: int = _DEFAULTS.max_new_tokens,
             temperature: float = _DEFAULTS.temperature, top_k: int = _DEFAULTS.top_k, top_p: float = _DEFAULTS.top_p,
             repetition_penalty: float = _DEFAULTS.repetition_penalty, seed: int = _DEFAULTS.seed, num_samples: int = 1,
             context_length: int | None = None, stopping_criteria=None) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (the new text only, without the prompt).

    Sampling with ``temperature``/``top_k`` (0 = no limit)/``top_p`` (1.0 = no limit) and a
    ``repetition_penalty`` (1.0 = none), reproducible for a given ``seed``; ``temperature=0`` is greedy
    (every sample then is the same text). Each sample ends before ``</s>`` or after
    ``max_new_tokens`` tokens. ``context_length`` overrides the trained context used for the warning.
    """
    check_generation_args(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                          repetition_penalty=repetition_penalty, seed=seed, num_samples=num_samples)
    input_ids, max_new_tokens = _prepare(model, tokenizer, prompt, max_new_tokens, context_length)
    kwargs = _generate_kwargs(model, tokenizer, input_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                              top_p=top_p, repetition_penalty=repetition_penalty, num_samples=num_samples,
                              stopping_criteria=stopping_criteria)
    with _seeded_rng(model, seed), torch.inference_mode():
        out = model.generate(**kwargs)
    new = out[:, input_ids.shape[1]:].tolist()  # (num_samples, new tokens)
    texts = [_decode(tokenizer, ids) for ids in new]
    return texts * num_samples if len(texts) == 1 and num_samples > 1 else texts


def stream_generate(model, tokenizer, prompt: str, *, max_new_tokens: int = _DEFAULTS.max_new_tokens,
                    temperature: float = _DEFAULTS.temperature, top_k: int = _DEFAULTS.top_k, top_p: float = _DEFAULTS.top_p,
                    repetition_penalty: float = _DEFAULTS.repetition_penalty, seed: int = _DEFAULTS.seed,
                    context_length: int | None = None, stopping_criteria=None) -> Iterator[str]:
    """One sample as it is generated: an iterator of text pieces whose concatenation is the sample.

    The same settings and checks as :func:`generate` (checked on the call, before any text). The
    model runs in a worker thread feeding a ``TextIteratorStreamer``; closing the iterator early stops
    the generation within one token. ``stopping_criteria`` (a ``StoppingCriteriaList``) adds stops,
    e.g. a deadline.
    """
    check_generation_args(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                          repetition_penalty=repetition_penalty, seed=seed)
    input_ids, max_new_tokens = _prepare(model, tokenizer, prompt, max_new_tokens, context_length)
    cancel = threading.Event()

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    criteria = StoppingCriteriaList([_Cancelled(), *(stopping_criteria or [])])
    kwargs = _generate_kwargs(model, tokenizer, input_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                              top_p=top_p, repetition_penalty=repetition_penalty, num_samples=1, stopping_criteria=criteria)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with _seeded_rng(model, seed), torch.inference_mode():
                model.generate(**kwargs, streamer=streamer)
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread
            errors.append(err)
            streamer.end()

    def pieces() -> Iterator[str]:
        worker = threading.Thread(target=run, name="distill-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancel.set()
            worker.join()
        if errors:
            raise errors[0]

    return pieces()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m distill.generate", description="Generate text from a trained model folder.")
    d = _DEFAULTS
    parser.add_argument("model_dir", help="model folder (e.g. models/tiny/student)")
    parser.add_argument("prompt", help='text to continue, e.g. "London was"')
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens to generate (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature; 0 = greedy (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=d.top_k, help="sample among the k most likely tokens; 0 = no limit (default %(default)s)")
    parser.add_argument("--top-p", type=float, default=d.top_p, help="nucleus mass in (0, 1]; 1 = no limit (default %(default)s)")
    parser.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty, help=">1 discourages repeats; 1 = none (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="sampling seed (default %(default)s)")
    parser.add_argument("--num-samples", type=int, default=1, help="how many samples (default 1)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    parser.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")
    return parser.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    repetition_penalty=args.repetition_penalty, seed=args.seed, num_samples=args.num_samples)
    check_generation_args(args.prompt, **settings)  # before the model loads: bad input fails fast
    model, tokenizer, info = load_model(args.model_dir, device=args.device, dtype=args.dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContextLengthWarning)
        samples = generate(model, tokenizer, args.prompt, context_length=info.seq_len, **settings)
    for warning in caught:
        if issubclass(warning.category, ContextLengthWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    for i, text in enumerate(samples, 1):
        if len(samples) > 1:
            print(f"--- sample {i}/{len(samples)} ---")
        print(args.prompt + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
