"""The offline stages in one call: source -> (convert) -> combine -> clean -> split.

:func:`build_splits` is the library call (a source folder and budgets); :func:`run` is the corpus
stage of a recipe, what ``python -m distill.corpus all --recipe`` and the pipeline call. The stage
also writes the splits as a Hugging Face dataset beside the split folder (:mod:`distill.corpus.dataset`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from distill.corpus.clean import clean_records
from distill.corpus.combine import read_text_articles
from distill.corpus.convert import convert_source
from distill.corpus.dataset import dataset_folder, source_of_key, sources_by_title, sources_of_article_files
from distill.corpus.gutenberg_slices import gutenberg_files, is_gutenberg_file
from distill.corpus.records import iter_records, strip_markers
from distill.corpus.split import SPLITS, write_splits
from distill.counts import parse_count
from distill.errors import DistillError
from distill.folder_lock import locks_output_dir

if TYPE_CHECKING:
    from distill.recipe import Recipe


def load_source_texts(source: str | Path) -> list[str]:
    """Article texts (uncleaned) from whatever ``source`` is.

    * a folder of ``*.txt`` (``convert`` output, the shipped sample): read as they are;
    * a folder of ``*.json`` (``scrape`` output or 1810 volume files) or of Project Gutenberg
      slices (``*.txt``/``*.txt.gz``): converted in memory;
    * a record file (``combined.txt``/``cleaned.txt``): its records.
    """
    return _read_source(source)[0]


def _read_source(source: str | Path) -> tuple[list[str], dict[str, str]]:
    """:func:`load_source_texts` and the source of each (cleaned) title where ``source`` tells it."""
    source = Path(source)
    if source.is_file():
        if source.suffix == ".json":
            articles = convert_source(source).articles
            return [a.text.strip() for a in articles], sources_by_title((a.title, source_of_key(a.key)) for a in articles)
        return list(iter_records(source)), {}
    if not source.is_dir():
        slices = source.with_name("eb1911-gutenberg")
        raise DistillError(
            f"{source}: not found; build it first with python -m distill.corpus fetch-gutenberg --out {slices} --contact YOUR_EMAIL "
            f"&& python -m distill.corpus convert --source {slices} --out {source} (or a WikiSource scrape: see the recipe's header), "
            "or point --source (corpus.source in a recipe) at an existing folder such as corpora/britannica-1911-sample "
            "(relative paths start at the working directory: run from the repository root)"
        )
    slices = any(is_gutenberg_file(path) for path in gutenberg_files(source))
    if any(source.glob("*.txt")) and not slices:
        return read_text_articles(source), sources_of_article_files(source)
    if slices or any(source.glob("*.json")):
        articles = convert_source(source).articles
        return [strip_markers(a.text).strip() for a in articles], sources_by_title((a.title, source_of_key(a.key)) for a in articles)
    raise DistillError(f"{source}: holds no .txt or .json article files; point --source at the shipped sample or a scrape/convert output")


def build_splits(
    source: str | Path,
    out: str | Path,
    *,
    train_words: int | str,
    val_words: int | str = 0,
    test_words: int | str = 0,
    seed: int = 0,
    facts: str | Path | None = None,
    fact_repeats: int = 0,
    allow_short: bool = False,
    dataset: str | Path | None = None,
) -> dict:
    """Build ``out/{train,val,test}.txt`` and ``manifest.json`` from ``source``; returns the manifest.

    Budgets accept ``10_000_000``, ``"10M"``, ``"1.5M"``, ``"500k"``. ``facts`` (JSONL with a
    ``fact`` per line) are injected ``fact_repeats`` times each into train only. ``dataset``: also
    write the splits to this folder as a Hugging Face dataset. The same arguments give
    byte-identical files.
    """
    budgets = {
        name: parse_count(value, f"--{name}-words")
        for name, value in zip(SPLITS, (train_words, val_words, test_words))
    }
    if facts is not None and not Path(facts).is_file():
        raise DistillError(f"{facts}: facts file not found; give a JSONL file with one {{\"fact\": ...}} per line")
    texts, sources = _read_source(source)
    return write_splits(
        clean_records(texts),
        out,
        budgets=budgets,
        seed=int(seed),
        source=str(source),
        facts=facts,
        fact_repeats=int(fact_repeats),
        allow_short=allow_short,
        dataset=dataset,
        sources=sources,
    )


@locks_output_dir
def run(recipe: Recipe, *, force: bool = False, resume: bool = False, out: str | Path | None = None,
        allow_short: bool = False, dataset: str | Path | None = None) -> dict:
    """The recipe's corpus stage: ``corpus.source`` split under the ``corpus.*`` budgets, seed and
    facts into ``{output_dir}/corpus`` (or ``out``), and as a Hugging Face dataset into
    ``{output_dir}/corpus_dataset`` (beside ``out``, or ``dataset``); prints a one-line summary,
    returns the manifest.

    The splits are always built whole: the build is deterministic and leaves no checkpoint, so
    ``force`` and ``resume`` are taken only to match the other stages' ``run``.
    """
    corpus = recipe.corpus
    out = Path(out) if out is not None else recipe.paths.corpus
    dataset = Path(dataset) if dataset is not None else dataset_folder(out)
    try:
        # Paths as the recipe wrote them, relative to the working directory, in messages and the manifest.
        manifest = build_splits(
            _shown(corpus.source), out, train_words=corpus.train_words, val_words=corpus.val_words,
            test_words=corpus.test_words, seed=corpus.seed, facts=_shown(corpus.facts) if corpus.facts else None,
            fact_repeats=corpus.fact_repeats, allow_short=allow_short, dataset=dataset,
        )
    except DistillError as err:
        # The budget error suggests a flag of the corpus command; here the recipe holds the budgets.
        message = str(err).replace("or pass --allow-short to scale them down", "(corpus.train_words, corpus.val_words, corpus.test_words)")
        raise DistillError(message) from None
    parts = [f"{name} {manifest[name]['words']:,} words ({manifest[name]['articles']} articles)" for name in SPLITS]
    print(f"corpus: {', '.join(parts)}; dataset -> {dataset}; splits -> {out}")
    return manifest


def _shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it is under it, else as it is."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


__all__ = ["build_splits", "load_source_texts", "run"]
