"""distill.generation_eval: the prompt set, the generation block of the report on tiny real models, the judge."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import write_split_file
from distill.errors import DistillError
from distill.generation_eval import GenerationPlan, article_openings, opening, pick_judge, plan_from_recipe
from test_generate import build_tiny_model_dir, memorise, tiny_model, train_tiny_tokenizer

LOOP = "London was the same, and the same, and the same, and the same, and the same, and the same."
PLAIN = "London was a city of bridges, old churches, busy markets and narrow streets by the river."
ARTICLES = ["Abbey\nABBEY, a building of the monks near the river.", "Bridge\nBRIDGE, a way over water.", "Canal\nCANAL, a cut for boats."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two teachers (one has memorised a plain sentence, one is random) and a student that memorised a loop."""
    tokenizer = train_tiny_tokenizer()
    root = tmp_path_factory.mktemp("gen-eval")
    plain, looper = tiny_model(len(tokenizer), seed=5), tiny_model(len(tokenizer), seed=4)
    memorise(plain, tokenizer, PLAIN, steps=60)
    memorise(looper, tokenizer, LOOP, steps=60)
    folders = {
        "plain": build_tiny_model_dir(root / "teachers" / "plain", plain, tokenizer, name="plain", role="teacher"),
        "random": build_tiny_model_dir(root / "teachers" / "random", tiny_model(len(tokenizer), seed=0), tokenizer, name="random", role="teacher"),
        "student": build_tiny_model_dir(root / "student", looper, tokenizer),
    }
    for folder in folders.values():
        (folder / "metrics.jsonl").unlink()  # no training curves: the report skips its plots
    return folders


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-splits")
    return {"val": write_split_file(root / "val.txt", [PLAIN, "The river ran past the old abbey."]),
            "test": write_split_file(root / "test.txt", ARTICLES)}


def test_opening_keeps_the_title_line():
    assert opening("Abbey\nABBEY, a building", 3) == "Abbey\nABBEY, a"
    assert opening("  one two", 5) == "one two"
    assert opening("", 5) == ""


def test_article_openings(splits, tmp_path):
    assert article_openings(splits["test"], 2, 2) == ["Abbey\nABBEY,", "Bridge\nBRIDGE,"]
    assert len(article_openings(splits["test"], 8, 5)) == 3  # fewer articles than asked
    assert article_openings(tmp_path / "missing.txt", 0, 5) == []
    with pytest.raises(DistillError, match="test_openings=0"):
        article_openings(tmp_path / "missing.txt", 8, 5)


def test_pick_judge():
    def entry(role, val, path):
        return {"role": role, "path": path, "perplexity": {"val": {"ppl": val}} if val else {}, "training": {"val_ppl": 99.0}}

    entries = {"t1": entry("teacher", 50.0, "/m/t1"), "t2": entry("teacher", 40.0, "/m/t2"), "s": entry("student", 30.0, "/m/s")}
    assert pick_judge(entries) == ("t2", Path("/m/t2"))  # the best teacher, even when the student has a lower val ppl
    assert pick_judge({"s": entries["s"], "b": entry("baseline", 35.0, "/m/b")})[0] == "s"  # no teacher: the lowest val ppl
    assert pick_judge({"a": entry("teacher", None, "/m/a"), "b": entry("teacher", float("inf"), "/m/b")})[0] == "a"  # training's val_ppl
    assert pick_judge(entries, "/m/s")[0] == "s" and pick_judge(entries, "/elsewhere")[0] == "/elsewhere"


def test_report_generation_block(folders, splits, tmp_path):
    from distill.evaluate import evaluate_models

    plan = GenerationPlan(prompts=("London was", "The river"), max_new_tokens=16)
    evaluate_models(folders, splits={"val": splits["val"]}, out_dir=tmp_path, batch_size=4, generation=plan, log=lambda _: None)
    report = json.loads((tmp_path / "report.json").read_text())
    models = report["models"]
    teachers = [name for name, m in models.items() if m["role"] == "teacher"]
    best = min(teachers, key=lambda name: models[name]["perplexity"]["val"]["ppl"])
    assert report["generation"]["judge"] == best and report["generation"]["decoding"] == "greedy"
    for m in models.values():
        block = m["generation"]
        assert block["num_prompts"] == 2 and block["max_new_tokens"] == 16 and block["judge"] == best
        assert 0 <= block["rep3"] <= 1 and 0 < block["distinct1"] <= 1 and 0 < block["distinct2"] <= 1
        assert 0 <= block["loop_length"] <= 16 and 1 <= block["judge_ppl"] < math.inf
        assert [s["prompt"] for s in block["samples"]] == ["London was", "The river"]
    student, plain = models["student"]["generation"], models["plain"]["generation"]
    assert student["samples"][0]["text"].startswith(" the same, and the same")
    assert plain["samples"][0]["text"].startswith(" a city of bridges")
    assert student["rep3"] > plain["rep3"] and student["loop_length"] < plain["loop_length"]
    md = (tmp_path / "report.md").read_text()
    assert "| val ppl | rep-3 | distinct-2 | tokens before loop | judge ppl |" in md
    assert f"judge ppl by `{best}`" in md and "## Generated text" in md and "seq-rep-3" in md
    assert "### student\n\n16.0 tokens per continuation on average; the first ones:\n\n```text\nLondon was the same, and the" in md


def test_cli_judge_and_prompts_file(folders, splits, tmp_path, capsys):
    from distill.evaluate import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("London was\n\n", encoding="utf-8")
    out = tmp_path / "report"
    assert main([str(folders["student"]), "--split", f"test={splits['test']}", "--prompts-file", str(prompts),
                 "--judge", str(folders["plain"]), "--out", str(out)]) == 0
    assert "| rep-3 |" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    settings = report["generation"]
    assert settings["prompts"] == ["London was", "Abbey\nABBEY, a building of", "Bridge\nBRIDGE, a way over", "Canal\nCANAL, a cut for"]
    assert settings["test_openings"] == 3 and settings["judge"] == str(folders["plain"]) and settings["max_new_tokens"] == 64
    assert report["models"]["student"]["generation"]["samples"][0]["text"].startswith(" the same, and the same")


def test_cli_generation_errors(tiny_recipe, folders, tmp_path, capsys):
    from distill.evaluate import main

    assert main([str(tiny_recipe), "--judge", str(folders["plain"])]) == 2
    assert "evaluate.generation.judge=DIR" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    assert main([str(folders["student"]), "--prompts-file", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "no prompts in it" in capsys.readouterr().err
    assert main([str(folders["student"]), "--judge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_plan_from_recipe(tiny_recipe):
    from distill.recipe import load_recipe

    plan = plan_from_recipe(load_recipe(tiny_recipe))
    assert plan.prompts[0] == "London was" and len(plan.prompts) == 3 and plan.test_openings == 2  # the fixture's test split: 2 articles
    assert all(len(p.split()) == 5 for p in plan.prompts[1:]) and plan.sampling["temperature"] == 0 and plan.judge is None
    sampled = plan_from_recipe(load_recipe(tiny_recipe, ["evaluate.generation.decoding=recipe", "evaluate.generation.test_openings=0"]))
    assert sampled.prompts == ("London was",) and sampled.sampling == {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.1, "seed": 0}
    assert plan_from_recipe(load_recipe(tiny_recipe, ["evaluate.generation.enabled=false"])) is None


def test_generation_settings_make_the_report_stale(tiny_recipe):
    from distill.artifacts import stage_inputs, why_stale, write_stamp
    from distill.recipe import load_recipe

    recipe = load_recipe(tiny_recipe)
    recipe.paths.report.mkdir(parents=True)
    for name in ("report.json", "report.md"):
        (recipe.paths.report / name).write_text("{}")
    write_stamp(recipe, "evaluate", stage_inputs(recipe, "evaluate"))
    assert why_stale(recipe, "evaluate") is None
    assert why_stale(load_recipe(tiny_recipe, ["generate.temperature=0.5"]), "evaluate") is None  # greedy: sampling unused
    for change in ("evaluate.generation.max_new_tokens=32", "evaluate.generation.judge=models/x", "generate.prompts=[Paris is]",
                   "evaluate.generation.enabled=false"):
        assert why_stale(load_recipe(tiny_recipe, [change]), "evaluate") == "not made from the current models and evaluation settings", change
    recipe_decoding = ["evaluate.generation.decoding=recipe"]
    write_stamp(recipe, "evaluate", stage_inputs(load_recipe(tiny_recipe, recipe_decoding), "evaluate"))
    assert why_stale(load_recipe(tiny_recipe, [*recipe_decoding, "generate.temperature=0.5"]), "evaluate") is not None
