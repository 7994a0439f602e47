"""Frechet distance between Gaussian fits of two feature sets, and its statistics files.

For features fitted by N(mu1, S1) and N(mu2, S2) the squared Frechet (2-Wasserstein) distance
is (Dowson and Landau 1982)

    d^2 = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

With Inception pool features this is the FID (Heusel et al. 2017). With the features of a
dataset's own classifier it is reported as "FD (<dataset> classifier)" and never as FID.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import linalg

from qcsbm_bench.artifacts import load_npz
from qcsbm_bench.atomic import atomic_open

logger = logging.getLogger(__name__)

DEFAULT_EPS = 1e-6
# Largest imaginary part allowed on the diagonal of sqrtm(S1 S2) before it is dropped. The
# eigenvalues of S1 S2 are real and non-negative in exact arithmetic, so an imaginary part is
# rounding error. clean-fid 0.1.35 uses the same tolerance.
IMAGINARY_TOLERANCE = 1e-3
REQUIRED_METADATA = ("features", "mode", "n", "resolution", "dataset", "split")
# Metadata that must agree for two statistics to be compared.
COMPARABLE_KEYS = ("features", "mode", "resolution")


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit a Gaussian to features (N, F): the mean (F,) and unbiased covariance (F, F), float64.

    The covariance divides by N - 1, as numpy.cov and clean-fid do.
    """
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"features must be 2-D (N, F), got shape {array.shape}.")
    if array.shape[0] < 2:
        raise ValueError(
            f"at least 2 feature rows are needed for a covariance, got {array.shape[0]}."
        )
    if not np.isfinite(array).all():
        raise ValueError("features contain NaN or infinite values; check the feature extractor.")
    mu = array.mean(axis=0)
    sigma = np.cov(array, rowvar=False)
    return mu, np.atleast_2d(sigma)


def _validate_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name}: mean must be (F,) and covariance (F, F), got {mu.shape} and {sigma.shape}."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name}: mean or covariance contains NaN or infinite values.")


def _covariance_product_sqrt(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> np.ndarray:
    # Returns sqrtm(S1 S2). A singular product (fewer samples than features, or constant
    # features) can make sqrtm return non-finite values. Adding eps I to both covariances
    # makes the product non-singular, at a cost of about eps * F in the distance.
    product_sqrt = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(product_sqrt).all():
        logger.warning(
            "sqrtm(S1 S2) is not finite because the product is singular; adding %g to the "
            "diagonal of both covariances.",
            eps,
        )
        offset = eps * np.eye(sigma1.shape[0])
        product_sqrt = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))

    if np.iscomplexobj(product_sqrt):
        largest_imaginary = float(np.abs(np.diagonal(product_sqrt).imag).max())
        if largest_imaginary > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"sqrtm(S1 S2) has an imaginary diagonal part of {largest_imaginary:.3g}, above "
                f"{IMAGINARY_TOLERANCE}. The covariances are not positive semi-definite or are "
                "badly conditioned; use more samples than feature dimensions."
            )
        logger.debug("Dropping an imaginary part of %.3g from sqrtm(S1 S2).", largest_imaginary)
        product_sqrt = product_sqrt.real
    return product_sqrt


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = DEFAULT_EPS,
) -> float:
    """Compute ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson and Landau 1982).

    Args:
        mu1, mu2: means, shape (F,).
        sigma1, sigma2: covariances, shape (F, F).
        eps: added to both covariance diagonals (with a logged warning) only when the product
            is too singular for a finite square root.

    Returns:
        The squared distance, in squared feature units. It is the value called FID when the
        features are Inception pool features. Rounding in sqrtm can leave values slightly
        below 0 (about 1e-8 of tr(S1) for singular covariances), which are returned as they are.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    _validate_gaussian(mu1, sigma1, "first Gaussian")
    _validate_gaussian(mu2, sigma2, "second Gaussian")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"the two Gaussians differ in dimension, {mu1.shape[0]} and {mu2.shape[0]}."
        )

    difference = mu1 - mu2
    product_sqrt = _covariance_product_sqrt(sigma1, sigma2, eps)
    trace = np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(product_sqrt)
    return float(difference @ difference + trace)


@dataclass(frozen=True)
class FeatureStatistics:
    """Gaussian fit of a feature set and the settings that produced it.

    mu: mean, shape (F,). sigma: covariance, shape (F, F).
    metadata: at least features (the extractor, e.g. "inception-2015-12-05 pool_3"), mode
        (clean-fid mode, or "none" for classifier features), n (number of images),
        resolution (image side in pixels), dataset and split.
    """

    mu: np.ndarray
    sigma: np.ndarray
    metadata: Mapping[str, Any] = field(default_factory=dict)


def statistics_of(features: np.ndarray, /, **metadata: Any) -> FeatureStatistics:
    """Fit a Gaussian to features (N, F) and attach the keyword metadata, with n set to N.

    features is positional-only, so that "features" (the extractor's name) can be a metadata
    keyword.
    """
    mu, sigma = feature_statistics(features)
    return FeatureStatistics(mu, sigma, {**metadata, "n": int(np.shape(features)[0])})


def save_statistics(path: Path, statistics: FeatureStatistics) -> None:
    """Write mu, sigma and the metadata (as a JSON string) to an .npz file, atomically."""
    missing = [key for key in REQUIRED_METADATA if key not in statistics.metadata]
    if missing:
        raise ValueError(
            f"statistics metadata lacks {missing}; set all of {REQUIRED_METADATA} so that "
            "unlike statistics are never compared."
        )
    metadata_json = json.dumps(dict(statistics.metadata), sort_keys=True)
    with atomic_open(Path(path), "wb") as handle:
        np.savez(handle, mu=statistics.mu, sigma=statistics.sigma, metadata=metadata_json)


def load_statistics(path: Path) -> FeatureStatistics:
    """Read statistics written by save_statistics."""
    data = load_npz(
        path, ("mu", "sigma", "metadata"), producer="the job that wrote these statistics"
    )
    return FeatureStatistics(
        mu=data["mu"], sigma=data["sigma"], metadata=json.loads(str(data["metadata"]))
    )


def frechet_distance_between(
    first: FeatureStatistics, second: FeatureStatistics, eps: float = DEFAULT_EPS
) -> float:
    """Compute the Frechet distance of two statistics after checking they are comparable.

    Raises:
        ValueError: if the feature extractor, clean-fid mode or resolution differ.
    """
    for key in COMPARABLE_KEYS:
        first_value = first.metadata.get(key)
        second_value = second.metadata.get(key)
        if first_value != second_value:
            raise ValueError(
                f"statistics differ in {key}: {first_value!r} and {second_value!r}. Recompute "
                f"one of them with the same {key}."
            )
    return frechet_distance(first.mu, first.sigma, second.mu, second.sigma, eps=eps)
