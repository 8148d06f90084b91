"""``python -m distill sweep``: the grid, the statistics, and a micro sweep that resumes and reuses."""
from __future__ import annotations

import json
import math

import pytest

from conftest import write_recipe
from distill.__main__ import main
from distill.errors import DistillError
from distill.sweep import parse_grid, plan, split_values
from distill.sweep_report import mean_ci, t975
from test_pipeline import assert_png, micro_recipe


def test_values_split_on_top_level_commas_only():
    assert split_values("0.1,0.5,0.9") == ["0.1", "0.5", "0.9"]
    assert split_values("null,[1,0],[0.5, 0.5]") == ["null", "[1,0]", "[0.5, 0.5]"]
    assert split_values("2") == ["2"]


def test_grid_keeps_fixed_overrides_and_refuses_what_a_sweep_cannot_vary():
    fixed, axes = parse_grid(["student.alpha=0,0.5", "student.temperature=1,2", "output_dir=x", "student.teacher_weights=[1,0]"])
    assert fixed == ["output_dir=x", "student.teacher_weights=[1,0]"]
    assert axes == {"student.alpha": ["0", "0.5"], "student.temperature": ["1", "2"]}
    for bad, words in [("teachers[0].hidden_size=32,64", "only student.* keys vary"), ("student.training.seed=0,1", "--seeds"),
                       ("student.alpha=0.1,0.1", "distinct"), ("student.alpha", "key=value"), ("student.alpha=0.1,", "non-empty")]:
        with pytest.raises(DistillError, match=words):
            parse_grid([bad])


def test_confidence_interval_is_students_t():
    stat = mean_ci([10.0, 12.0, 14.0])
    assert stat["mean"] == 12.0 and stat["n"] == 3
    assert math.isclose(stat["ci95"], 4.303 * 2.0 / math.sqrt(3), rel_tol=1e-9)  # s = 2
    assert mean_ci([5.0])["ci95"] is None and mean_ci([])["mean"] is None
    assert t975(1) == 12.706 and t975(30) == 2.042 and 1.96 < t975(100) < 1.99


def test_plan_shares_one_baseline_per_seed_over_kd_settings(tmp_path):
    recipe = write_recipe(tmp_path / "micro.yaml", micro_recipe(tmp_path))
    sweep = plan(recipe, ["student.alpha=0.2,0.8", "student.temperature=1,2"], [0, 1])
    roles = [(job.role, job.seed) for job in sweep.jobs]
    assert roles.count(("baseline", 0)) == 1 and roles.count(("baseline", 1)) == 1 and len(roles) == 2 * (4 + 1)
    students = [job for job in sweep.jobs if job.role == "student"]
    assert len({job.folder for job in students}) == 8
    assert all(job.baseline.parent.name == f"seed-{job.seed}" for job in students)
    assert all(job.recipe.paths.teacher("llama") == tmp_path / "run" / "teachers" / "llama" for job in sweep.jobs)
    # a width change is not a KD setting: each width has its own baseline
    sweep = plan(recipe, ["student.hidden_size=32,48"], [0])
    assert [job.role for job in sweep.jobs].count("baseline") == 2


@pytest.mark.slow
def test_micro_sweep_reports_resumes_and_reuses(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path / "micro.yaml", micro_recipe(tmp_path))
    root = tmp_path / "run"
    args = ["sweep", str(recipe), "student.alpha=0.2,0.8", "--seeds", "0", "1"]

    # stop after the third model: the first ones are kept, the rest is done by the rerun
    import distill.sweep as sweep_mod

    real, calls = sweep_mod.run_job, []

    def stop_after_three(job, judge):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(job.label)
        return real(job, judge)

    monkeypatch.setattr(sweep_mod, "run_job", stop_after_three)
    assert main(args) == 130
    monkeypatch.setattr(sweep_mod, "run_job", real)
    finished = {p.parent: p.stat().st_mtime_ns for p in (root / "sweep" / "runs").glob("*/seed-*/*/distill.json")}
    assert len(finished) == 3
    assert main(args) == 0
    after = {p.parent: p.stat().st_mtime_ns for p in (root / "sweep" / "runs").glob("*/seed-*/*/distill.json")}
    assert len(after) == 6 and all(after[folder] == mtime for folder, mtime in finished.items())

    data = json.loads((root / "report" / "sweep.json").read_text(encoding="utf-8"))
    assert data["axes"] == {"student.alpha": ["0.2", "0.8"]} and data["seeds"] == [0, 1]
    assert [v["settings"] for v in data["variants"]] == [{"student.alpha": "0.2"}, {"student.alpha": "0.8"}]
    for variant in data["variants"]:
        val = variant["summary"]["val_ppl"]
        assert val["n"] == 2 and val["ci95"] > 0 and 1 < val["mean"] < 1000
        ratios = [s["val_ppl"] / b["val_ppl"] for s, b in zip(variant["seeds"], data["baselines"][0]["seeds"])]
        assert math.isclose(variant["summary"]["ratio"]["mean"], sum(ratios) / 2, rel_tol=1e-9)
        assert variant["summary"]["blimp"]["n"] == 2
    assert len(data["baselines"]) == 1 and data["baselines"][0]["summary"]["val_ppl"]["n"] == 2
    assert set(data["teachers"]) == {"llama", "gpt2"}
    table = (root / "report" / "sweep.md").read_text(encoding="utf-8")
    assert "| alpha | val ppl |" in table and "| 0.2 |" in table and "baseline (no distillation)" in table
    for plot in data["plots"]:
        assert_png(root / "report" / plot)

    # a third run trains and evaluates nothing: every result is reused
    stamp = {p: p.stat().st_mtime_ns for p in (root / "sweep").rglob("eval.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (root / "sweep").rglob("eval.json")} == stamp
    assert not list((root / "sweep").rglob("checkpoints"))


def test_an_unfinished_variant_is_resumed_from_its_checkpoint(tmp_path, monkeypatch):
    """The sweep's rerun after a stop: a variant folder with a checkpoint and no distill.json goes
    back to the student stage with resume=True (so training continues at the checkpoint's step)."""
    import distill.sweep as sweep_mod

    recipe = write_recipe(tmp_path / "micro.yaml", micro_recipe(tmp_path))
    job = next(job for job in plan(recipe, ["student.alpha=0.2,0.8"], [0]).jobs if job.role == "student")
    (job.folder / "checkpoints" / "step-3").mkdir(parents=True)
    calls = []
    monkeypatch.setattr(sweep_mod.student_stage, "run", lambda recipe, **kw: calls.append((recipe.paths.student, kw)))
    sweep_mod._train(job)
    assert calls == [(job.folder, {"only": "student", "resume": True})]


def test_a_missing_judge_is_refused_before_any_training(tmp_path):
    recipe = write_recipe(tmp_path / "micro.yaml", micro_recipe(tmp_path))
    for command in (["sweep", str(recipe), "student.alpha=0.2,0.8"], ["run", str(recipe)]):
        assert main([*command, f"evaluate.generation.judge={tmp_path / 'nowhere'}"]) == 2
        assert not (tmp_path / "run").exists()
    with pytest.raises(DistillError, match="evaluate.generation.judge: .*nowhere"):
        plan(recipe, ["student.alpha=0.2,0.8", f"evaluate.generation.judge={tmp_path / 'nowhere'}"], [0])
