"""Generated-text quality in the evaluation report: every model continues the same prompts, and the text is scored.

The recipe's ``evaluate.generation`` section (:class:`distill.recipe.GenerationEvalConfig`)::

    evaluate:
      generation: {enabled: true, test_openings: 8, opening_words: 5, max_new_tokens: 64, decoding: greedy, judge: null}

* Prompts (fixed, so every run and every model sees the same ones): ``generate.prompts``, then the
  openings (first ``opening_words`` words, title line included) of the first ``test_openings``
  articles of the test split. Without a recipe: ``--prompts-file`` lines plus the openings of
  ``--split test=PATH``, else ``"London was"``.
* Decoding: ``greedy`` (temperature 0, no repetition penalty: the standard setting for repetition
  metrics) or ``recipe`` (the ``generate:`` sampling settings, each prompt with ``generate.seed``).
  Each sample is what ``python -m distill.generate`` gives for that prompt and those settings.
* Per model (:mod:`distill.text_quality`, over the continuation re-encoded with the model's own
  tokenizer): mean seq-rep-3, corpus-level distinct-1/2, mean tokens before the first repeated
  4-gram, and the judge's perplexity of the continuations given their prompts. The judge is
  ``judge`` (a model folder) or, by default, the teacher with the lowest validation perplexity in
  the report (any model when there is no teacher).
"""
from __future__ import annotations

import argparse
import gc
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.artifacts import model_dirs
from distill.corpus.records import iter_records
from distill.errors import DistillError
from distill.generate import ContextLengthWarning, check_generation_args, encode_prompt, generate
from distill.model_folder import check_model_dir, load_model
from distill.recipe import GenerationEvalConfig, Recipe
from distill.text_quality import distinct, judge_perplexity, length_before_loop, repetition

DEFAULT_PROMPT = "London was"
GREEDY = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "seed": 0}


@dataclass(frozen=True)
class GenerationPlan:
    """What every model continues, how it decodes, and which model judges the text."""

    prompts: tuple[str, ...]
    max_new_tokens: int = GenerationEvalConfig.max_new_tokens
    decoding: str = "greedy"  # greedy | recipe
    sampling: dict = field(default_factory=lambda: dict(GREEDY))  # temperature, top_k, top_p, repetition_penalty, seed
    judge: Path | None = None  # null: the teacher with the lowest val ppl
    test_openings: int = 0  # how many of the prompts are test-split openings (the last ones)


def opening(text: str, words: int) -> str:
    """The first ``words`` whitespace-separated words of ``text``, with the whitespace between them kept
    (a title line stays a line): ``opening("Abbey\\nABBEY, a building", 3) == "Abbey\\nABBEY, a"``."""
    found = re.match(rf"\s*(\S+(?:\s+\S+){{0,{words - 1}}})", text)
    return found.group(1) if found else ""


def article_openings(path: str | Path, articles: int, words: int) -> list[str]:
    """The openings of the first ``articles`` articles of a split file (fewer when it has fewer)."""
    path = Path(path)
    if articles and not path.is_file():
        raise DistillError(f"{path}: test split not found; the generation prompts include the openings of its first {articles} "
                           "articles: build the corpus (python -m distill.corpus all --recipe RECIPE.yaml) or set evaluate.generation.test_openings=0")
    out: list[str] = []
    for text in iter_records(path) if articles else ():
        if len(out) == articles:
            break
        if first := opening(text, words):
            out.append(first)
    return out


def _plan(prompts: list[str], openings: list[str], **settings) -> GenerationPlan:
    unique = tuple(dict.fromkeys([*prompts, *openings]))
    return GenerationPlan(prompts=unique, test_openings=len([p for p in dict.fromkeys(openings) if p not in prompts]), **settings)


def plan_from_recipe(recipe: Recipe) -> GenerationPlan | None:
    """The plan of ``recipe.evaluate.generation``; None when it is disabled."""
    settings = recipe.evaluate.generation
    if not settings.enabled:
        return None
    openings = article_openings(recipe.paths.split("test"), settings.test_openings, settings.opening_words)
    sampling = dict(GREEDY) if settings.decoding == "greedy" else {key: getattr(recipe.generate, key) for key in GREEDY}
    return _plan(list(recipe.generate.prompts), openings, max_new_tokens=settings.max_new_tokens, decoding=settings.decoding,
                 sampling=sampling, judge=settings.judge)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--judge``, ``--prompts-file`` and ``--no-generation`` for ``python -m distill.evaluate MODEL_DIR ...``."""
    parser.add_argument("--judge", metavar="MODEL_DIR",
                        help="model folder that scores the generated text (default: the teacher with the lowest val ppl)")
    parser.add_argument("--prompts-file", metavar="FILE",
                        help="prompts to continue, one per line (default: openings of --split test, else 'London was')")
    parser.add_argument("--no-generation", action="store_true", help="skip generating text and its rep-3 / distinct-2 / judge ppl")


def plan_from_args(args: argparse.Namespace, splits: dict[str, Path]) -> GenerationPlan | None:
    """The plan for model folders given on the command line (greedy, the recipe defaults otherwise)."""
    if args.no_generation:
        return None
    prompts: list[str] = []
    if args.prompts_file:
        try:
            prompts = [line for line in Path(args.prompts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            why = getattr(err, "strerror", None) or err
            raise DistillError(f"--prompts-file {args.prompts_file}: cannot read it ({why}); give a UTF-8 file, one prompt per line") from None
        if not prompts:
            raise DistillError(f"--prompts-file {args.prompts_file}: no prompts in it; write one prompt per line")
    defaults = GenerationEvalConfig()
    test = splits.get("test")
    openings = article_openings(test, defaults.test_openings, defaults.opening_words) if test and test.is_file() else []
    return _plan(prompts or ([] if openings else [DEFAULT_PROMPT]), openings, judge=Path(args.judge) if args.judge else None)


def refuse_with_recipe(args: argparse.Namespace) -> None:
    """The generation flags are for model folders; a recipe says the same in ``evaluate.generation``."""
    if args.judge or args.prompts_file or args.no_generation:
        raise DistillError("--judge, --prompts-file and --no-generation are for model folders; with a recipe use "
                           "evaluate.generation.judge=DIR, generate.prompts=[...] or evaluate.generation.enabled=false")


def check_recipe_judge(recipe: Recipe) -> None:
    """``evaluate.generation.judge`` checked before any training: a folder the recipe does not make
    itself must already be a model folder (DistillError naming it otherwise)."""
    judge = recipe.evaluate.generation.judge
    if judge is not None and Path(judge).resolve() not in {folder.resolve() for folder in model_dirs(recipe)}:
        try:
            check_model_dir(judge)
        except DistillError as err:
            raise DistillError(f"evaluate.generation.judge: {err}") from None


def check_plan(plan: GenerationPlan | None) -> None:
    """Every prompt and the judge folder checked before the first model loads (nothing when no plan)."""
    if plan is None:
        return
    for prompt in plan.prompts:
        try:
            check_generation_args(prompt, max_new_tokens=plan.max_new_tokens, **plan.sampling)
        except DistillError as err:
            raise DistillError(f"generation prompt {prompt!r}: {err}") from None
    if plan.judge is not None:
        check_model_dir(plan.judge)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def generate_for_model(model, tokenizer, info, plan: GenerationPlan, log) -> dict[str, Any]:
    """One continuation per prompt from a loaded model and its text metrics: the entry's ``generation`` block."""
    samples, texts_ids = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContextLengthWarning)
        for prompt in plan.prompts:
            text = generate(model, tokenizer, prompt, max_new_tokens=plan.max_new_tokens, context_length=info.seq_len, **plan.sampling)[0]
            samples.append({"prompt": prompt, "text": text})
            texts_ids.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    context = [w for w in caught if issubclass(w.category, ContextLengthWarning)]
    for w in caught:
        if not issubclass(w.category, ContextLengthWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if context:
        log(f"  warning: {context[0].message}" + (f" (and {len(context) - 1} more prompts)" if len(context) > 1 else ""))
    block = {
        "decoding": plan.decoding,
        "num_prompts": len(plan.prompts),
        "max_new_tokens": plan.max_new_tokens,
        "tokens": _mean([len(ids) for ids in texts_ids]),
        "rep3": _mean([r for r in (repetition(ids, 3) for ids in texts_ids) if r is not None]),
        "distinct1": _rounded(distinct(texts_ids, 1)),
        "distinct2": _rounded(distinct(texts_ids, 2)),
        "loop_length": _mean([length_before_loop(ids, 4) for ids in texts_ids]),
        "judge": None,
        "judge_ppl": None,
        "samples": samples,
    }
    log(f"  generated {len(samples)} texts: rep-3 {block['rep3']}, distinct-2 {block['distinct2']}, tokens before loop {block['loop_length']}")
    return block


def _val_ppl(entry: dict) -> float:
    """The entry's validation perplexity (this report's, else its training's); inf when unknown."""
    ppl = ((entry.get("perplexity") or {}).get("val") or {}).get("ppl", (entry.get("training") or {}).get("val_ppl"))
    return float(ppl) if isinstance(ppl, (int, float)) and math.isfinite(ppl) else math.inf


def pick_judge(entries: dict[str, dict], judge: Path | None = None) -> tuple[str, Path]:
    """``(name, folder)`` of the judge: ``judge`` (named after the report's model in that folder, if
    any), else the teacher with the lowest val ppl, else the model with the lowest val ppl."""
    if judge is not None:
        same = [name for name, entry in entries.items() if Path(entry["path"]).resolve() == Path(judge).resolve()]
        return (same[0] if same else str(judge)), Path(judge)
    teachers = {name: entry for name, entry in entries.items() if entry.get("role") == "teacher"} or entries
    name = min(teachers, key=lambda n: _val_ppl(teachers[n]))
    return name, Path(teachers[name]["path"])


def judge_models(entries: dict[str, dict], plan: GenerationPlan, *, device: str | None, batch_size: int, log) -> dict[str, Any]:
    """Load the judge once, put its perplexity of each model's texts into the entries; return the
    report's ``generation`` settings (decoding, prompts, judge)."""
    name, folder = pick_judge(entries, plan.judge)
    log(f"judge: {name} ({folder}) scores every model's generated text")
    model, tokenizer, _ = load_model(folder, device=device)
    for model_name, entry in entries.items():
        block = entry["generation"]
        prompts = [encode_prompt(tokenizer, s["prompt"]) for s in block["samples"]]
        continuations = [tokenizer(s["text"], add_special_tokens=False)["input_ids"] for s in block["samples"]]
        block["judge"] = name
        block["judge_ppl"] = _rounded(judge_perplexity(model, tokenizer, prompts, continuations, batch_size=batch_size))
        log(f"  {model_name}: judge ppl {block['judge_ppl']}")
    del model
    gc.collect()
    return {"decoding": plan.decoding, "sampling": plan.sampling, "max_new_tokens": plan.max_new_tokens, "judge": name,
            "judge_path": str(folder), "test_openings": plan.test_openings, "prompts": list(plan.prompts)}
