"""Minimal-pair accuracy (BLiMP-style) as a Hugging Face ``evaluate`` metric.

Load it from its folder, no network needed: ``evaluate.load("path/to/minimal_pair_accuracy")``, or
``distill.metrics.load("minimal_pair_accuracy")``.
"""
import datasets
import evaluate

_DESCRIPTION = """\
Minimal-pair accuracy: the share of pairs whose acceptable ("good") sentence a language model gives
a strictly higher log-probability than the unacceptable ("bad") one, as in BLiMP. The model scoring
is yours: give one summed log-probability per sentence (any base, any tokenisation, as long as both
sentences of a pair are scored alike). A tie counts as wrong. With `groups` (e.g. the BLiMP file or
phenomenon of each pair) it also gives the accuracy per group and the mean over groups.
"""

_CITATION = """\
@article{warstadt2020blimp,
  title={BLiMP: The Benchmark of Linguistic Minimal Pairs for English},
  author={Warstadt, Alex and Parrish, Alicia and Liu, Haokun and Mohananey, Anhad and Peng, Wei and Wang, Sheng-Fu and Bowman, Samuel R.},
  journal={Transactions of the Association for Computational Linguistics},
  volume={8},
  pages={377--392},
  year={2020}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    good_logprobs (`list` of `float`): log-probability of each pair's acceptable sentence.
    bad_logprobs (`list` of `float`): log-probability of each pair's unacceptable sentence.
    groups (`list` of `str`, optional): a group name per pair (e.g. the BLiMP file it came from).
Returns:
    accuracy (`float` or `None`): correct / n (`None` when there are no pairs).
    n (`int`): number of pairs.
    correct (`int`): pairs whose good sentence scored strictly higher.
    per_group (`dict`, with `groups`): {group: {"accuracy", "n", "correct"}}, in order of first appearance.
    macro_accuracy (`float`, with `groups`): the mean of the per-group accuracies.
Examples:
    >>> metric = evaluate.load("distill/metrics/minimal_pair_accuracy")
    >>> metric.compute(good_logprobs=[-10.0, -12.5, -7.0], bad_logprobs=[-11.0, -12.0, -7.0], groups=["a", "a", "b"])
    {'accuracy': 0.3333333333333333, 'n': 3, 'correct': 1, 'per_group': {'a': {'accuracy': 0.5, 'n': 2, 'correct': 1}, 'b': {'accuracy': 0.0, 'n': 1, 'correct': 0}}, 'macro_accuracy': 0.25}
"""


def _tally(correct: int, n: int) -> dict:
    return {"accuracy": correct / n if n else None, "n": n, "correct": correct}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MinimalPairAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"good_logprobs": datasets.Value("float64"), "bad_logprobs": datasets.Value("float64")}),
            reference_urls=["https://github.com/alexwarstadt/blimp"],
        )

    def _compute(self, good_logprobs, bad_logprobs, groups=None):
        right = [good > bad for good, bad in zip(good_logprobs, bad_logprobs)]
        result = _tally(sum(right), len(right))
        if groups is not None:
            if len(groups) != len(right):
                raise ValueError(f"groups: {len(groups)} names for {len(right)} pairs; give one group per pair")
            tallies: dict = {}
            for group, ok in zip(groups, right):
                tally = tallies.setdefault(group, [0, 0])
                tally[0] += ok
                tally[1] += 1
            result["per_group"] = {group: _tally(*tally) for group, tally in tallies.items()}
            accuracies = [t["accuracy"] for t in result["per_group"].values()]
            result["macro_accuracy"] = sum(accuracies) / len(accuracies) if accuracies else None
        return result
