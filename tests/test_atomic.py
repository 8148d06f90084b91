"""atomic: modes follow the umask, a failed block leaves the old file and no temporary behind."""
from __future__ import annotations

import contextlib
import os
import stat

import pytest

from distill.atomic import atomic_write, atomic_write_json, atomic_write_text, write_folder


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_umask_022_gives_0644_files_and_0755_folders(tmp_path):
    with umask(0o022):
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "new" / "b.json", {"k": 1})
        with write_folder(tmp_path / "folder", ["*.txt"]) as tmp:
            assert mode(tmp) == 0o755  # already final while it is being filled
            (tmp / "inside.txt").write_text("y")
    assert mode(tmp_path / "a.txt") == 0o644 and mode(tmp_path / "new" / "b.json") == 0o644
    assert mode(tmp_path / "folder") == 0o755 and (tmp_path / "folder" / "inside.txt").read_text() == "y"


def test_umask_077_keeps_outputs_private(tmp_path):
    with umask(0o077):
        atomic_write_text(tmp_path / "a.txt", "x")
        with write_folder(tmp_path / "folder", []):
            pass
    assert mode(tmp_path / "a.txt") == 0o600 and mode(tmp_path / "folder") == 0o700


def test_replacing_a_file_gives_the_umask_mode(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    os.chmod(target, 0o600)
    with umask(0o022):
        atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o644


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_failed_folder_keeps_the_old_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with write_folder(out, ["*.txt"]) as tmp:
            (tmp / "keep.txt").write_text("new")
            raise RuntimeError("boom")
    assert (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_folder_replaces_a_folder_of_its_own_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with write_folder(out, ["*.txt"]) as tmp:
        (tmp / "fresh.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["fresh.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_binary_write(tmp_path):
    with atomic_write(tmp_path / "b.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
