"""Model cards: every model folder's README.md is a Hugging Face card that matches its distill.json,
shows its training curve and samples, and gets the evaluation's numbers in its model-index."""
from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard, ModelCardData, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from conftest import ASSETS, STUDENT_ROWS, TEACHER_ROWS
from distill import evaluate
from distill.artifacts import MODEL_FILES, ModelInfo, write_info
from distill.model_card import CARD_FILE, CURVE_FILE, add_evaluation, loss_curves, write_model_card
from distill.recipe import load_recipe
from distill.student import Student
from distill.teacher import main as teacher_main

PNG = b"\x89PNG\r\n\x1a\n"


def check_metadata(folder) -> ModelCard:
    """The card's YAML header parses, as the Hub's loader and ``metadata_load`` read it, with the
    fields a Hub model page uses (``card.validate()`` would need the network)."""
    card = ModelCard.load(folder / CARD_FILE)
    meta = metadata_load(folder / CARD_FILE)
    assert meta == card.data.to_dict()
    assert isinstance(ModelCardData(**meta), ModelCardData)
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license, data.language) == ("transformers", "text-generation", "mit", "en")
    assert {"knowledge-distillation", "babylm", "encyclopaedia-britannica-1911"} <= set(data.tags)
    if "model-index" in meta:  # the Hub's shape: what huggingface_hub reads back is what was written
        name, results = model_index_to_eval_results(meta["model-index"])
        assert name == data.model_name and results == data.eval_results
    return card


def info_of(folder) -> dict:
    return json.loads((folder / "distill.json").read_text(encoding="utf-8"))


def test_model_files_cover_the_card():
    assert CARD_FILE in MODEL_FILES and CURVE_FILE in MODEL_FILES  # write_folder replaces them as ours


@pytest.mark.slow
def test_teacher_cards_match_distill_json_and_take_the_evaluation(tiny_recipe, capsys):
    assert teacher_main([str(tiny_recipe)]) == 0
    recipe = load_recipe(tiny_recipe, [f"evaluate.blimp_dir={ASSETS / 'blimp'}"])
    folders = {t.name: recipe.paths.teacher(t.name) for t in recipe.teachers}
    for name, folder in folders.items():
        info = info_of(folder)
        card = check_metadata(folder)
        assert card.data.training_metrics == info["metrics"]  # exactly, floats included
        assert card.data.eval_results is None and "model-index" not in metadata_load(folder / CARD_FILE)
        text = card.text
        for heading in ("How it was made", "Recipe section", "Metrics", "Training curve", "Evaluation", "Sample generations"):
            assert f"\n## {heading}\n" in text or f"\n### {heading}\n" in text, heading
        assert f"# {name}\n" in text and info["corpus_manifest_sha256"] in text and info["tokenizer_sha256"] in text
        assert f"| steps | {info['metrics']['steps']} |" in text
        assert "\nLondon was" in text  # the sample, prompt included
        assert f"![train and validation loss per step]({CURVE_FILE})" in text
        assert (folder / CURVE_FILE).read_bytes().startswith(PNG)

    # A rerun that skips the teachers leaves their cards as they were.
    stamps = {name: (folder / CARD_FILE).stat().st_mtime_ns for name, folder in folders.items()}
    assert teacher_main([str(tiny_recipe)]) == 0
    assert {name: (folder / CARD_FILE).stat().st_mtime_ns for name, folder in folders.items()} == stamps

    evaluate.run(recipe)
    evaluate.run(recipe, force=True)  # a second evaluation replaces the first one's numbers
    report = json.loads((recipe.paths.report / "report.json").read_text(encoding="utf-8"))
    for name, folder in folders.items():
        card = check_metadata(folder)
        entry = report["models"][name]
        results = {r.metric_type: r for r in card.data.eval_results}
        assert len(card.data.eval_results) == 2 and card.data.model_name == name
        assert results["perplexity"].metric_value == entry["perplexity"]["val"]["ppl"] and results["perplexity"].dataset_split == "val"
        assert results["accuracy"].metric_value == entry["blimp"]["overall"]["accuracy"]
        assert card.data.training_metrics == info_of(folder)["metrics"]
        text = card.text
        assert text.count("## Evaluation") == 1 and "Not evaluated yet" not in text
        assert f"{100 * entry['blimp']['overall']['accuracy']:.1f}%" in text
        assert "## Sample generations" in text and "\nLondon was" in text  # kept through the update
    capsys.readouterr()


def test_student_save_without_a_recipe_samples_london_was(tiny_tokenizer_dir, tmp_path):
    config = {"arch": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "alpha": 1.0}
    student = Student(config, tokenizer=tiny_tokenizer_dir, seq_len=32, output_dir=tmp_path / "out")
    student.build_model()
    folder = student.save(tmp_path / "saved")
    card = check_metadata(folder)
    assert "\n## Sample generations\n" in card.text and "\nLondon was" in card.text
    assert "## Training curve" not in card.text and not (folder / CURVE_FILE).exists()  # no metrics.jsonl, no curve
    assert card.data.get("training_metrics") is None and "None recorded" in card.text
    assert student.model.training  # sampling put the model back as it was

    size = sum(p.numel() for p in student.model.parameters())
    assert json.loads((folder / "distill.json").read_text(encoding="utf-8"))["num_parameters"] == size  # as training writes it

    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in TEACHER_ROWS), encoding="utf-8")
    (folder / "runs" / "student").mkdir(parents=True)
    (folder / "runs" / "student" / "events").write_text("tracker log", encoding="utf-8")
    Student.load(folder).save(folder)  # into its own folder: its metrics.jsonl and tracker logs stay, and it now has a curve
    assert (folder / "metrics.jsonl").is_file() and (folder / CURVE_FILE).read_bytes().startswith(PNG)
    assert (folder / "runs" / "student" / "events").read_text(encoding="utf-8") == "tracker log"
    assert "## Training curve" in check_metadata(folder).text


def fake_folder(path, rows, **info) -> ModelInfo:
    """A model folder's distill.json and metrics.jsonl, without weights (the card reads only those)."""
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    model = ModelInfo(**info)
    write_info(path, model)
    return model


def test_the_curve_shows_train_and_validation_loss(tmp_path):
    series = loss_curves(STUDENT_ROWS)
    assert series["train loss (KD blend)"] == ([10.0, 20.0], [4.0, 3.6])
    assert series["train CE"] == ([10.0, 20.0], [6.2, 5.5])
    assert series["validation loss (CE)"] == ([15.0, 20.0, 40.0], [5.8, 5.6, 5.2])
    assert set(loss_curves(TEACHER_ROWS)) == {"train loss", "validation loss (CE)"}
    folder = tmp_path / "llama"
    fake_folder(folder, TEACHER_ROWS, name="llama", role="teacher", arch="llama", seq_len=32, metrics={"val_ppl": 200.3, "steps": 20})
    write_model_card(folder)
    assert (folder / CURVE_FILE).read_bytes().startswith(PNG)
    (folder / "metrics.jsonl").write_text("", encoding="utf-8")
    write_model_card(folder)  # no rows any more: no old picture outlives its data
    assert not (folder / CURVE_FILE).exists() and "## Training curve" not in (folder / CARD_FILE).read_text(encoding="utf-8")


def test_a_student_card_names_its_teachers_and_loss(tmp_path):
    folder = tmp_path / "student"
    fake_folder(folder, STUDENT_ROWS, name="student", role="student", arch="llama", seq_len=32, num_parameters=283_000,
                teachers={"llama": "/m/teachers/llama", "gpt2": None}, teacher_hashes={"llama": "a" * 64, "gpt2": "b" * 64},
                loss={"alpha": 0.5, "temperature": 2.0, "divergence": "forward_kl"}, metrics={"val_loss": 5.6, "val_ppl": 270.4})
    card = ModelCard.load(write_model_card(folder))
    text = card.text
    assert "### Teachers" in text and "a" * 64 in text and "`/m/teachers/llama`" in text and "`in memory`" in text
    assert "### Loss" in text and "| `temperature` | `2.0` |" in text and "| `divergence` | `forward_kl` |" in text
    assert "283k parameters" in text and "## Sample generations" not in text  # no model in memory, no samples


def test_add_evaluation_makes_a_card_when_there_is_none_and_skips_non_finite_numbers(tmp_path):
    folder = tmp_path / "baseline"
    fake_folder(folder, TEACHER_ROWS, name="baseline", role="baseline", arch="llama", seq_len=32, metrics={"val_ppl": 300.0})
    entry = {"perplexity": {"val": {"ppl": 301.5, "loss": 5.7, "tokens": 900}, "test": {"ppl": float("inf"), "loss": 800.0, "tokens": 900}},
             "blimp": {"overall": {"accuracy": 0.625, "n": 40, "correct": 25}}}
    add_evaluation(folder, entry, {"seq_len": 32, "blimp_dir": str(ASSETS / "blimp"), "created_utc": "2025-01-01T00:00:00Z"})
    card = check_metadata(folder)
    assert [(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results] == [("perplexity", 301.5, "val"), ("accuracy", 0.625, None)]
    assert "| val perplexity | 301.5 | 900 tokens |" in card.text and "| BLiMP accuracy | 62.5% | 40 pairs |" in card.text

    (folder / CARD_FILE).write_text("my own notes, no metadata\n", encoding="utf-8")
    add_evaluation(folder, {"perplexity": {}, "blimp": None})  # not a card: a new one, with no model-index
    card = check_metadata(folder)
    assert card.data.eval_results is None and "model-index" not in metadata_load(folder / CARD_FILE) and "my own notes" not in card.text
