"""Training throughput of the real loop: the student with live teachers, from the teacher-logit cache
and with no teachers, and each teacher's own training; tokens/s, model TFLOP/s and MFU.

    python bench/bench_student_throughput.py                         # CPU sizes (small teachers)
    python bench/bench_student_throughput.py --preset babylm         # BabyLlama sizes, bf16 on a GPU
    python bench/bench_student_throughput.py --modes live none --steps 20 --no-write
    python bench/bench_student_throughput.py --preset tiny           # seconds on a CPU: checks the script, writes nothing

Runs of the real training loop (``distill.training.train``), one after the other in this process, on
the same data, model sizes and batch (``--modes``, run in the order given; default all, in this order):

* ``live``: the student, the frozen teachers running forward on every batch next to it (the default
  of a recipe), through ``distill.Student.distill``;
* ``cache``: the student, the teachers having run once over the training blocks into a logit cache
  (``student.logit_cache.enabled: true``, sampled 64 draws by default, as the recipes); the loop
  reads the batch's sparse targets from disk;
* ``none``: the same student with alpha=1 (the baseline), the floor for any KD loop;
* ``teachers``: each teacher of the preset trained on its own (``teacher-llama``, ``teacher-gpt2``:
  one of them alone is a mode too), with its recipe's batch, as the teacher stage trains it.

Throughput is target tokens per second of the training steps only, from the loop's own
``metrics.jsonl`` train rows (each row's ``tokens_per_s`` over the steps since the row before: batch
fetching included; validation, checkpoints and logging not), the first logged row excluded (warm-up,
compilation and the first batches). Model TFLOP/s and MFU are the rows' ``tflops`` and ``mfu``
(:mod:`distill.speed`: ``6N + 12LWT`` per trained token, plus each live teacher's forward), weighted
by time over the same rows; MFU needs the device's peak (a table of GPUs, or ``--peak-tflops``), so
it is '–' on a CPU. ``wall s`` is the whole run of a mode: building or loading the models,
compilation, the steps, the final validation and the saved folder. The cache's one-off build time is
reported separately, with the number of epochs after which it has paid for itself.

On the babylm preset the table compares each run with the figures of issue 15 ("today": one H100,
2026-11-25) and checks its targets. Every model is freshly initialised (throughput does not depend on
what it learned); the tokenizer and the blocks come from a shipped corpus sample, so the data is real
text.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "bench_student_throughput"
STUDENT_MODES = ("live", "cache", "none")

PRESETS = {
    # Small enough for 2 CPU cores: teachers ~12x the student's compute.
    "cpu": {
        "vocab": 4000, "seq_len": 128, "batch": 16, "steps": 20, "teacher_steps": 10, "words": 120_000, "mixed_precision": "no",
        "teachers": [
            {"name": "llama", "arch": "llama", "hidden_size": 256, "num_layers": 6, "num_heads": 4, "intermediate_size": 768,
             "training": {"batch_size": 16, "grad_accum": 1}},
            {"name": "gpt2", "arch": "gpt2", "hidden_size": 256, "num_layers": 6, "num_heads": 4,
             "training": {"batch_size": 16, "grad_accum": 1}},
        ],
        "student": {"arch": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 192},
    },
    # recipes/babylm-10m.yaml: LLaMA 360M + GPT-2 705M teachers (their batches: 128 x 1, 64 x 2), 58M student, V=16000.
    "babylm": {
        "vocab": 16000, "seq_len": 128, "batch": 64, "steps": 40, "teacher_steps": 30, "words": 120_000, "mixed_precision": "bf16",
        "teachers": [
            {"name": "llama", "arch": "llama", "hidden_size": 1024, "num_layers": 24, "num_heads": 8, "intermediate_size": 3072,
             "training": {"batch_size": 128, "grad_accum": 1}},
            {"name": "gpt2", "arch": "gpt2", "hidden_size": 1536, "num_layers": 24, "num_heads": 16,
             "training": {"batch_size": 64, "grad_accum": 2}},
        ],
        "student": {"arch": "llama", "hidden_size": 512, "num_layers": 16, "num_heads": 8, "intermediate_size": 1024},
    },
    # A check of this script (and of bench/gpu_check.sh's tiny mode): seconds on a CPU, never written to RESULTS.md.
    "tiny": {
        "vocab": 1000, "seq_len": 64, "batch": 8, "steps": 8, "teacher_steps": 6, "words": 30_000, "mixed_precision": "no",
        "teachers": [
            {"name": "llama", "arch": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 192,
             "training": {"batch_size": 8, "grad_accum": 1}},
            {"name": "gpt2", "arch": "gpt2", "hidden_size": 64, "num_layers": 2, "num_heads": 2,
             "training": {"batch_size": 4, "grad_accum": 2}},
        ],
        "student": {"arch": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 96},
    },
}

# Issue 15, one H100 80GB HBM3 (torch 2.11, bf16, the babylm preset, 2026-11-25; the cache then was
# top-64 + tail): target tokens/s of each run ("today"). The teachers' figures are from their training
# at the babylm-10m recipe's batches.
REFERENCE = {"live": 35_834, "cache": 63_739, "none": 89_533, "teacher-llama": 79_000, "teacher-gpt2": 46_000}
REFERENCE_NOTE = ("today: issue 15's figures on one H100 80GB HBM3 (torch 2.11, bf16, 2026-11-25; its cache was top-64 + tail, "
                  "the teachers' from their training at the babylm-10m recipe's batches)")
MFU_TARGET = 0.30


def _machine(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {device} ({name})"
    )


def _training_fields() -> set[str]:
    from distill.recipe import TrainingConfig

    return {f.name for f in dataclasses.fields(TrainingConfig)}


def _setup(work: Path, preset: dict, words: int, need_teachers: bool):
    """Tokenizer on a slice of the shipped sample, train blocks, and saved random-init teachers
    (only when a student mode needs them)."""
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
    for spec in preset["teachers"] if need_teachers else []:
        cfg = section_from_dict(ModelConfig, _model_spec(spec), "teacher")
        set_seed(0)
        with _build_device():
            model = build_model(cfg, preset["vocab"], preset["seq_len"])
        folder = work / "teachers" / spec["name"]
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
        del model
    return tokenizer, blocks, folders


def _build_device():
    """Where to initialise a teacher: on the GPU when there is one (seconds, where a CPU takes ~20 s for 705M)."""
    import contextlib

    import torch

    return torch.device("cuda") if torch.cuda.is_available() else contextlib.nullcontext()


def _model_spec(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "training"}


def _speed(folder: Path) -> dict:
    """Tokens/s, model TFLOP/s and MFU over the train rows of ``metrics.jsonl``, the first excluded.

    Each row's figures cover the steps since the row before; they are combined weighted by the
    seconds of training steps they cover (``tokens since the row before / tokens_per_s``)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    if not train:
        raise RuntimeError(f"{folder}: no train rows in metrics.jsonl")
    first = 1 if len(train) > 1 else 0  # the first row holds the warm-up; a single row is all there is
    seconds, tokens, tflop, mfu_s = 0.0, 0, 0.0, 0.0
    for i in range(first, len(train)):
        row, before = train[i], (train[i - 1] if i else {"tokens": 0, "elapsed_s": 0.0, "step": 0})
        row_tokens = row["tokens"] - before["tokens"]
        if "tokens_per_s" in row:
            row_seconds = row_tokens / max(row["tokens_per_s"], 1e-9)
        else:  # a loop without per-row speed: the elapsed time between the rows, validation included
            row_seconds = row["elapsed_s"] - before["elapsed_s"]
        seconds += row_seconds
        tokens += row_tokens
        tflop += row.get("tflops", 0.0) * row_seconds
        mfu_s += (row.get("mfu") or 0.0) * row_seconds
    measured = train[first:]
    seconds = max(seconds, 1e-9)
    return {
        "tokens_per_s": tokens / seconds,
        "tflops": tflop / seconds if all("tflops" in r for r in measured) else None,
        "mfu": mfu_s / seconds if all(r.get("mfu") is not None for r in measured) else None,
        "steps_measured": measured[-1]["step"] - (train[0]["step"] if first else 0),
    }


def _final_metrics(folder: Path) -> dict:
    info = folder / "distill.json"
    if not info.is_file():
        return {}
    metrics = json.loads(info.read_text()).get("metrics", {})
    return {k: metrics[k] for k in ("tokens_per_s", "mfu", "tflops", "model_flops_per_token", "wall_time_s", "peak_gpu_memory_gib") if k in metrics}


def _training(preset: dict, steps: int, extra: dict, overrides: dict) -> dict:
    training = {
        "max_steps": steps, "batch_size": preset["batch"], "lr": 1e-3, "warmup_steps": 2, "log_every": overrides.get("log_every", 2),
        "save_every": 0, "seed": 0, "mixed_precision": preset["mixed_precision"], **extra,
    }
    fields = _training_fields()
    for key in ("compile", "num_workers"):
        if overrides.get(key) is not None:
            if key not in fields:
                raise SystemExit(f"--{key.replace('_', '-')}: this version of distill has no training.{key}")
            training[key] = overrides[key]
    return training


def _run_student(mode: str, work: Path, preset: dict, tokenizer, blocks, teachers, steps: int, cache: dict, overrides: dict) -> dict:
    from distill.student import Student

    config = {
        **preset["student"], "name": mode, "alpha": 1.0 if mode == "none" else 0.5,
        "temperature": 1.0,  # as the recipes; the temperature does not change the work
        "logit_cache": {"enabled": mode == "cache", **cache}, "training": _training(preset, steps, {}, overrides),
    }
    student = Student(
        config, [] if mode == "none" else teachers, tokenizer, seq_len=preset["seq_len"], vocab_size=preset["vocab"],
        output_dir=work / "runs" / mode, cache_dir=work / "tokens", logit_cache_dir=work / "teacher_logits",
    )
    eval_blocks = blocks.select(range(min(len(blocks), 2 * preset["batch"])))
    result = {"cache_build_s": None}
    if mode == "cache":
        from distill.distributed import make_accelerator

        started = time.perf_counter()
        accelerator = make_accelerator(student.config.training, student.output_dir)
        student.logit_cache(blocks, accelerator)
        result["cache_build_s"] = time.perf_counter() - started
        result["cache_mib"] = sum(p.stat().st_size for p in (work / "teacher_logits").rglob("*") if p.is_file()) / 2**20
    student.distill(blocks, eval_blocks)
    result.update(_speed(student.output_dir))
    result["final"] = _final_metrics(student.output_dir)
    del student
    return result


def _run_teacher(spec: dict, work: Path, preset: dict, tokenizer, blocks, steps: int, overrides: dict) -> dict:
    """One teacher trained from scratch by the loop the teacher stage uses."""
    from accelerate.utils import set_seed

    from distill.artifacts import ModelInfo
    from distill.models import build_model
    from distill.recipe import ModelConfig, section_from_dict
    from distill.training import train

    section = {**_model_spec(spec), "training": _training(preset, steps, spec.get("training", {}), overrides)}
    cfg = section_from_dict(ModelConfig, section, "teacher")
    set_seed(0)
    with _build_device():
        model = build_model(cfg, preset["vocab"], preset["seq_len"])
    folder = work / "runs" / f"teacher-{spec['name']}"
    eval_blocks = blocks.select(range(min(len(blocks), 2 * cfg.training.batch_size)))
    info = ModelInfo(name=f"teacher-{spec['name']}", role="teacher", arch=cfg.arch, seq_len=preset["seq_len"], recipe=cfg.to_dict())
    train(model, train_dataset=blocks, eval_dataset=eval_blocks, training_cfg=cfg.training, out_dir=folder, tokenizer=tokenizer, info=info)
    del model
    result = {"cache_build_s": None, **_speed(folder), "final": _final_metrics(folder)}
    result["batch"] = f"{cfg.training.batch_size} x {cfg.training.grad_accum}"
    return result


def _run_mode(mode: str, work: Path, preset: dict, tokenizer, blocks, teachers, steps: int, teacher_steps: int, cache: dict,
              overrides: dict) -> dict:
    """One mode, timed, with its peak GPU memory; its error is kept and the other modes still run."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        if mode in STUDENT_MODES:
            result = _run_student(mode, work, preset, tokenizer, blocks, teachers, steps, cache, overrides)
        else:
            spec = next(t for t in preset["teachers"] if f"teacher-{t['name']}" == mode)
            result = _run_teacher(spec, work, preset, tokenizer, blocks, teacher_steps, overrides)
    except Exception as err:  # noqa: BLE001: one failing mode (OOM, a compile error) must not lose the others
        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}
    result["mode"] = mode
    result["wall_s"] = time.perf_counter() - started
    if torch.cuda.is_available():
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _modes(asked: list[str], preset: dict) -> list[str]:
    teacher_modes = [f"teacher-{t['name']}" for t in preset["teachers"]]
    valid = list(STUDENT_MODES) + ["teachers"] + teacher_modes
    out = []
    for mode in asked:
        mode = {"no-teachers": "none", "no teachers": "none"}.get(mode, mode)
        if mode not in valid:
            raise SystemExit(f"--modes: {mode!r} is not one of {', '.join(valid)}")
        for one in teacher_modes if mode == "teachers" else [mode]:
            if one not in out:
                out.append(one)
    return out


def _fmt(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def _label(mode: str) -> str:
    return {"live": "student, live teachers", "cache": "student, logit cache", "none": "student, no teachers"}.get(
        mode, mode.replace("teacher-", "teacher ") + " (own training)")


def _targets(results: dict[str, dict]) -> list[tuple[str, str, str]]:
    """Issue 15's targets: (target, measured, met)."""
    def ok(r):
        return r is not None and "error" not in r

    def mfu_check(mode, what):
        r = results.get(mode)
        if not ok(r):
            return (what, "not measured", "–")
        if r.get("mfu") is None:
            return (what, "MFU unknown (no peak: --peak-tflops)", "–")
        return (what, f"{100 * r['mfu']:.1f}% MFU", "yes" if r["mfu"] >= MFU_TARGET else "no")

    rows = [mfu_check("none", f"student without teachers >= {100 * MFU_TARGET:.0f}% MFU")]
    cache, none = results.get("cache"), results.get("none")
    if ok(cache) and ok(none):
        ratio = cache["tokens_per_s"] / none["tokens_per_s"]
        rows.append(("student from the cache >= 0.9x no teachers", f"{ratio:.2f}x", "yes" if ratio >= 0.9 else "no"))
    else:
        rows.append(("student from the cache >= 0.9x no teachers", "not measured", "–"))
    live = results.get("live")
    goal = 2 * REFERENCE["live"]
    if ok(live):
        rows.append((f"student with live teachers >= 2x today ({goal:,} tokens/s)", f"{live['tokens_per_s']:,.0f} tokens/s "
                     f"({live['tokens_per_s'] / REFERENCE['live']:.2f}x)", "yes" if live["tokens_per_s"] >= goal else "no"))
    else:
        rows.append((f"student with live teachers >= 2x today ({goal:,} tokens/s)", "not measured", "–"))
    for mode in ("teacher-llama", "teacher-gpt2"):
        rows.append(mfu_check(mode, f"{mode.replace('-', ' ')} >= {100 * MFU_TARGET:.0f}% MFU"))
    return rows


def report(results: list[dict], *, preset_name: str, preset: dict, device: str, command: str, steps: int, teacher_steps: int,
           cache: dict, sizes: list[str], tokens: int, targets: bool) -> str:
    """The markdown section: the table, the cache's payback and, on the babylm preset, the targets."""
    by_mode = {r["mode"]: r for r in results}
    reference = preset_name == "babylm" or targets
    live = by_mode.get("live")
    live_rate = live["tokens_per_s"] if live and "error" not in live else None
    cache_text = (f"sampled, {cache['samples']} draws per token" if cache["method"] == "sampled"
                  else f"top-{cache['top_k']} + tail")
    lines = [
        f"## Training throughput: the student (live teachers, logit cache, no teachers) and the teachers ({preset_name} preset, {device})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {_machine(device)}.",
        "",
        f"Preset `{preset_name}`: teachers {', '.join(sizes)}; student {preset['student']['hidden_size']} wide x "
        f"{preset['student']['num_layers']} layers; V={preset['vocab']}, seq_len={preset['seq_len']}, student batch {preset['batch']}, "
        f"mixed precision {preset['mixed_precision']}, {steps} optimizer steps per student run and {teacher_steps} per teacher run, "
        f"cache {cache_text}. Tokens/s: target tokens per second of the training steps, from the loop's metrics.jsonl, first logged "
        "row excluded; model TFLOP/s and MFU from the same rows (distill/speed.py: the student with live teachers counts their "
        "forwards too); wall s: the whole run, model building or loading, compilation and the final save included.",
        "",
    ]
    head = ["run", "batch", "tokens/s"]
    head += ["today", "vs today"] if reference else []
    head += ["vs live", "MFU", "model TFLOP/s", "wall s", "cache build s", "peak GPU GiB"]
    lines += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in results:
        mode = r["mode"]
        batch = r.get("batch", f"{preset['batch']} x 1") if "error" not in r else "–"
        if "error" in r:
            cells = [_label(mode), batch, r["error"] if r.get("skipped") else f"failed: {r['error']}"]
            cells += ["–", "–"] if reference else []
            cells += ["–"] * 3 + [f"{r['wall_s']:.0f}", "–", _fmt(r.get("peak_gib"), ".2f")]
        else:
            rate = r["tokens_per_s"]
            cells = [_label(mode), batch, f"{rate:,.0f}"]
            if reference:
                ref = REFERENCE.get(mode)
                cells += [_fmt(ref, ",.0f"), f"{rate / ref:.2f}x" if ref else "–"]
            cells += [f"{rate / live_rate:.2f}x" if live_rate and mode in STUDENT_MODES else "–",
                      f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "–", _fmt(r.get("tflops"), ".3g"),
                      f"{r['wall_s']:.0f}", _fmt(r.get("cache_build_s"), ".1f"), _fmt(r.get("peak_gib"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    cache_r = by_mode.get("cache")
    if cache_r and "error" not in cache_r and live_rate and cache_r["tokens_per_s"] > live_rate:
        # time per epoch: live = tokens / live; cache = tokens / cache_rate, plus the build once
        saved_per_epoch = tokens / live_rate - tokens / cache_r["tokens_per_s"]
        epochs = cache_r["cache_build_s"] / saved_per_epoch if saved_per_epoch > 0 else float("inf")
        lines += ["", f"The cache ({cache_r['cache_mib']:.0f} MiB for {tokens:,} tokens) took {cache_r['cache_build_s']:.1f} s to build "
                  f"and pays for itself after {epochs:.2f} epochs of this data."]
    if reference:
        lines += ["", f"Issue 15's targets ({REFERENCE_NOTE}):", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in _targets(by_mode)]
        if preset_name != "babylm":
            lines += ["", f"(The `{preset_name}` preset is not the babylm one: its 'today' and targets only check this report.)"]
    return "\n".join(lines) + "\n"


def _run_mode_of(info: dict) -> str | None:
    """Which of this benchmark's runs a model folder of a pipeline run compares with."""
    role, arch = info.get("role"), info.get("arch")
    if role == "teacher":
        return f"teacher-{arch}" if f"teacher-{arch}" in REFERENCE else None
    if role == "baseline":
        return "none"
    if role == "student":
        return "cache" if (info.get("loss") or {}).get("logit_cache") else "live"
    return None


def run_report(run_dir: Path) -> str:
    """The speed of every model of a finished (or partly finished) pipeline run, from its folders'
    metrics.jsonl (first logged row excluded) and distill.json, against issue 15's figures."""
    folders = sorted((run_dir / "teachers").glob("*/metrics.jsonl")) + [run_dir / n / "metrics.jsonl" for n in ("student", "baseline")]
    lines = [
        f"## Speed of each model of the pipeline run `{run_dir.name}`",
        "",
        "Tokens/s, model TFLOP/s and MFU: the training loop's metrics.jsonl rows, first logged row excluded; wall s: the "
        "model's whole training (distill.json). 'today' and the targets: issue 15's figures (babylm preset: student batch 64; "
        "a recipe's student batch may differ).",
        "",
        "| model | role | params | steps | batch | tokens/s | today | vs today | MFU | model TFLOP/s | wall s | peak GPU GiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_mode: dict[str, dict] = {}
    for metrics in folders:
        if not metrics.is_file():
            continue
        folder = metrics.parent
        info_path = folder / "distill.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        final = info.get("metrics", {})
        try:
            figures = _speed(folder)
        except (RuntimeError, KeyError, ValueError) as err:
            lines.append(f"| {folder.name} | {info.get('role', '?')} | – | – | – | {err} | – | – | – | – | – | – |")
            continue
        mode = _run_mode_of(info) if info else None
        if mode:
            by_mode[mode] = figures
        ref = REFERENCE.get(mode) if mode else None
        params = info.get("num_parameters")
        lines.append("| " + " | ".join([
            folder.name, info.get("role", "unfinished"), f"{params / 1e6:.1f}M" if params else "–", str(final.get("steps", "–")),
            str(final.get("effective_batch_size", "–")), f"{figures['tokens_per_s']:,.0f}", _fmt(ref, ",.0f"),
            f"{figures['tokens_per_s'] / ref:.2f}x" if ref else "–",
            f"{100 * figures['mfu']:.1f}%" if figures.get("mfu") is not None else "–", _fmt(figures.get("tflops"), ".3g"),
            _fmt(final.get("wall_time_s"), ".0f"), _fmt(final.get("peak_gpu_memory_gib"), ".2f"),
        ]) + " |")
    lines += ["", f"Issue 15's targets, from this run ({REFERENCE_NOTE}):", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _targets(by_mode)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="model sizes (default: babylm on a GPU, cpu otherwise)")
    parser.add_argument("--modes", nargs="+", default=["live", "cache", "none", "teachers"], metavar="MODE",
                        help="runs, in order: live cache none teachers (or teacher-llama, teacher-gpt2); default all")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per student run (default from the preset)")
    parser.add_argument("--teacher-steps", type=int, default=None, help="optimizer steps per teacher run (default from the preset)")
    parser.add_argument("--log-every", type=int, default=2, help="steps per metrics.jsonl row (the first row is left out of the figures)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no further mode once this many seconds have passed (setup included); the modes left are reported as skipped")
    parser.add_argument("--cache-method", choices=("sampled", "topk_tail"), default="sampled", help="logit cache method (default sampled, as the recipes)")
    parser.add_argument("--samples", type=int, default=64, help="sampled cache: draws per token")
    parser.add_argument("--top-k", type=int, default=64, help="topk_tail cache: entries per token")
    parser.add_argument("--words", type=int, default=None, help="words of the shipped sample to train on (default from the preset)")
    parser.add_argument("--compile", choices=("auto", "true", "false"), default=None, help="training.compile of every run (default: the loop's default)")
    parser.add_argument("--num-workers", type=int, default=None, help="training.num_workers of every run (default: the loop's default)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s, for MFU (default: distill.speed's table; none on CPU)")
    parser.add_argument("--targets", action="store_true", help="compare with issue 15's figures and targets on any preset (always on babylm)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here, after every mode")
    parser.add_argument("--section", type=Path, default=None, help="also write the markdown section to this file")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone (the tiny preset never writes it)")
    parser.add_argument("--from-run", type=Path, default=None, metavar="OUTPUT_DIR",
                        help="benchmark nothing: report the speed of the models of a pipeline run's output folder (e.g. "
                             "models/babylm-gpu-quick) against issue 15's figures; with --section, also into that file")
    args = parser.parse_args(argv)
    if args.from_run is not None:
        if not args.from_run.is_dir():
            print(f"error: --from-run {args.from_run}: no such folder; give a pipeline run's output_dir, e.g. models/babylm-gpu-quick",
                  file=sys.stderr)
            return 2
        text = run_report(args.from_run)
        print(text)
        if args.section:
            args.section.parent.mkdir(parents=True, exist_ok=True)
            args.section.write_text(text, encoding="utf-8")
        return 0

    import torch

    from distill.speed import set_peak_from_cli

    set_peak_from_cli(args.peak_tflops)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    preset_name = args.preset or ("babylm" if device == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    steps = args.steps or preset["steps"]
    teacher_steps = args.teacher_steps or preset["teacher_steps"]
    modes = _modes(args.modes, preset)
    cache = {"method": args.cache_method, "samples": args.samples, "top_k": args.top_k}
    overrides = {"log_every": args.log_every, "compile": {"true": True, "false": False}.get(args.compile, args.compile),
                 "num_workers": args.num_workers}
    _training(preset, steps, {}, overrides)  # an option this distill does not have fails before any work
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = "python bench/bench_student_throughput.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    results: list[dict] = []

    def save_json():
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"preset": preset_name, "device": device, "command": command, "results": results}, indent=1))

    try:
        tokenizer, blocks, teachers = _setup(work, preset, args.words or preset["words"], any(m in ("live", "cache") for m in modes))
        print(f"setup: {len(blocks)} blocks of {preset['seq_len']} tokens in {time.perf_counter() - began:.0f}s", flush=True)
        from distill.models import build_model
        from distill.recipe import ModelConfig, section_from_dict

        sizes = []
        for spec in preset["teachers"]:
            with torch.device("meta"):
                model = build_model(section_from_dict(ModelConfig, _model_spec(spec), "teacher"), preset["vocab"], preset["seq_len"])
            sizes.append(f"{spec['name']} {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M")
        for mode in modes:
            if args.budget_s is not None and time.perf_counter() - began > args.budget_s:
                print(f"{mode}: skipped, the time budget of {args.budget_s:.0f}s is spent", flush=True)
                results.append({"mode": mode, "error": "skipped (time budget)", "wall_s": 0.0, "skipped": True})
                continue
            print(f"{mode}: running", flush=True)
            result = _run_mode(mode, work, preset, tokenizer, blocks, teachers, steps, teacher_steps, cache, overrides)
            results.append(result)
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k != "final"}
            print(f"{mode}: {json.dumps(shown)}", flush=True)
            save_json()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    text = report(results, preset_name=preset_name, preset=preset, device=device, command=command, steps=steps,
                  teacher_steps=teacher_steps, cache=cache, sizes=sizes, tokens=len(blocks) * preset["seq_len"], targets=args.targets)
    print(text)
    save_json()
    if args.section:
        args.section.parent.mkdir(parents=True, exist_ok=True)
        args.section.write_text(text, encoding="utf-8")
    if not args.no_write and preset_name != "tiny":
        from results import write_section

        write_section(f"{SECTION}-{preset_name}", text)  # one section per preset: CPU and GPU figures side by side
    return 1 if any("error" in r and not r.get("skipped") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
