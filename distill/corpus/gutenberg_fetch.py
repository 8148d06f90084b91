"""Get Project Gutenberg's 1911 Britannica slices onto this machine, by the ebook ids shipped with
the package (``eb1911_gutenberg.tsv``: file, volume, slice, pg_ebook_id, kind, title, words, sha256).

Each text is stored as ``OUT/<file>`` (``volume-VV-slice-SS.txt.gz`` and the four ``extra`` names,
all in one folder): gzipped UTF-8, content as PG publishes it (header, footer, CRLF line ends).
``OUT/MANIFEST.tsv`` lists what is there: the catalog columns with ``words`` and ``sha256`` of the
stored text, ``checksum`` (``ok`` when that sha256 is the shipped one, else ``mismatch``) and
``source`` (the URL or local file it came from). ``kind`` is ``articles`` or ``appendix`` (the two
author lists, which hold no articles).

Two sources:

* downloads, one request at a time, through the corpus's one polite GET
  (:mod:`distill.corpus.polite_get`: ``delay`` seconds between request starts, a descriptive
  User-Agent with ``contact``, capped retries with backoff honouring ``Retry-After``, capped
  redirects, waits that Ctrl-C cuts at once). For each ebook the URLs are
  tried in turn, a 404 moving to the next: ``/files/ID/ID-8.txt`` (Latin-1, the file the shipped
  sha256 was taken from), ``/files/ID/ID-0.txt`` and ``/cache/epub/ID/pgID.txt`` (UTF-8, a BOM
  dropped), then ``/1/3/6/0/13600/13600-8.txt``, the layout of PG's mirrors. Project Gutenberg asks
  automated downloads to use a mirror rather than www.gutenberg.org (gutenberg.org/MIRRORS.ALL):
  ``--base-url`` takes one. Checksums are *warned about*, not enforced: PG regenerates headers
  and footers, so today's file may legitimately differ from the one the list was made from. Such a
  file is kept, marked ``mismatch`` in the manifest and listed under ``checksum_mismatch`` in the
  summary, so the user knows the text is not the reference one.
* ``from_dir``: a local copy such as the shared ``eb1911-gutenberg`` folder (files found at its top
  level or one folder down, e.g. ``extra/``). Verified *strictly*: a copy is meant to be the
  reference text, so a file whose sha256 differs (or that is missing or not gzip) is not copied and
  the run ends with a DistillError naming it, after copying every good one.

Resume: a stored file whose text has the shipped sha256, or the sha256 the manifest recorded for
an earlier download, is skipped; anything else there (partial, damaged) is fetched again. Every
file is written under a temporary name and renamed, so Ctrl-C never leaves part of one.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import requests

from distill.atomic import atomic_write_bytes, atomic_write_text
from distill.corpus.polite_get import PoliteGet, check_base_url, user_agent
from distill.corpus.records import count_words
from distill.errors import DistillError

CATALOG = Path(__file__).with_name("eb1911_gutenberg.tsv")
DEFAULT_BASE_URL = "https://www.gutenberg.org"
EXAMPLE_URL = "https://www.gutenberg.org or a mirror's address"
MANIFEST_COLUMNS = ("file", "volume", "slice", "pg_ebook_id", "kind", "title", "words", "sha256", "checksum", "source")
VOLUMES = 29  # the 1911 edition's volume count
GONE_STATUS = {404, 410}  # this URL has no such file: try the next one


@dataclass(frozen=True)
class GutenbergText:
    """One entry of the shipped list."""

    file: str  # name in the output folder, e.g. volume-02-slice-01.txt.gz
    volume: int  # 1911 Britannica volume, 2-17
    slice: str  # PG's slice number ("1"), or "part3" / "appendix" for the extra texts
    pg_ebook_id: int  # Project Gutenberg ebook number
    kind: str  # "articles", or "appendix" for the author lists
    title: str  # PG's title
    words: int  # whitespace-separated words between the *** START OF / *** END OF lines
    sha256: str  # of the uncompressed UTF-8 text


def load_catalog(path: str | Path = CATALOG) -> list[GutenbergText]:
    """The shipped list (or another TSV with the same columns), in its order."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        return [
            GutenbergText(row["file"], int(row["volume"]), row["slice"], int(row["pg_ebook_id"]), row["kind"], row["title"], int(row["words"]), row["sha256"])
            for row in rows
        ]
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise DistillError(f"{path}: not a readable Gutenberg id list ({err}); reinstall distill or give a TSV with columns file, volume, slice, pg_ebook_id, kind, title, words, sha256") from None


def parse_volumes(spec: str) -> set[int]:
    """``"2,3"``, ``"2-5"`` or a mix (``"2,4-6"``) as a set of volume numbers."""
    volumes: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise DistillError(f"--volumes: {part!r} in {spec!r} is not a volume number or range; write e.g. 2,3 or 2-5") from None
        if first > last:
            raise DistillError(f"--volumes: {part!r} runs backwards; write the range low-high, e.g. {last}-{first}")
        if first < 1 or last > VOLUMES:
            raise DistillError(f"--volumes: {part!r} is outside the 1911 edition's volumes 1-{VOLUMES}; write e.g. 2,3 or 2-5")
        volumes.update(range(first, last + 1))
    return volumes


def candidate_urls(base_url: str, ebook_id: int) -> list[tuple[str, str]]:
    """``(url, encoding)`` pairs to try, in order, for one ebook."""
    base = base_url.rstrip("/")
    digits = str(ebook_id)
    mirror = "/".join(digits[:-1]) or "0"  # PG's mirror tree: 13600 -> 1/3/6/0/13600/
    return [
        (f"{base}/files/{ebook_id}/{ebook_id}-8.txt", "latin-1"),
        (f"{base}/files/{ebook_id}/{ebook_id}-0.txt", "utf-8"),
        (f"{base}/cache/epub/{ebook_id}/pg{ebook_id}.txt", "utf-8"),
        (f"{base}/{mirror}/{ebook_id}/{ebook_id}-8.txt", "latin-1"),
    ]


def body_words(text: str) -> int:
    """Words between PG's ``*** START OF`` and ``*** END OF`` lines (the whole text without them),
    counted as the shipped list counts them."""
    lines = text.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("*** START OF")), 0)
    end = next((i for i, line in enumerate(lines) if line.startswith("*** END OF")), len(lines))
    return sum(count_words(line) for line in lines[start:end])


def gunzip_text(data: bytes) -> bytes | None:
    """The uncompressed bytes of a whole gzip file, or None when it is damaged or cut short."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error):
        return None


class GutenbergClient:
    """Plain-text GETs of one site through the corpus's polite GET (:mod:`distill.corpus.polite_get`)."""

    def __init__(self, base_url: str, *, contact: str | None = None, delay: float = 1.0, retries: int = 5, backoff: float = 1.0, timeout: float = 30.0) -> None:
        self.base_url = check_base_url(base_url, EXAMPLE_URL).rstrip("/")
        self.http = PoliteGet(contact=contact, delay=delay, retries=retries, backoff=backoff, timeout=timeout,
                              headers={"Accept": "text/plain"}, resume_hint="a rerun skips the files already stored")

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    def close(self) -> None:
        self.http.close()

    def get_text(self, url: str, encoding: str) -> str | None:
        """The decoded text at ``url``, or None when the server has no such file (404/410)."""

        def answer(response: requests.Response) -> str | None:
            if response.status_code in GONE_STATUS:
                return None
            if response.status_code != 200:
                raise DistillError(
                    f"{url}: HTTP {response.status_code}; check --base-url (a Project Gutenberg site or mirror), or copy the files "
                    "from elsewhere with --from-dir (Project Gutenberg blocks some automated access: a mirror avoids that)"
                )
            return _decode(url, response, response.content, encoding)

        return self.http.get(url, answer)


def _decode(url: str, response: requests.Response, body: bytes, encoding: str) -> str:
    kind = response.headers.get("Content-Type", "").lower()
    if kind.startswith("text/html") or body.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        raise DistillError(
            f"{url}: the answer is an HTML page, not a plain-text ebook; Project Gutenberg may be blocking automated "
            "access from this address: use a mirror (--base-url) or copy the files with --from-dir"
        )
    try:
        return body.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as err:
        raise DistillError(f"{url}: not {encoding} text ({err.reason} at byte {err.start}); check --base-url serves Project Gutenberg's files") from None


def _read_manifest(path: Path) -> dict[str, dict]:
    """Rows of an earlier run's MANIFEST.tsv by file name ({} when absent). A MANIFEST.tsv that
    this command did not write is refused, never overwritten."""
    if not path.exists():
        return {}
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            if tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS:
                return {row["file"]: row for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    raise DistillError(f"{path}: exists and is not a fetch-gutenberg manifest; give --out a folder of its own (or move that file)")


def _write_manifest(path: Path, rows: dict[str, dict], order: list[str]) -> None:
    rank = {name: i for i, name in enumerate(order)}
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for name in sorted(rows, key=lambda n: (rank.get(n, len(rank)), n)):
        lines.append("\t".join(str(rows[name][column]) for column in MANIFEST_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _local_index(from_dir: Path) -> dict[str, Path]:
    """``*.txt.gz`` under ``from_dir`` and its immediate subfolders; top-level files win."""
    if not from_dir.is_dir():
        raise DistillError(f"--from-dir {from_dir}: not a folder; give the folder holding the volume-VV-slice-SS.txt.gz files")
    found: dict[str, Path] = {}
    for path in sorted(from_dir.glob("*/*.txt.gz")) + sorted(from_dir.glob("*.txt.gz")):
        found[path.name] = path
    return found


def _row(entry: GutenbergText, text: bytes, source: str, sha: str | None = None) -> dict:
    """The manifest row of a stored text; ``sha``: its sha256 when the caller already has it."""
    sha = sha or hashlib.sha256(text).hexdigest()
    return {
        "file": entry.file, "volume": entry.volume, "slice": entry.slice, "pg_ebook_id": entry.pg_ebook_id, "kind": entry.kind,
        "title": entry.title, "words": body_words(text.decode("utf-8")), "sha256": sha,
        "checksum": "ok" if sha == entry.sha256 else "mismatch", "source": source,
    }


def fetch_gutenberg(
    out: str | Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    from_dir: str | Path | None = None,
    volumes: Iterable[int] | str | None = None,
    limit: int | None = None,
    contact: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    delay: float = 1.0,
    progress: Callable[[int, int, GutenbergText, str], None] | None = None,
    catalog: list[GutenbergText] | None = None,
) -> dict:
    """Download (or, with ``from_dir``, copy) the 1911 Britannica slices into ``out``; returns a summary.

    ``volumes``: only these volumes (a set, or ``"2,3"`` / ``"2-5"``). ``limit``: only the first N
    texts of that selection, in list order. ``catalog``: the entries to fetch instead of the shipped
    list. ``progress(index, total, entry, status)`` is called after each text; ``status`` is
    ``already``, ``fetched``, ``copied`` (with ``, checksum differs`` when the text is not the
    reference one) or ``refused: ...``.
    """
    if retries < 0 or delay < 0 or backoff < 0 or timeout <= 0 or (limit is not None and limit < 0):
        raise DistillError("--retries, --delay, --backoff and --limit must be 0 or more, --timeout more than 0")
    if from_dir is None:
        check_base_url(base_url, EXAMPLE_URL)
        user_agent(contact)  # a contact no header can carry is refused before the folder is made
    listed = load_catalog() if catalog is None else list(catalog)
    entries = _select(listed, volumes, limit)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistillError(f"{out}: exists and is not a folder; give a folder for the slices, e.g. --out corpora/eb1911-gutenberg")
    from_dir = None if from_dir is None else Path(from_dir)
    local = None if from_dir is None else _local_index(from_dir)
    out.mkdir(parents=True, exist_ok=True)

    manifest = _Manifest(out / "MANIFEST.tsv", [e.file for e in listed])
    summary = {
        "out": str(out), "source": str(from_dir) if from_dir is not None else base_url, "selected": len(entries),
        "already": 0, "fetched": 0, "copied": 0, "replaced": 0, "checksum_mismatch": [], "requests": 0, "words": 0,
    }
    client = None if local is not None else GutenbergClient(base_url, contact=contact, delay=delay, retries=retries, backoff=backoff, timeout=timeout)
    try:
        refused = _store_entries(entries, out, manifest, summary, local=local, from_dir=from_dir, client=client, progress=progress)
    finally:
        if client is not None:
            summary["requests"] = client.requests_made
            client.close()
    if not manifest.path.exists():
        manifest.write()
    if refused:
        shown = "; ".join(refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise DistillError(
            f"--from-dir {from_dir}: {len(refused)} of {len(entries)} files refused ({summary['copied'] + summary['already']} good ones are in {out}): {shown}; "
            "re-copy the damaged files from their source, or drop --from-dir to download them (--volumes takes fewer)"
        )
    return summary


def _select(listed: list[GutenbergText], volumes: Iterable[int] | str | None, limit: int | None) -> list[GutenbergText]:
    """The entries of ``volumes`` (all without), the first ``limit`` of them, in list order."""
    entries = listed
    if volumes is not None:
        wanted = parse_volumes(volumes) if isinstance(volumes, str) else set(volumes)
        entries = [e for e in listed if e.volume in wanted]
        if not entries:
            have = sorted({e.volume for e in listed}) or [0]
            raise DistillError(f"--volumes: no texts of volumes {sorted(wanted)}; the list has volumes {have[0]}-{have[-1]}")
    return entries if limit is None else entries[:limit]


@dataclass
class _Manifest:
    """``MANIFEST.tsv``: the rows by file name, written in list order."""

    path: Path
    order: list[str]  # every file of the list, in its order
    rows: dict[str, dict] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = _read_manifest(self.path)

    def write(self) -> None:
        _write_manifest(self.path, self.rows, self.order)


def _store_entries(
    entries: list[GutenbergText],
    out: Path,
    manifest: _Manifest,
    summary: dict,
    *,
    local: dict[str, Path] | None,
    from_dir: Path | None,
    client: GutenbergClient | None,
    progress: Callable[[int, int, GutenbergText, str], None] | None,
) -> list[str]:
    """Keep, copy or download each entry, counting it in ``summary`` and rewriting the manifest when
    its row changed (so a stopped run keeps what it got); the refused files, each with the reason."""
    rows = manifest.rows
    refused: list[str] = []
    for index, entry in enumerate(entries, 1):
        path = out / entry.file
        earlier = rows.get(entry.file, {})
        present = path.exists()
        status = _store_entry(entry, path, earlier, rows, local=local, from_dir=from_dir, client=client)
        if status.startswith("refused"):
            refused.append(f"{entry.file} ({status[len('refused: '):]})")
        else:
            row = rows[entry.file]
            summary[status] += 1
            summary["replaced"] += int(present and status != "already")
            summary["words"] += row["words"]
            if row["checksum"] != "ok":
                summary["checksum_mismatch"].append(entry.file)
                status += ", checksum differs"
            if {k: str(v) for k, v in row.items()} != earlier:
                manifest.write()
        if progress is not None:
            progress(index, len(entries), entry, status)
    return refused


def _store_entry(
    entry: GutenbergText, path: Path, earlier: dict, rows: dict[str, dict], *,
    local: dict[str, Path] | None, from_dir: Path | None, client: GutenbergClient | None,
) -> str:
    """One entry into ``path``, its row into ``rows``: ``already``, ``copied``, ``fetched`` or ``refused: why``."""
    text = gunzip_text(path.read_bytes()) if path.is_file() else None
    sha = hashlib.sha256(text).hexdigest() if text is not None else None
    # an earlier download that differed from the list is kept; a copy must match the list
    if sha is not None and (sha == entry.sha256 or (local is None and sha == earlier.get("sha256"))):
        rows[entry.file] = _row(entry, text, earlier.get("source") or str(path), sha)
        return "already"
    if local is not None:
        return _copy_one(entry, local, from_dir, path, rows)
    return _download_one(entry, client, path, rows)


def _copy_one(entry: GutenbergText, local: dict[str, Path], from_dir: Path, path: Path, rows: dict[str, dict]) -> str:
    source = local.get(entry.file)
    if source is None:
        return f"refused: not found in {from_dir} or its subfolders"
    data = source.read_bytes()
    text = gunzip_text(data)
    if text is None:
        return f"refused: {source} is not a whole gzip file"
    sha = hashlib.sha256(text).hexdigest()
    if sha != entry.sha256:
        return f"refused: the sha256 of {source}'s text is {sha[:12]}..., the list says {entry.sha256[:12]}..."
    atomic_write_bytes(path, data)  # a copy, byte for byte, not a link: the source may go away
    rows[entry.file] = _row(entry, text, str(source), sha)
    return "copied"


def _download_one(entry: GutenbergText, client: GutenbergClient, path: Path, rows: dict[str, dict]) -> str:
    tried = []
    for url, encoding in candidate_urls(client.base_url, entry.pg_ebook_id):
        text = client.get_text(url, encoding)
        if text is None:
            tried.append(url)
            continue
        data = text.encode("utf-8")
        atomic_write_bytes(path, gzip.compress(data, compresslevel=9, mtime=0))
        rows[entry.file] = _row(entry, data, url)
        return "fetched"
    raise DistillError(f"ebook {entry.pg_ebook_id} ({entry.file}): not found (404) at {', '.join(tried)}; check --base-url, or copy the file with --from-dir")
