"""``python -m distill.corpus {scrape,fetch-gutenberg,convert,combine,clean,split,all}``: the corpus stages.

    python -m distill.corpus scrape --out data/raw --contact you@example.org --limit 100
    python -m distill.corpus fetch-gutenberg --out corpora/eb1911-gutenberg --contact you@example.org --volumes 2-5
    python -m distill.corpus convert --source data/raw --out data/text
    python -m distill.corpus combine --source data/text --out data/combined.txt
    python -m distill.corpus clean --input data/combined.txt --out data/cleaned.txt
    python -m distill.corpus split --input data/cleaned.txt --out data/splits --train-words 10M --val-words 1M
    python -m distill.corpus all --source corpora/britannica-1911-sample --out OUT --train-words 400k --val-words 40k --test-words 40k
    python -m distill.corpus all --recipe recipes/tiny.yaml output_dir=models/try
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from distill.cli import ArgumentParser
from distill.corpus import build
from distill.corpus.clean import clean_file
from distill.corpus.combine import DEFAULT_SOURCE, combine
from distill.corpus.convert import convert
from distill.corpus.dataset import SUFFIX
from distill.corpus.gutenberg_fetch import fetch_gutenberg
from distill.corpus.polite_get import check_base_url, check_timeout
from distill.corpus.records import read_split
from distill.corpus.scrape import printable, scrape
from distill.corpus.split import SPLITS, write_splits
from distill.counts import parse_count
from distill.errors import DistillError, cli_entry
from distill.recipe import Recipe, load_recipe

EXIT_CTRL_C = 130  # 128 + SIGINT


def _int_arg(value: str) -> int:
    """A count argument (``20``, ``10_000``, ``5k``) through the one count parser."""
    try:
        return parse_count(value, "value")
    except DistillError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _path_arg(value: str) -> str:
    """A file or folder argument; an empty one would silently mean the working directory."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty; give a file or folder path")
    return value


def _url_arg(example: str):
    """A ``--base-url`` argument: an http(s) address with a host, checked before anything is fetched."""

    def url(value: str) -> str:
        try:
            return check_base_url(value, example)
        except DistillError as err:
            raise argparse.ArgumentTypeError(str(err).partition(": ")[2]) from None

    return url


def _seconds_arg(value: str) -> float:
    """A ``--timeout`` argument: seconds above 0 (0 would make every request fail at once)."""
    try:
        return check_timeout(float(value))
    except (ValueError, DistillError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0; give e.g. 30") from None


def _add_budget_args(parser: ArgumentParser, required: bool) -> None:
    parser.add_argument("--train-words", required=required, help="train word budget: 10_000_000, 10M, 1.5M, 500k")
    parser.add_argument("--val-words", help="validation word budget (default 0)")
    parser.add_argument("--test-words", help="test word budget (default 0)")
    parser.add_argument("--seed", type=_int_arg, help="seed of the article shuffle (default 0)")
    parser.add_argument("--facts", help="JSONL of {\"fact\": ...} sentences to inject into train")
    parser.add_argument("--fact-repeats", type=_int_arg, help="how many times each fact is injected (default 0)")
    parser.add_argument("--allow-short", action="store_true", help="when the corpus is smaller than the budgets, scale them down instead of failing")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m distill.corpus", description="Build the Britannica corpus: scrape, convert, combine, clean, split.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{scrape,fetch-gutenberg,convert,combine,clean,split,all}")

    p = sub.add_parser("scrape", help="fetch 1911 Britannica articles from WikiSource (resumable)", description="Fetch 1911 Britannica articles through the MediaWiki API into one JSON per article; a rerun skips stored articles.")
    p.add_argument("--out", type=_path_arg, required=True, help="folder for the article JSON files")
    p.add_argument("--base-url", type=_url_arg("https://en.wikisource.org"), default="https://en.wikisource.org", help="MediaWiki site (default https://en.wikisource.org)")
    p.add_argument("--limit", type=_int_arg, help="only the first N articles of the listing")
    p.add_argument("--volume", type=_int_arg, help="only articles of this volume (1-29)")
    p.add_argument("--concurrency", type=_int_arg, default=2, help="requests in flight at once (default 2)")
    p.add_argument("--delay", type=float, default=1.0, help="seconds between request starts (default 1.0)")
    p.add_argument("--retries", type=_int_arg, default=5, help="retries of a failed request (default 5)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait in seconds, doubled each time, unless Retry-After says otherwise (default 1.0)")
    p.add_argument("--timeout", type=_seconds_arg, default=30.0, help="seconds to wait for an answer (default 30)")
    p.add_argument("--batch-size", type=_int_arg, default=20, help="articles per API request, at most 50 (default 20)")
    p.add_argument("--contact", default=None, help="your e-mail address or project page, sent in the User-Agent (required for Wikimedia sites)")

    p = sub.add_parser("fetch-gutenberg", help="download the 1911 Britannica slices from Project Gutenberg (resumable)", description="Download the 1911 Britannica slices by the Project Gutenberg ebook ids shipped with distill (or copy them from a local folder) as gzipped UTF-8 plus MANIFEST.tsv; a rerun skips verified files.")
    p.add_argument("--out", type=_path_arg, required=True, help="folder for the volume-VV-slice-SS.txt.gz files and MANIFEST.tsv")
    p.add_argument("--from-dir", type=_path_arg, default=None, help="copy from this local folder (top level and one folder down) instead of downloading; every file must match the shipped sha256")
    p.add_argument("--volumes", default=None, help="only these volumes: 2,3 or 2-5 or 2,4-6 (default all: 2-17)")
    p.add_argument("--limit", type=_int_arg, help="only the first N texts of the selection")
    p.add_argument("--base-url", type=_url_arg("https://www.gutenberg.org or a mirror's address"), default="https://www.gutenberg.org", help="Project Gutenberg site or mirror (default https://www.gutenberg.org; PG asks automated downloads to use a mirror)")
    p.add_argument("--contact", default=None, help="your e-mail address or project page, sent in the User-Agent")
    p.add_argument("--delay", type=float, default=1.0, help="seconds between request starts (default 1.0)")
    p.add_argument("--retries", type=_int_arg, default=5, help="retries of a failed request (default 5)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait in seconds, doubled each time, unless Retry-After says otherwise (default 1.0)")
    p.add_argument("--timeout", type=_seconds_arg, default=30.0, help="seconds to wait for an answer (default 30)")

    p = sub.add_parser("convert", help="raw articles to one .txt per article", description="Convert scraped article JSON, Project Gutenberg 1911 slices (.txt/.txt.gz) or the 1810 volume files into one .txt per article: title line, then the body.")
    p.add_argument("--source", type=_path_arg, required=True, action="append", help="folder (or file) of scraped .json articles, Gutenberg slices or 1810 vol*.json files; repeat it to combine sources (an article an earlier source gave is kept once)")
    p.add_argument("--out", type=_path_arg, required=True, help="folder for the .txt files; a rerun replaces or removes only the files convert wrote there (listed in .distill-convert.json), leaves other files alone and refuses to overwrite one")
    p.add_argument("--format", default="auto", choices=["auto", "wikisource", "eb1810", "gutenberg"], help="input form (default: detected per file)")
    p.add_argument("--min-words", type=_int_arg, default=20, help="drop articles with fewer body words (default 20)")
    p.add_argument("--max-words", type=_int_arg, help="drop articles with more body words")
    p.add_argument("--max-bytes", type=_int_arg, help="keep a deterministic spread of whole articles totalling at most this many bytes")
    p.add_argument("--keep-incomplete", action="store_true", help="keep WikiSource articles whose pages or sections are missing (cut short or running into the next article); listed under 'incomplete' either way")

    p = sub.add_parser("combine", help="per-article .txt files to one record file", description="Write one '<s> TEXT </s>' record per article file; the inputs are not modified.")
    p.add_argument("--source", type=_path_arg, default=DEFAULT_SOURCE, help=f"folder of per-article .txt files (default {DEFAULT_SOURCE})")
    p.add_argument("--out", type=_path_arg, required=True, help="record file to write, outside --source, e.g. combined.txt")

    p = sub.add_parser("clean", help="normalise quotes, dashes, whitespace (idempotent)", description="Normalise every record of a record file: Unicode NFC, quotes, dashes, ligatures, whitespace.")
    p.add_argument("--input", type=_path_arg, required=True, help="record file, e.g. combined.txt")
    p.add_argument("--out", type=_path_arg, required=True, help="record file to write, e.g. cleaned.txt")

    p = sub.add_parser("split", help="train/val/test under word budgets", description="Assign whole articles of a record file to train/val/test under word budgets; writes manifest.json.")
    p.add_argument("--input", type=_path_arg, required=True, help="record file, e.g. cleaned.txt")
    p.add_argument("--out", type=_path_arg, required=True, help="folder for train.txt, val.txt, test.txt, manifest.json")
    _add_budget_args(p, required=True)
    p.add_argument("--dataset", type=_path_arg, help=f"also write the splits to this folder as a Hugging Face dataset (load_from_disk, JSON Lines, dataset card), e.g. OUT{SUFFIX}")

    p = sub.add_parser("all", help="every offline stage: source -> splits", description="Run the offline stages the source needs (convert, combine, clean, split) and write the split folder. With --recipe the corpus: section gives the settings (checked as every command checks a recipe), key=value overrides change them and the flags win over both.")
    p.add_argument("--recipe", type=_path_arg, help="recipe YAML whose corpus: section gives source, budgets, seed, facts; output goes to {output_dir}/corpus")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="recipe overrides after --recipe, e.g. output_dir=models/try corpus.seed=1")
    p.add_argument("--source", type=_path_arg, help=f"folder of per-article .txt or scraped .json files (default {DEFAULT_SOURCE})")
    p.add_argument("--out", type=_path_arg, help="split folder (default with --recipe: {output_dir}/corpus)")
    _add_budget_args(p, required=False)
    p.add_argument("--dataset", type=_path_arg, help=f"also write the splits to this folder as a Hugging Face dataset (load_from_disk, JSON Lines, dataset card); with --recipe it is always written, by default beside the split folder: {{output_dir}}/corpus{SUFFIX}")
    return parser


def _print(summary: dict) -> None:
    print(json.dumps(summary, ensure_ascii=False))


def _split_summary(manifest: dict, out: str | Path, dataset: str | None = None) -> dict:
    summary = {"out": str(out), "corpus_words": manifest["corpus"]["words"], "budgets": manifest["budgets"]}
    if dataset is not None:
        summary["dataset"] = dataset
    for name in ("train", "val", "test"):
        summary[name] = {"articles": manifest[name]["articles"], "words": manifest[name]["words"]}
    if "requested_budgets" in manifest:
        summary["requested_budgets"] = manifest["requested_budgets"]
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``all``'s ``key=value`` overrides taken wherever they stand."""
    parser = build_parser()
    # Subcommands rule out parse_intermixed_args: overrides after an option come back as extras.
    args, extras = parser.parse_known_args(argv)
    if extras and args.command == "all" and all("=" in extra and not extra.startswith("-") for extra in extras):
        args.overrides += extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _interrupted(what: str, out: str) -> int:
    """Ctrl-C during a download: one line on what is kept, exit 130 (128 + SIGINT, as a shell reports it)."""
    print(f"interrupted: {what} stored in {out} by this run are whole and kept; run the same command again to go on", file=sys.stderr)
    return EXIT_CTRL_C


def _scrape(args: argparse.Namespace) -> int | None:
    stored = 0

    def report(title: str, path: Path) -> None:
        nonlocal stored
        stored += 1
        print(f"[{stored}] {printable(title)}", file=sys.stderr)

    try:
        result = scrape(
            args.out, base_url=args.base_url, limit=args.limit, volume=args.volume, concurrency=args.concurrency,
            delay=args.delay, retries=args.retries, backoff=args.backoff, timeout=args.timeout,
            batch_size=args.batch_size, contact=args.contact, progress=report,
        )
    except KeyboardInterrupt:
        return _interrupted(f"the {stored} articles", args.out)
    _print(result.as_dict())
    return None


def _fetch_gutenberg(args: argparse.Namespace) -> int | None:
    stored = 0

    def report_file(index: int, total: int, entry, status: str) -> None:
        nonlocal stored
        stored += status.startswith(("fetched", "copied"))
        print(f"[{index}/{total}] {entry.file} {status}", file=sys.stderr)

    try:
        summary = fetch_gutenberg(
            args.out, base_url=args.base_url, from_dir=args.from_dir, volumes=args.volumes, limit=args.limit, contact=args.contact,
            retries=args.retries, backoff=args.backoff, timeout=args.timeout, delay=args.delay, progress=report_file,
        )
    except KeyboardInterrupt:
        return _interrupted(f"the {stored} texts", args.out)
    if summary["checksum_mismatch"]:
        print(f"warning: {len(summary['checksum_mismatch'])} downloaded texts differ from the shipped sha256 (Project Gutenberg "
              "regenerates headers; see the checksum column of MANIFEST.tsv): " + ", ".join(summary["checksum_mismatch"]), file=sys.stderr)
    _print(summary)
    return None


def _convert(args: argparse.Namespace) -> None:
    _print(convert(args.source, args.out, args.format, min_words=args.min_words, max_words=args.max_words, max_bytes=args.max_bytes, keep_incomplete=args.keep_incomplete))


def _combine(args: argparse.Namespace) -> None:
    _print(combine(args.source, args.out))


def _clean(args: argparse.Namespace) -> None:
    _print(clean_file(args.input, args.out))


def _split(args: argparse.Namespace) -> None:
    budgets = {name: parse_count(getattr(args, f"{name}_words") or 0, f"--{name}-words") for name in SPLITS}
    texts = read_split(args.input)
    manifest = write_splits(
        texts, args.out, budgets=budgets, seed=args.seed or 0, source=str(args.input),
        facts=args.facts, fact_repeats=args.fact_repeats or 0, allow_short=args.allow_short, dataset=args.dataset,
    )
    _print(_split_summary(manifest, args.out, args.dataset))


def _all(args: argparse.Namespace) -> None:
    if args.recipe:
        build.run(_with_flags(load_recipe(args.recipe, args.overrides), args), out=args.out, allow_short=args.allow_short, dataset=args.dataset)
        return
    if args.overrides:
        raise DistillError(f"{' '.join(args.overrides)}: key=value overrides change a recipe; give it with --recipe RECIPE.yaml")
    if args.out is None:
        raise DistillError("--out is required without --recipe; give the split folder, e.g. --out models/my-run/corpus")
    if args.train_words is None:
        raise DistillError("--train-words is required without --recipe; give a budget such as 400k or 10M")

    def pick(name: str, default):
        """The command-line value, else the default."""
        value = getattr(args, name)
        return default if value is None else value

    manifest = build.build_splits(
        args.source or DEFAULT_SOURCE, args.out, train_words=args.train_words, val_words=pick("val_words", 0),
        test_words=pick("test_words", 0), seed=pick("seed", 0), facts=pick("facts", None),
        fact_repeats=pick("fact_repeats", 0), allow_short=args.allow_short, dataset=args.dataset,
    )
    _print(_split_summary(manifest, args.out, args.dataset))


def _with_flags(recipe: Recipe, args: argparse.Namespace) -> Recipe:
    """The recipe with its ``corpus:`` values replaced by the flags given on the command line."""
    changes: dict = {}
    for name in ("source", "facts"):
        if getattr(args, name) is not None:
            changes[name] = (Path.cwd() / Path(getattr(args, name)).expanduser()).resolve()
    for name in ("train_words", "val_words", "test_words"):
        if getattr(args, name) is not None:
            changes[name] = parse_count(getattr(args, name), f"--{name.replace('_', '-')}")
    for name in ("seed", "fact_repeats"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    recipe.corpus = dataclasses.replace(recipe.corpus, **changes)
    return recipe


_COMMANDS = {
    "scrape": _scrape, "fetch-gutenberg": _fetch_gutenberg, "convert": _convert, "combine": _combine,
    "clean": _clean, "split": _split, "all": _all,
}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return _COMMANDS[args.command](args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
