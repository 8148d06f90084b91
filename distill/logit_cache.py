"""A cache of the teacher ensemble's sparse targets: run the frozen teachers once, train from disk.

:meth:`TeacherLogitCache.build` runs every teacher (``eval()``, ``torch.no_grad()``, bf16 autocast
on GPU) over the training blocks once, forms the ensemble target at the loss temperature
(:func:`distill.teacher_target.ensemble_log_probs`) and keeps, per token, with ``method: topk_tail``
the top-k log-probs, their token ids and the log of the remaining mass
(:class:`distill.teacher_target.SparseTarget`; its docstring says why this k+1-bucket target is a
fair approximation and how close it is), or with ``method: sampled`` the distinct ids among N
draws from the target and their counts, an unbiased estimate of the forward-KL gradient
(:mod:`distill.logit_sampling` says why, and its variance). The temperature, ensemble mode and
weights are baked in, so a cache only serves runs with the same settings.

Layout of a cache folder (block i of the dataset is row ``i - start`` of the shard holding it)::

    manifest.json                      settings, hashes, shard list with sha256 of every file
    shard-00000.indices.npy            (blocks, seq_len, k) uint16 when V <= 65536, else int32
    shard-00000.logprobs.npy           (blocks, seq_len, k) float16 (or float32), log p at T
    shard-00000.tail.npy               (blocks, seq_len) float32, log(1 - sum of the top-k p)
    ...                                method sampled instead:
    shard-00000.indices.npy            (blocks, seq_len, N) uint16 (int32 when V > 65536), 0 = empty
    shard-00000.counts.npy             (blocks, seq_len, N) uint8, draws of each id; 0 = empty slot

Files are plain ``.npy`` opened with ``np.load(mmap_mode="r")``, so a batch reads only its rows.
A token costs k * (2 + 2) + 4 bytes (260 at k=64) or 3N (36 at N=12): :attr:`TeacherLogitCache.bytes_per_token`.
A manifest without ``method`` (written before there were two) is a ``topk_tail`` cache.

The build works in a hidden sibling folder ``.<name>.partial`` and writes one shard at a time (each
file under a temporary name, then renamed, then a small ``shard-XXXXX.json`` with its checksums),
so an interrupted build resumes at the first missing shard when run again with the same settings.
When every shard is done the files move into ``<name>`` through :func:`distill.atomic.write_folder`
with the manifest: a folder with a manifest is always complete. With an ``accelerator``, the
processes share the shards round-robin.

:meth:`TeacherLogitCache.open` checks the manifest against what the run expects (teachers,
tokenizer, temperature, method, k or N and seed, ensemble, weights, vocabulary, sequence length,
dataset) and the checksums, and refuses any difference with a
:class:`~distill.errors.DistillError` that names the key, both values and the fix.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from distill.artifacts import file_sha256
from distill.atomic import atomic_write_json, check_folder, write_folder
from distill.data import blocks_sha256, read_blocks
from distill.errors import DistillError
from distill.logit_sampling import SAMPLED, sampled_arrays, sampled_layout, sampled_settings, sampled_target, shard_generator
from distill.teacher_target import SparseTarget, ensemble_log_probs, normalise_weights

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOPK_TAIL = "topk_tail"
METHODS = (TOPK_TAIL, SAMPLED)
# keys a run may pass to open(expect=...); each must equal the manifest's value (top_k applies to
# topk_tail caches, samples and seed to sampled ones)
EXPECT_KEYS = (
    "teacher_hashes",
    "tokenizer_hash",
    "temperature",
    "method",
    "top_k",
    "samples",
    "seed",
    "ensemble",
    "weights",
    "vocab_size",
    "seq_len",
    "num_blocks",
    "dataset_sha256",
)
CACHE_FILES = (MANIFEST, "shard-*.npy")
REBUILD_HINT = "delete {path} and rebuild it (the student stage builds a missing cache), or set student.logit_cache.enabled=false"


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


def _layout(manifest: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each shard file's kind -> (shape per token, dtype), for the manifest's method."""
    if manifest.get("method", TOPK_TAIL) == SAMPLED:
        return sampled_layout(manifest)
    k = int(manifest["top_k"])
    return {"indices": ((k,), manifest["index_dtype"]), "logprobs": ((k,), manifest["logprob_dtype"]), "tail": ((), "float32")}


def _canonical_weights(weights: Optional[Sequence[float]], num_teachers: int) -> Optional[list[float]]:
    # None stays None (the plain mean); explicit weights are stored normalised
    return None if weights is None else normalise_weights(weights, num_teachers)


class TeacherLogitCache:
    """Read access to a finished cache; build one with :meth:`build`, open one with :meth:`open`.

    ``cache[block_indices]`` (an int, a list, an array or a tensor of dataset block indices, in
    batch order) returns a :class:`~distill.teacher_target.SparseTarget` with ``len(block_indices) *
    seq_len`` rows, laid out like the batch's flat (B*T) positions, ready for
    ``chunked_kd_loss(..., target=cache[idx].to(device))``: top-k + tail, or for a ``sampled`` cache
    the empirical distribution of the draws (:func:`distill.logit_sampling.sampled_target`). Example::

        cache = TeacherLogitCache.open("models/tiny/teacher_logits", expect={
            "teacher_hashes": hashes, "tokenizer_hash": tok_hash, "temperature": 2.0, "top_k": 64,
            "ensemble": "logits", "weights": None, "vocab_size": 4000, "seq_len": 128,
            "dataset_sha256": blocks_sha256(train_blocks)})
        target = cache[batch["block_index"]]
    """

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._maps: dict[int, dict[str, np.ndarray]] = {}

    # a DataLoader worker must open its own memory maps, not receive copies of them
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    @property
    def temperature(self) -> float:
        return float(self.manifest["temperature"])

    @property
    def method(self) -> str:
        return self.manifest.get("method", TOPK_TAIL)

    @property
    def top_k(self) -> Optional[int]:  # None for a sampled cache
        return int(self.manifest["top_k"]) if self.method == TOPK_TAIL else None

    @property
    def samples(self) -> Optional[int]:  # None for a topk_tail cache
        return int(self.manifest["samples"]) if self.method == SAMPLED else None

    @property
    def bytes_per_token(self) -> int:
        """Bytes per token of the shards (from the dtypes, .npy headers left out): 3N, or 4k + 4 in fp16."""
        return sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in _layout(self.manifest).values())

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
            cached = self.method if key == "method" else self.manifest.get(key)
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

    def _shard_maps(self, number: int) -> dict[str, np.ndarray]:
        maps = self._maps.get(number)
        if maps is None:
            shard = self.manifest["shards"][number]
            try:
                maps = {kind: np.load(self.path / shard["files"][kind], mmap_mode="r") for kind in _layout(self.manifest)}
            except (OSError, ValueError) as err:
                raise DistillError(
                    f"{self.path}: shard {number} is unreadable ({err}); " + REBUILD_HINT.format(path=self.path)
                ) from None
            self._maps[number] = maps
        return maps

    def _check_shapes(self) -> None:
        layout = _layout(self.manifest)
        for number, shard in enumerate(self.manifest["shards"]):
            start, end = shard["blocks"]
            for kind, array in self._shard_maps(number).items():
                want = (end - start, self.seq_len, *layout[kind][0])
                if array.shape != want:
                    raise DistillError(
                        f"{self.path}: shard {number} {kind} has shape {array.shape} but {MANIFEST} says {want}; "
                        + REBUILD_HINT.format(path=self.path)
                    )

    def __getitem__(self, block_indices) -> SparseTarget:
        """Sparse targets for these blocks: (n*seq_len, k or N) indices/logprobs and (n*seq_len,) tail."""
        if isinstance(block_indices, torch.Tensor):
            block_indices = block_indices.cpu().numpy()
        idx = np.asarray(block_indices, dtype=np.int64).reshape(-1)
        total = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= total):
            raise IndexError(f"block index out of range for a logit cache of {total} blocks")
        shard_blocks = int(self.manifest["shard_blocks"])
        rows = idx.size * self.seq_len
        out = {
            kind: np.empty((idx.size, self.seq_len, *shape), dtype=np.int64 if kind == "indices" else np.dtype(dtype))
            for kind, (shape, dtype) in _layout(self.manifest).items()
        }
        shard_of = idx // shard_blocks
        for number in np.unique(shard_of):
            where = np.nonzero(shard_of == number)[0]
            local = idx[where] - number * shard_blocks
            for kind, array in self._shard_maps(int(number)).items():
                out[kind][where] = array[local]
        t = {kind: torch.from_numpy(array).reshape(rows, *array.shape[2:]) for kind, array in out.items()}
        if self.method == SAMPLED:
            return sampled_target(t["indices"], t["counts"], self.samples, self.temperature)
        return SparseTarget(t["indices"], t["logprobs"], t["tail"], self.temperature)

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
        top_k: Optional[int] = None,
        vocab_size: int,
        teacher_hashes: Sequence[str],
        tokenizer_hash: str,
        method: str = TOPK_TAIL,
        samples: int = 64,
        seed: int = 0,
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
          vocab_size: the tokenizer's V (logits are sliced to it).
          method: "topk_tail" keeps ``top_k`` entries per token (1..V) and the tail mass; "sampled"
            keeps ``samples`` draws per token (1..255) as ids and counts, drawn with generators seeded
            from ``seed`` and the shard number (:mod:`distill.logit_sampling`).
          teacher_hashes, tokenizer_hash: identities stored in the manifest (see
            :func:`distill.artifacts.model_folder_sha256`, :func:`distill.artifacts.tokenizer_sha256`).
          batch_size: blocks per teacher forward pass; shard_blocks: blocks per shard file.
          logprob_dtype: "float16" (default, half the size) or "float32" (topk_tail only).
          accelerator: share the shards among processes; teachers then run on ``accelerator.device``.
          device: where the teachers run without an accelerator (default: their own device).
          dataset_sha256: :func:`blocks_sha256` of ``blocks`` when the caller has it (else computed).
        Returns the opened cache (on every process).
        """
        if len(teacher_hashes) != len(teachers) or not teachers:
            raise ValueError(f"need one hash per teacher: {len(teacher_hashes)} hashes for {len(teachers)} teachers")
        method_settings = _method_settings(method, top_k, samples, seed, vocab_size, logprob_dtype)
        ensemble_log_probs([torch.zeros(1, 2)] * len(teachers), temperature, ensemble, weights)  # validate settings early
        num_blocks = len(blocks)
        if num_blocks == 0:
            raise DistillError("no training blocks to cache; check the train split and data.seq_len")
        out_dir = Path(out_dir)
        settings = {
            "format_version": FORMAT_VERSION, "teacher_hashes": list(teacher_hashes), "tokenizer_hash": tokenizer_hash,
            "temperature": float(temperature), **method_settings, "ensemble": ensemble,
            "weights": _canonical_weights(weights, len(teachers)), "vocab_size": int(vocab_size),
            "seq_len": int(read_blocks(blocks, 0, 1).shape[1]), "num_blocks": num_blocks,
            "dataset_sha256": dataset_sha256 or blocks_sha256(blocks),
            "index_dtype": "uint16" if vocab_size <= 65536 else "int32", "shard_blocks": int(shard_blocks),
        }  # fmt: skip
        check_folder(out_dir, CACHE_FILES, fix="give student.logit_cache.dir a folder of its own")  # before the teachers run
        started = time.monotonic()
        is_main = accelerator is None or accelerator.is_main_process
        partial = out_dir.with_name(f".{out_dir.name}.partial")
        if is_main:
            _prepare_partial(partial, settings)
        _barrier(accelerator)
        num_shards = (num_blocks + shard_blocks - 1) // shard_blocks
        _build_shards(partial, num_shards, teachers, blocks, settings, weights, batch_size, accelerator, device, verbose)
        _barrier(accelerator)
        if is_main:
            _finish(partial, out_dir, settings, num_shards, build_time_s=time.monotonic() - started)
        _barrier(accelerator)
        cache = cls.open(out_dir, verify=False)
        if verbose and is_main:
            print(f"logit cache: {out_dir} holds {cache.bytes_per_token} bytes per token ({method})", file=sys.stderr)
        return cache


def _method_settings(method: str, top_k: Optional[int], samples: int, seed: int, vocab_size: int, logprob_dtype: str) -> dict:
    """The manifest keys of ``method``, checked: top_k and logprob_dtype, or samples and seed."""
    if method not in METHODS:
        raise DistillError(f"student.logit_cache.method: {method!r} is not one of {' | '.join(METHODS)}; pick one of them")
    if method == SAMPLED:
        return sampled_settings(samples, seed)
    if top_k is None or not 1 <= top_k <= vocab_size:
        raise DistillError(f"student.logit_cache.top_k: {top_k} must be between 1 and the vocabulary size {vocab_size}")
    if logprob_dtype not in ("float16", "float32"):
        raise ValueError(f"logprob_dtype must be float16 or float32, got {logprob_dtype!r}")
    return {"method": method, "top_k": int(top_k), "logprob_dtype": logprob_dtype}


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


def _shard_names(number: int, kinds: Sequence[str]) -> dict[str, str]:
    return {kind: f"shard-{number:05d}.{kind}.npy" for kind in kinds}


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


def _target_arrays(log_p: torch.Tensor, settings: dict, generator) -> dict[str, torch.Tensor]:
    """What a shard stores for (M, V) ensemble log-probs: kind -> (M, ...) tensor."""
    if settings["method"] == SAMPLED:
        return sampled_arrays(log_p, settings["samples"], generator)
    sparse = SparseTarget.from_log_probs(log_p, settings["top_k"])
    return {"indices": sparse.indices, "logprobs": sparse.logprobs, "tail": sparse.tail_logprob}


def _build_shard(partial: Path, number: int, start: int, end: int, teachers, blocks, settings: dict, weights, batch_size: int, device) -> None:
    seq_len, vocab = settings["seq_len"], settings["vocab_size"]
    layout = _layout(settings)
    names = _shard_names(number, layout)
    tmp = {kind: partial / f".{names[kind]}.tmp" for kind in layout}
    maps = {kind: np.lib.format.open_memmap(tmp[kind], mode="w+", dtype=dtype, shape=(end - start, seq_len, *shape))
            for kind, (shape, dtype) in layout.items()}
    generator = None
    for first in range(start, end, batch_size):
        last = min(first + batch_size, end)
        ids = torch.from_numpy(read_blocks(blocks, first, last))  # (b, T)
        if ids.shape[1] != seq_len:
            raise DistillError(f"block {first} has {ids.shape[1]} tokens but block 0 has {seq_len}; blocks must share seq_len")
        logits = [_teacher_logits(t, ids, vocab, device) for t in teachers]
        target_device = logits[0].device
        flat = [z.to(target_device).reshape(-1, vocab) for z in logits]  # (b, T, V) -> (b*T, V)
        log_p = ensemble_log_probs(flat, settings["temperature"], settings["ensemble"], weights)
        if generator is None and settings["method"] == SAMPLED:  # one per shard: a resumed build draws the same
            generator = shard_generator(settings["seed"], number, log_p.device)
        rows = slice(first - start, last - start)
        for kind, array in _target_arrays(log_p, settings, generator).items():
            shape, dtype = layout[kind]
            maps[kind][rows] = array.reshape(last - first, seq_len, *shape).cpu().numpy().astype(dtype)
    sha = {}
    for kind in layout:
        maps[kind].flush()
        del maps[kind]
        os.replace(tmp[kind], partial / names[kind])
        sha[names[kind]] = file_sha256(partial / names[kind])
    atomic_write_json(partial / f"shard-{number:05d}.json", {"blocks": [start, end], "files": names, "sha256": sha})


def _finish(partial: Path, out_dir: Path, settings: dict, num_shards: int, build_time_s: float) -> None:
    """Move the finished shards into ``out_dir`` with the manifest, atomically."""
    shards = []
    for number in range(num_shards):
        sidecar = partial / f"shard-{number:05d}.json"
        if not sidecar.is_file():
            raise RuntimeError(f"logit cache shard {number} was not built ({sidecar} missing)")
        shards.append(json.loads(sidecar.read_text(encoding="utf-8")))
    manifest = dict(settings, shards=shards, build_time_s=round(build_time_s, 2))  # this run's share of a resumed build
    with write_folder(out_dir, CACHE_FILES, fix="give student.logit_cache.dir a folder of its own") as tmp:
        for shard in shards:
            for name in shard["files"].values():
                os.replace(partial / name, tmp / name)
        atomic_write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(partial, ignore_errors=True)
