"""A cache of the teacher ensemble's sparse targets: run the frozen teachers once, train from disk.

:meth:`TeacherLogitCache.build` runs every teacher (``eval()``, ``torch.no_grad()``, bf16 autocast
on GPU) over the training blocks once, forms the ensemble target at the loss temperature
(:func:`distill.teacher_target.ensemble_log_probs`) and keeps, per token, the top-k log-probs, their token
ids and the log of the remaining mass (:class:`distill.teacher_target.SparseTarget`; its docstring says why
this k+1-bucket target is a fair approximation and how close it is). The temperature, ensemble
mode and weights are baked in, so a cache only serves runs with the same settings.

Layout of a cache folder (block i of the dataset is row ``i - start`` of the shard holding it)::

    manifest.json                      settings, hashes, shard list with sha256 of every file
    shard-00000.indices.npy            (blocks, seq_len, k) uint16 when V <= 65536, else int32
    shard-00000.logprobs.npy           (blocks, seq_len, k) float16 (or float32), log p at T
    shard-00000.tail.npy               (blocks, seq_len) float32, log(1 - sum of the top-k p)
    ...

Files are plain ``.npy`` opened with ``np.load(mmap_mode="r")``, so a batch reads only its rows.
At k=64 a token costs 64 * (2 + 2) + 4 = 260 bytes.

The build works in a hidden sibling folder ``.<name>.partial`` and writes one shard at a time (each
file under a temporary name, then renamed, then a small ``shard-XXXXX.json`` with its checksums),
so an interrupted build resumes at the first missing shard when run again with the same settings.
When every shard is done the files move into ``<name>`` through :func:`distill.atomic.write_folder`
with the manifest: a folder with a manifest is always complete. With an ``accelerator``, the
processes share the shards round-robin.

:meth:`TeacherLogitCache.open` checks the manifest against what the run expects (teachers,
tokenizer, temperature, k, ensemble, weights, vocabulary, sequence length, dataset) and the
checksums, and refuses any difference with a :class:`~distill.errors.DistillError` that names
the key, both values and the fix.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from distill.artifacts import file_sha256
from distill.atomic import atomic_write_json, check_folder, write_folder
from distill.errors import DistillError
from distill.teacher_target import SparseTarget, ensemble_log_probs, normalise_weights

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = ("indices", "logprobs", "tail")
# keys a run may pass to open(expect=...); each must equal the manifest's value
EXPECT_KEYS = (
    "teacher_hashes",
    "tokenizer_hash",
    "temperature",
    "top_k",
    "ensemble",
    "weights",
    "vocab_size",
    "seq_len",
    "num_blocks",
    "dataset_sha256",
)
CACHE_FILES = (MANIFEST, "shard-*.npy")
REBUILD_HINT = "delete {path} and rebuild it (the student stage builds a missing cache), or set student.logit_cache.enabled=false"


def _read_blocks(blocks: Any, start: int, end: int) -> np.ndarray:
    """Blocks ``start:end`` as an (n, seq_len) int64 array, from a ``datasets.Dataset`` with an
    ``input_ids`` column, a 2-D array or tensor, or a list of equal-length id lists."""
    if isinstance(blocks, torch.Tensor):
        return blocks[start:end].cpu().numpy().astype(np.int64)
    part = blocks[start:end]
    if isinstance(part, dict):
        part = part["input_ids"]
    if isinstance(part, torch.Tensor):
        part = part.cpu().numpy()
    if isinstance(part, list) and part and isinstance(part[0], torch.Tensor):
        part = [row.cpu().numpy() for row in part]
    array = np.asarray(part)
    if array.ndim != 2:
        raise ValueError(f"blocks {start}:{end} are not a 2-D array of token ids (got shape {array.shape})")
    return array.astype(np.int64)


def blocks_sha256(blocks: Any, batch: int = 4096) -> str:
    """sha256 of all token ids of ``blocks`` (as int32, in order) and their shape.

    The cache stores it as ``dataset_sha256``: pass the same value to ``open(expect=...)`` so that
    row i of the cache is certain to belong to block i of the dataset the loop trains on.
    """
    digest = hashlib.sha256()
    total = len(blocks)
    seq_len = None
    for start in range(0, total, batch):
        array = _read_blocks(blocks, start, min(start + batch, total))
        seq_len = array.shape[1]
        digest.update(np.ascontiguousarray(array, dtype="<i4").tobytes())
    digest.update(f"|{total}x{seq_len}".encode())
    return digest.hexdigest()


def _same(key: str, cached: Any, expected: Any) -> bool:
    if key == "temperature":
        return cached is not None and expected is not None and math.isclose(float(cached), float(expected), rel_tol=1e-9)
    if key == "weights":
        if cached is None or expected is None:
            return cached is None and expected is None
        return len(cached) == len(expected) and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(cached, expected))
    if key == "teacher_hashes":
        return list(cached or []) == list(expected or [])
    return cached == expected


def _canonical_weights(weights: Optional[Sequence[float]], num_teachers: int) -> Optional[list[float]]:
    # None stays None (the plain mean); explicit weights are stored normalised
    return None if weights is None else normalise_weights(weights, num_teachers)


class TeacherLogitCache:
    """Read access to a finished cache; build one with :meth:`build`, open one with :meth:`open`.

    ``cache[block_indices]`` (an int, a list, an array or a tensor of dataset block indices, in
    batch order) returns a :class:`~distill.teacher_target.SparseTarget` with ``len(block_indices) *
    seq_len`` rows, laid out like the batch's flat (B*T) positions, ready for
    ``chunked_kd_loss(..., target=cache[idx].to(device))``. Example::

        cache = TeacherLogitCache.open("models/tiny/teacher_logits", expect={
            "teacher_hashes": hashes, "tokenizer_hash": tok_hash, "temperature": 2.0, "top_k": 64,
            "ensemble": "logits", "weights": None, "vocab_size": 4000, "seq_len": 128,
            "dataset_sha256": blocks_sha256(train_blocks)})
        target = cache[batch["block_index"]]
    """

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._maps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # a DataLoader worker must open its own memory maps, not receive copies of them
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    @property
    def temperature(self) -> float:
        return float(self.manifest["temperature"])

    @property
    def top_k(self) -> int:
        return int(self.manifest["top_k"])

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    def __len__(self) -> int:
        return int(self.manifest["num_blocks"])

    @classmethod
    def open(cls, path: str | os.PathLike, expect: Optional[dict] = None, verify: bool = True) -> "TeacherLogitCache":
        """Open a finished cache; refuse it if it differs from ``expect`` or fails its checksums.

        ``expect`` maps any of :data:`EXPECT_KEYS` to the value this run needs. ``verify`` re-hashes
        every shard (reads the whole cache once); pass False to skip when a previous open in the same
        run already did.
        """
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise DistillError(
                f"{path}: no {MANIFEST}, so not a finished teacher-logit cache; "
                + REBUILD_HINT.format(path=path)
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DistillError(f"{manifest_path}: unreadable ({err}); " + REBUILD_HINT.format(path=path)) from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DistillError(
                f"{manifest_path}: format_version is {manifest.get('format_version')!r} but this code reads "
                f"{FORMAT_VERSION}; " + REBUILD_HINT.format(path=path)
            )
        cache = cls(path, manifest)
        if expect:
            cache.check(expect)
        if verify:
            cache.verify()
        cache._check_shapes()
        return cache

    def check(self, expect: dict) -> None:
        """Raise a DistillError naming the first key of ``expect`` whose cached value differs."""
        unknown = sorted(set(expect) - set(EXPECT_KEYS))
        if unknown:
            raise ValueError(f"unknown logit-cache keys {unknown}; known: {', '.join(EXPECT_KEYS)}")
        for key in EXPECT_KEYS:
            if key not in expect:
                continue
            expected = expect[key]
            if key == "weights" and expected is not None:
                expected = _canonical_weights(expected, len(expected))
            cached = self.manifest.get(key)
            if not _same(key, cached, expected):
                raise DistillError(
                    f"{self.path / MANIFEST}: {key} is {cached!r} in the logit cache but this run expects "
                    f"{expected!r}; the cache was made for other settings: " + REBUILD_HINT.format(path=self.path)
                )

    def verify(self) -> None:
        """Re-hash every shard file and compare with the manifest."""
        for shard in self.manifest["shards"]:
            for name, expected in shard["sha256"].items():
                path = self.path / name
                if not path.is_file():
                    raise DistillError(f"{path}: missing from the logit cache; " + REBUILD_HINT.format(path=self.path))
                actual = file_sha256(path)
                if actual != expected:
                    raise DistillError(
                        f"{path}: sha256 {actual[:16]}... does not match {MANIFEST} ({expected[:16]}...), "
                        "so the logit cache is corrupted; " + REBUILD_HINT.format(path=self.path)
                    )

    def _shard_maps(self, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        maps = self._maps.get(number)
        if maps is None:
            shard = self.manifest["shards"][number]
            try:
                maps = tuple(np.load(self.path / shard["files"][kind], mmap_mode="r") for kind in FILES)
            except (OSError, ValueError) as err:
                raise DistillError(
                    f"{self.path}: shard {number} is unreadable ({err}); " + REBUILD_HINT.format(path=self.path)
                ) from None
            self._maps[number] = maps
        return maps

    def _check_shapes(self) -> None:
        k, seq_len = self.top_k, self.seq_len
        for number, shard in enumerate(self.manifest["shards"]):
            start, end = shard["blocks"]
            indices, logprobs, tail = self._shard_maps(number)
            want = (end - start, seq_len, k)
            if indices.shape != want or logprobs.shape != want or tail.shape != want[:2]:
                raise DistillError(
                    f"{self.path}: shard {number} has shape {indices.shape} but {MANIFEST} says {want}; "
                    + REBUILD_HINT.format(path=self.path)
                )

    def __getitem__(self, block_indices) -> SparseTarget:
        """Sparse targets for these blocks: (n*seq_len, k) indices/logprobs and (n*seq_len,) tail."""
        if isinstance(block_indices, torch.Tensor):
            block_indices = block_indices.cpu().numpy()
        idx = np.asarray(block_indices, dtype=np.int64).reshape(-1)
        total = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= total):
            raise IndexError(f"block index out of range for a logit cache of {total} blocks")
        shard_blocks = int(self.manifest["shard_blocks"])
        k, seq_len = self.top_k, self.seq_len
        indices = np.empty((idx.size, seq_len, k), dtype=np.int64)
        logprobs = np.empty((idx.size, seq_len, k), dtype=np.dtype(self.manifest["logprob_dtype"]))
        tail = np.empty((idx.size, seq_len), dtype=np.float32)
        shard_of = idx // shard_blocks
        for number in np.unique(shard_of):
            where = np.nonzero(shard_of == number)[0]
            local = idx[where] - number * shard_blocks
            maps = self._shard_maps(int(number))
            indices[where] = maps[0][local]
            logprobs[where] = maps[1][local]
            tail[where] = maps[2][local]
        rows = idx.size * seq_len
        return SparseTarget(
            torch.from_numpy(indices).reshape(rows, k),
            torch.from_numpy(logprobs).reshape(rows, k),
            torch.from_numpy(tail).reshape(rows),
            self.temperature,
        )

    def get(self, block_indices, device=None) -> SparseTarget:
        target = self[block_indices]
        return target if device is None else target.to(device)

    @classmethod
    def build(
        cls,
        teachers: Sequence[torch.nn.Module],
        blocks: Any,
        out_dir: str | os.PathLike,
        *,
        temperature: float,
        top_k: int,
        vocab_size: int,
        teacher_hashes: Sequence[str],
        tokenizer_hash: str,
        ensemble: str = "logits",
        weights: Optional[Sequence[float]] = None,
        batch_size: int = 16,
        shard_blocks: int = 2048,
        logprob_dtype: str = "float16",
        accelerator=None,
        device: Optional[torch.device | str] = None,
        verbose: bool = True,
        dataset_sha256: Optional[str] = None,
    ) -> "TeacherLogitCache":
        """Run the frozen ``teachers`` over ``blocks`` once and write the cache to ``out_dir``.

        Args:
          teachers: causal LMs (``model(input_ids=...).logits`` of shape (B, T, V'_k), V'_k >= V).
          blocks: the training blocks, (num_blocks, seq_len) token ids: a ``datasets.Dataset`` with
            an ``input_ids`` column (as :func:`distill.data.build_blocks` returns), an array or a tensor.
          temperature, ensemble, weights: the loss settings; baked into the target.
          top_k: entries kept per token (1..V); vocab_size: the tokenizer's V (logits are sliced to it).
          teacher_hashes, tokenizer_hash: identities stored in the manifest (see
            :func:`distill.artifacts.model_folder_sha256`, :func:`distill.artifacts.tokenizer_sha256`).
          batch_size: blocks per teacher forward pass; shard_blocks: blocks per shard file.
          logprob_dtype: "float16" (default, half the size) or "float32".
          accelerator: share the shards among processes; teachers then run on ``accelerator.device``.
          device: where the teachers run without an accelerator (default: their own device).
          dataset_sha256: :func:`blocks_sha256` of ``blocks`` when the caller has it (else computed).
        Returns the opened cache (on every process).
        """
        if len(teacher_hashes) != len(teachers) or not teachers:
            raise ValueError(f"need one hash per teacher: {len(teacher_hashes)} hashes for {len(teachers)} teachers")
        if not 1 <= top_k <= vocab_size:
            raise DistillError(f"student.logit_cache.top_k: {top_k} must be between 1 and the vocabulary size {vocab_size}")
        if logprob_dtype not in ("float16", "float32"):
            raise ValueError(f"logprob_dtype must be float16 or float32, got {logprob_dtype!r}")
        ensemble_log_probs([torch.zeros(1, 2)] * len(teachers), temperature, ensemble, weights)  # validate settings early
        num_blocks = len(blocks)
        if num_blocks == 0:
            raise DistillError("no training blocks to cache; check the train split and data.seq_len")
        seq_len = int(_read_blocks(blocks, 0, 1).shape[1])
        out_dir = Path(out_dir)
        settings = {
            "format_version": FORMAT_VERSION,
            "teacher_hashes": list(teacher_hashes),
            "tokenizer_hash": tokenizer_hash,
            "temperature": float(temperature),
            "top_k": int(top_k),
            "ensemble": ensemble,
            "weights": _canonical_weights(weights, len(teachers)),
            "vocab_size": int(vocab_size),
            "seq_len": seq_len,
            "num_blocks": num_blocks,
            "dataset_sha256": dataset_sha256 or blocks_sha256(blocks),
            "index_dtype": "uint16" if vocab_size <= 65536 else "int32",
            "logprob_dtype": logprob_dtype,
            "shard_blocks": int(shard_blocks),
        }
        check_folder(out_dir, CACHE_FILES, fix="give student.logit_cache.dir a folder of its own")  # before the teachers run
        is_main = accelerator is None or accelerator.is_main_process
        partial = out_dir.with_name(f".{out_dir.name}.partial")
        if is_main:
            _prepare_partial(partial, settings)
        _barrier(accelerator)
        num_shards = (num_blocks + shard_blocks - 1) // shard_blocks
        _build_shards(partial, num_shards, teachers, blocks, settings, weights, batch_size, accelerator, device, verbose)
        _barrier(accelerator)
        if is_main:
            _finish(partial, out_dir, settings, num_shards)
        _barrier(accelerator)
        return cls.open(out_dir, verify=False)


def _barrier(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _build_shards(partial: Path, num_shards: int, teachers, blocks, settings: dict, weights, batch_size: int, accelerator,
                  device, verbose: bool) -> None:
    """This process's shards (round-robin over processes, on ``accelerator.device``), skipping finished ones."""
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    if accelerator is not None:
        device = accelerator.device
    shard_blocks, num_blocks = settings["shard_blocks"], settings["num_blocks"]
    for teacher in teachers:
        teacher.eval()
    for number in range(rank, num_shards, world):
        start, end = number * shard_blocks, min((number + 1) * shard_blocks, num_blocks)
        if _shard_done(partial, number):
            continue
        if verbose:
            print(f"logit cache: shard {number + 1}/{num_shards} (blocks {start}-{end - 1}) -> {partial}", file=sys.stderr)
        _build_shard(partial, number, start, end, teachers, blocks, settings, weights, batch_size, device)


def _shard_names(number: int) -> dict[str, str]:
    return {kind: f"shard-{number:05d}.{kind}.npy" for kind in FILES}


def _prepare_partial(partial: Path, settings: dict) -> None:
    """Keep a previous partial build only when it was made with exactly these settings."""
    build_json = partial / "build.json"
    if partial.is_dir():
        try:
            previous = json.loads(build_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous == settings:
            return
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    atomic_write_json(build_json, settings)


def _shard_done(partial: Path, number: int) -> bool:
    sidecar = partial / f"shard-{number:05d}.json"
    if not sidecar.is_file():
        return False
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        return all((partial / name).is_file() and file_sha256(partial / name) == sha for name, sha in info["sha256"].items())
    except (OSError, json.JSONDecodeError, KeyError):
        return False


def _teacher_logits(teacher: torch.nn.Module, input_ids: torch.Tensor, vocab: int, device) -> torch.Tensor:
    """One frozen teacher's logits (B, T, V), run in bf16 on GPU, returned on ``device``."""
    teacher_device = next(teacher.parameters()).device
    if device is not None and teacher_device != torch.device(device):
        teacher.to(device)
        teacher_device = torch.device(device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=teacher_device.type == "cuda"):
        out = teacher(input_ids=input_ids.to(teacher_device))
    logits = out.logits if hasattr(out, "logits") else out
    if logits.shape[-1] < vocab:
        raise DistillError(f"a teacher gives {logits.shape[-1]} logits per token, fewer than the tokenizer's {vocab}; it was trained with another tokenizer")
    return logits[..., :vocab]


def _build_shard(partial: Path, number: int, start: int, end: int, teachers, blocks, settings: dict, weights, batch_size: int, device) -> None:
    k, seq_len, vocab = settings["top_k"], settings["seq_len"], settings["vocab_size"]
    names = _shard_names(number)
    shapes = {"indices": (end - start, seq_len, k), "logprobs": (end - start, seq_len, k), "tail": (end - start, seq_len)}
    dtypes = {"indices": settings["index_dtype"], "logprobs": settings["logprob_dtype"], "tail": "float32"}
    tmp = {kind: partial / f".{names[kind]}.tmp" for kind in FILES}
    maps = {kind: np.lib.format.open_memmap(tmp[kind], mode="w+", dtype=dtypes[kind], shape=shapes[kind]) for kind in FILES}
    for first in range(start, end, batch_size):
        last = min(first + batch_size, end)
        ids = torch.from_numpy(_read_blocks(blocks, first, last))  # (b, T)
        if ids.shape[1] != seq_len:
            raise DistillError(f"block {first} has {ids.shape[1]} tokens but block 0 has {seq_len}; blocks must share seq_len")
        logits = [_teacher_logits(t, ids, vocab, device) for t in teachers]
        target_device = logits[0].device
        flat = [z.to(target_device).reshape(-1, vocab) for z in logits]  # (b, T, V) -> (b*T, V)
        log_p = ensemble_log_probs(flat, settings["temperature"], settings["ensemble"], weights)
        sparse = SparseTarget.from_log_probs(log_p, k)
        b = last - first
        rows = slice(first - start, last - start)
        maps["indices"][rows] = sparse.indices.reshape(b, seq_len, k).cpu().numpy().astype(dtypes["indices"])
        maps["logprobs"][rows] = sparse.logprobs.reshape(b, seq_len, k).cpu().numpy().astype(dtypes["logprobs"])
        maps["tail"][rows] = sparse.tail_logprob.reshape(b, seq_len).cpu().numpy().astype(np.float32)
    sha = {}
    for kind in FILES:
        maps[kind].flush()
        del maps[kind]
        os.replace(tmp[kind], partial / names[kind])
        sha[names[kind]] = file_sha256(partial / names[kind])
    atomic_write_json(partial / f"shard-{number:05d}.json", {"blocks": [start, end], "files": names, "sha256": sha})


def _finish(partial: Path, out_dir: Path, settings: dict, num_shards: int) -> None:
    """Move the finished shards into ``out_dir`` with the manifest, atomically."""
    shards = []
    for number in range(num_shards):
        sidecar = partial / f"shard-{number:05d}.json"
        if not sidecar.is_file():
            raise RuntimeError(f"logit cache shard {number} was not built ({sidecar} missing)")
        shards.append(json.loads(sidecar.read_text(encoding="utf-8")))
    manifest = dict(settings, shards=shards)
    with write_folder(out_dir, CACHE_FILES, fix="give student.logit_cache.dir a folder of its own") as tmp:
        for shard in shards:
            for name in shard["files"].values():
                os.replace(partial / name, tmp / name)
        atomic_write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(partial, ignore_errors=True)
