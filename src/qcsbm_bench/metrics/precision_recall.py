"""k-nearest-neighbour precision, recall, density and coverage of generated samples.

Let r_i be the distance from real feature x_i to its k-th nearest other real feature, and s_j
the same radius for fake feature y_j among the fake features. With N real and M fake features:

    precision = (1/M) sum_j 1[exists i: ||y_j - x_i|| <= r_i]      (Kynkaanniemi et al. 2019)
    recall    = (1/N) sum_i 1[exists j: ||x_i - y_j|| <= s_j]      (Kynkaanniemi et al. 2019)
    density   = (1/(k M)) sum_j sum_i 1[||y_j - x_i|| < r_i]       (Naeem et al. 2020)
    coverage  = (1/N) sum_i 1[min_j ||x_i - y_j|| < r_i]           (Naeem et al. 2020)

Precision and recall use closed balls, as in the definition of Kynkaanniemi et al. Density and
coverage use open balls, as in the prdc package released by Naeem et al. With open balls an
exact copy of the real set has density 1, while closed balls would give (k + 1) / k.
Precision, recall and coverage are fractions in [0, 1]. Density lies in [0, N / k].

NOTE: A feature with k or more exact duplicates has radius 0, so its open ball is empty and it
adds nothing to density or coverage. Deduplicate discrete features before calling.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_K = 3
DEFAULT_CHUNK_SIZE = 2048


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    # Returns the distance from each row of features (n, F) to its k-th nearest other row, (n,).
    # Each row's k + 1 smallest distances include its zero distance to itself, so the radius is
    # the (k + 1)-th smallest. A running top-(k + 1) over column chunks keeps memory at
    # chunk_size^2 distances.
    count = features.shape[0]
    radii = torch.empty(count, dtype=features.dtype, device=features.device)
    for row_start in range(0, count, chunk_size):
        rows = features[row_start : row_start + chunk_size]
        smallest = torch.full(
            (rows.shape[0], 0), torch.inf, dtype=features.dtype, device=features.device
        )
        for column_start in range(0, count, chunk_size):
            columns = features[column_start : column_start + chunk_size]
            distances = torch.cdist(rows, columns)
            candidates = torch.cat([smallest, distances], dim=1)
            keep = min(k + 1, candidates.shape[1])
            smallest = torch.topk(candidates, keep, dim=1, largest=False).values
        radii[row_start : row_start + rows.shape[0]] = smallest[:, k]
    return radii


def _validate_inputs(real: torch.Tensor, fake: torch.Tensor, k: int, chunk_size: int) -> None:
    if real.ndim != 2 or fake.ndim != 2:
        raise ValueError(
            f"real and fake must be 2-D (count, features), got shapes {tuple(real.shape)} and "
            f"{tuple(fake.shape)}."
        )
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake must have the same feature size, got {real.shape[1]} and "
            f"{fake.shape[1]}."
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if k >= real.shape[0] or k >= fake.shape[0]:
        raise ValueError(
            f"k must be smaller than both set sizes, got k={k} with {real.shape[0]} real and "
            f"{fake.shape[0]} fake features. Pass more features or a smaller k."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> dict[str, float]:
    """Compute precision, recall, density and coverage of fake features against real ones.

    Args:
        real: real features, shape (N, F).
        fake: generated features, shape (M, F), moved to the dtype and device of real.
        k: neighbour rank that sets each feature's ball radius. It must satisfy k < N and k < M.
        chunk_size: rows and columns per block of pairwise distances, so at most
            chunk_size^2 distances exist at a time.

    Returns:
        A dict with keys precision, recall, density and coverage.

    Raises:
        ValueError: if the inputs are not 2-D, differ in feature size, or k or chunk_size is
            out of range.
    """
    _validate_inputs(real, fake, k, chunk_size)
    fake = fake.to(device=real.device, dtype=real.dtype)
    real_radii = _kth_neighbour_radii(real, k, chunk_size)
    fake_radii = _kth_neighbour_radii(fake, k, chunk_size)

    fake_in_real_manifold = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    balls_containing_fake = torch.zeros(fake.shape[0], dtype=torch.int64, device=real.device)
    real_in_fake_manifold = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    real_covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)

    # Distances are always computed with real rows and fake columns, in the same blocks as the
    # real radii. An exact copy of the real set then reproduces the radii bit for bit (checked
    # on CPU), so its k-th neighbour sits exactly on the open ball's boundary.
    for row_start in range(0, real.shape[0], chunk_size):
        row_stop = min(row_start + chunk_size, real.shape[0])
        rows = real[row_start:row_stop]
        row_radii = real_radii[row_start:row_stop, None]
        for column_start in range(0, fake.shape[0], chunk_size):
            column_stop = min(column_start + chunk_size, fake.shape[0])
            distances = torch.cdist(rows, fake[column_start:column_stop])
            column_radii = fake_radii[None, column_start:column_stop]

            fake_in_real_manifold[column_start:column_stop] |= (distances <= row_radii).any(0)
            balls_containing_fake[column_start:column_stop] += (distances < row_radii).sum(0)
            real_in_fake_manifold[row_start:row_stop] |= (distances <= column_radii).any(1)
            real_covered[row_start:row_stop] |= (distances < row_radii).any(1)

    return {
        "precision": fake_in_real_manifold.double().mean().item(),
        "recall": real_in_fake_manifold.double().mean().item(),
        "density": balls_containing_fake.double().mean().item() / k,
        "coverage": real_covered.double().mean().item(),
    }


def prdc(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = DEFAULT_K,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """Compute precision, recall, density and coverage of NumPy or torch features in float64.

    Args:
        real: real features, shape (N, F), for example Inception pool features.
        fake: generated features, shape (M, F).
        k, chunk_size: as in precision_recall.

    Returns:
        A dict with keys precision, recall, density and coverage.
    """
    real_tensor = torch.as_tensor(real, dtype=torch.float64)
    fake_tensor = torch.as_tensor(fake, dtype=torch.float64, device=real_tensor.device)
    return precision_recall(real_tensor, fake_tensor, k=k, chunk_size=chunk_size)
