"""Merging of sample shards into one file per run and sampler, before the sample metrics.

Every index 0..n_samples-1 must come from exactly one shard, and all shards must share the
settings of one sampling run (see qcsbm_bench.image_sampling, which writes them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qcsbm_bench.artifacts import load_npz
from qcsbm_bench.image_sampling import json_array, read_json_array, write_npz

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeResult:
    """The merged sample file and the NFE and time statistics over all batches."""

    path: Path
    n_images: int
    nfe_mean: float
    nfe_std: float
    seconds_total: float
    settings: dict[str, Any]


def _describe_indices(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    more = f" and {len(indices) - limit} more" if len(indices) > limit else ""
    return f"{len(indices)} index(es): {shown}{more}"


def _check_coverage(
    indices: np.ndarray, owners: np.ndarray, shard_names: Sequence[str], n_samples: int
) -> None:
    """Raise ValueError unless `indices` contains each of 0..n_samples-1 exactly once.

    owners[j] is the position in shard_names of the file that contains indices[j].
    """
    outside = indices[(indices < 0) | (indices >= n_samples)]
    if outside.size:
        holders = sorted({shard_names[o] for o in owners[(indices < 0) | (indices >= n_samples)]})
        raise ValueError(
            f"indices outside 0..{n_samples - 1} in {holders}: "
            f"{_describe_indices(outside.tolist())}; were the shards sampled with another "
            "n_samples?"
        )
    counts = np.bincount(indices, minlength=n_samples)
    duplicates = np.flatnonzero(counts > 1)
    if duplicates.size:
        first = int(duplicates[0])
        holders = sorted({shard_names[o] for o in owners[indices == first]})
        raise ValueError(
            f"duplicate sample {_describe_indices(duplicates.tolist())}; index {first} is in "
            f"{holders}; pass each shard file once, all from one n_shards layout"
        )
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(
            f"missing sample {_describe_indices(missing.tolist())} among the shards "
            f"{list(shard_names)}; run the shard jobs that cover them"
        )


SHARD_ARRAYS = frozenset({"images", "finite", "indices", "batch_ids", "nfe", "seconds", "settings"})


def _load_shard(shard_file: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return a shard file's settings and its arrays."""
    arrays = load_npz(shard_file, sorted(SHARD_ARRAYS), producer="its sample-images job")
    return read_json_array(arrays, "settings"), arrays


def merge_shards(paths: Sequence[Path], out: Path, *, n_samples: int) -> MergeResult:
    """Merge shard files into one npz with images in index order, and return its statistics.

    Every index 0..n_samples-1 must appear exactly once, and every shard must share the
    settings of the first one (sampler and its options, seed, shape, batch size, SDE, model
    fingerprint). Otherwise ValueError names the shard file and the missing, duplicate or
    out-of-range indices. `out` holds images uint8 (n_samples, C, H, W), indices, the
    per-batch batch_ids, nfe and seconds sorted by batch, nfe_mean, nfe_std, the settings
    JSON and the shard file names.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("merge_shards needs at least one shard file, got an empty list")
    reference, first_arrays = _load_shard(paths[0])
    if reference["n_samples"] != n_samples:
        raise ValueError(
            f"n_samples={n_samples} but shard {paths[0]} was sampled with "
            f"n_samples={reference['n_samples']}; pass the n_samples of the sampling run"
        )
    shards = [first_arrays]
    for shard_file in paths[1:]:
        settings, arrays = _load_shard(shard_file)
        if settings != reference:
            differing = sorted(
                key
                for key in settings.keys() | reference.keys()
                if settings.get(key) != reference.get(key)
            )
            raise ValueError(
                f"shard {shard_file} has settings that differ from {paths[0]} in {differing}; "
                "merge only shards of one sampling run"
            )
        shards.append(arrays)

    def joined(key: str) -> np.ndarray:
        return np.concatenate([arrays[key] for arrays in shards])

    indices = joined("indices")
    owners = np.concatenate([np.full(len(a["indices"]), k) for k, a in enumerate(shards)])
    _check_coverage(indices, owners, [str(p) for p in paths], n_samples)

    order = np.argsort(indices, kind="stable")
    batch_order = np.argsort(joined("batch_ids"), kind="stable")
    nfe = joined("nfe")[batch_order]
    seconds = joined("seconds")[batch_order]
    out = Path(out)
    write_npz(
        out,
        images=joined("images")[order],
        finite=joined("finite")[order],
        indices=indices[order],
        batch_ids=joined("batch_ids")[batch_order],
        nfe=nfe,
        seconds=seconds,
        nfe_mean=np.array(nfe.mean()),
        nfe_std=np.array(nfe.std()),
        settings=json_array(reference),
        shards=np.array([p.name for p in paths]),
    )
    logger.info("merged %d shards into %s (%d samples)", len(paths), out, n_samples)
    return MergeResult(
        path=out,
        n_images=n_samples,
        nfe_mean=float(nfe.mean()),
        nfe_std=float(nfe.std()),
        seconds_total=float(seconds.sum()),
        settings=reference,
    )
