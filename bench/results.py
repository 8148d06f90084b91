"""``bench/RESULTS.md``: each benchmark owns one section between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` and replaces only that one, so figures from other scripts (and other machines)
stay side by side.

    python bench/results.py NAME FILE    # put FILE (a section a script saved elsewhere, e.g. with
                                         # --section on a GPU machine) into section NAME of RESULTS.md
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "RESULTS.md"
HEADER = "# Benchmark results\n\nWritten by the scripts in bench/ (see bench/README.md).\n\n"


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Put ``body`` (markdown, no markers) into section ``name`` of ``path``, atomically."""
    from distill.atomic import atomic_write_text

    section = f"<!-- {name}:begin -->\n{body.strip(chr(10))}\n\n<!-- {name}:end -->\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python bench/results.py NAME FILE  (e.g. bench_student_throughput-babylm out/gpu-check/bench.md)")
    write_section(sys.argv[1], Path(sys.argv[2]).read_text(encoding="utf-8"))
    print(f"{RESULTS}: section {sys.argv[1]} replaced by {sys.argv[2]}")
