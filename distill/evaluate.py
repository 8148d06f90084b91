"""How good is each model: perplexity, BLiMP-style minimal pairs, fact probes, and a side-by-side report.

    python -m distill.evaluate recipes/tiny.yaml [key=value ...]
    python -m distill.evaluate MODEL_DIR [MODEL_DIR ...] --split val=PATH --split test=PATH
        [--blimp DIR] [--facts FILE] --out DIR [--seq-len N] [--batch-size N] [--device cpu]
        [--judge MODEL_DIR] [--prompts-file FILE] [--no-generation]

* Perplexity is CE only, over the split cut into non-overlapping blocks of ``seq_len`` exactly as
  training cuts it (``<s> TEXT </s>`` records concatenated, the last partial block dropped), every
  predicted token counted once; models that share a tokenizer get comparable numbers.
* A minimal pair is right when the good sentence's summed log-probability after ``<s>`` (every
  sentence token scored, ``<s>`` itself not) is strictly higher than the bad one's.
* A fact probe gives the log-probability of the answer's tokens after ``<s> probe`` and the rank of
  its first token among the whole vocabulary (1 = the model's top guess).
* Generated text: every model continues the same prompts, scored by :mod:`distill.generation_eval`.

With a recipe it evaluates every finished model folder (teachers, student, baseline) on the recipe's
splits and writes ``{output_dir}/report/`` (report.json, report.md, plots/*.png).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from distill import generation_eval, report as report_mod, word_curves
from distill.atomic import not_a_folder
from distill.artifacts import is_finished, model_dirs, model_names, read_info, stage_inputs, tokenizer_sha256, write_stamp
from distill.cli import ArgumentParser
from distill.corpus.facts import Fact, read_facts
from distill.corpus.records import iter_records
from distill.errors import DistillError, cli_entry
from distill.folder_lock import locks_output_dir
from distill.generate import encode_prompt, model_vocab_limit
from distill.jsonl import read_jsonl
from distill.metrics import load as load_metric
from distill.model_card import add_evaluation
from distill.model_folder import check_device, check_model_dir, load_model, model_config
from distill.recipe import Recipe, load_recipe

FACT_KEYS = ("probe", "answer")


def _device_of(model):
    return next(model.parameters()).device


def _logits(model, tokenizer, input_ids, attention_mask=None, position_ids=None):
    """fp32 logits, sliced to the tokenizer's vocabulary (padded embedding rows are no token)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits
    return out[..., : model_vocab_limit(model, tokenizer)].float()


def split_token_ids(tokenizer, split_path_or_texts: str | Path | Iterable[str]) -> list[int]:
    """The ids of a split as training sees them: ``[<s>] + ids(TEXT) + [</s>]`` per record, concatenated.

    A path is read as a corpus split file (``<s> TEXT </s>`` records); an iterable gives the texts
    without markers.
    """
    if isinstance(split_path_or_texts, (str, Path)):
        path = Path(split_path_or_texts)
        if not path.is_file():
            raise DistillError(f"{path}: split file not found; build the corpus with python -m distill.corpus all --recipe RECIPE.yaml or fix --split")
        texts: Iterable[str] = iter_records(path)
    else:
        texts = split_path_or_texts
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        for row in tokenizer(batch, add_special_tokens=False)["input_ids"] if batch else []:
            ids.append(bos)
            ids.extend(row)
            ids.append(eos)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == 256:
            flush()
    flush()
    return ids


def perplexity(model, tokenizer, split_path_or_texts: str | Path | Iterable[str], *, seq_len: int, batch_size: int = 8,
               device=None) -> dict[str, float]:
    """CE-only perplexity: ``{"loss": mean CE in nats, "ppl": exp(loss), "tokens": predicted tokens}``.

    The ids are cut into ``len // seq_len`` blocks of ``seq_len`` (the rest dropped, as in training);
    each block predicts its ``seq_len - 1`` next tokens. A split shorter than one block is scored as
    a single shorter block. Each block's summed CE and token count go to the ``block_perplexity``
    metric (``distill/metrics/``), which takes the token-weighted mean.
    """
    if seq_len < 2:
        raise DistillError(f"seq_len: {seq_len} must be 2 or more")
    if batch_size < 1:
        raise DistillError(f"batch_size: {batch_size} must be 1 or more")
    ids = split_token_ids(tokenizer, split_path_or_texts)
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        if len(ids) < 2:
            raise DistillError(f"{split_path_or_texts if isinstance(split_path_or_texts, (str, Path)) else 'texts'}: no text to score")
        blocks = torch.tensor([ids], dtype=torch.long)
    else:
        blocks = torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)  # (N, T)
    device = device or _device_of(model)
    nll_sums: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size].to(device)  # (B, T)
            logits = _logits(model, tokenizer, batch)[:, :-1]  # (B, T-1, V): position t predicts t+1
            targets = batch[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")  # (B*(T-1),)
            nll_sums += nll.view_as(targets).double().sum(1).tolist()  # (B,): summed in fp64, per block
    return load_metric("block_perplexity").compute(nll_sums=nll_sums, token_counts=[blocks.size(1) - 1] * len(blocks))


def sentence_logprob(model, tokenizer, sentences: Sequence[str], *, batch_size: int = 32, device=None) -> list[float]:
    """Summed log-probability (nats) of each sentence's tokens after ``<s>``; ``<s>`` itself is not scored.

    Sentences are batched by length with right padding, an attention mask and explicit position ids,
    so a batch scores each sentence as it would be scored alone.
    """
    encoded = [encode_prompt(tokenizer, s) for s in sentences]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    scores = [0.0] * len(encoded)
    device = device or _device_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logprobs = torch.log_softmax(_logits(model, tokenizer, input_ids, mask, positions)[:, :-1], dim=-1)  # (B, W-1, V)
            picked = logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, W-1): log p(token t+1 | ..t)
            sums = (picked.double() * mask[:, 1:]).sum(1)
            for row, i in enumerate(chunk):
                scores[i] = float(sums[row])
    return scores


def load_minimal_pairs(source: str | Path | Sequence[str | Path]) -> dict[str, list[dict]]:
    """``{file name: [pair, ...]}`` from a BLiMP-format folder (every ``*.jsonl``), a file, or a list of them."""
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    files: list[Path] = []
    for item in sources:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise DistillError(f"{path}: no *.jsonl files; point it at a folder of BLiMP-format files such as tests/assets/blimp")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DistillError(f"{path}: no such file or folder of minimal pairs; give a folder of BLiMP-format *.jsonl files")
    if not files:
        raise DistillError("no minimal-pair files given; point it at a folder of BLiMP-format *.jsonl files")
    fix = 'each line must be {"sentence_good": ..., "sentence_bad": ...} (BLiMP format)'
    pairs: dict[str, list[dict]] = {}
    for path in files:
        rows = read_jsonl(path, ("sentence_good", "sentence_bad"), fix)
        if not rows:
            raise DistillError(f"{path}: no minimal pairs in it; {fix}")
        name = path.stem if path.stem not in pairs else str(path.with_suffix(""))
        pairs[name] = [row for _, row in rows]
    return pairs


def score_pairs(model, tokenizer, pairs: dict[str, list[dict]], *, batch_size: int = 32, device=None) -> dict[str, Any]:
    """Accuracy per file, per ``field``, per ``linguistics_term`` and overall for loaded pairs.

    The model scores each sentence (:func:`sentence_logprob`); the ``minimal_pair_accuracy`` metric
    (``distill/metrics/``) turns the good/bad scores into accuracies with counts.
    """
    flat = [(name, pair) for name, rows in pairs.items() for pair in rows]
    sentences = [s for _, pair in flat for s in (pair["sentence_good"], pair["sentence_bad"])]
    scores = sentence_logprob(model, tokenizer, sentences, batch_size=batch_size, device=device)
    accuracy = load_metric("minimal_pair_accuracy")

    def grouped(keys: list, *, every: bool = False) -> dict[str, Any]:
        """The metric over the pairs grouped by ``keys`` (one per pair); unless ``every``, pairs without a key are left out."""
        kept = [k for k, key in enumerate(keys) if every or (isinstance(key, str) and key)]
        return accuracy.compute(good_logprobs=[scores[2 * k] for k in kept], bad_logprobs=[scores[2 * k + 1] for k in kept],
                                groups=[keys[k] for k in kept])

    overall = grouped([name for name, _ in flat], every=True)  # {"accuracy", "n", "correct", "per_group", "macro_accuracy"}
    result: dict[str, Any] = {
        "per_file": overall.pop("per_group"),
        "per_field": grouped([pair.get("field") for _, pair in flat])["per_group"],
        "per_term": grouped([pair.get("linguistics_term") for _, pair in flat])["per_group"],
    }
    for name, rows in pairs.items():
        for meta in ("UID", "field", "linguistics_term"):
            values = {row.get(meta) for row in rows}
            if len(values) == 1 and isinstance(next(iter(values)), str):
                result["per_file"][name][meta] = next(iter(values))
    result["overall"] = overall
    return result


def score_minimal_pairs(model, tokenizer, source: str | Path | Sequence[str | Path], *, batch_size: int = 32, device=None) -> dict[str, Any]:
    """Minimal-pair accuracy over BLiMP-format JSONL files (a folder, a file or a list of them).

    Returns ``{"per_file": {name: {"accuracy", "n", "correct", "UID"?, "field"?, "linguistics_term"?}},
    "per_field": {field: {...}}, "per_term": {linguistics_term: {...}}, "overall": {"accuracy", "n",
    "correct", "macro_accuracy" (mean over files)}}``.
    """
    return score_pairs(model, tokenizer, load_minimal_pairs(source), batch_size=batch_size, device=device)


def load_facts(facts: str | Path | Sequence[dict]) -> list[dict]:
    """Fact probes ``{"fact", "probe", "answer"}`` from a JSONL file (or a list of dicts), checked."""
    if isinstance(facts, (str, Path)):
        parsed = read_facts(facts, need=FACT_KEYS)
    else:
        parsed = [Fact.from_row(row, FACT_KEYS, f"facts[{i}]") for i, row in enumerate(facts)]
    return [{"fact": fact.fact, "probe": fact.probe, "answer": fact.answer} for fact in parsed]


def _answer_ids(tokenizer, probe: str, answer: str) -> tuple[list[int], list[int]]:
    """Probe ids and the answer's ids as they continue the probe in running text (``probe + " " + answer``)."""
    probe_ids = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(f"{probe} {answer}", add_special_tokens=False)["input_ids"])
    shared = 0
    while shared < min(len(probe_ids), len(full)) and probe_ids[shared] == full[shared]:
        shared += 1
    return full[:shared], full[shared:]


def probe_facts(model, tokenizer, facts: str | Path | Sequence[dict], *, device=None) -> list[dict[str, Any]]:
    """For each fact: ``{"fact", "probe", "answer", "rank", "logprob", "answer_tokens"}``.

    ``logprob`` is the summed log-probability of every answer token after ``<s> probe`` (the answer
    tokenised as it continues the probe after a space); ``rank`` is the rank of the answer's first
    token among the whole vocabulary at that point (1 = top; ties count in the answer's favour);
    ``answer_tokens`` are the answer's token strings.
    """
    device = device or _device_of(model)
    results = []
    for fact in load_facts(facts):
        probe, answer = fact["probe"].rstrip(), fact["answer"].strip()
        context, answer_ids = _answer_ids(tokenizer, probe, answer)
        if not answer_ids:
            raise DistillError(f"fact {fact['fact']!r}: the answer adds no tokens after the probe; check 'probe' and 'answer'")
        ids = [tokenizer.bos_token_id, *context, *answer_ids]
        with torch.inference_mode():
            logprobs = torch.log_softmax(_logits(model, tokenizer, torch.tensor([ids], device=device))[0], dim=-1)  # (L, V)
        first = len(context)  # row that predicts the first answer token (row 0 is after <s>)
        picked = [float(logprobs[first + j, tok]) for j, tok in enumerate(answer_ids)]
        row = logprobs[first]
        rank = int((row > row[answer_ids[0]]).sum()) + 1
        results.append({
            "fact": fact["fact"],
            "probe": fact["probe"],
            "answer": fact["answer"],
            "rank": rank,
            "logprob": sum(picked),
            "answer_tokens": [tokenizer.decode([tok], clean_up_tokenization_spaces=False) for tok in answer_ids],
        })
    return results


def summarise_facts(probes: list[dict]) -> dict[str, Any]:
    n = len(probes)
    return {
        "mean_rank": sum(p["rank"] for p in probes) / n,
        "mean_logprob": sum(p["logprob"] for p in probes) / n,
        "top1": sum(p["rank"] == 1 for p in probes),
        "n": n,
        "probes": probes,
    }


def _config_positions(model_dir: Path) -> int | None:
    config = model_config(model_dir)
    for key in ("max_position_embeddings", "n_positions"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def trained_seq_len(model_dir: str | Path) -> int | None:
    """``seq_len`` from distill.json, else the config's position limit."""
    info = read_info(model_dir)
    if info is not None and isinstance(info.seq_len, int):
        return info.seq_len
    return _config_positions(Path(model_dir))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _evaluate_one(folder: Path, splits: dict[str, Path], pairs, fact_rows, *, seq_len: int, batch_size: int,
                  device: str | None, log, generation=None) -> dict[str, Any]:
    """One model's report entry: perplexity per split, minimal pairs, fact probes, generated text."""
    log(f"evaluate: {folder}")
    model, tokenizer, info = load_model(folder, device=device)
    entry: dict[str, Any] = {
        "path": str(folder),
        "role": info.role or "model",
        "arch": info.arch or getattr(model.config, "model_type", None),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "seq_len": info.seq_len,
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "training": info.metrics or {},
        "perplexity": {},
        "blimp": None,
        "facts": None,
    }
    for split, path in splits.items():
        entry["perplexity"][split] = perplexity(model, tokenizer, path, seq_len=seq_len, batch_size=batch_size)
        log(f"  {split} ppl {entry['perplexity'][split]['ppl']:.2f} ({entry['perplexity'][split]['tokens']} tokens)")
    if pairs is not None:
        entry["blimp"] = score_pairs(model, tokenizer, pairs, batch_size=max(batch_size, 32))
        log(f"  minimal pairs {entry['blimp']['overall']['accuracy']:.1%} of {entry['blimp']['overall']['n']}")
    if fact_rows is not None:
        entry["facts"] = summarise_facts(probe_facts(model, tokenizer, fact_rows))
        log(f"  facts mean rank {entry['facts']['mean_rank']:.1f}, mean logprob {entry['facts']['mean_logprob']:.2f}")
    if generation is not None:
        entry["generation"] = generation_eval.generate_for_model(model, tokenizer, info, generation, log)
    del model
    gc.collect()
    return entry


def _check_settings(folders: dict[str, Path], seq_len: int, batch_size: int, out_dir: Path) -> None:
    """The settings every model is scored with, and the report folder, checked before the first model loads."""
    if seq_len < 2:
        raise DistillError(f"seq_len: {seq_len} must be 2 or more")
    if batch_size < 1:
        raise DistillError(f"batch_size: {batch_size} must be 1 or more")
    for name, folder in folders.items():
        positions = _config_positions(folder)
        if positions is not None and seq_len > positions:
            raise DistillError(f"seq_len: {seq_len} is more than the {positions} positions of {name} ({folder}); give --seq-len {positions} or less")
    if why := not_a_folder(out_dir):
        raise DistillError(f"{why}; give a folder for the report (--out DIR)")


def evaluate_models(models: dict[str, str | Path], *, splits: dict[str, str | Path] | None = None,
                    blimp_dir: str | Path | None = None, facts: str | Path | None = None, out_dir: str | Path,
                    seq_len: int | None = None, batch_size: int = 8, device: str | None = None,
                    generation: generation_eval.GenerationPlan | None = None, log=_log) -> dict[str, Any]:
    """Evaluate every model, write ``out_dir/report.json``, ``report.md`` and ``plots/*.png``; return the report.

    ``models`` maps a display name to a model folder; ``splits`` maps a split name to a corpus split
    file. ``seq_len`` defaults to the shortest trained context among the models, so every model is
    scored on the same blocks. All inputs are checked before the first model loads; files are
    written only when every model has been evaluated. A model's ``words/<count>/`` folders
    (``training.save_at_words``) are scored too, as its learning curve (:mod:`distill.word_curves`).
    """
    started = time.time()
    splits = {name: Path(path) for name, path in (splits or {}).items()}
    if not models:
        raise DistillError("no models to evaluate; give model folders or a recipe whose models are trained")
    folders = {name: check_model_dir(path) for name, path in models.items()}
    for name, path in splits.items():
        if not path.is_file():
            raise DistillError(f"{path}: {name} split not found; build the corpus with python -m distill.corpus all --recipe RECIPE.yaml or fix --split {name}=PATH")
        for _ in iter_records(path):  # read it once now: a file that is not a split fails before any scoring
            pass
    pairs = load_minimal_pairs(blimp_dir) if blimp_dir else None
    fact_rows = load_facts(facts) if facts else None
    generation_eval.check_plan(generation)
    if not splits and pairs is None and fact_rows is None and generation is None:
        raise DistillError("nothing to evaluate; give --split NAME=PATH, --blimp DIR or --facts FILE")
    if seq_len is None:
        lengths = [n for n in (trained_seq_len(p) for p in folders.values()) if n]
        seq_len = min(lengths) if lengths else 128
    _check_settings(folders, seq_len, batch_size, Path(out_dir))
    device = check_device(device)
    notes: list[str] = []

    entries = {name: _evaluate_one(folder, splits, pairs, fact_rows, seq_len=seq_len, batch_size=batch_size, device=device, log=log,
                                   generation=generation) for name, folder in folders.items()}
    judged = generation_eval.judge_models(entries, generation, device=device, batch_size=batch_size, log=log) if generation else None
    hashes = {name: entry["tokenizer_sha256"] for name, entry in entries.items()}
    if len(set(hashes.values())) > 1:
        notes.append("the models do not share one tokenizer: their perplexities are per token of different vocabularies and do not compare")

    report = {
        "format_version": 1,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seq_len": seq_len,
        "splits": {name: str(path) for name, path in splits.items()},
        "blimp_dir": str(blimp_dir) if blimp_dir else None,
        "facts": str(facts) if facts else None,
        "generation": judged,
        "models": entries,
        "notes": notes,
        "wall_time_s": round(time.time() - started, 1),
    }
    metrics = {name: report_mod.read_metrics(folder) for name, folder in folders.items()}
    first_split = dict(list(splits.items())[:1])  # a learning-curve point: one perplexity and BLiMP, no facts or generation
    sections = word_curves.add_curves(report, folders, lambda folder: _evaluate_one(
        folder, first_split, pairs, None, seq_len=seq_len, batch_size=batch_size, device=device, log=log), out_dir)
    return report_mod.write_report(report, out_dir, metrics, sections=sections)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m distill.evaluate", description="Evaluate trained models side by side and write a report.")
    parser.add_argument("inputs", nargs="+", metavar="MODEL_DIR|RECIPE.yaml", help="model folders, or a recipe YAML followed by key=value overrides")
    parser.add_argument("--split", action="append", default=[], metavar="NAME=PATH", help="a corpus split file to score perplexity on (repeatable)")
    parser.add_argument("--blimp", metavar="DIR", help="folder of BLiMP-format *.jsonl minimal pairs")
    parser.add_argument("--facts", metavar="FILE", help="JSONL of fact probes {fact, probe, answer}")
    parser.add_argument("--out", metavar="DIR", help="report folder (default with a recipe: {output_dir}/report)")
    parser.add_argument("--seq-len", type=int, help="block length for perplexity (default: the models' trained seq_len)")
    parser.add_argument("--batch-size", type=int, default=8, help="blocks per forward pass (default 8)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if present)")
    generation_eval.add_arguments(parser)
    return parser.parse_args(argv)


def _parse_splits(items: list[str]) -> dict[str, Path]:
    splits = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DistillError(f"--split {item}: expected NAME=PATH, e.g. --split val=models/tiny/corpus/val.txt")
        splits[name] = Path(path)
    return splits


def recipe_plan(recipe: Recipe) -> dict[str, Any]:
    """What ``evaluate recipe.yaml`` evaluates: the finished model folders, splits, BLiMP, facts, out."""
    paths = recipe.paths
    candidates = model_dirs(recipe)
    finished = [folder for folder in candidates if is_finished(folder)]
    for folder in candidates:
        if folder.exists() and folder not in finished:
            _log(f"evaluate: skipping {folder}: not finished (no distill.json)")
    if not finished:
        raise DistillError(f"{paths.root}: no trained models yet; train them with python -m distill run {recipe.command_hint()}")
    return {
        "models": model_names(finished),
        "splits": {name: paths.split(name) for name in recipe.evaluate.splits},
        "blimp_dir": recipe.evaluate.blimp_dir,
        "facts": recipe.evaluate.facts or recipe.corpus.facts,
        "out_dir": paths.report,
        "seq_len": recipe.data.seq_len,
        "generation": generation_eval.plan_from_recipe(recipe),
    }


@locks_output_dir
def run(recipe: Recipe, *, force: bool = False, resume: bool = False, batch_size: int = 8, device: str | None = None,
        **changes) -> dict[str, Any]:
    """Evaluate the recipe's finished models into ``{output_dir}/report``; return the report.

    ``changes`` replace entries of :func:`recipe_plan` (``splits``, ``blimp_dir``, ``facts``,
    ``out_dir``, ``seq_len``). The pipeline records what the report was made from (``run.json``).
    The recipe's own report (no ``changes``) also goes into each model's card (its ``model-index``).
    """
    plan = recipe_plan(recipe)
    changes = {key: value for key, value in changes.items() if value}
    plan.update(changes, splits={**plan["splits"], **changes.get("splits", {})})
    inputs = stage_inputs(recipe, "evaluate")
    report = evaluate_models(plan.pop("models"), batch_size=batch_size, device=device, **plan)
    if not changes:  # the recipe's own report: into the cards, then record what it was made from
        for entry in report["models"].values():
            add_evaluation(entry["path"], entry, report)
        write_stamp(recipe, "evaluate", inputs)
    print(report_mod.summary_table(report))
    print(f"\nreport: {Path(plan['out_dir']) / 'report.md'}")
    return report


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.inputs[0].endswith((".yaml", ".yml")):
        overrides = args.inputs[1:]
        for item in overrides:
            if "=" not in item:
                raise DistillError(f"{item}: after a recipe only key=value overrides may follow; evaluate model folders without a recipe")
        generation_eval.refuse_with_recipe(args)
        run(load_recipe(args.inputs[0], overrides), batch_size=args.batch_size, device=args.device, splits=_parse_splits(args.split),
            blimp_dir=args.blimp, facts=args.facts, out_dir=args.out, seq_len=args.seq_len)
        return 0
    if args.out is None:
        raise DistillError("--out: missing; say where to write the report, e.g. --out models/tiny/report")
    splits = _parse_splits(args.split)
    report = evaluate_models(model_names(args.inputs), splits=splits, blimp_dir=args.blimp, facts=args.facts, out_dir=args.out,
                             seq_len=args.seq_len, batch_size=args.batch_size, device=args.device,
                             generation=generation_eval.plan_from_args(args, splits))
    print(report_mod.summary_table(report))
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
