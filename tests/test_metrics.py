"""distill/metrics: the shipped Hugging Face ``evaluate`` modules load from their folders with the
network cut off, and compute what a hand computation gives."""
from __future__ import annotations

import configparser
import fnmatch
import math
import socket

import evaluate
import pytest

from conftest import REPO
from distill import metrics
from distill.errors import DistillError


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails loudly, and the Hugging Face libraries are told they are offline."""

    def refuse(*args, **kwargs):
        raise OSError("network used by an offline metric load")

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name, inputs", [
    ("minimal_pair_accuracy", {"good_logprobs", "bad_logprobs"}),
    ("block_perplexity", {"nll_sums", "token_counts"}),
])  # fmt: skip
def test_each_module_loads_offline_from_its_folder(no_network, name, inputs):
    module = evaluate.load(str(metrics.path(name)), keep_in_memory=True)
    assert isinstance(module, evaluate.Metric) and module.name == name
    assert set(module.features) == inputs
    assert module.description.strip() and module.citation.startswith("@article{") and "Args:" in module.inputs_description
    assert metrics.names() == ["block_perplexity", "minimal_pair_accuracy"]


def test_minimal_pair_accuracy_by_hand(no_network):
    accuracy = metrics.load("minimal_pair_accuracy")
    good = [-10.0, -12.5, -7.0, -3.0, -20.0]
    bad = [-11.0, -12.0, -7.0, -4.0, -25.0]  # right, wrong, tie (wrong), right, right
    groups = ["a", "a", "b", "c", "c"]
    got = accuracy.compute(good_logprobs=good, bad_logprobs=bad, groups=groups)
    assert got == {
        "accuracy": 3 / 5,
        "n": 5,
        "correct": 3,
        "per_group": {
            "a": {"accuracy": 0.5, "n": 2, "correct": 1},
            "b": {"accuracy": 0.0, "n": 1, "correct": 0},
            "c": {"accuracy": 1.0, "n": 2, "correct": 2},
        },
        "macro_accuracy": (0.5 + 0.0 + 1.0) / 3,
    }
    assert list(got["per_group"]) == ["a", "b", "c"]  # order of first appearance
    assert accuracy.compute(good_logprobs=good, bad_logprobs=bad) == {"accuracy": 3 / 5, "n": 5, "correct": 3}
    for g, b in zip(good, bad):  # incremental use gives the same
        accuracy.add_batch(good_logprobs=[g], bad_logprobs=[b])
    assert accuracy.compute()["correct"] == 3
    assert accuracy.compute(good_logprobs=[], bad_logprobs=[], groups=[]) == {
        "accuracy": None, "n": 0, "correct": 0, "per_group": {}, "macro_accuracy": None,
    }  # fmt: skip
    with pytest.raises(ValueError, match="groups: 1 names for 2 pairs"):
        accuracy.compute(good_logprobs=[-1.0, -2.0], bad_logprobs=[-3.0, -4.0], groups=["a"])


def test_block_perplexity_by_hand(no_network):
    ppl = metrics.load("block_perplexity")
    nll_sums, token_counts = [12.0, 3.5, 9.25], [5, 2, 4]
    loss = (12.0 + 3.5 + 9.25) / (5 + 2 + 4)
    got = ppl.compute(nll_sums=nll_sums, token_counts=token_counts)
    assert got == {"loss": pytest.approx(loss, rel=1e-15), "ppl": pytest.approx(math.exp(loss), rel=1e-15), "tokens": 11}
    assert isinstance(got["tokens"], int)
    assert ppl.compute(nll_sums=[800.0], token_counts=[1]) == {"loss": 800.0, "ppl": float("inf"), "tokens": 1}
    with pytest.raises(ValueError, match="token_counts: 0 tokens"):
        ppl.compute(nll_sums=[0.0], token_counts=[0])


def test_unknown_metric_names_the_shipped_ones():
    with pytest.raises(DistillError, match="no such metric in distill; pick one of block_perplexity, minimal_pair_accuracy"):
        metrics.load("accuracy")


def test_every_module_is_package_data():
    """A non-editable install has each module only if setup.cfg's package_data names it."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["distill"].split(",")]
    for name in metrics.names():
        assert any(fnmatch.fnmatch(f"metrics/{name}/{name}.py", p) for p in patterns), name
