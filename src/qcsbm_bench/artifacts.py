"""Writing results safely: atomic files, JSONL logs, checkpoints and run settings.

Every file is written to a temporary name in its folder and then renamed, so a killed
job leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from qcsbm_bench.atomic import atomic_open

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def write_json(data: Mapping[str, Any], path: Path) -> None:
    with atomic_open(path) as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Save tensors and plain Python values so that torch.load(weights_only=True) reads them."""
    with atomic_open(path, "wb") as handle:
        torch.save(dict(state), handle)


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; run the train stage first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, KeyError) as error:
        raise ValueError(
            f"checkpoint {path} is not a readable torch checkpoint ({error}); delete it and "
            "rerun the train stage"
        ) from error


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 digest of a file, read in blocks."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_open(path.with_suffix(".npz"), "wb") as handle:
        np.savez(handle, **arrays)


# Errors of np.load and zipfile on a truncated or damaged archive: BadZipFile for a cut-off
# zip directory or a CRC mismatch, EOFError for an empty file, ValueError for a damaged array
# header and OSError for a failed read.
_NPZ_READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, OSError)


def _read_npz(path: Path, keys: Iterable[str] | None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Return the array names in an .npz file and its arrays `keys`, none if one is missing."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise zipfile.BadZipFile("the file is a single .npy array, not an .npz archive")
    with loaded as archive:
        names = list(archive.files)
        requested = list(names if keys is None else keys)
        if not set(requested) <= set(names):
            return names, {}
        return names, {key: archive[key] for key in requested}


def load_npz(
    path: Path, keys: Iterable[str] | None = None, *, producer: str = "the job that writes it"
) -> dict[str, np.ndarray]:
    """Read the arrays `keys` (all arrays if None) of an .npz file into memory.

    Raises FileNotFoundError for a missing file, and ValueError for a file that is not a
    complete npz archive or lacks one of `keys`. Both messages name the file and tell the
    user to rerun `producer`, the job that writes it (e.g. "the merge-samples job").
    """
    path = Path(path)
    keys = None if keys is None else list(keys)
    redo = f"delete it and rerun {producer} (Snakemake reruns the job of a missing file)"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run {producer} first")
    try:
        names, arrays = _read_npz(path, keys)
    except _NPZ_READ_ERRORS as error:
        raise ValueError(
            f"{path} is corrupt or incomplete ({type(error).__name__}: {error}); {redo}"
        ) from error
    missing = sorted(set(keys or ()) - set(names))
    if missing:
        raise ValueError(
            f"{path} is incomplete: it lacks the arrays {missing} (it has {sorted(names)}); {redo}"
        )
    return arrays


def check_checkpoint_run(
    state: Mapping[str, Any],
    checkpoint: Path,
    expected: Mapping[str, Any],
    role: str = "checkpoint",
) -> None:
    """Raise ValueError naming each run entry where a checkpoint differs from `expected`.

    The run entries are dataset, variant and seed, which train_state.final_checkpoint
    stores. A checkpoint that lacks an expected entry is rejected too, because its run cannot
    be checked. `role` names the checkpoint in the message (e.g. "fine-tuning init checkpoint").
    """
    differing = []
    for key, value in expected.items():
        if key not in state:
            differing.append(f"{key}: no entry in the checkpoint, {value!r} expected")
        elif state[key] != value:
            differing.append(f"{key}: {state[key]!r} in the checkpoint, {value!r} expected")
    if differing:
        run = ", ".join(f"{key} {value!r}" for key, value in expected.items())
        raise ValueError(
            f"{role} {checkpoint} is not from the expected run (" + "; ".join(differing) + "); "
            f"pass the checkpoint of {run}"
        )


class JsonlWriter:
    """Append one JSON object per line and flush, so a crash loses at most one row."""

    def __init__(self, path: Path, append: bool = False) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = open(path, "a" if append else "w")  # noqa: SIM115

    def write(self, row: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(row, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch and return a torch Generator seeded with `seed`."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_deterministic(threads: int | None = None) -> None:
    """Fix settings that change results: TF32 off, no cuDNN autotuning, a thread count."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    if threads is not None:
        torch.set_num_threads(threads)


def derive_seed(base: int, *parts: str | int) -> int:
    """Derive an independent 32-bit seed from a base seed and labels (stable across runs)."""
    entropy = [base] + [int.from_bytes(str(p).encode(), "little") % 2**32 for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
