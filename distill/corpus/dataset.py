"""The corpus splits as a Hugging Face dataset: one row per record of the split files, with a dataset card.

The folder (``<split folder>_dataset``, beside the split folder; :func:`dataset_folder`)::

    README.md                 dataset card: YAML metadata (license, language, task, size, configs,
                              features, splits with num_examples), then provenance and how it was split
    dataset_dict.json         }
    train/ val/ test/         } DatasetDict.save_to_disk: datasets.load_from_disk(folder)
    data/{split}.jsonl        the same rows as JSON Lines: load_dataset("json", data_files=...), and
                              load_dataset(folder), which reads the card's configs

JSON Lines rather than Parquet: any tool reads them, and the json loader gives the same rows (it
infers a column that is all null as type null; ``load_dataset(folder)`` takes the card's features).
A split without records (a budget of 0) is left out of all three: the json loader refuses an empty
file. Rows are ``title`` (null for an injected fact), ``text``, ``words``, ``source`` and ``volume``.

``source`` is known per article where the source tells it: an article converted in memory carries
the key convert gave it, and a convert output file's name ends in the hash of that key. ``volume``
is null for now: no converted article records its volume yet.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Collection, Iterable, Iterator, Mapping, Sequence

from distill.atomic import check_folder, write_folder
from distill.corpus.clean import clean_text
from distill.corpus.naming import ARTICLE_PREFIX, title_hash
from distill.corpus.records import count_words, record_title
from distill.errors import DistillError

SUFFIX = "_dataset"  # models/tiny/corpus -> models/tiny/corpus_dataset
FEATURES = {"title": "string", "text": "string", "words": "int64", "source": "string", "volume": "int64"}
# What each value of the source column means, as the card tells it.
SOURCES = {
    "gutenberg": (
        "Project Gutenberg's plain-text slices of the Encyclopaedia Britannica, 11th edition (1910-1911), cut into "
        "articles at their headwords. Kept: the title (the headword, title-cased) and the paragraphs, footnotes as "
        "paragraphs at the end, accent codes as letters, `[Greek: ...]` transliterations in Latin letters. Dropped: "
        "Project Gutenberg's header, licence and credits, transcriber's notes, the slices' article lists, page "
        "markers, illustration captions, sidenotes, ASCII tables, contributors' initials (`distill/corpus/gutenberg.py`)."
    ),
    "wikisource": (
        "WikiSource's transcription of the Encyclopaedia Britannica, 11th edition (1910-1911), the transcluded "
        "`Page:` sections joined. Kept: every word the page shows, footnotes as paragraphs at the end, table rows as "
        "lines of cell text, `<math>` as TeX. Dropped: template and link markup, running headers, contributors' "
        "initials; an article with a missing page or section is left out (`distill/corpus/wikitext.py`)."
    ),
    "eb1810": (
        "the Encyclopaedia Britannica, 4th edition (1810), article HTML from "
        "github.com/jburnford/early_encyclopedia_britannica; front and back matter, index lists, near-empty entries "
        "and cut headwords dropped (`distill/corpus/convert.py`)."
    ),
    "facts": "sentences of the facts file injected into train; invented for the fact probes, not Britannica text.",
}
# The keys convert gives articles (distill/corpus/convert.py); a WikiSource article's key is its page title.
_KEY_PREFIXES = {"eb1911-gutenberg/": "gutenberg", "eb1810/": "eb1810"}
_MAX_REPEATS = 100  # a Gutenberg key numbers the articles of one title: eb1911-gutenberg/Carloman/4
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
          (100_000_000, "10M<n<100M")]  # the Hub's size_categories, by number of rows
_ENTRIES = ("README.md", "dataset_dict.json", "data", "train", "val", "test")  # what the folder holds
_FIX = "give an empty folder or one a previous corpus build wrote"


def dataset_folder(split_folder: str | Path) -> Path:
    """Where the dataset of ``split_folder`` goes: beside it, ``corpus`` -> ``corpus_dataset``."""
    folder = Path(split_folder)
    folder = folder if folder.name else folder.resolve()
    return folder.with_name(folder.name + SUFFIX)


def source_of_key(key: str) -> str:
    """The source of an article converted in memory, from its key (``convert.Article.key``)."""
    return next((name for prefix, name in _KEY_PREFIXES.items() if key.startswith(prefix)), "wikisource")


def sources_by_title(pairs: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """``{cleaned title: source}`` from (title, source) pairs; a title two sources give is left out."""
    found: dict[str, str | None] = {}
    for title, source in pairs:
        key = record_title(clean_text(title))
        found[key] = source if found.get(key, source) == source else None
    return {title: source for title, source in found.items() if source}


def sources_of_article_files(folder: str | Path) -> dict[str, str]:
    """``{cleaned title: source}`` for the ``*.txt`` that convert wrote in ``folder``.

    A file is ``<slug>-<hash of the article's key>.txt`` and starts with the title, so the hash
    tells a WikiSource article (key: the page title) from a Gutenberg one; others are unknown.
    """
    pairs = []
    for path in sorted(Path(folder).glob("*.txt")):
        with path.open(encoding="utf-8", errors="replace") as handle:
            title = handle.readline().strip()
        digest = path.stem.rpartition("-")[2]
        if title_hash(ARTICLE_PREFIX + title) == digest or title_hash(title) == digest:
            pairs.append((title, "wikisource"))
        elif any(title_hash(f"eb1911-gutenberg/{title}/{n}") == digest for n in range(1, _MAX_REPEATS + 1)):
            pairs.append((title, "gutenberg"))
        else:
            pairs.append((title, None))
    return sources_by_title(pairs)


def check_dataset_folder(folder: str | Path, split_folder: str | Path) -> None:
    """Refuse a dataset folder that is, holds or lies in the split folder (one would replace the other),
    or that holds files a build did not write."""
    mine, split = Path(folder).resolve(), Path(split_folder).resolve()
    if mine == split or split in mine.parents or mine in split.parents:
        raise DistillError(f"{folder}: is, holds or lies in the split folder {split_folder}; give the dataset a folder beside it, e.g. {dataset_folder(split_folder)}")
    check_folder(folder, _ENTRIES, fix=_FIX)


def write_dataset(
    folder: str | Path,
    splits: Mapping[str, Sequence[str]],
    manifest: Mapping,
    *,
    facts: Collection[str] = (),
    sources: Mapping[str, str] | None = None,
) -> Path:
    """Write ``splits`` (split name -> record texts, as in the split files) to ``folder``; returns it.

    ``manifest`` is the split manifest (counts, budgets, seed, facts for the card); ``facts`` are
    the fact records injected into train; ``sources`` maps cleaned titles to their source.
    """
    # Imported here: datasets takes about a second to import, and the other corpus commands never need it.
    import datasets
    from huggingface_hub import DatasetCard

    folder = Path(folder)
    rows = {name: list(_rows(texts, set(facts) if name == "train" else set(), sources or {})) for name, texts in splits.items() if texts}
    features = datasets.Features({name: datasets.Value(dtype) for name, dtype in FEATURES.items()})
    with write_folder(folder, _ENTRIES, fix=_FIX) as tmp, _no_progress_bars(datasets):
        built = {}
        for name, split_rows in rows.items():
            table = datasets.Dataset.from_dict({column: [row[column] for row in split_rows] for column in FEATURES}, features=features, split=name)
            # The split file's hash as the fingerprint (not a random one), so a rebuild writes the same bytes.
            built[name] = datasets.Dataset(table.data, info=table.info, split=table.split, fingerprint=manifest[name]["sha256"][:16])
        datasets.DatasetDict(built).save_to_disk(str(tmp))
        (tmp / "data").mkdir()
        for name, split_rows in rows.items():
            with open(tmp / "data" / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in split_rows)
        card = DatasetCard(f"---\n{_card_data(datasets, built).to_yaml()}\n---\n\n{card_body(rows, manifest)}")
        (tmp / "README.md").write_text(str(card), encoding="utf-8", newline="\n")
    return folder


def _rows(texts: Sequence[str], facts: Collection[str], sources: Mapping[str, str]) -> Iterator[dict]:
    for text in texts:
        fact = text in facts
        title = None if fact else record_title(text)
        source = "facts" if fact else sources.get(title)
        yield {"title": title, "text": text, "words": count_words(text), "source": source, "volume": None}


@contextlib.contextmanager
def _no_progress_bars(datasets) -> Iterator[None]:
    """``save_to_disk`` without its progress bars (a local write of seconds), restored after."""
    disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not disabled:
            datasets.enable_progress_bars()


def _card_data(datasets, built: Mapping):
    """The card's YAML: what the Hub shows and what ``load_dataset(folder)`` reads (configs, features)."""
    from huggingface_hub import DatasetCardData

    total = sum(len(split) for split in built.values())
    size = next((label for limit, label in _SIZES if total < limit), "100M<n<1B")
    data = DatasetCardData(
        language=["en"],
        # The Hub's license list has no "public-domain"; "other" with license_name is its form for one.
        license="other",
        license_name="public-domain",
        task_categories=["text-generation"],
        task_ids=["language-modeling"],
        size_categories=[size],
        pretty_name="Encyclopaedia Britannica corpus splits (distill)",
        tags=["encyclopedia", "britannica", "public-domain"],
        configs=[{"config_name": "default", "data_files": [{"split": name, "path": f"data/{name}.jsonl"} for name in built]}],
    )
    info = datasets.DatasetInfo(features=next(iter(built.values())).features, splits=datasets.SplitDict())
    for name, split in built.items():
        info.splits.add(datasets.SplitInfo(name=name, num_bytes=split.data.nbytes, num_examples=len(split)))
    datasets.info.DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def card_body(rows: Mapping[str, Sequence[dict]], manifest: Mapping) -> str:
    """The card's Markdown: loading, fields, splits, provenance, how it was split, license."""
    names = list(rows)
    files = ", ".join(f'"{name}": "path/to/dataset/data/{name}.jsonl"' for name in names)
    table = ["| split | rows | articles | words | budget | sha256 of the split file |", "|---|---:|---:|---:|---:|---|"]
    for name in names:
        split = manifest[name]
        table.append(f"| {name} | {len(rows[name]):,} | {split['articles']:,} | {split['words']:,} | {manifest['budgets'][name]:,} | `{split['sha256'][:16]}` |")
    counts: dict[str | None, int] = {}
    for row in (row for split_rows in rows.values() for row in split_rows):
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    by_source = ", ".join(f"{name or 'unknown'} {count:,}" for name, count in sorted(counts.items(), key=lambda item: -item[1]))
    described = [f"* `{name}`: {SOURCES[name]}" for name in SOURCES if name in counts]
    if None in counts:
        described.append("* unknown: the article files do not tell (a record file, or files not named by `convert`).")
    corpus, unused, facts = manifest["corpus"], manifest["unused"], manifest.get("facts")
    split_how = (
        f"Articles were shuffled with `random.Random({manifest['seed']})`; test, then val, then train took them in that "
        "order while they fitted the split's word budget, then a few swaps and one repack brought each split closer to "
        f"its budget (`distill/corpus/split.py`). No article is cut: the {unused['articles']:,} articles "
        f"({unused['words']:,} words) that fitted no split are in none."
    )
    if "requested_budgets" in manifest:
        split_how += f" The budgets asked for more words than the corpus holds ({manifest['requested_budgets']}) and were scaled down to fit."
    if facts:
        split_how += (
            f" Train also holds {facts['records']:,} injected fact records ({facts['facts']:,} facts, {facts['repeats']} times each, "
            f"{facts['words']:,} words) from `{facts['file']}` (sha256 `{facts['sha256'][:16]}`), at seeded positions; "
            "they count towards its budget and their rows have source `facts` and no title."
        )
    return "\n".join([
        "# Encyclopaedia Britannica corpus splits (distill)",
        "",
        f"The train/val/test splits that `python -m distill.corpus` built from `{manifest['source']}`, one row per record "
        "of the split files `train.txt`, `val.txt`, `test.txt` (what distill trains and evaluates on), in their order.",
        "",
        "```python",
        "from datasets import load_dataset, load_from_disk",
        'splits = load_from_disk("path/to/dataset")  # the Arrow files',
        f'splits = load_dataset("json", data_files={{{files}}})',
        "```",
        "",
        "## Fields",
        "",
        "| field | meaning |",
        "|---|---|",
        "| `title` | the article's title, its first line; null for an injected fact |",
        "| `text` | the whole record: the title line, then one paragraph per line |",
        "| `words` | whitespace-separated words, as the split budgets count them |",
        f"| `source` | where the article comes from: {', '.join(f'`{name}`' for name in SOURCES)} (see Provenance); null where unknown |",
        "| `volume` | the volume of the printed edition; null where unknown (the conversion does not record it yet) |",
        "",
        "## Splits",
        "",
        *table,
        "",
        "A split's `words` counts every row; `articles` leaves out injected facts. A split with no records is left out.",
        "",
        "## Provenance",
        "",
        f"Read from `{manifest['source']}`: {corpus['articles']:,} articles, {corpus['words']:,} words (sha256 of the "
        f"cleaned records `{manifest['input_sha256'][:16]}`). Rows by source: {by_source}.",
        "",
        *described,
        "",
        "Every text was then normalised (`distill/corpus/clean.py`): Unicode NFC, straight quotes, dashes, ligatures and "
        "whitespace; nothing else is changed.",
        "",
        "## How it was split",
        "",
        split_how,
        "",
        "## License",
        "",
        "The Encyclopaedia Britannica text (the 11th edition of 1910-1911; the 4th of 1810) is in the public domain in the "
        "United States; check the rules of your own country. The conversion keeps the article text only, none of "
        "Project Gutenberg's or WikiSource's pages around it. Injected facts are not Britannica text.",
        "",
    ])
