"""Per-article text files to one record file, ``<s> TEXT </s>`` per article."""
from __future__ import annotations

from pathlib import Path

from distill.atomic import atomic_write
from distill.corpus.records import count_words, format_record, strip_markers
from distill.errors import DistillError

DEFAULT_SOURCE = "corpora/britannica-1911-sample"  # the shipped sample, relative to the repository root


def read_text_articles(source: str | Path) -> list[str]:
    """The texts of every ``*.txt`` in ``source``, in file-name order (input files are only read)."""
    source = Path(source)
    if not source.is_dir():
        raise DistillError(f"{source}: folder not found; give --source a folder of per-article .txt files (e.g. corpora/britannica-1911-sample, run from the repository root)")
    files = sorted(source.glob("*.txt"))
    if not files:
        raise DistillError(f"{source}: holds no .txt article files; convert raw articles into it first (python -m distill.corpus convert)")
    texts = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DistillError(f"{path}: not UTF-8 text; re-convert it or remove the file") from None
        # A record must not hold its own markers; the text is otherwise left to `clean`.
        text = strip_markers(text).strip()
        if text:
            texts.append(text)
    return texts


def combine(source: str | Path, output: str | Path) -> dict:
    """Write ``output`` with one record per article of ``source``; returns counts. ``output`` may not
    be one of the inputs, nor a ``.txt`` in ``source`` (the next run would read it as an article)."""
    source, output = Path(source), Path(output)
    if output.suffix == ".txt" and source.is_dir() and output.resolve().parent == source.resolve():
        raise DistillError(
            f"{output}: is inside --source {source}, where every .txt is an input article; "
            f"write the record file elsewhere, e.g. --out {source.parent / 'combined.txt'}"
        )
    texts = read_text_articles(source)
    with atomic_write(output) as handle:
        for text in texts:
            handle.write(format_record(text))
    return {"articles": len(texts), "words": sum(count_words(text) for text in texts)}
