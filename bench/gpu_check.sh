#!/usr/bin/env bash
# One check of speed on a GPU, for a session that has one for a few minutes (issue 15):
#
#   OUT=/some/folder bash bench/gpu_check.sh          # from the repository root; at most 9 minutes (its budget) on one H100/H200
#   GPU_CHECK_TINY=1 OUT=/tmp/gc bash bench/gpu_check.sh   # the same steps with tiny models: about 2 minutes on 2 CPU cores
#   bash bench/gpu_check.sh fetch-wheels              # on a machine with network: the wheels a bare GPU machine lacks, into .whl/
#
# Steps, each under `timeout`, each logged with its start, end and duration in $OUT/stages.log:
#   1. environment: a Python with torch, transformers, accelerate, datasets, evaluate, ... (the project's .venv
#      when it has them, else python3; packages missing there are installed from the wheels in .whl/ into
#      /tmp/distill-site, without network; else `pip install -e .` into a venv, which needs a network);
#   2. nvidia-smi and the package versions;
#   3. bench/bench_student_throughput.py on the babylm preset (student live / cache / no teachers, then each
#      teacher's own training; no new mode starts after GPU_CHECK_BENCH_BUDGET_S);
#   4. python -m distill run recipes/babylm-gpu-quick.yaml into $GPU_CHECK_WORK/quick (fresh), then the speed
#      of each of its models (bench_student_throughput.py --from-run);
#   5. what is worth keeping, into $OUT as at most 8 files (a device machine sends back no more):
#      summary.md (machine, stage times, both speed tables, the report's table), stages.log, bench.md (the
#      RESULTS.md section: `python bench/results.py bench_student_throughput-babylm $OUT/bench.md`), bench.json,
#      bench.log, quick.log, env.txt and gpu-check.tar.gz (every model's metrics.jsonl, distill.json and card, the
#      report folder, run.json, the corpus manifest: no weights, no corpus text, no cache).
# The model weights and the cache stay in $GPU_CHECK_WORK (default /tmp/gpu-check), not in $OUT.
#
# On a GPU machine without network access: run `bash bench/gpu_check.sh fetch-wheels` on one that has it, and
# bring the .whl folder (git-ignored) along with the checkout.
#
# Settings (environment): OUT (default out/gpu-check), GPU_CHECK_TINY=1, GPU_CHECK_WORK, GPU_CHECK_TOTAL_S (540:
# the whole script), GPU_CHECK_BENCH_S (180: the benchmark's timeout), GPU_CHECK_BENCH_BUDGET_S (110),
# GPU_CHECK_BENCH_ARGS (more options for the benchmark), GPU_CHECK_QUICK_ARGS (more recipe overrides),
# GPU_CHECK_SKIP (space-separated steps to skip: bench quick), PYTHON (the interpreter to use).
set -u
set -o pipefail

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)

# ---------------------------------------------------------------------------------------------- wheels
WHEELS="datasets evaluate dill multiprocess"   # what distill needs beyond a PyTorch GPU image (torch, transformers, accelerate, tokenizers, pyarrow, ...)
if [ "${1:-}" = "fetch-wheels" ]; then
    PY=${PYTHON:-$REPO/.venv/bin/python}
    [ -x "$PY" ] || PY=python3
    specs=""
    for name in $WHEELS; do
        version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null) || { echo "fetch-wheels: $name is not installed in $PY" >&2; exit 1; }
        specs="$specs $name==$version"
    done
    mkdir -p .whl
    # The GPU image's python3 is CPython 3.12 on x86-64.
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $specs || exit 1
    ls -l .whl
    exit 0
fi

# ---------------------------------------------------------------------------------------------- settings
OUT=${OUT:-$REPO/out/gpu-check}
TINY=${GPU_CHECK_TINY:-0}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
TOTAL_S=${GPU_CHECK_TOTAL_S:-540}
BENCH_S=${GPU_CHECK_BENCH_S:-180}
BENCH_BUDGET_S=${GPU_CHECK_BENCH_BUDGET_S:-110}
SKIP=" ${GPU_CHECK_SKIP:-} "
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
case "$WORK" in /|"$REPO"|"$REPO"/|"${HOME:-/}"|"") echo "GPU_CHECK_WORK=$WORK: give a scratch folder (it is emptied)" >&2; exit 2;; esac
# Only a folder this script made (it holds .gpu-check) is emptied; a user's folder is refused, untouched.
if [ -e "$WORK" ] && [ ! -e "$WORK/.gpu-check" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
    echo "GPU_CHECK_WORK=$WORK: holds files gpu_check.sh did not write; give an empty or new scratch folder" >&2; exit 2
fi
rm -rf "$WORK" && mkdir -p "$WORK/collect" && : >"$WORK/.gpu-check" || exit 2
STAGES=$OUT/stages.log
: >"$STAGES"
START=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # nothing to fetch; a device machine has no network
export HF_HOME=$WORK/hf-home   # the evaluate modules cache, per run

log() {  # a line with the wall clock and the seconds since the start, to the terminal and stages.log
    local line
    line="$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s $*"
    echo "$line" | tee -a "$STAGES"
}

left() {  # seconds left of the whole script's budget
    echo $(( TOTAL_S - ($(date +%s) - START) ))
}

stamp() {  # prefix each line (tqdm's carriage returns made lines) with the seconds since the start
    local line now unbuffered=""
    command -v stdbuf >/dev/null && unbuffered="stdbuf -o0"   # else tr holds lines back until its buffer fills
    $unbuffered tr '\r' '\n' | while IFS= read -r line; do
        printf -v now '%(%s)T' -1
        printf '+%ds %s\n' $(( now - START )) "$line"
    done
}

stage() {  # stage NAME SECONDS LOGFILE COMMAND...: run under timeout, log start / end / duration / exit code
    local name=$1 limit=$2 logfile=$3 began code
    shift 3
    began=$(date +%s)
    log "start $name (timeout ${limit}s)"
    timeout -s TERM -k 20 "$limit" "$@" 2>&1 | stamp | tee -a "$logfile" | grep -v -E 'it/s|s/it|Writing model shards'
    code=${PIPESTATUS[0]}
    log "end   $name: exit code $code after $(( $(date +%s) - began ))s$([ "$code" = 124 ] && echo ' (timed out)')"
    return "$code"
}

log "gpu_check: repo $REPO, OUT $OUT, work $WORK, tiny=$TINY, budget ${TOTAL_S}s"

# ---------------------------------------------------------------------------------------------- 1. environment
needed="import torch, transformers, accelerate, tokenizers, datasets, evaluate, yaml, safetensors, tqdm, requests, matplotlib, numpy"
has_all() { "$1" -c "$needed" >/dev/null 2>&1; }
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ] && has_all "$REPO/.venv/bin/python" \
        && { [ "$TINY" = 1 ] || "$REPO/.venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }; then
        PY=$REPO/.venv/bin/python   # a venv with a CPU-only torch is no use on the GPU: python3 then
    else
        PY=python3
    fi
fi
log "python: $PY ($("$PY" --version 2>&1))"
ready=0
has_all "$PY" && ready=1
if [ "$ready" = 0 ] && ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
    log "installing the wheels in .whl/ into /tmp/distill-site: $(cd "$REPO/.whl" && ls *.whl | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/distill-site "$REPO"/.whl/*.whl 2>&1 | tail -5
    export PYTHONPATH=/tmp/distill-site${PYTHONPATH:+:$PYTHONPATH}
    has_all "$PY" && ready=1
fi
if [ "$ready" = 0 ]; then
    # Needs a network (a device machine has none). A venv of its own: the project's .venv is left alone.
    log "still missing packages; trying python3 -m venv --system-site-packages $WORK/venv && pip install -e ."
    python3 -m venv --system-site-packages "$WORK/venv" \
        && timeout 240 "$WORK/venv/bin/pip" install -q --retries 0 --timeout 10 -e "$REPO" && PY=$WORK/venv/bin/python \
        && has_all "$PY" && ready=1
fi
if [ "$ready" = 0 ]; then
    log "FAILED: $PY cannot import everything distill needs:"
    "$PY" -c "$needed" 2>&1 | tail -3 | tee -a "$STAGES"
    echo "(on a machine without network: run 'bash bench/gpu_check.sh fetch-wheels' where there is one, and carry .whl)" | tee -a "$STAGES"
    exit 3
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}   # distill from this checkout, installed or not
log "environment ready"

# ---------------------------------------------------------------------------------------------- 2. machine
{
    echo "## nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    echo
    echo "## python"
    "$PY" - <<'EOF'
import importlib.metadata as m, platform, sys, torch
print(sys.executable, platform.python_version(), platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "", "threads", torch.get_num_threads())
for name in ("transformers", "accelerate", "tokenizers", "datasets", "evaluate", "safetensors", "numpy", "pyarrow", "triton"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "missing")
EOF
    echo
    echo "## git"
    git -C "$REPO" log --oneline -1 2>&1
    git -C "$REPO" status --short 2>&1 | head -40
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
log "machine described in env.txt"

# ---------------------------------------------------------------------------------------------- 3. benchmark
if [ "$TINY" = 1 ]; then
    bench_args=(--preset tiny --targets)
    quick_args=(corpus.train_words=100k corpus.val_words=20k corpus.test_words=20k tokenizer.vocab_size=2000
        teachers.0.hidden_size=32 teachers.0.num_layers=2 teachers.0.num_heads=2 teachers.0.intermediate_size=64
        teachers.1.hidden_size=32 teachers.1.num_layers=2 teachers.1.num_heads=2
        student.hidden_size=32 student.num_layers=2 student.num_heads=2 student.intermediate_size=64
        teachers.0.training.max_steps=6 teachers.1.training.max_steps=6 student.training.max_steps=8
        teachers.0.training.batch_size=8 teachers.1.training.batch_size=4 student.training.batch_size=8
        teachers.0.training.log_every=2 teachers.1.training.log_every=2 student.training.log_every=2
        "student.training.save_at_words=[2k, 4k]")
else
    bench_args=(--preset babylm --steps 30 --teacher-steps 20)
    quick_args=()
fi
if [[ "$SKIP" != *" bench "* ]]; then
    limit=$(( BENCH_S < $(left) - 60 ? BENCH_S : $(left) - 60 ))
    # shellcheck disable=SC2086
    stage bench "$limit" "$OUT/bench.log" "$PY" bench/bench_student_throughput.py "${bench_args[@]}" --modes live cache none teachers \
        --budget-s "$BENCH_BUDGET_S" --no-write --json "$OUT/bench.json" --section "$OUT/bench.md" ${GPU_CHECK_BENCH_ARGS:-}
fi

# ---------------------------------------------------------------------------------------------- 4. the quick recipe
if [[ "$SKIP" != *" quick "* ]]; then
    limit=$(( $(left) - 25 ))
    if [ "$limit" -lt 30 ]; then
        log "quick recipe skipped: only $(left)s left"
    else
        # shellcheck disable=SC2086
        stage quick "$limit" "$OUT/quick.log" "$PY" -m distill run recipes/babylm-gpu-quick.yaml output_dir="$WORK/quick" \
            "${quick_args[@]}" ${GPU_CHECK_QUICK_ARGS:-}
        # The pipeline's own stage lines ("[3/6] teachers ... done in 1m40s"), with the time since the start.
        grep -E '^\+[0-9]+s \[[0-9]/[0-9]\] |pipeline finished' "$OUT/quick.log" | sed 's/^/  quick: /' | tee -a "$STAGES"
        "$PY" bench/bench_student_throughput.py --from-run "$WORK/quick" --section "$WORK/collect/quick-speed.md" >/dev/null 2>&1 \
            || echo "(no model of the quick run has metrics yet)" >"$WORK/collect/quick-speed.md"
    fi
fi

# ---------------------------------------------------------------------------------------------- 5. what comes back
log "collecting into $OUT"
if [ -d "$WORK/quick" ]; then  # the small files of the run, in their folders: no weights, corpus text or cache
    (cd "$WORK" && find quick -type f \( -name 'metrics.jsonl' -o -name 'distill.json' -o -name 'README.md' -o -name 'run.json' \
        -o -name 'manifest.json' -o -name 'training_curve.png' -o -path 'quick/report/*' \) \
        -not -path '*/teacher_logits/*' -not -path '*/tokens/*' -not -path '*/checkpoints/*' -print0 \
        | tar --null -cf - --files-from=- | (cd "$WORK/collect" && tar -xf -))
fi
{
    echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) (tiny=$TINY)"
    echo
    echo '## Stages'
    echo
    echo '```'
    cat "$STAGES"
    echo '```'
    echo
    [ -s "$OUT/bench.md" ] && cat "$OUT/bench.md" && echo
    [ -s "$WORK/collect/quick-speed.md" ] && cat "$WORK/collect/quick-speed.md" && echo
    if [ -s "$WORK/quick/report/report.md" ]; then
        echo "## The quick recipe's report (table)"
        echo
        awk '/^\|/ { table = 1; print; next } table { exit }' "$WORK/quick/report/report.md"   # its first table
        echo
    fi
    echo '## Machine'
    echo
    echo '```'
    cat "$OUT/env.txt"
    echo '```'
} >"$OUT/summary.md"
cp "$OUT/summary.md" "$OUT/stages.log" "$OUT/env.txt" "$WORK/collect/" 2>/dev/null
for f in bench.md bench.json bench.log quick.log; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$WORK/collect/"; done
(cd "$WORK/collect" && tar -czf "$OUT/gpu-check.tar.gz" --exclude=gpu-check.tar.gz .)
log "done: $(ls "$OUT" | tr '\n' ' ')"
echo
sed '/^## Machine$/,$d' "$OUT/summary.md"   # the summary again, last, so a tail of the output shows it
exit 0
