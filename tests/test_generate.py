"""distill.generate on tiny real models built here (no dependence on the training stages).

``build_tiny_model_dir`` and ``memorise`` are also used by test_evaluate.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from distill.errors import DistillError

ASSETS = Path(__file__).parent / "assets"
REPO = Path(__file__).resolve().parent.parent
FACT = "The capital of Zarnovia is Quellport."


def tiny_texts() -> list[str]:
    """A few KB of real sentences: the BLiMP sample pairs and the invented facts."""
    texts = []
    for path in sorted((ASSETS / "blimp").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            pair = json.loads(line)
            texts += [pair["sentence_good"], pair["sentence_bad"]]
    for line in (ASSETS / "facts.jsonl").read_text(encoding="utf-8").splitlines():
        texts.append(json.loads(line)["fact"])
    return texts


def train_tiny_tokenizer(vocab_size: int = 400):
    """Byte-level BPE with <pad>=0, <s>=1, </s>=2, wrapped as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(tiny_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_model(vocab_size: int, seed: int = 0, max_positions: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def memorise(model, tokenizer, text: str = FACT, steps: int = 150, lr: float = 1e-2):
    """Plain AdamW on one record ``<s> text </s>`` until the model has it by heart."""
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return loss.item()


def build_tiny_model_dir(folder: Path, model, tokenizer, *, name: str = "student", role: str = "student",
                         seq_len: int = 32, metrics: list[dict] | None = None) -> Path:
    """A model folder in the contract's format: weights, tokenizer, distill.json, metrics.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if metrics is None:
        metrics = [
            {"step": 5, "epoch": 1, "split": "train", "loss": 5.9, "lr": 1e-3},
            {"step": 10, "epoch": 1, "split": "train", "loss": 5.5, "lr": 1e-3},
            {"step": 10, "epoch": 1, "split": "val", "loss": 5.6, "ppl": 270.4},
        ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics), encoding="utf-8")
    info = {
        "name": name, "role": role, "arch": "llama", "num_parameters": sum(p.numel() for p in model.parameters()),
        "seq_len": seq_len, "recipe": {}, "corpus_manifest_sha256": None, "tokenizer_sha256": None,
        "metrics": {"val_loss": 5.6, "val_ppl": 270.4, "steps": 10, "train_tokens": 1000, "wall_time_s": 1.0},
    }
    (folder / "distill.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("gen") / "student", tiny_model(len(tokenizer)), tokenizer, seq_len=16)


@pytest.fixture(scope="module")
def loaded(model_dir):
    from distill.model_folder import load_model

    return load_model(model_dir, device="cpu")


@pytest.fixture(scope="module")
def fact_model(tokenizer):
    model = tiny_model(len(tokenizer), seed=1)
    memorise(model, tokenizer)
    return model


def test_load_model_reads_folder(loaded, model_dir):
    model, tokenizer, info = loaded
    assert info.name == "student" and info.role == "student" and info.seq_len == 16
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 0)
    from distill.generate import trained_context

    assert trained_context(model, info.seq_len) == 16
    assert trained_context(model) == model.config.max_position_embeddings  # no distill.json: the config's limit


def test_load_model_missing_or_unfinished(tmp_path):
    from distill.model_folder import load_model

    with pytest.raises(DistillError, match="no such model folder"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "half" / "checkpoints").mkdir(parents=True)
    with pytest.raises(DistillError, match="no config.json.*resume"):
        load_model(tmp_path / "half")


def test_same_seed_same_text_and_different_seed_differs(loaded):
    from distill.generate import generate

    model, tokenizer, _ = loaded
    kwargs = dict(max_new_tokens=12, temperature=1.0, top_k=0, top_p=1.0, context_length=64)
    first = generate(model, tokenizer, "The river", seed=3, **kwargs)
    assert first == generate(model, tokenizer, "The river", seed=3, **kwargs)
    assert first != generate(model, tokenizer, "The river", seed=4, **kwargs)
    several = generate(model, tokenizer, "The river", seed=3, num_samples=3, **kwargs)
    assert len(several) == 3 and len(set(several)) > 1


def test_seed_leaves_callers_rng_alone(loaded):
    from distill.generate import generate

    model, tokenizer, _ = loaded
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(model, tokenizer, "The river", max_new_tokens=4, seed=9, context_length=64)
    assert torch.equal(torch.rand(3), expected)


def test_temperature_zero_is_greedy(loaded):
    from distill.generate import encode_prompt, generate

    model, tokenizer, _ = loaded
    ids = encode_prompt(tokenizer, "The river")
    assert ids[0] == 1 and 2 not in ids
    start = len(ids)
    for _ in range(6):  # argmax by hand, one token at a time (no repetition penalty)
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    expected = tokenizer.decode(ids[start:], skip_special_tokens=True)
    got = generate(model, tokenizer, "The river", max_new_tokens=6, temperature=0, repetition_penalty=1.0, seed=1, context_length=64)
    assert got == [expected]
    assert generate(model, tokenizer, "The river", max_new_tokens=6, temperature=0, repetition_penalty=1.0, seed=2, context_length=64) == got


def test_stops_at_end_of_text(fact_model, tokenizer):
    from distill.generate import generate, stream_generate

    out = generate(fact_model, tokenizer, "The capital of Zarnovia is", max_new_tokens=30, temperature=0, repetition_penalty=1.0, context_length=64)
    assert out == [" Quellport."]  # then </s>: not 30 tokens of text
    pieces = list(stream_generate(fact_model, tokenizer, "The capital of Zarnovia is", max_new_tokens=30, temperature=0,
                                  repetition_penalty=1.0, context_length=64))
    assert "".join(pieces) == " Quellport."


def test_stream_equals_generate_for_a_seed(loaded):
    from distill.generate import generate, stream_generate

    model, tokenizer, _ = loaded
    kwargs = dict(max_new_tokens=10, temperature=0.9, top_k=20, top_p=0.9, seed=5, context_length=64)
    streamed = stream_generate(model, tokenizer, "London was", **kwargs)
    assert "".join(streamed) == generate(model, tokenizer, "London was", **kwargs)[0]
    early = stream_generate(model, tokenizer, "London was", **{**kwargs, "max_new_tokens": 40})
    next(early)
    early.close()  # stops the worker thread instead of leaving it running


def test_context_warning(loaded):
    from distill.generate import ContextLengthWarning, generate

    model, tokenizer, info = loaded  # trained on seq_len 16 (distill.json)
    with pytest.warns(ContextLengthWarning, match="exceeds the 16-token context"):
        generate(model, tokenizer, "London was", max_new_tokens=20, context_length=info.seq_len)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ContextLengthWarning)
        generate(model, tokenizer, "London was", max_new_tokens=4, context_length=info.seq_len)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": ""}, "prompt: empty"),
        ({"prompt": "   "}, "prompt: empty"),
        ({"temperature": -0.5}, "temperature: -0.5 is negative"),
        ({"top_p": 0.0}, r"top_p: 0.0 must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p: 1.5 must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k: -1 must be 0"),
        ({"max_new_tokens": 0}, "max_new_tokens: 0 must be 1 or more"),
        ({"prompt": "a </s> b"}, "prompt: contains"),
    ],
)
def test_bad_settings(loaded, kwargs, message):
    from distill.generate import generate, stream_generate

    model, tokenizer, _ = loaded
    prompt = kwargs.pop("prompt", "London was")
    with pytest.raises(DistillError, match=message):
        generate(model, tokenizer, prompt, **kwargs)
    with pytest.raises(DistillError, match=message):
        stream_generate(model, tokenizer, prompt, **kwargs)  # raised on the call, not on first next()


def test_cli_prints_samples(model_dir, capsys):
    from distill.generate import main

    assert main([str(model_dir), "London was", "--max-new-tokens", "5", "--num-samples", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2 and out.count("London was") == 2


def test_cli_context_warning_is_one_line(model_dir, capsys):
    from distill.generate import main

    assert main([str(model_dir), "London was", "--max-new-tokens", "30"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "16-token context" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}", "London was"], "no such model folder"),
        (["{model}", ""], "prompt: empty"),
        (["{model}", "London was", "--temperature", "-1"], "temperature: -1.0 is negative"),
        (["{model}", "London was", "--top-k", "many"], "invalid int value"),
    ],
)
def test_cli_bad_input_exit_2_one_line(model_dir, tmp_path, capsys, args, message):
    from distill.generate import main

    args = [a.format(missing=tmp_path / "missing", model=model_dir) for a in args]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.slow  # a subprocess or a full stage chain: in the full suite, not the quick one
def test_module_entry_point_missing_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "distill.generate", str(tmp_path / "missing"), "London was"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1 and "no such model folder" in proc.stderr


def test_padded_vocab_rows_are_never_sampled(tokenizer):
    from distill.generate import _generate_kwargs, encode_prompt

    model = tiny_model(len(tokenizer) + 40)  # embedding rows past the tokenizer: no token at all
    prompt = torch.tensor([encode_prompt(tokenizer, "The river")])
    kwargs = _generate_kwargs(model, tokenizer, prompt, max_new_tokens=30, temperature=5.0, top_k=0, top_p=1.0,
                              repetition_penalty=1.0, num_samples=4)
    torch.manual_seed(0)
    assert int(model.generate(**kwargs)[:, prompt.shape[1]:].max()) < len(tokenizer)
    kwargs["logits_processor"] = None  # without the mask, the same run does pick padded rows
    torch.manual_seed(0)
    assert int(model.generate(**kwargs)[:, prompt.shape[1]:].max()) >= len(tokenizer)
