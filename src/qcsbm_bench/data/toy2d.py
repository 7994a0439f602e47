"""Two-dimensional toy data sets: 8-Gaussians, checkerboard and two spirals.

The definitions follow the toy experiments of Chao et al., "On Investigating the Conservative
Property of Score-Based Generative Models" (ICML 2023). Every sampler returns float64 points of
shape (n, 2) and draws only from the numpy Generator it is given, so a seed fixes the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from qcsbm_bench.atomic import atomic_open

logger = logging.getLogger(__name__)

TOY_DATASETS: tuple[str, ...] = ("8gaussians", "checkerboard", "spirals")

# Command that writes the toy data files, named in the error for a missing file.
PREP_COMMAND = "qcsbm-bench prep-data"


def _sample_8gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    # x = (z + 8 c_k) / sqrt(2) with z ~ N(0, I) and c_k the unit vector at angle k * 45 degrees,
    # so each mode is N(8 c_k / sqrt(2), I / 2). Shape (n, 2).
    mode = rng.integers(0, 8, size=n)
    angle = mode * (np.pi / 4.0)
    centre = 8.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    noise = rng.standard_normal((n, 2))
    return (noise + centre) / np.sqrt(2.0)


def _sample_checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # x1 ~ U[-2, 2), x2 = U[0, 1) - 2 B + (floor(x1) mod 2) with B ~ Bernoulli(1/2), then times 3.
    # floor(x2) = (floor(x1) mod 2) - 2 B has the parity of floor(x1), so the points fill the
    # 3 x 3 squares of [-6, 6)^2 whose integer cell coordinates have an even sum. Shape (n, 2).
    x1 = rng.uniform(-2.0, 2.0, size=n)
    x2 = rng.random(n) - 2.0 * rng.integers(0, 2, size=n) + np.mod(np.floor(x1), 2.0)
    return 3.0 * np.stack([x1, x2], axis=1)


def _sample_spiral_arm(n: int, rng: np.random.Generator) -> np.ndarray:
    # r = sqrt(U) * 3 pi, point = (-r cos r + U'/2, r sin r + U''/2) with U, U', U'' ~ U[0, 1).
    # Shape (n, 2), before the final 2.3 / 3 scaling.
    r = np.sqrt(rng.random(n)) * 3.0 * np.pi
    jitter = 0.5 * rng.random((n, 2))
    curve = np.stack([-r * np.cos(r), r * np.sin(r)], axis=1)
    return curve + jitter


def _sample_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    # One arm gets ceil(n / 2) points and the mirrored arm (x -> -x) gets floor(n / 2).
    # All points are scaled by 2.3 / 3 and shuffled. Shape (n, 2).
    n_first = (n + 1) // 2
    n_second = n // 2
    first = _sample_spiral_arm(n_first, rng)
    second = -_sample_spiral_arm(n_second, rng)
    points = np.concatenate([first, second], axis=0) * (2.3 / 3.0)
    return points[rng.permutation(n)]


def sample_toy(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n points of the toy data set `name` as a float64 array of shape (n, 2).

    Raises:
        ValueError: if `name` is not in TOY_DATASETS or `n` is less than 1.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"Unknown toy data set {name!r}. Use one of: {', '.join(TOY_DATASETS)}.")
    if n < 1:
        raise ValueError(f"Sample size n must be at least 1, got {n}.")

    if name == "8gaussians":
        points = _sample_8gaussians(n, rng)
    elif name == "checkerboard":
        points = _sample_checkerboard(n, rng)
    else:
        points = _sample_spirals(n, rng)
    return np.ascontiguousarray(points, dtype=np.float64)


def _sha256_of_array(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def prepare_toy_dataset(
    name: str, n_train: int, n_test: int, seed: int, path: Path
) -> dict[str, Any]:
    """Draw a train and a test set and write them with metadata to one .npz file.

    The two sets come from independent streams spawned from np.random.SeedSequence(seed). The
    file contains the arrays `train` (n_train, 2) and `test` (n_test, 2) and a JSON string
    `metadata`. It is written to a temporary file in the same folder and then renamed, so an
    interrupted run never leaves a partial file at `path`.

    Returns:
        The metadata: name, seed, n_train, n_test, numpy_version and sha256 (one SHA-256 hex
        digest of the raw float64 bytes per array).

    Raises:
        ValueError: if the name is unknown, a size is less than 1 or the seed is negative.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(
            f"n_train and n_test must be at least 1, got n_train={n_train}, n_test={n_test}."
        )
    if seed < 0:
        raise ValueError(f"Seed must be a non-negative integer, got {seed}.")

    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    train = sample_toy(name, n_train, np.random.default_rng(train_seed))
    test = sample_toy(name, n_test, np.random.default_rng(test_seed))

    metadata: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "numpy_version": np.__version__,
        "sha256": {"train": _sha256_of_array(train), "test": _sha256_of_array(test)},
    }

    with atomic_open(path, "wb") as handle:
        np.savez(handle, train=train, test=test, metadata=np.array(json.dumps(metadata)))

    logger.info(
        "Wrote toy data set %s (n_train=%d, n_test=%d, seed=%d) to %s",
        name,
        n_train,
        n_test,
        seed,
        path,
    )
    return metadata


def _check_points(array: np.ndarray, key: str, expected_rows: int, path: Path) -> None:
    if array.dtype != np.float64 or array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(
            f"Invalid toy data file {path}: array {key!r} must be float64 of shape (n, 2), "
            f"got {array.dtype} of shape {array.shape}. Recreate it with `{PREP_COMMAND}`."
        )
    if array.shape[0] != expected_rows:
        raise ValueError(
            f"Invalid toy data file {path}: array {key!r} has {array.shape[0]} rows but the "
            f"metadata records {expected_rows}. Recreate it with `{PREP_COMMAND}`."
        )


def load_toy_dataset(path: Path, expected_name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load the (train, test) arrays written by prepare_toy_dataset and verify their checksums.

    With expected_name, the file must also record that data set name.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not a readable .npz, lacks an array, has a wrong shape or
            dtype, or an array does not match its recorded SHA-256 digest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Toy data file {path} not found. Create it with `{PREP_COMMAND}`.")

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Invalid toy data file {path}: it is not a readable .npz archive ({error}). "
            f"Recreate it with `{PREP_COMMAND}`."
        ) from error

    missing = [key for key in ("train", "test", "metadata") if key not in arrays]
    if missing:
        raise ValueError(
            f"Invalid toy data file {path}: missing arrays {missing}. "
            f"Recreate it with `{PREP_COMMAND}`."
        )

    try:
        metadata = json.loads(str(arrays["metadata"]))
        n_train = int(metadata["n_train"])
        n_test = int(metadata["n_test"])
        digests = {key: str(metadata["sha256"][key]) for key in ("train", "test")}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Invalid toy data file {path}: the metadata is not valid ({error!r}). "
            f"Recreate it with `{PREP_COMMAND}`."
        ) from error

    if expected_name is not None and metadata.get("name") != expected_name:
        raise ValueError(
            f"Toy data file {path} contains the {metadata.get('name')!r} data set, not "
            f"{expected_name!r}. Pass the {expected_name}.npz file."
        )
    train = arrays["train"]
    test = arrays["test"]
    _check_points(train, "train", n_train, path)
    _check_points(test, "test", n_test, path)
    for key, array in (("train", train), ("test", test)):
        if _sha256_of_array(array) != digests[key]:
            raise ValueError(
                f"Invalid toy data file {path}: array {key!r} does not match its recorded "
                f"SHA-256 digest, so the file is corrupted. Recreate it with `{PREP_COMMAND}`."
            )
    return train, test
