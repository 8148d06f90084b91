"""Student-training throughput: live teachers against the teacher-logit cache (and no teachers).

    python bench/bench_student_throughput.py                         # CPU sizes (small teachers)
    python bench/bench_student_throughput.py --preset babylm         # BabyLlama sizes, bf16 on a GPU
    python bench/bench_student_throughput.py --steps 20 --no-write

Three runs of the real student loop (``distill.Student.distill`` -> ``distill.training.train``), one
after the other in this process, on the same data, model sizes and batch:

* ``live``: the frozen teachers run forward on every batch next to the student (the default);
* ``cache``: the teachers ran once over the training blocks into a top-k logit cache
  (``student.logit_cache.enabled: true``); the loop reads the batch's sparse targets from disk;
* ``no teachers``: the same student with alpha=1 (the baseline), the floor for any KD loop.

Throughput is target tokens per second of the training steps only, measured from the loop's own
``metrics.jsonl`` rows (``tokens`` and ``elapsed_s``) between the first logged step (warm-up,
compilation and the first batches excluded) and the last. The cache's one-off build time is
reported separately, with the number of epochs after which it has paid for itself.

Teachers and student are freshly initialised (throughput does not depend on what they learned);
the tokenizer and the blocks come from the shipped corpus sample, so the data is real text.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "bench_student_throughput"

PRESETS = {
    # Small enough for 2 CPU cores: teachers ~12x the student's compute.
    "cpu": {
        "vocab": 4000, "seq_len": 128, "batch": 16, "steps": 20, "mixed_precision": "no",
        "teachers": [
            {"name": "llama", "arch": "llama", "hidden_size": 256, "num_layers": 6, "num_heads": 4, "intermediate_size": 768},
            {"name": "gpt2", "arch": "gpt2", "hidden_size": 256, "num_layers": 6, "num_heads": 4},
        ],
        "student": {"arch": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 192},
    },
    # recipes/babylm-10m.yaml: LLaMA 360M + GPT-2 705M teachers, 58M student, V=16000.
    "babylm": {
        "vocab": 16000, "seq_len": 128, "batch": 64, "steps": 40, "mixed_precision": "bf16",
        "teachers": [
            {"name": "llama", "arch": "llama", "hidden_size": 1024, "num_layers": 24, "num_heads": 8, "intermediate_size": 3072},
            {"name": "gpt2", "arch": "gpt2", "hidden_size": 1536, "num_layers": 24, "num_heads": 16},
        ],
        "student": {"arch": "llama", "hidden_size": 512, "num_layers": 16, "num_heads": 8, "intermediate_size": 1024},
    },
}


def _machine(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {device} ({name})"
    )


def _setup(work: Path, preset: dict, words: int):
    """Tokenizer on a slice of the shipped sample, train blocks, and saved random-init teachers."""
    from accelerate.utils import set_seed

    from distill.data import build_blocks
    from distill.models import build_model
    from distill.recipe import ModelConfig, section_from_dict
    from distill.tokenizer import train_tokenizer

    texts, count = [], 0
    for path in sorted((REPO / "corpora" / "britannica-sample").glob("*.txt")):
        text = " ".join(path.read_text(encoding="utf-8").split())
        texts.append(text)
        count += len(text.split())
        if count >= words:
            break
    split = work / "train.txt"
    split.write_text("".join(f"<s> {t} </s>\n" for t in texts), encoding="utf-8")
    tokenizer = train_tokenizer(split, preset["vocab"], 2, work / "tokenizer")
    blocks = build_blocks(split, tokenizer, preset["seq_len"], work / "tokens")
    folders = []
    for spec in preset["teachers"]:
        cfg = section_from_dict(ModelConfig, spec, "teacher")
        set_seed(0)
        model = build_model(cfg, preset["vocab"], preset["seq_len"])
        folder = work / "teachers" / spec["name"]
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
        del model
    return tokenizer, blocks, folders


def _tokens_per_second(folder: Path) -> tuple[float, int]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    first, last = train[0], train[-1]
    return (last["tokens"] - first["tokens"]) / max(last["elapsed_s"] - first["elapsed_s"], 1e-9), last["step"] - first["step"]


def _run(mode: str, work: Path, preset: dict, tokenizer, blocks, teachers, steps: int, top_k: int) -> dict:
    import torch

    from distill.student import Student

    training = {
        "max_steps": steps, "batch_size": preset["batch"], "lr": 1e-3, "warmup_steps": 2, "log_every": 2,
        "save_every": 0, "seed": 0, "mixed_precision": preset["mixed_precision"],
    }
    config = {
        **preset["student"], "name": mode.replace(" ", "-"), "alpha": 1.0 if mode == "no teachers" else 0.5,
        "temperature": 2.0, "logit_cache": {"enabled": mode == "cache", "top_k": top_k}, "training": training,
    }
    student = Student(
        config, [] if mode == "no teachers" else teachers, tokenizer, seq_len=preset["seq_len"], vocab_size=preset["vocab"],
        output_dir=work / "runs" / config["name"], cache_dir=work / "tokens", logit_cache_dir=work / "teacher_logits",
    )
    eval_blocks = blocks.select(range(min(len(blocks), 2 * preset["batch"])))
    cache_build = None
    if mode == "cache":
        from distill.distributed import make_accelerator

        started = time.perf_counter()
        accelerator = make_accelerator(student.config.training, student.output_dir)
        student.logit_cache(blocks, accelerator)
        cache_build = time.perf_counter() - started
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    student.distill(blocks, eval_blocks)
    rate, measured = _tokens_per_second(student.output_dir)
    result = {"mode": mode, "tokens_per_s": rate, "steps_measured": measured, "cache_build_s": cache_build}
    if torch.cuda.is_available():
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if mode == "cache":
        result["cache_mib"] = sum(p.stat().st_size for p in (work / "teacher_logits").glob("*.npy")) / 2**20
    del student
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="model sizes (default: babylm on a GPU, cpu otherwise)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default from the preset)")
    parser.add_argument("--top-k", type=int, default=64, help="entries per token in the logit cache")
    parser.add_argument("--words", type=int, default=120_000, help="words of the shipped sample to train on")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    preset_name = args.preset or ("babylm" if device == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    steps = args.steps or preset["steps"]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    try:
        tokenizer, blocks, teachers = _setup(work, preset, args.words)
        from transformers import AutoConfig, AutoModelForCausalLM

        sizes = []
        for folder in teachers:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)))
            sizes.append(f"{folder.name} {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M")
        results = [_run(mode, work, preset, tokenizer, blocks, teachers, steps, args.top_k) for mode in ("live", "cache", "no teachers")]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    live = results[0]["tokens_per_s"]
    lines = [
        f"## Student training: live teachers vs the teacher-logit cache ({preset_name} preset, {device})",
        "",
        f"Command: `python bench/bench_student_throughput.py{' --preset ' + args.preset if args.preset else ''}"
        f"{' --steps ' + str(args.steps) if args.steps else ''}`",
        "",
        f"Machine: {_machine(device)}.",
        "",
        f"Preset `{preset_name}`: teachers {', '.join(sizes)}; student {preset['student']['hidden_size']} wide x "
        f"{preset['student']['num_layers']} layers; V={preset['vocab']}, seq_len={preset['seq_len']}, batch {preset['batch']}, "
        f"mixed precision {preset['mixed_precision']}, {steps} optimizer steps per run, cache top-k {args.top_k}. "
        "Tokens/s = target tokens per second of the training steps, from the loop's metrics.jsonl, first logged step excluded.",
        "",
        "| mode | tokens/s | vs live | cache build s | peak GPU GiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        build = f"{r['cache_build_s']:.1f}" if r["cache_build_s"] is not None else "–"
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "–"
        lines.append(f"| {r['mode']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / live:.2f}x | {build} | {peak} |")
    cache = results[1]
    tokens = len(blocks) * preset["seq_len"]
    if cache["tokens_per_s"] > live:
        # time per epoch: live = tokens / live; cache = tokens / cache_rate, plus the build once
        saved_per_epoch = tokens / live - tokens / cache["tokens_per_s"]
        epochs = cache["cache_build_s"] / saved_per_epoch if saved_per_epoch > 0 else float("inf")
        lines += ["", f"The cache ({cache['cache_mib']:.0f} MiB for {tokens:,} tokens) took {cache['cache_build_s']:.1f} s to build "
                  f"and pays for itself after {epochs:.2f} epochs of this data."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        from results import write_section

        write_section(f"{SECTION}-{preset_name}", text)  # one section per preset: CPU and GPU figures side by side
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
