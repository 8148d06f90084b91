"""The model card of a model folder: ``README.md`` in the Hugging Face format, and its training curve.

Every model folder a stage writes (teacher, student, baseline) gets a ``README.md`` that the Hub
(and ``huggingface_hub.ModelCard.load``) reads: a YAML header (``library_name``, ``pipeline_tag``,
``license``, ``tags``, the final training metrics of ``distill.json`` under ``training_metrics``
and, once ``python -m distill.evaluate`` has run, a ``model-index`` with its perplexity per split
and BLiMP accuracy), then a body saying how the model was made (role, arch, size, the recipe
section, the corpus manifest and teacher hashes, the loss), its metrics, ``training_curve.png``
(train and validation loss from ``metrics.jsonl``), the evaluation, and a few seeded samples.

* :func:`write_model_card` writes both files from the folder's :class:`~distill.artifacts.ModelInfo`
  (the training loop and ``Student.save`` call it in the temporary folder, before ``distill.json``).
* :func:`sample_generations` makes the samples; only a caller with the model in memory can.
* :func:`add_evaluation` puts an evaluation into an existing card (the evaluate stage calls it),
  keeping its samples; a folder without a card gets a new one, without samples.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from distill.artifacts import INFO_FILE, METRICS_FILE, MODEL_FILES, WORDS_DIR, ModelInfo, is_finished, read_info, write_info
from distill.atomic import atomic_write_bytes, atomic_write_text, write_folder
from distill.distributed import RUNS
from distill.errors import DistillError
from distill.generate import ContextLengthWarning, generate
from distill.models import count_parameters
from distill.recipe import GenerateConfig
from distill.report import _render_png, _table, human_count, read_metrics

CARD_FILE = "README.md"
CURVE_FILE = "training_curve.png"
MAX_PROMPTS = 3  # samples on a card: the first prompts of the recipe's generate: section
LICENSE = "mit"  # the project's; the training text (Britannica 1911) is in the public domain
TAGS = ["knowledge-distillation", "babylm", "encyclopaedia-britannica-1911"]
EVALUATION = "## Evaluation"

_ROLES = {
    "teacher": "a teacher: trained from scratch with cross-entropy on the corpus; the students of its recipe are "
               "distilled from it and the other teachers",
    "student": "a student: distilled from an ensemble of teachers with the blended loss "
               "`alpha * CE + (1 - alpha) * T^2 * divergence(teachers, student)`",
    "baseline": "the baseline: the student's model trained on the same data, order and steps without teachers "
                "(`alpha = 1`, plain cross-entropy), to show what distillation adds",
}


@dataclasses.dataclass
class Samples:
    """Texts a model wrote from the first prompts of ``settings``, for its card."""

    settings: GenerateConfig
    texts: list[tuple[str, str]]  # (prompt, continuation)


def sample_generations(model, tokenizer, settings: GenerateConfig | None = None, *, context_length: int | None = None) -> Samples:
    """One seeded sample per prompt (at most :data:`MAX_PROMPTS`) with ``settings`` (default: the
    recipe defaults, prompt "London was"), sampled as ``python -m distill.generate`` samples. The
    model is put in eval mode for it and back as it was; the caller's random state is untouched."""
    settings = settings or GenerateConfig()
    was_training = model.training
    model.eval()
    texts = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ContextLengthWarning)  # a card shows the recipe's max_new_tokens as they come
            for prompt in settings.prompts[:MAX_PROMPTS]:
                text = generate(model, tokenizer, prompt, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                top_k=settings.top_k, top_p=settings.top_p, repetition_penalty=settings.repetition_penalty,
                                seed=settings.seed, context_length=context_length)[0]
                texts.append((prompt, text))
    finally:
        model.train(was_training)
    return Samples(settings, texts)


def write_model_card(folder: str | Path, info: ModelInfo | None = None, *, samples: Samples | None = None,
                     evaluation: dict | None = None, report: dict | None = None) -> Path:
    """Write ``folder/README.md`` and ``folder/training_curve.png`` (from ``folder/metrics.jsonl``;
    removed when there are no loss rows), each atomically; returns the card's path.

    ``info`` defaults to the folder's ``distill.json``; ``evaluation`` is the model's entry of an
    evaluation report (``report``: the whole report, for its settings), see :func:`add_evaluation`.
    """
    folder = Path(folder)
    info = info or _info_of(folder)
    curve = folder / CURVE_FILE
    series = loss_curves(read_metrics(folder))
    if series:
        title = f"{info.name or folder.name}: loss per target token"
        atomic_write_bytes(curve, _render_png(title, "step", series, log_y=False))
    else:
        curve.unlink(missing_ok=True)
    card = build_model_card(info, samples=samples, curve=bool(series), evaluation=evaluation, report=report)
    path = folder / CARD_FILE
    atomic_write_text(path, str(card))
    return path


def save_model_folder(folder: str | Path, model, tokenizer, info: ModelInfo, *, state_dict=None,
                      generate: GenerateConfig | None = None, logs_from: str | Path | None = None,
                      keep_others: bool = True, fix: str | None = None, context_length: int | None = None,
                      with_samples: bool = True) -> ModelInfo:
    """Write a finished model folder atomically; return the :class:`ModelInfo` written as its ``distill.json``.

    The folder gets ``model``'s weights (``state_dict`` when given: Accelerate's gathered one), the
    tokenizer, the training logs of ``logs_from`` (default ``folder``: ``metrics.jsonl``, ``runs/``)
    and its finished ``words/<count>/`` folders (hard links where possible), the card with samples
    from ``generate``'s first prompts (``with_samples=False``: none; a tokenizer that cannot encode a
    prompt leaves the card without samples, never the model unsaved) and ``distill.json``, last.
    ``context_length``: the trained context for the samples (default ``info.seq_len``).
    ``keep_others``: merge around files that are not a model folder's (a user's notes) instead of
    refusing the folder (:func:`distill.atomic.write_folder`; ``fix`` is the refusal's hint).
    """
    folder = Path(folder)
    logs_from = Path(logs_from) if logs_from is not None else folder
    final = dataclasses.replace(info, num_parameters=count_parameters(model))
    with write_folder(folder, MODEL_FILES, keep_others=keep_others, last=INFO_FILE, **({"fix": fix} if fix else {})) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name in (METRICS_FILE, RUNS):
            source = logs_from / name
            if source.is_dir():
                shutil.copytree(source, tmp / name)
            elif source.is_file():
                shutil.copy2(source, tmp / name)
        _carry_words(logs_from / WORDS_DIR, tmp / WORDS_DIR)
        samples = None
        if tokenizer is not None and with_samples:
            try:
                samples = sample_generations(model, tokenizer, generate, context_length=context_length or info.seq_len)
            except DistillError as err:  # a tokenizer without <s>, say: the card goes without samples, the model is kept
                print(f"warning: {folder}: no samples on the model card ({err})", file=sys.stderr)
        write_model_card(tmp, final, samples=samples)
        write_info(tmp, final)
    return final


def _carry_words(source: Path, target: Path) -> None:
    """The finished model folders in ``source`` (``words/<count>/``) into ``target``, as hard links
    where the file system allows: no writer changes a file in place (each renames a new one in)."""
    if not source.is_dir():
        return
    for folder in sorted(source.iterdir()):
        if folder.is_dir() and not folder.is_symlink() and is_finished(folder):
            shutil.copytree(folder, target / folder.name, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def add_evaluation(folder: str | Path, results: dict, report: dict | None = None) -> Path:
    """Put an evaluation into ``folder``'s card: its ``model-index`` (perplexity per split, BLiMP
    accuracy) and its Evaluation section are replaced; the rest (samples included) is kept.

    ``results`` is the model's entry of :func:`distill.evaluate.evaluate_models`' report (``perplexity``,
    ``blimp``); ``report`` the whole report (its ``seq_len``, ``splits``, ``blimp_dir``, ``created_utc``).
    A folder without a card (written before cards existed) gets a new one, without samples.
    """
    folder = Path(folder)
    path = folder / CARD_FILE
    info = _info_of(folder)
    card = _read_card(path)
    if card is None:
        return write_model_card(folder, info, evaluation=results, report=report)
    found = eval_results(results, report)
    card.data.model_name = _model_name(info, folder) if found else None
    card.data.eval_results = found or None
    card.text = _replace_section(card.text, EVALUATION, _evaluation_section(results, report))
    atomic_write_text(path, str(card))
    return path


def _read_card(path: Path) -> ModelCard | None:
    """The card in ``path``; None when there is none, or only a README without a card's metadata."""
    try:
        if not path.read_text(encoding="utf-8").startswith("---"):
            return None
        card = ModelCard.load(path)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    return card if card.data.to_dict() else None


def _replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with the section under the line ``heading`` (up to the next ``## ``) replaced by
    ``section``, or with ``section`` appended when there is none."""
    start = re.search(rf"(?m)^{re.escape(heading)}$", text)
    if start is None:
        return text.rstrip("\n") + "\n\n" + section
    end = re.search(r"(?m)^## ", text[start.end():])
    return text[:start.start()] + section + ("\n" + text[start.end() + end.start():] if end else "")


def _info_of(folder: Path) -> ModelInfo:
    info = read_info(folder)
    if info is None:
        raise DistillError(f"{folder}: no distill.json, so no model card; train the model first (python -m distill run RECIPE.yaml)")
    return info


def _model_name(info: ModelInfo, folder: Path | None = None) -> str:
    return info.name or (folder.name if folder else "") or info.role or "model"


def loss_curves(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``{label: (steps, values)}`` of the train loss (a student's: the KD blend), its CE when the
    loss is a blend, and the validation loss (CE), from ``metrics.jsonl`` rows."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    blended = any("kl" in row for row in rows)
    for row in rows:
        split, step = row.get("split"), row.get("step")
        keys = {"train": [("loss", "train loss (KD blend)" if blended else "train loss")] + ([("ce", "train CE")] if blended else []),
                "val": [("loss", "validation loss (CE)")]}.get(split, [])
        for key, label in keys:
            if _finite(step) and _finite(row.get(key)):
                xs, ys = series.setdefault(label, ([], []))
                xs.append(float(step))
                ys.append(float(row[key]))
    return series


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def eval_results(results: dict, report: dict | None = None) -> list[EvalResult]:
    """The ``model-index`` entries of one model's evaluation: perplexity per split, BLiMP accuracy
    (non-finite numbers are left out: JSON and the Hub have no inf)."""
    report = report or {}
    seq_len = report.get("seq_len")
    out = []
    for split, scores in (results.get("perplexity") or {}).items():
        ppl = (scores or {}).get("ppl")
        if _finite(ppl):
            out.append(EvalResult(
                task_type="text-generation", task_name="Causal language modeling", dataset_type="text",
                dataset_name=f"corpus {split} split", dataset_split=split, metric_type="perplexity", metric_value=ppl,
                metric_name=f"{split} perplexity", metric_config=f"blocks of {seq_len} tokens" if seq_len else None,
            ))  # fmt: skip
    overall = (results.get("blimp") or {}).get("overall") or {}
    if _finite(overall.get("accuracy")):
        where = Path(str(report["blimp_dir"])).name if report.get("blimp_dir") else "minimal pairs"
        out.append(EvalResult(
            task_type="text-generation", task_name="BLiMP-style minimal pairs", dataset_type="blimp",
            dataset_name=f"BLiMP-format minimal pairs ({where}, n={overall.get('n')})", metric_type="accuracy",
            metric_value=overall["accuracy"], metric_name="BLiMP accuracy",
        ))  # fmt: skip
    return out


def build_model_card(info: ModelInfo, *, samples: Samples | None = None, curve: bool = False, evaluation: dict | None = None,
                     report: dict | None = None) -> ModelCard:
    """The card of a model folder described by ``info`` (see the module doc for its parts)."""
    results = eval_results(evaluation, report) if evaluation else []
    data = ModelCardData(
        language="en", library_name="transformers", pipeline_tag="text-generation", license=LICENSE,
        tags=[*TAGS, *(t for t in (info.role, info.arch) if t)], model_name=_model_name(info) if results else None,
        eval_results=results or None, training_metrics=info.metrics or None,
    )  # fmt: skip
    body = [_header(info), _how_made(info), _metrics(info)]
    if curve:
        body.append(f"## Training curve\n\n![train and validation loss per step]({CURVE_FILE})\n")
    body.append(_evaluation_section(evaluation, report) if evaluation else
                f"{EVALUATION}\n\nNot evaluated yet: `python -m distill.evaluate RECIPE.yaml` puts its numbers here and in the "
                "`model-index` of this card.\n")
    if samples is not None and samples.texts:
        body.append(_samples_section(samples))
    body += [_USAGE, _LICENSE_TEXT]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _header(info: ModelInfo) -> str:
    what = _ROLES.get(info.role, "a causal language model")
    size = f"{human_count(info.num_parameters)} parameters" if info.num_parameters else "its size unknown"
    return (f"# {_model_name(info)}\n\nA {info.arch or 'transformers'} causal language model ({size}, a context of "
            f"{info.seq_len or 'unknown'} tokens) trained with `distill` (knowledge distillation of small language models, "
            f"BabyLlama-style) on encyclopaedia text: the Encyclopaedia Britannica's 11th edition (1910-1911) in the shipped "
            f"recipes. It is {what}.\n")


def _how_made(info: ModelInfo) -> str:
    rows = [["role", info.role or "–"], ["architecture", info.arch or "–"],
            ["parameters", f"{info.num_parameters:,}" if info.num_parameters else "–"],
            ["context (tokens)", str(info.seq_len or "–")],
            ["corpus manifest sha256", f"`{info.corpus_manifest_sha256}`" if info.corpus_manifest_sha256 else "–"],
            ["tokenizer sha256", f"`{info.tokenizer_sha256}`" if info.tokenizer_sha256 else "–"]]
    out = ["## How it was made", "", _table(["", "value"], ["l", "l"], rows), ""]
    if info.recipe:
        recipe = yaml.safe_dump(info.recipe, sort_keys=False, allow_unicode=True).rstrip()
        out += ["### Recipe section", "", "The section of the recipe it was trained from (as in `distill.json`):", "",
                f"```yaml\n{recipe}\n```", ""]
    if info.teachers or info.teacher_hashes:
        names = list(dict.fromkeys([*(info.teachers or {}), *(info.teacher_hashes or {})]))
        rows = [[name, f"`{(info.teachers or {}).get(name) or 'in memory'}`", f"`{(info.teacher_hashes or {}).get(name, '–')}`"]
                for name in names]
        out += ["### Teachers", "", _table(["teacher", "folder", "sha256 (config and weights)"], ["l", "l", "l"], rows), ""]
    if info.loss:
        rows = [[f"`{key}`", f"`{value}`"] for key, value in info.loss.items()]
        out += ["### Loss", "", _table(["setting", "value"], ["l", "l"], rows), ""]
    return "\n".join(out)


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _metrics(info: ModelInfo) -> str:
    if not info.metrics:
        return "## Metrics\n\nNone recorded.\n"
    rows = [[key, _show(value)] for key, value in info.metrics.items()]
    when = ("At the end of training" if info.words_seen is None or info.step is None else
            f"Saved during training at {info.words_seen:,} train words seen (step {info.step}; `training.save_at_words`)")
    return (f"## Metrics\n\n{when}, from `distill.json` (losses and perplexities are per target token, "
            "validation on the corpus val split; also under `training_metrics` in this card's metadata):\n\n"
            + _table(["metric", "value"], ["l", "r"], rows) + "\n")


def _evaluation_section(results: dict, report: dict | None) -> str:
    report = report or {}
    rows = []
    for split, scores in (results.get("perplexity") or {}).items():
        scores = scores or {}
        tokens = scores.get("tokens")
        rows.append([f"{split} perplexity", _show(scores.get("ppl")), f"{tokens:,} tokens" if isinstance(tokens, int) else "–"])
    overall = (results.get("blimp") or {}).get("overall")
    if overall:
        accuracy = overall.get("accuracy")
        rows.append(["BLiMP accuracy", f"{100 * accuracy:.1f}%" if _finite(accuracy) else "–", f"{overall.get('n')} pairs"])
    when = f" on {report['created_utc']}" if report.get("created_utc") else ""
    how = f"; perplexity is CE only, over blocks of {report['seq_len']} tokens" if report.get("seq_len") else ""
    return (f"{EVALUATION}\n\nBy `python -m distill.evaluate`{when}{how} (also in this card's `model-index`):\n\n"
            + _table(["measure", "value", "on"], ["l", "r", "r"], rows) + "\n")


def _samples_section(samples: Samples) -> str:
    s = samples.settings
    greedy = " (greedy)" if s.temperature == 0 else ""
    out = ["## Sample generations", "",
           f"Seed {s.seed}, temperature {s.temperature}{greedy}, top_k {s.top_k}, top_p {s.top_p}, repetition_penalty "
           f"{s.repetition_penalty}, at most {s.max_new_tokens} new tokens; `python -m distill.generate FOLDER PROMPT --seed "
           f"{s.seed} --temperature {s.temperature} --top-k {s.top_k} --top-p {s.top_p} --repetition-penalty "
           f"{s.repetition_penalty} --max-new-tokens {s.max_new_tokens}` samples the same way.", ""]
    for prompt, text in samples.texts:
        whole = prompt + text
        fence = "```"
        while fence in whole:
            fence += "`"
        out += [f"{fence}text", whole, fence, ""]
    return "\n".join(out)


_USAGE = """## How to use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = "path/to/this/folder"  # or its Hub repository id
tokenizer = AutoTokenizer.from_pretrained(folder)  # adds <s> in front, as every training record starts
model = AutoModelForCausalLM.from_pretrained(folder)
ids = tokenizer("London was", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=40, do_sample=True, top_p=0.95)
print(tokenizer.decode(out[0], skip_special_tokens=True))
```

or `python -m distill.generate FOLDER "London was"` with `distill` installed.
"""

_LICENSE_TEXT = """## License

MIT, as the `distill` code that trained it. The training text, the Encyclopaedia Britannica's
11th edition (1910-1911, from Project Gutenberg or WikiSource), is in the public domain.
"""
