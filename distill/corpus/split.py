"""Assign whole articles to train/val/test under word budgets, and write the split folder.

The splits are filled one after the other, test, val, then train, each from the articles the
earlier ones left, so test and val stay identical when only the train budget changes (a 10M and a
100M run with the same seed and val/test budgets are evaluated on the same text). Each split is
filled in two steps, deterministic for a seed:

1. first fit over the article order shuffled with ``random.Random(seed)``: an article is taken
   when it fits the split's remaining budget. This is a random sample of the corpus, but it can
   stop several percent short when the remainder gets smaller than every article left (the short
   articles were spent before the long ones came, or the budgets nearly exhaust the corpus);
2. improvement, each move kept only if it fills more: up to ``MAX_SWAPS`` swaps of a taken
   article for an unused one longer by at most the remainder (the best pair first), then one
   repack (put back the shortest taken articles until the shortest unused one fits, and refill
   that room longest first from everything unused), then swaps again. These change a few
   articles of the sample and bring the fill within a fraction of a percent whenever the
   corpus allows it (a corpus of a few dozen books may still end a few percent short).

An article that fits no split is left out, never cut; after both steps no left-out article fits
any split's remainder. Time O(n log n); each split's indices are returned in the shuffled order.
"""
from __future__ import annotations

import bisect
import hashlib
import random
from pathlib import Path
from typing import Mapping, Sequence

from distill.artifacts import file_sha256
from distill.atomic import atomic_write_json, check_folder, write_folder
from distill.corpus.clean import clean_text
from distill.corpus.dataset import check_dataset_folder, write_dataset
from distill.corpus.facts import read_facts
from distill.corpus.records import count_words, format_record, record_title, records_sha256
from distill.errors import DistillError

SPLITS = ("train", "val", "test")
FILL_ORDER = ("test", "val", "train")
SPLIT_FILES = {f"{name}.txt" for name in SPLITS} | {"manifest.json"}
RECORD_FORMAT = "one record per article: '<s> TEXT </s>\\n'; TEXT's first line is the title, paragraphs are separated by '\\n'"

MAX_SWAPS = 16  # swaps per split; in practice 2-4 already reach the best a swap can do


def split_by_word_budget(word_counts: Sequence[int], budgets: Mapping[str, int], seed: int) -> dict[str, list[int]]:
    """Article indices per split, each in the seeded shuffle order; see the module docstring for the rule.

    Guarantees: no index in two splits, every split's word total <= its budget, test and val do
    not depend on the train budget, O(n log n) time.
    """
    order = list(range(len(word_counts)))
    random.Random(seed).shuffle(order)
    position = {index: rank for rank, index in enumerate(order)}
    free = set(order)
    chosen: dict[str, list[int]] = {}
    for name in FILL_ORDER:
        taken = _fill(word_counts, order, free, int(budgets.get(name, 0)))
        free -= taken
        chosen[name] = sorted(taken, key=position.__getitem__)
    return {name: chosen[name] for name in SPLITS}


def _fill(word_counts: Sequence[int], order: list[int], free: set[int], budget: int) -> set[int]:
    """The articles of ``free`` that one split takes: first fit over ``order``, swaps, repack, swaps."""
    taken: set[int] = set()
    left = budget
    for index in order:
        if index in free and word_counts[index] <= left:
            taken.add(index)
            left -= word_counts[index]
    # From here on every unused article is longer than ``left``, and each step keeps it so.
    unused = free - taken
    left = _swap(word_counts, taken, unused, left)
    left = _repack(word_counts, taken, unused, left)
    _swap(word_counts, taken, unused, left)
    return taken


def _swap(word_counts: Sequence[int], taken: set[int], unused: set[int], left: int) -> int:
    """Exchange taken for unused articles, each time the pair that fills most of ``left``; the new remainder.

    The article put back is longer than the new remainder, because the one taken in was longer
    than the old one and the exchange shrinks the remainder by their difference.
    """
    pool = sorted((word_counts[i], i) for i in unused)
    for _ in range(MAX_SWAPS):
        if left == 0 or not pool or not taken:
            break
        best = (0, -1, -1)  # (gain, taken article, its replacement's place in pool)
        for index in taken:
            words = word_counts[index]
            at = bisect.bisect_right(pool, (words + left, len(word_counts))) - 1  # longest with length <= words + left
            if at >= 0 and pool[at][0] > words and (pool[at][0] - words, -index) > (best[0], -best[1]):
                best = (pool[at][0] - words, index, at)
        gain, out, at = best
        if gain == 0:
            break
        _, into = pool.pop(at)
        bisect.insort(pool, (word_counts[out], out))
        taken.remove(out)
        unused.add(out)
        taken.add(into)
        unused.remove(into)
        left -= gain
    return left


def _repack(word_counts: Sequence[int], taken: set[int], unused: set[int], left: int) -> int:
    """Put back the shortest taken articles until the shortest unused one fits, then refill longest first.

    This is the move swaps cannot make: one long article in for several short ones out (a split
    that spent its short articles before meeting the long ones). Kept only if it fills more;
    returns the new remainder.
    """
    if left == 0 or not unused:
        return left
    target = min(word_counts[i] for i in unused)
    room, put_back = left, []
    for index in sorted(taken, key=lambda i: (word_counts[i], i)):
        if room >= target:
            break
        put_back.append(index)
        room += word_counts[index]
    if room < target:
        return left
    refill = []
    for index in sorted([*unused, *put_back], key=lambda i: (-word_counts[i], i)):
        if word_counts[index] <= room:
            refill.append(index)
            room -= word_counts[index]
    if room >= left:
        return left
    taken.difference_update(put_back)
    unused.update(put_back)
    taken.update(refill)
    unused.difference_update(refill)
    return room


def _interleave(articles: list[str], extra: list[str], seed: int) -> list[str]:
    """``articles`` with ``extra`` inserted at seeded random positions, in one pass."""
    rng = random.Random(f"facts:{seed}")
    positions = sorted(rng.randrange(len(articles) + 1) for _ in extra)
    out: list[str] = []
    start = 0
    for position, record in zip(positions, extra):
        out.extend(articles[start:position])
        out.append(record)
        start = position
    out.extend(articles[start:])
    return out


_OUT_FIX = "give an empty folder or one a previous split wrote"


def _check_out_folder(out: Path) -> None:
    check_folder(out, SPLIT_FILES, fix=_OUT_FIX)


def _check_no_split_is_empty(
    chosen: Mapping[str, list[int]], words: Sequence[int], requested: Mapping[str, int], budgets: Mapping[str, int], fact_words: int
) -> None:
    """Refuse a split that was given a budget but got no article; a budget of 0 leaves a split empty on purpose.

    ``budgets`` are after --allow-short scaling; train's articles also leave room for ``fact_words``.
    """
    problems = []
    left = set(range(len(words)))
    for rank, name in enumerate(FILL_ORDER):
        earlier = FILL_ORDER[:rank]
        if requested[name] > 0 and not chosen[name]:
            notes = []
            if budgets[name] != requested[name]:
                notes.append(f"{requested[name]:,} scaled down by --allow-short")
            if name == "train" and fact_words:
                notes.append(f"less {fact_words:,} words of injected facts")
            budget = budgets[name] - (fact_words if name == "train" else 0)
            what = f"the budget of {budget:,} words" + (f" ({', '.join(notes)})" if notes else "")
            zero = "" if name == "train" else " or set it to 0"
            if left:
                whose = "the shortest article" if len(left) == len(words) else f"the shortest article not in {' or '.join(earlier)}"
                problems.append(f"{name}: no article fits {what} ({whose} has {min(words[i] for i in left):,}); raise --{name}-words{zero}")
            else:
                lower = " or ".join(f"--{other}-words" for other in earlier)
                problems.append(f"{name}: no article is left for {what} ({' and '.join(earlier)} took all {len(words):,}); lower {lower}{zero}")
        left -= set(chosen[name])
    if problems:
        raise DistillError("; ".join(problems))


def write_splits(
    texts: Sequence[str],
    out: str | Path,
    *,
    budgets: Mapping[str, int],
    seed: int,
    source: str,
    facts: str | Path | None = None,
    fact_repeats: int = 0,
    allow_short: bool = False,
    dataset: str | Path | None = None,
    sources: Mapping[str, str] | None = None,
) -> dict:
    """Split cleaned article texts into ``out/{train,val,test}.txt`` + ``manifest.json``.

    Everything is checked before anything is written; the folder appears complete or not at all.
    ``dataset``: also write the splits to this folder as a Hugging Face dataset
    (:mod:`distill.corpus.dataset`; ``sources`` maps titles to their source). It is written first,
    so a split folder whose manifest is current has its dataset. Returns the manifest.
    """
    out = Path(out)
    if not texts:
        raise DistillError(f"{source}: no articles to split; check the source folder or file")
    requested = {name: int(budgets.get(name, 0)) for name in SPLITS}
    if requested["train"] <= 0:
        raise DistillError(f"--train-words: {requested['train']} must be positive; give a budget such as 400k")
    if fact_repeats < 0:
        raise DistillError(f"--fact-repeats: {fact_repeats} must be 0 or more")
    _check_out_folder(out)
    if dataset is not None:
        check_dataset_folder(dataset, out)

    fact_records, fact_info = _fact_records(facts, fact_repeats)
    words = [count_words(text) for text in texts]
    budgets = _fit_budgets(requested, sum(words), allow_short, source)
    fact_words = fact_info["words"] if fact_info else 0
    article_budgets = dict(budgets)
    if fact_info:
        if fact_words >= budgets["train"]:
            raise DistillError(f"{facts}: the injected facts ({fact_words:,} words) do not fit the train budget {budgets['train']:,}; lower --fact-repeats")
        article_budgets["train"] -= fact_words

    chosen = split_by_word_budget(words, article_budgets, seed)
    _check_no_split_is_empty(chosen, words, requested, budgets, fact_words)
    split_texts = {name: [texts[i] for i in chosen[name]] for name in SPLITS}
    if fact_records:
        split_texts["train"] = _interleave(split_texts["train"], fact_records, seed)
    manifest = _split_manifest(
        texts, words, chosen, split_texts, budgets=budgets, requested=requested, seed=seed, source=source, fact_info=fact_info
    )
    if dataset is not None:
        write_dataset(dataset, split_texts, manifest, facts=fact_records, sources=sources)
    with write_folder(out, SPLIT_FILES, fix=_OUT_FIX) as tmp:
        for name in SPLITS:
            with open(tmp / f"{name}.txt", "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(format_record(text) for text in split_texts[name])
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _fact_records(facts: str | Path | None, fact_repeats: int) -> tuple[list[str], dict | None]:
    """The cleaned fact records to inject into train (each fact ``fact_repeats`` times) and their manifest entry."""
    if facts is None or fact_repeats <= 0:
        return [], None
    sentences = [clean_text(fact.fact) for fact in read_facts(facts)]
    records = [fact for fact in sentences for _ in range(fact_repeats)]
    info = {
        "file": str(facts),
        "sha256": file_sha256(facts),
        "facts": len(sentences),
        "repeats": fact_repeats,
        "records": len(records),
        "words": sum(count_words(fact) for fact in records),
    }
    return records, info


def _fit_budgets(requested: Mapping[str, int], total: int, allow_short: bool, source: str) -> dict[str, int]:
    """``requested`` when the corpus holds that many words; else scaled down to fit with ``allow_short``, refused without."""
    wanted = sum(requested.values())
    if wanted <= total:
        return dict(requested)
    if not allow_short:
        raise DistillError(
            f"{source}: the budgets ask for {wanted:,} words (train {requested['train']:,}, val {requested['val']:,}, "
            f"test {requested['test']:,}) but the corpus has {total:,}; lower the budgets or pass --allow-short to scale them down"
        )
    return {name: budget * total // wanted for name, budget in requested.items()}


def _split_manifest(
    texts: Sequence[str],
    words: Sequence[int],
    chosen: Mapping[str, list[int]],
    split_texts: Mapping[str, list[str]],
    *,
    budgets: dict[str, int],
    requested: dict[str, int],
    seed: int,
    source: str,
    fact_info: dict | None,
) -> dict:
    """``manifest.json``: the input and its hash, the budgets, and per split its counts, sha256 and titles."""
    total = sum(words)
    manifest: dict = {
        "format": RECORD_FORMAT,
        "source": source,
        "input_sha256": records_sha256(texts),
        "seed": seed,
        "budgets": budgets,
        "corpus": {"articles": len(texts), "words": total},
    }
    if budgets != requested:
        manifest["requested_budgets"] = requested
    for name in SPLITS:
        indices = chosen[name]
        body = "".join(format_record(text) for text in split_texts[name]).encode("utf-8")
        manifest[name] = {
            "articles": len(indices),
            "words": sum(words[i] for i in indices) + (fact_info["words"] if fact_info and name == "train" else 0),
            "article_words": sum(words[i] for i in indices),
            "sha256": hashlib.sha256(body).hexdigest(),
            "titles": [record_title(texts[i]) for i in indices],
        }
    used = sum(len(indices) for indices in chosen.values())
    manifest["unused"] = {"articles": len(texts) - used, "words": total - sum(manifest[n]["article_words"] for n in SPLITS)}
    manifest["facts"] = fact_info
    return manifest
