"""distill.report: report.md table, report.json and training-curve PNGs from metrics rows (no models)."""
from __future__ import annotations

import json
import math

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from conftest import STUDENT_ROWS, TEACHER_ROWS
from distill.report import curves, read_metrics, render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_report() -> dict:
    def model(role, params, val, test, acc, rank):
        return {
            "path": f"models/x/{role}", "role": role, "arch": "llama", "num_parameters": params, "seq_len": 128,
            "training": {"steps": 20, "val_ppl": val},
            "perplexity": {"val": {"loss": math.log(val), "ppl": val, "tokens": 1000}, "test": {"loss": math.log(test), "ppl": test, "tokens": 900}},
            "blimp": {
                "per_file": {"anaphor_gender_agreement": {"accuracy": acc, "n": 10, "correct": round(acc * 10), "field": "morphology"}},
                "per_field": {"morphology": {"accuracy": acc, "n": 10, "correct": round(acc * 10)}},
                "per_term": {},
                "overall": {"accuracy": acc, "n": 10, "correct": round(acc * 10), "macro_accuracy": acc},
            },
            "facts": {"mean_rank": rank, "mean_logprob": -3.25, "top1": 0, "n": 1,
                      "probes": [{"fact": "F.", "probe": "The capital of Zarnovia is", "answer": "Quellport", "rank": rank, "logprob": -3.25, "answer_tokens": [" Quell", "port"]}]},
        }

    return {
        "format_version": 1, "created_utc": "2026-01-01T00:00:00Z", "seq_len": 128,
        "splits": {"val": "corpus/val.txt", "test": "corpus/test.txt"}, "blimp_dir": "tests/assets/blimp", "facts": "facts.jsonl",
        "models": {"llama": model("teacher", 1_234_567, 45.678, 47.1, 0.7, 2), "student": model("student", 98_765, 60.0, float("inf"), 0.5, 14)},
        "notes": [],
    }


def test_curves_per_metric():
    data = curves({"llama": TEACHER_ROWS, "student": STUDENT_ROWS})
    assert data["train_loss"]["llama"] == ([10, 20], [6.0, 5.0])
    assert data["train_ce"]["llama"] == ([10, 20], [6.0, 5.0])  # a teacher's loss is its CE
    assert data["train_ce"]["student"] == ([10, 20], [6.2, 5.5])
    assert list(data["train_kl"]) == ["student"]
    # Last evaluation of each epoch; a row without ppl gets exp(loss).
    assert data["val_ppl"]["student"][0] == [1, 2]
    assert data["val_ppl"]["student"][1] == pytest.approx([270.4, math.exp(5.2)])


def test_write_report_files(tmp_path, monkeypatch):
    calls = []
    original = FigureCanvasAgg.print_png

    def spy(self, *args, **kwargs):
        calls.append(type(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FigureCanvasAgg, "print_png", spy)
    report = write_report(sample_report(), tmp_path / "report", {"llama": TEACHER_ROWS, "student": STUDENT_ROWS})
    out = tmp_path / "report"
    assert report["plots"] == ["plots/train_loss.png", "plots/train_ce.png", "plots/train_kl.png", "plots/val_ppl.png"]
    assert calls == [FigureCanvasAgg] * 4  # rendered by the Agg canvas, whatever the global backend
    for plot in report["plots"]:
        data = (out / plot).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    saved = json.loads((out / "report.json").read_text())  # strict JSON: inf became null
    assert saved["models"]["student"]["perplexity"]["test"]["ppl"] is None
    assert saved["plots"] == report["plots"]
    md = (out / "report.md").read_text()
    assert "| model | role | arch | params | train steps | val ppl | test ppl | BLiMP acc | fact mean rank | fact mean logprob |" in md
    assert "| llama | teacher | llama | 1.23M | 20 | 45.68 | 47.10 | 70.0% (n=10) | 2.0 | -3.25 |" in md
    assert "| student | student | llama | 98.8k | 20 | 60.00 | – | 50.0% (n=10) | 14.0 | -3.25 |" in md
    assert "| anaphor_gender_agreement | 10 | 70.0% | 50.0% |" in md
    assert "| The capital of Zarnovia is → Quellport | 2 (-3.25) | 14 (-3.25) |" in md
    assert "![validation perplexity (CE only)](plots/val_ppl.png)" in md
    assert not list(out.rglob("*.tmp"))


def test_stale_plot_removed_and_no_metrics_no_plots(tmp_path):
    out = tmp_path / "r"
    write_report(sample_report(), out, {"student": STUDENT_ROWS})
    assert (out / "plots" / "train_kl.png").is_file()
    report = write_report(sample_report(), out, {"llama": TEACHER_ROWS})
    assert "plots/train_kl.png" not in report["plots"] and not (out / "plots" / "train_kl.png").exists()
    report = write_report(sample_report(), out, {})
    assert report["plots"] == [] and "## Training curves" not in (out / "report.md").read_text()


def test_read_metrics_skips_a_half_written_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(TEACHER_ROWS[0]) + "\n\n" + '{"step": 20, "ep')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl:3: not valid JSON"):
        assert read_metrics(tmp_path) == [TEACHER_ROWS[0]]
    assert read_metrics(tmp_path / "nothing") == []


def test_markdown_without_blimp_or_facts():
    report = sample_report()
    for model in report["models"].values():
        model["blimp"] = model["facts"] = None
    md = render_markdown(report)
    assert "| model | role | arch | params | train steps | val ppl | test ppl |\n" in md
    assert "Minimal pairs" not in md and "Fact probes" not in md
