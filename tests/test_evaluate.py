"""distill.evaluate on tiny real models: hand-computed references, a memorised fact, the CLI."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import STUDENT_ROWS, TEACHER_ROWS
from distill.errors import DistillError
from test_generate import ASSETS, FACT, REPO, build_tiny_model_dir, memorise, tiny_model, train_tiny_tokenizer

BLIMP = ASSETS / "blimp"
FACTS = ASSETS / "facts.jsonl"
SENTENCES = ["Katherine can't help herself.", "The river", "Who has Anna visited?", "A"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(len(tokenizer), seed=0)


@pytest.fixture(scope="module")
def fact_models(tokenizer):
    """The same initial weights before and after memorising FACT."""
    before = tiny_model(len(tokenizer), seed=2)
    after = tiny_model(len(tokenizer), seed=2)
    memorise(after, tokenizer)
    return before, after


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer, model, fact_models):
    root = tmp_path_factory.mktemp("eval")
    teacher = build_tiny_model_dir(root / "teachers" / "llama", fact_models[1], tokenizer, name="llama", role="teacher", metrics=TEACHER_ROWS)
    student = build_tiny_model_dir(root / "student", model, tokenizer, metrics=STUDENT_ROWS)
    return {"llama": teacher, "student": student}


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("splits")
    texts = [json.loads(line)["sentence_good"] for path in sorted(BLIMP.glob("*.jsonl")) for line in path.read_text().splitlines()]
    out = {}
    for name, part in (("val", texts[:20]), ("test", texts[20:])):
        out[name] = root / f"{name}.txt"
        out[name].write_text("".join(f"<s> {t} </s>\n" for t in part), encoding="utf-8")
    return out


def reference_logprob(model, tokenizer, sentence: str) -> float:
    """Token by token: one forward pass per prefix, log_softmax, pick the next token."""
    ids = [tokenizer.bos_token_id, *tokenizer(sentence, add_special_tokens=False)["input_ids"]]
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            logits = model(torch.tensor([ids[:t]])).logits[0, -1]
            total += torch.log_softmax(logits.double(), dim=-1)[ids[t]].item()
    return total


def test_sentence_logprob_matches_hand_computation(model, tokenizer):
    from distill.evaluate import sentence_logprob

    got = sentence_logprob(model, tokenizer, SENTENCES[:1])
    want = reference_logprob(model, tokenizer, SENTENCES[0])
    n_tokens = len(tokenizer(SENTENCES[0], add_special_tokens=False)["input_ids"])
    assert want < 0 and abs(want) > n_tokens * 0.5 * math.log(len(tokenizer))  # a near-uniform tiny model: every token scored
    assert got[0] == pytest.approx(want, abs=1e-4)


def test_batched_equals_unbatched(model, tokenizer):
    from distill.evaluate import sentence_logprob

    one = sentence_logprob(model, tokenizer, SENTENCES, batch_size=1)
    together = sentence_logprob(model, tokenizer, SENTENCES, batch_size=16)
    assert together == pytest.approx(one, abs=1e-4)
    assert together[1] == pytest.approx(reference_logprob(model, tokenizer, SENTENCES[1]), abs=1e-4)


def test_minimal_pairs_on_the_asset_folder(model, tokenizer):
    from distill.evaluate import score_minimal_pairs, sentence_logprob

    result = score_minimal_pairs(model, tokenizer, BLIMP)
    assert set(result["per_file"]) == {p.stem for p in BLIMP.glob("*.jsonl")}
    assert all(v["n"] == 10 for v in result["per_file"].values())
    assert result["per_file"]["anaphor_gender_agreement"]["field"] == "morphology"
    assert {"morphology", "syntax"} <= set(result["per_field"])
    right = 0
    for path in sorted(BLIMP.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            pair = json.loads(line)
            good, bad = sentence_logprob(model, tokenizer, [pair["sentence_good"], pair["sentence_bad"]], batch_size=1)
            right += good > bad
    assert result["overall"]["n"] == 40 and result["overall"]["correct"] == right
    assert result["overall"]["accuracy"] == pytest.approx(right / 40)


def test_memorised_fact_wins_its_minimal_pair(fact_models, tokenizer, tmp_path):
    from distill.evaluate import score_minimal_pairs

    path = tmp_path / "fact.jsonl"
    path.write_text(json.dumps({"sentence_good": FACT, "sentence_bad": "The capital of Zarnovia is Wendrick."}) + "\n")
    assert score_minimal_pairs(fact_models[1], tokenizer, path)["overall"] == {"accuracy": 1.0, "n": 1, "correct": 1, "macro_accuracy": 1.0}


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"sentence_good": "A cat.", "sentence_bad": "A cats."}', '{"sentence_bad": "A cats."}'], r"bad\.jsonl:2: no 'sentence_good'"),
        (['{"sentence_good": "A cat.", "sentence_bad": "A cats."}', "", "{not json"], r"bad\.jsonl:3: not valid JSON"),
        ([""], "no minimal pairs"),
    ],
)
def test_bad_minimal_pair_files(tmp_path, lines, message):
    from distill.evaluate import load_minimal_pairs

    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DistillError, match=message):
        load_minimal_pairs(tmp_path)


def test_empty_or_missing_blimp_folder(tmp_path):
    from distill.evaluate import load_minimal_pairs

    with pytest.raises(DistillError, match=r"no \*\.jsonl files"):
        load_minimal_pairs(tmp_path)
    with pytest.raises(DistillError, match="no such file or folder"):
        load_minimal_pairs(tmp_path / "nowhere")


def test_perplexity_is_exp_of_manual_ce_on_one_block(model, tokenizer):
    from distill.evaluate import perplexity, split_token_ids

    texts = SENTENCES[:2]
    ids = split_token_ids(tokenizer, texts)
    assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 2
    block = torch.tensor([ids])
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(model(block).logits[0, :-1], block[0, 1:]).item()
    got = perplexity(model, tokenizer, texts, seq_len=len(ids))
    assert got["tokens"] == len(ids) - 1
    assert got["loss"] == pytest.approx(ce, abs=1e-5)
    assert got["ppl"] == pytest.approx(math.exp(ce), rel=1e-5)


def test_perplexity_cuts_blocks_like_training(model, tokenizer, split_files):
    from distill.evaluate import perplexity, split_token_ids

    ids = split_token_ids(tokenizer, split_files["val"])
    texts = [json.loads(line)["sentence_good"] for p in sorted(BLIMP.glob("*.jsonl")) for line in p.read_text().splitlines()][:20]
    assert ids == split_token_ids(tokenizer, texts)  # the <s>/</s> markers become the special ids
    seq = 16
    blocks = torch.tensor(ids[: len(ids) // seq * seq]).view(-1, seq)
    with torch.no_grad():
        logits = model(blocks).logits[:, :-1]
        total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), blocks[:, 1:].reshape(-1), reduction="sum").item()
    for batch_size in (1, 3):
        got = perplexity(model, tokenizer, split_files["val"], seq_len=seq, batch_size=batch_size)
        assert got["tokens"] == len(blocks) * (seq - 1)
        assert got["loss"] == pytest.approx(total / got["tokens"], abs=1e-5)
    try:
        from distill.data import _blocks
    except ImportError:
        return
    assert [b["input_ids"] for b in _blocks(str(split_files["val"]), tokenizer, seq)] == blocks.tolist()


def test_fact_probe_rank_one_only_after_memorising(fact_models, tokenizer):
    from distill.evaluate import probe_facts

    untrained, trained = fact_models
    before, after = probe_facts(untrained, tokenizer, FACTS)[0], probe_facts(trained, tokenizer, FACTS)[0]
    assert before["answer"] == "Quellport" and "".join(before["answer_tokens"]) == " Quellport"
    assert before["rank"] > 1 and after["rank"] == 1
    assert after["logprob"] > before["logprob"]
    # The log-probability is the sum over every answer token, computed by hand here.
    probe = "The capital of Zarnovia is"
    want = reference_logprob(trained, tokenizer, probe + " Quellport") - reference_logprob(trained, tokenizer, probe)
    assert after["logprob"] == pytest.approx(want, abs=1e-4)
    others = probe_facts(trained, tokenizer, FACTS)[1:]
    assert len(others) == 2 and all(p["rank"] >= 1 for p in others)


def test_fact_file_errors(tmp_path, model, tokenizer):
    from distill.evaluate import probe_facts

    path = tmp_path / "facts.jsonl"
    path.write_text('{"fact": "x", "probe": "The capital of Zarnovia is"}\n')
    with pytest.raises(DistillError, match=r"facts\.jsonl:1: no 'answer'"):
        probe_facts(model, tokenizer, path)


def test_evaluate_models_writes_the_report(model_dirs, split_files, tmp_path):
    from distill.evaluate import evaluate_models

    out = tmp_path / "report"
    report = evaluate_models(model_dirs, splits=split_files, blimp_dir=BLIMP, facts=FACTS, out_dir=out, batch_size=4, log=lambda _: None)
    saved = json.loads((out / "report.json").read_text())
    assert saved["models"].keys() == {"llama", "student"} and saved["seq_len"] == 32
    llama = saved["models"]["llama"]
    assert llama["role"] == "teacher" and llama["perplexity"]["val"]["ppl"] > 1 and llama["blimp"]["overall"]["n"] == 40
    assert llama["facts"]["probes"][0]["rank"] == 1 and saved["models"]["student"]["facts"]["probes"][0]["rank"] > 1
    assert report["plots"] == ["plots/train_loss.png", "plots/train_ce.png", "plots/train_kl.png", "plots/val_ppl.png"]
    assert all((out / p).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in report["plots"])
    md = (out / "report.md").read_text()
    assert "| model | role | arch | params | train steps | val ppl | test ppl | BLiMP acc | fact mean rank | fact mean logprob |" in md
    assert "| llama | teacher | llama |" in md and "| student | student | llama |" in md
    assert "anaphor_gender_agreement" in md and "![" in md


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_cli_model_folders(model_dirs, split_files, tmp_path, capsys):
    from distill.evaluate import main

    out = tmp_path / "cli-report"
    args = [str(model_dirs["student"]), str(model_dirs["llama"]), "--split", f"val={split_files['val']}", "--facts", str(FACTS), "--out", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "| student | student |" in stdout and "report.md" in stdout
    assert list(json.loads((out / "report.json").read_text())["models"]) == ["student", "llama"]


def test_cli_bad_inputs_exit_2(model_dirs, split_files, tmp_path, capsys):
    from distill.evaluate import main

    out = tmp_path / "never"
    assert main([str(tmp_path / "missing"), "--split", f"val={split_files['val']}", "--out", str(out)]) == 2
    assert "no such model folder" in _one_line_error(capsys)
    bad = tmp_path / "blimp"
    bad.mkdir()
    (bad / "pairs.jsonl").write_text('{"sentence_good": "A cat.", "sentence_bad": "A cats."}\n{"sentence_bad": "Cats."}\n')
    assert main([str(model_dirs["student"]), "--blimp", str(bad), "--out", str(out)]) == 2
    assert "pairs.jsonl:2: no 'sentence_good'" in _one_line_error(capsys)
    assert main([str(model_dirs["student"]), "--split", "val", "--out", str(out)]) == 2
    assert "expected NAME=PATH" in _one_line_error(capsys)
    assert main([str(model_dirs["student"]), "--split", f"val={split_files['val']}"]) == 2
    assert "--out: missing" in _one_line_error(capsys)
    assert not out.exists()  # no partial report


def test_cli_recipe(tiny_recipe, tokenizer, model, capsys):
    from distill.evaluate import main
    from distill.recipe import load_recipe

    recipe = load_recipe(tiny_recipe)
    build_tiny_model_dir(recipe.paths.student, model, tokenizer)
    (recipe.paths.baseline / "checkpoints").mkdir(parents=True)  # unfinished: skipped
    assert main([str(tiny_recipe), f"evaluate.facts={FACTS}"]) == 0
    report = json.loads((recipe.paths.report / "report.json").read_text())
    assert list(report["models"]) == ["student"] and list(report["splits"]) == list(recipe.evaluate.splits)
    assert report["seq_len"] == recipe.data.seq_len and report["models"]["student"]["facts"]["n"] == 3
    assert "skipping" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess or a full stage chain: in the full suite, not the quick one
def test_module_entry_point_missing_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "distill.evaluate", str(tmp_path / "missing"), "--facts", str(FACTS), "--out", str(tmp_path / "r")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no such model folder" in proc.stderr


def test_padded_vocab_rows_are_sliced_off(tokenizer):
    from distill.evaluate import sentence_logprob

    padded = tiny_model(len(tokenizer) + 40)
    ids = [1, *tokenizer(SENTENCES[0], add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = padded(torch.tensor([ids])).logits[0, :-1, : len(tokenizer)]
    want = torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(ids[1:])[:, None]).sum().item()
    assert sentence_logprob(padded, tokenizer, SENTENCES[:1])[0] == pytest.approx(want, abs=1e-4)
