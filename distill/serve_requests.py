"""The JSON body of a generation request, checked: which fields, which ranges, which defaults.

Every problem is a :class:`RequestError` with the HTTP status and a one-line reason naming the
field and what it may be; the server sends it as ``{"error": ...}``.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

from distill.recipe import GenerateConfig

MAX_PROMPT_CHARS = 8000


@dataclass(frozen=True)
class _Field:
    kind: type  # int or float
    low: float
    high: float | None  # None: the server's --max-tokens
    low_open: bool = False  # True: low itself is not allowed
    hint: str = ""


FIELDS = {
    "max_new_tokens": _Field(int, 1, None, hint="tokens to generate"),
    "temperature": _Field(float, 0.0, 5.0, hint="0 = greedy decoding"),
    "top_k": _Field(int, 0, 100_000, hint="0 = no limit"),
    "top_p": _Field(float, 0.0, 1.0, low_open=True, hint="1.0 = no limit"),
    "repetition_penalty": _Field(float, 0.0, 10.0, low_open=True, hint="1.0 = none"),
    "seed": _Field(int, 0, 2**32 - 1),
}
TEXT_FIELDS = ("model", "prompt")
# What a request leaves out: the recipe's `generate:` defaults, from their one home.
DEFAULTS = {name: getattr(GenerateConfig(), name) for name in FIELDS}


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason for the JSON body;
    ``retry_after`` seconds (sent as ``Retry-After``) when trying again later may succeed."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class GenerationRequest:
    model: str
    prompt: str
    params: dict[str, Any]  # max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed


def parse_generation_request(body: Any, models: Sequence[str], max_tokens: int, defaults: dict[str, Any]) -> GenerationRequest:
    """Check a JSON body; raise RequestError(400, ...) naming the field and the allowed values."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object such as {\"prompt\": \"London was\"}")
    known = set(FIELDS) | set(TEXT_FIELDS)
    for key in body:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(sorted(known))}"
            raise RequestError(400, f"unknown field {key!r}{hint}")
    model = body.get("model")
    if model is None:
        if len(models) != 1:
            raise RequestError(400, f"model: missing; pick one of {', '.join(models)}")
        model = models[0]
    if not isinstance(model, str) or model not in models:
        raise RequestError(400, f"model: unknown model {model!r}; pick one of {', '.join(models)}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError(400, "prompt: missing or not a string; send some text to continue")
    _check_unicode("prompt", prompt)
    if not prompt.strip():
        raise RequestError(400, "prompt: empty; type some text to continue, e.g. \"London was\"")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(400, f"prompt: {len(prompt)} characters is too long; the limit is {MAX_PROMPT_CHARS}")
    params = {}
    for name, spec in FIELDS.items():
        value = body.get(name)
        if value is None:
            value = defaults.get(name, DEFAULTS[name])
            if name == "max_new_tokens":
                value = min(value, max_tokens)
        params[name] = _check_number(name, value, spec, max_tokens)
    return GenerationRequest(model=model, prompt=prompt, params=params)


def _check_unicode(name: str, value: str) -> None:
    """RequestError for a string no text can hold: JSON's ``\\ud800`` escapes decode to lone
    surrogates, which neither the tokenizer nor UTF-8 accepts. Checked here, before the request
    queues for its model."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RequestError(
            400, f"{name}: lone surrogate U+{ord(value[err.start]):04X} at character {err.start + 1} is not text; "
                 "send valid Unicode (a surrogate pair, or the character itself)"
        ) from None


def _check_number(name: str, value: Any, spec: _Field, max_tokens: int) -> int | float:
    shown = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RequestError(400, f"{name}: {shown} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"{name}: {shown} is not a number")
    if not math.isfinite(value):
        raise RequestError(400, f"{name}: {shown} is not a finite number")
    if spec.kind is int:
        if value != int(value):
            raise RequestError(400, f"{name}: {shown} is not a whole number")
        value = int(value)
    else:
        value = float(value)
    high = max_tokens if spec.high is None else spec.high
    too_low = value <= spec.low if spec.low_open else value < spec.low
    if too_low or value > high:
        low = f"({spec.low:g}" if spec.low_open else f"[{spec.low:g}"
        what = f"{name}: {shown} is out of range {low}, {high:g}]"
        if name == "max_new_tokens" and value > high:
            what = f"max_new_tokens: {shown} is more than this server's limit of {max_tokens} (--max-tokens)"
        raise RequestError(400, what + (f"; {spec.hint}" if spec.hint and "limit" not in what else ""))
    return value
