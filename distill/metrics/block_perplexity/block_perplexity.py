"""Token-weighted perplexity over blocks of text as a Hugging Face ``evaluate`` metric.

Load it from its folder, no network needed: ``evaluate.load("path/to/block_perplexity")``, or
``distill.metrics.load("block_perplexity")``.
"""
import math

import datasets
import evaluate

_DESCRIPTION = """\
Perplexity from per-block negative log-likelihoods: the NLL (natural log, summed over the tokens a
block predicts) and the number of those tokens, per block. Blocks are any disjoint parts of the
text (a fixed-length training block, a document, a batch); the result is the token-weighted mean,
loss = sum(nll_sums) / sum(token_counts), and ppl = exp(loss). Unlike the `perplexity` metric of
the Hub, it runs no model: score the blocks with your own model, cut as it was trained.
"""

_CITATION = """\
@article{jelinek1977perplexity,
  title={Perplexity---a measure of the difficulty of speech recognition tasks},
  author={Jelinek, Fred and Mercer, Robert L. and Bahl, Lalit R. and Baker, James K.},
  journal={The Journal of the Acoustical Society of America},
  volume={62},
  number={S1},
  pages={S63},
  year={1977}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    nll_sums (`list` of `float`): summed negative log-likelihood (nats) of the tokens each block predicts.
    token_counts (`list` of `int`): how many tokens each block predicts.
Returns:
    loss (`float`): mean NLL per token, in nats.
    ppl (`float`): exp(loss) (`inf` past exp's range).
    tokens (`int`): tokens predicted, all blocks together.
Examples:
    >>> metric = evaluate.load("distill/metrics/block_perplexity")
    >>> metric.compute(nll_sums=[6.0, 3.0], token_counts=[3, 3])
    {'loss': 1.5, 'ppl': 4.4816890703380645, 'tokens': 6}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BlockPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll_sums": datasets.Value("float64"), "token_counts": datasets.Value("int64")}),
        )

    def _compute(self, nll_sums, token_counts):
        tokens = sum(token_counts)
        if tokens <= 0:
            raise ValueError(f"token_counts: {tokens} tokens in all; give at least one block that predicts a token")
        loss = math.fsum(nll_sums) / tokens
        return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf"), "tokens": tokens}
