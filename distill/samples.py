"""The pipeline's last stage: three samples from the student, written to ``report/samples.md``.

Sample i continues prompt ``i mod len(prompts)`` of the recipe's ``generate:`` section with seed
``generate.seed + i // len(prompts)``, so each sample is what ``python -m distill.generate`` gives
for its prompt and seed; ``samples.md`` shows that command under each sample.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from distill.artifacts import stage_inputs, write_stamp
from distill.atomic import atomic_write_text
from distill.folder_lock import locks_output_dir
from distill.generate import ContextLengthWarning, generate
from distill.model_folder import load_model
from distill.recipe import Recipe

NUM_SAMPLES = 3


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (as the recipe wrote it)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def render_samples(recipe: Recipe, samples: list[dict]) -> str:
    """``samples.md``: the settings, then each sample with the command that gives it again."""
    settings = recipe.generate
    folder = _shown(recipe.paths.student)
    flags = (f"--temperature {settings.temperature} --top-k {settings.top_k} --top-p {settings.top_p} "
             f"--repetition-penalty {settings.repetition_penalty} --max-new-tokens {settings.max_new_tokens}")
    lines = [
        "# Samples from the student",
        "",
        f"Model `{folder}`, sampled with the recipe's `generate:` settings: temperature {settings.temperature}"
        f"{' (greedy)' if settings.temperature == 0 else ''}, top_k {settings.top_k}, top_p {settings.top_p}, "
        f"repetition_penalty {settings.repetition_penalty}, max_new_tokens {settings.max_new_tokens}.",
        "",
    ]
    for number, sample in enumerate(samples, 1):
        text = sample["prompt"] + sample["text"]
        fence = "```"
        while fence in text:
            fence += "`"
        command = f"python -m distill.generate {folder} {json.dumps(sample['prompt'], ensure_ascii=False)} --seed {sample['seed']} {flags}"
        lines += [f"## Sample {number}", "", f"{fence}text", text, fence, "", f"`{command}`", ""]
    return "\n".join(lines)


def generate_samples(recipe: Recipe) -> list[dict]:
    """:data:`NUM_SAMPLES` samples from the student with the recipe's ``generate`` settings."""
    settings = recipe.generate
    model, tokenizer, info = load_model(recipe.paths.student)
    samples = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContextLengthWarning)
        for i in range(NUM_SAMPLES):
            prompt = settings.prompts[i % len(settings.prompts)]
            seed = settings.seed + i // len(settings.prompts)
            text = generate(model, tokenizer, prompt, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_k=settings.top_k, top_p=settings.top_p, repetition_penalty=settings.repetition_penalty, seed=seed,
                            context_length=info.seq_len)[0]
            samples.append({"prompt": prompt, "seed": seed, "text": text})
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ContextLengthWarning)):
        print(f"warning: {message}", file=sys.stderr)
    return samples


@locks_output_dir
def run(recipe: Recipe, *, force: bool = False, resume: bool = False) -> list[dict]:
    """Write ``report/samples.md`` from the finished student, print the samples, and return them."""
    inputs = stage_inputs(recipe, "samples")
    samples = generate_samples(recipe)
    path = recipe.paths.report / "samples.md"
    atomic_write_text(path, render_samples(recipe, samples))
    write_stamp(recipe, "samples", inputs)
    for number, sample in enumerate(samples, 1):
        print(f"--- sample {number}/{len(samples)} (seed {sample['seed']}) ---")
        print(sample["prompt"] + sample["text"])
    print(f"samples: {path}")
    return samples
