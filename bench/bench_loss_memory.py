"""Peak memory and time of the KD loss: chunked (fused with the lm_head) against unchunked.

    python bench/bench_loss_memory.py                     # V=16000 and 32000, N=4096, H=512, 2 teachers
    python bench/bench_loss_memory.py --vocab 32000 --tokens 8192 --no-write

Each case runs forward + backward of ``alpha * CE + (1 - alpha) * KL`` (alpha=0.5, T=2, forward KL,
mean-of-logits ensemble) from the student's final hidden states (N, H) and its lm_head (V, H):

* ``unchunked``: ``logits = h @ W^T`` then :func:`distill.losses.blended_kd_loss` on full tensors;
* ``chunked``: :func:`distill.losses.chunked_kd_loss` with the teachers' (N, V) logits as inputs;
* ``chunked+heads``: the same with the teachers' hidden states and lm_heads
  (:func:`distill.teacher_target.teacher_head_target`), so no (N, V) tensor exists at all.

How memory is measured, honestly: each case runs in a fresh Python process. On CUDA it is
``torch.cuda.max_memory_allocated()`` minus the memory allocated before the loss (inputs already
on the device). On CPU, tracemalloc does not see torch's allocations, so the process's resident
set is read from /proc/self/status: after the inputs are built and one warm-up run has finished,
the kernel's high-water mark is reset (``echo 5 > /proc/self/clear_refs``), and the figure is
VmHWM (peak resident memory during one forward + backward) minus VmRSS just before it. Large
tensors come from mmap and go back to the OS when freed, so this is the true peak of the loss's
own intermediates and gradients; the inputs (hidden states, weights, teacher logits) are
excluded and reported separately. Without /proc (not Linux) it falls back to ru_maxrss, which
includes the inputs.

Time is the median wall time of ``--reps`` forward + backward passes after the warm-up.
The results go to stdout and, unless ``--no-write``, into this script's section of
bench/RESULTS.md (other sections of that file are left alone).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

METHODS = ("unchunked", "chunked", "chunked+heads")
SECTION = "bench_loss_memory"
MiB = 1 << 20


def _status_kib() -> dict:
    with open("/proc/self/status") as handle:
        return {line.split(":")[0]: int(line.split()[1]) for line in handle if line.startswith(("VmRSS", "VmHWM"))}


def _run_case(args) -> dict:
    """One (method, vocab) case in this process; returns figures as a dict."""
    import torch

    from distill.losses import LossConfig, blended_kd_loss, chunked_kd_loss
    from distill.teacher_target import teacher_head_target

    device = torch.device(args.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n, h_size, vocab, seq = args.tokens, args.hidden, args.vocab, args.seq_len

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device)

    batch = n // seq
    hidden = randn(batch, seq, h_size).requires_grad_()
    weight = randn(vocab, h_size, scale=h_size**-0.5).requires_grad_()
    labels = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
    if args.method == "chunked+heads":
        t_hidden = [randn(batch, seq, h_size) for _ in range(args.teachers)]
        t_weight = [randn(vocab, h_size, scale=3 * h_size**-0.5) for _ in range(args.teachers)]
        target = teacher_head_target(t_hidden, t_weight)
        input_bytes = sum(t.numel() * 4 for t in t_hidden + t_weight)
    else:
        target = [randn(batch, seq, vocab, scale=3.0) for _ in range(args.teachers)]
        input_bytes = sum(t.numel() * 4 for t in target)
    input_bytes += (hidden.numel() + weight.numel()) * 4
    config = LossConfig(alpha=0.5, temperature=2.0, chunk_size=args.chunk_size)  # forward KL, mean of logits

    def step():
        hidden.grad = weight.grad = None
        if args.method == "unchunked":
            out = blended_kd_loss(hidden @ weight.T, target, labels, config)  # (B, T, H) @ (H, V) -> (B, T, V)
        else:
            out = chunked_kd_loss(hidden, weight, None, labels, target, config)
        out.loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out.loss.item()

    loss = step()  # warm-up (allocator, kernels); its peak is not counted
    hidden.grad = weight.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
        how = "torch.cuda.max_memory_allocated"
    elif Path("/proc/self/clear_refs").exists():
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current resident set
        base = _status_kib()["VmRSS"]
        step()
        peak = (_status_kib()["VmHWM"] - base) * 1024
        how = "VmHWM - VmRSS"
    else:
        import resource

        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        how = "ru_maxrss (includes inputs)"
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"method": args.method, "vocab": vocab, "peak_bytes": peak, "input_bytes": input_bytes,
            "time_s": statistics.median(times), "loss": loss, "how": how}


def _machine(device: str) -> dict:
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else (_cpu_name() or platform.processor() or "CPU")
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "device_name": name,
    }


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _markdown(results: list[dict], flat: list[dict], machine: dict, command: str, args) -> str:
    lines = [
        "## KD loss: peak memory and time, chunked vs unchunked",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']} "
        f"({machine['threads']} threads), device {machine['device']} ({machine['device_name']}).",
        "",
        f"Forward + backward of the blended loss (alpha=0.5, T=2, forward KL, {args.teachers} teachers, "
        f"mean of logits), N={args.tokens} tokens (B={args.tokens // args.seq_len} x T={args.seq_len}), "
        f"H={args.hidden}, chunk_size={args.chunk_size}. Peak = extra memory above the inputs during one "
        f"pass ({results[0]['how']}, fresh process per case); inputs = hidden states, lm_head and the "
        "teachers' logits (or hidden states + heads for `chunked+heads`). Time = median of "
        f"{args.reps} passes after a warm-up.",
        "",
        "| V | method | peak MiB | inputs MiB | peak vs unchunked | time s | time vs unchunked |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for vocab in args.vocab:
        rows = {r["method"]: r for r in results if r["vocab"] == vocab}
        ref = rows.get("unchunked")
        for method in args.methods:
            r = rows.get(method)
            if r is None:
                continue
            mem_ratio = f"{r['peak_bytes'] / ref['peak_bytes']:.3f}x" if ref else "-"
            time_ratio = f"{r['time_s'] / ref['time_s']:.2f}x" if ref else "-"
            lines.append(
                f"| {vocab} | {method} | {r['peak_bytes'] / MiB:.0f} | {r['input_bytes'] / MiB:.0f} | "
                f"{mem_ratio} | {r['time_s']:.2f} | {time_ratio} |"
            )
    lines += [
        "",
        f"The chunked peak is set by chunk_size x V (about {_per_chunk(results, args):.1f} fp32 (chunk, V) "
        "tensors alive at once, forward and backward together), not by N; the unchunked peak grows "
        f"linearly with N, so the ratio above (N = {args.tokens // args.chunk_size} chunks) grows with the batch.",
    ]
    if flat:
        lines += ["", "| N | V | method | peak MiB | inputs MiB | time s |", "|---:|---:|---|---:|---:|---:|"]
        for r in sorted(results + flat, key=lambda r: (r["vocab"], r["tokens"])):
            if r["method"] == "chunked+heads":
                lines.append(f"| {r['tokens']} | {r['vocab']} | {r['method']} | {r['peak_bytes'] / MiB:.0f} | "
                             f"{r['input_bytes'] / MiB:.0f} | {r['time_s']:.2f} |")
    return "\n".join(lines) + "\n"


def _per_chunk(results: list[dict], args) -> float:
    chunked = [r for r in results if r["method"] == "chunked"] or results
    r = max(chunked, key=lambda r: r["vocab"])
    return r["peak_bytes"] / (min(args.chunk_size, args.tokens) * r["vocab"] * 4)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[16000, 32000])
    parser.add_argument("--tokens", type=int, default=4096, help="N, tokens per batch")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--teachers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--flat-tokens", type=int, nargs="*", default=[16384],
                        help="also run chunked+heads at these N, to show its peak does not grow with N")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args(argv)
    if args.tokens % args.seq_len:
        parser.error("--tokens must be a multiple of --seq-len")
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    if args.method:  # child process: one case
        args.vocab = args.vocab[0]
        print(json.dumps(_run_case(args)))
        return 0
    results, flat = [], []
    print(f"{'N':>6} {'V':>6} {'method':<14} {'peak MiB':>9} {'inputs MiB':>10} {'time s':>7}", flush=True)
    cases = [(args.tokens, vocab, method) for vocab in args.vocab for method in args.methods]
    cases += [(tokens, vocab, "chunked+heads") for vocab in args.vocab for tokens in args.flat_tokens]
    for tokens, vocab, method in cases:
        cmd = [sys.executable, __file__, "--method", method, "--vocab", str(vocab), "--tokens", str(tokens),
               "--seq-len", str(args.seq_len), "--hidden", str(args.hidden), "--teachers", str(args.teachers),
               "--chunk-size", str(args.chunk_size), "--reps", str(args.reps), "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"case {method} N={tokens} V={vocab} failed (exit {proc.returncode})")
        r = dict(json.loads(proc.stdout.strip().splitlines()[-1]), tokens=tokens)
        (results if tokens == args.tokens else flat).append(r)
        print(f"{tokens:>6} {vocab:>6} {method:<14} {r['peak_bytes'] / MiB:>9.0f} {r['input_bytes'] / MiB:>10.0f} {r['time_s']:>7.2f}", flush=True)
    for vocab in args.vocab:
        rows = {r["method"]: r for r in results if r["vocab"] == vocab}
        if "unchunked" in rows:
            for method in ("chunked", "chunked+heads"):
                if method in rows:
                    print(f"V={vocab} {method}: peak {rows['unchunked']['peak_bytes'] / max(rows[method]['peak_bytes'], 1):.1f}x lower, "
                          f"time {rows[method]['time_s'] / rows['unchunked']['time_s']:.2f}x of unchunked")
    machine = _machine(args.device)
    command = "python bench/bench_loss_memory.py " + " ".join(argv) if argv else "python bench/bench_loss_memory.py"
    section = _markdown(results, flat, machine, command.strip(), args)
    if not args.no_write:
        from results import write_section

        write_section(SECTION, section, args.results)
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
