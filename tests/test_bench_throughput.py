"""bench/bench_student_throughput.py: the figures it reads from metrics.jsonl, issue 15's targets and
its two reports, on made-up rows (no training)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_student_throughput", REPO / "bench" / "bench_student_throughput.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _write_rows(folder, rows, info=None):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"split": "train", **row}) for row in rows] + [json.dumps({"split": "val", "step": rows[-1]["step"], "loss": 1.0})]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if info is not None:
        (folder / "distill.json").write_text(json.dumps(info))


def test_speed_leaves_out_the_first_row_and_weights_rows_by_time(tmp_path):
    _write_rows(tmp_path, [
        {"step": 2, "tokens": 1000, "tokens_per_s": 10.0, "tflops": 0.1, "mfu": 0.01, "elapsed_s": 100.0},  # warm-up: left out
        {"step": 4, "tokens": 2000, "tokens_per_s": 1000.0, "tflops": 10.0, "mfu": 0.1, "elapsed_s": 101.0},  # 1 s
        {"step": 6, "tokens": 5000, "tokens_per_s": 1000.0, "tflops": 20.0, "mfu": 0.2, "elapsed_s": 104.0},  # 3 s
    ])
    figures = bench._speed(tmp_path)
    assert figures["tokens_per_s"] == pytest.approx(1000.0)
    assert figures["tflops"] == pytest.approx((10.0 * 1 + 20.0 * 3) / 4)
    assert figures["mfu"] == pytest.approx((0.1 * 1 + 0.2 * 3) / 4)
    assert figures["steps_measured"] == 4


def test_speed_without_a_peak_has_no_mfu(tmp_path):
    _write_rows(tmp_path, [{"step": 1, "tokens": 100, "tokens_per_s": 50.0, "tflops": 0.5, "elapsed_s": 2.0}])
    figures = bench._speed(tmp_path)  # one row: it is all there is
    assert figures["tokens_per_s"] == pytest.approx(50.0) and figures["mfu"] is None and figures["tflops"] == pytest.approx(0.5)


def test_targets():
    results = {
        "none": {"tokens_per_s": 100_000.0, "mfu": 0.31},
        "cache": {"tokens_per_s": 89_000.0, "mfu": 0.2},
        "live": {"tokens_per_s": 70_000.0, "mfu": 0.2},
        "teacher-llama": {"tokens_per_s": 150_000.0, "mfu": None},
    }
    rows = {target.split(" >=")[0]: (measured, met) for target, measured, met in bench._targets(results)}
    assert rows["student without teachers"] == ("31.0% MFU", "yes")
    assert rows["student from the cache"] == ("0.89x", "no")
    assert rows["student with live teachers"][1] == "no"  # 2 x 35,834 = 71,668
    assert rows["teacher llama"][1] == "–" and "unknown" in rows["teacher llama"][0]
    assert rows["teacher gpt2"] == ("not measured", "–")


def test_report_compares_with_today_on_the_babylm_preset():
    results = [
        {"mode": "live", "tokens_per_s": 71_700.0, "mfu": 0.1, "tflops": 98.0, "wall_s": 60.0, "cache_build_s": None},
        {"mode": "teacher-gpt2", "tokens_per_s": 70_000.0, "mfu": 0.303, "tflops": 300.0, "wall_s": 80.0, "cache_build_s": None,
         "batch": "64 x 2"},
        {"mode": "none", "error": "skipped (time budget)", "wall_s": 0.0, "skipped": True},
    ]
    text = bench.report(results, preset_name="babylm", preset=bench.PRESETS["babylm"], device="cpu", command="python bench/x.py",
                        steps=30, teacher_steps=20, cache={"method": "sampled", "samples": 64, "top_k": 64}, sizes=["llama 360.0M"],
                        tokens=1000, targets=False)
    assert "| student, live teachers | 64 x 1 | 71,700 | 35,834 | 2.00x | 1.00x | 10.0% | 98 |" in text
    assert "| teacher gpt2 (own training) | 64 x 2 | 70,000 | 46,000 | 1.52x | – | 30.3% | 300 |" in text
    assert "| student, no teachers | – | skipped (time budget) |" in text
    assert "| student with live teachers >= 2x today (71,668 tokens/s) | 71,700 tokens/s (2.00x) | yes |" in text
    assert "| teacher gpt2 >= 30% MFU | 30.3% MFU | yes |" in text
    cpu = bench.report(results, preset_name="cpu", preset=bench.PRESETS["cpu"], device="cpu", command="c", steps=20, teacher_steps=10,
                       cache={"method": "sampled", "samples": 64, "top_k": 64}, sizes=[], tokens=1000, targets=False)
    assert "today" not in cpu and "targets" not in cpu


def test_run_report_maps_a_pipeline_runs_models(tmp_path):
    rows = [{"step": 10, "tokens": 1000, "tokens_per_s": 1.0, "elapsed_s": 1.0},
            {"step": 20, "tokens": 2000, "tokens_per_s": 80_000.0, "tflops": 150.0, "mfu": 0.152, "elapsed_s": 2.0}]
    _write_rows(tmp_path / "teachers" / "llama-360m", rows, {"role": "teacher", "arch": "llama", "num_parameters": 360_000_000,
                                                             "metrics": {"steps": 20, "effective_batch_size": 128, "wall_time_s": 30.0}})
    _write_rows(tmp_path / "student", rows, {"role": "student", "arch": "llama", "loss": {"logit_cache": True}, "metrics": {}})
    _write_rows(tmp_path / "baseline", rows)  # unfinished: no distill.json yet
    text = bench.run_report(tmp_path)
    assert "| llama-360m | teacher | 360.0M | 20 | 128 | 80,000 | 79,000 | 1.01x | 15.2% | 150 | 30 | – |" in text
    assert "| student | student | – | – | – | 80,000 | 63,739 | 1.26x |" in text  # from the cache
    assert "| baseline | unfinished |" in text
    assert "| teacher llama >= 30% MFU | 15.2% MFU | no |" in text
