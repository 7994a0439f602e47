"""Tests for the Frechet distance, its Gaussian fits and statistics files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance
from scipy.stats import ortho_group

from qcsbm_bench.metrics import frechet
from qcsbm_bench.metrics.frechet import (
    FeatureStatistics,
    feature_statistics,
    frechet_distance,
    frechet_distance_between,
    load_statistics,
    save_statistics,
    statistics_of,
)

METADATA = {
    "features": "inception-2015-12-05 pool_3",
    "mode": "clean",
    "resolution": 32,
    "dataset": "cifar10",
    "split": "train",
}


def diagonal_case(dimension: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=dimension), rng.normal(size=dimension)
    variances1 = rng.uniform(0.2, 3.0, size=dimension)
    variances2 = rng.uniform(0.2, 3.0, size=dimension)
    return mu1, variances1, mu2, variances2


def diagonal_closed_form(
    mu1: np.ndarray, variances1: np.ndarray, mu2: np.ndarray, variances2: np.ndarray
) -> float:
    # For commuting diagonal covariances, tr(S1 + S2 - 2 (S1 S2)^(1/2)) equals
    # sum (sqrt s1 - sqrt s2)^2.
    mean_term = np.sum((mu1 - mu2) ** 2)
    covariance_term = np.sum((np.sqrt(variances1) - np.sqrt(variances2)) ** 2)
    return float(mean_term + covariance_term)


def random_covariance(dimension: int, rng: np.random.Generator) -> np.ndarray:
    factor = rng.normal(size=(dimension, 2 * dimension))
    return factor @ factor.T / (2 * dimension)


def test_diagonal_gaussians_closed_form() -> None:
    mu1, variances1, mu2, variances2 = diagonal_case(6, seed=0)
    distance = frechet_distance(mu1, np.diag(variances1), mu2, np.diag(variances2))
    expected = diagonal_closed_form(mu1, variances1, mu2, variances2)
    assert distance == pytest.approx(expected, rel=1e-10)


def test_rotation_leaves_distance_unchanged() -> None:
    # Rotating both Gaussians by one orthogonal Q gives full, non-commuting-looking
    # covariances Q S Q^T whose distance still has the diagonal closed form.
    mu1, variances1, mu2, variances2 = diagonal_case(5, seed=1)
    rotation = ortho_group.rvs(5, random_state=2)
    distance = frechet_distance(
        rotation @ mu1,
        rotation @ np.diag(variances1) @ rotation.T,
        rotation @ mu2,
        rotation @ np.diag(variances2) @ rotation.T,
    )
    expected = diagonal_closed_form(mu1, variances1, mu2, variances2)
    assert distance == pytest.approx(expected, rel=1e-8)


def test_distance_to_itself_is_zero() -> None:
    features = np.random.default_rng(3).normal(size=(400, 12))
    mu, sigma = feature_statistics(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-10 * np.trace(sigma)


def test_distance_is_symmetric() -> None:
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    sigma1, sigma2 = random_covariance(8, rng), random_covariance(8, rng)
    forward = frechet_distance(mu1, sigma1, mu2, sigma2)
    backward = frechet_distance(mu2, sigma2, mu1, sigma1)
    assert forward > 0.0
    assert forward == pytest.approx(backward, rel=1e-10)


def test_sample_estimate_near_closed_form() -> None:
    # 20,000 draws per Gaussian in 4 dimensions. The plug-in estimate is biased by O(F / N)
    # and its sampling error is about 1% of the distance here, so 5% relative is generous.
    mu1, variances1, mu2, variances2 = diagonal_case(4, seed=5)
    rng = np.random.default_rng(6)
    first = mu1 + np.sqrt(variances1) * rng.normal(size=(20_000, 4))
    second = mu2 + np.sqrt(variances2) * rng.normal(size=(20_000, 4))
    estimate = frechet_distance(*feature_statistics(first), *feature_statistics(second))
    expected = diagonal_closed_form(mu1, variances1, mu2, variances2)
    assert estimate == pytest.approx(expected, rel=0.05)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_agrees_with_cleanfid() -> None:
    rng = np.random.default_rng(7)
    mu1, sigma1 = feature_statistics(rng.normal(size=(300, 20)))
    mu2, sigma2 = feature_statistics(1.3 * rng.normal(size=(250, 20)) + 0.2)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    theirs = float(cleanfid_frechet_distance(mu1, sigma1, mu2, sigma2))
    assert ours > 1.0
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_more_features_than_samples() -> None:
    # Covariances of rank 9 in 40 dimensions make the product singular. The result must stay
    # finite, and zero up to sqrtm rounding (about 1e-8 of the trace) for identical statistics.
    rng = np.random.default_rng(8)
    mu1, sigma1 = feature_statistics(rng.normal(size=(10, 40)))
    mu2, sigma2 = feature_statistics(rng.normal(size=(10, 40)))
    distance = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(distance)
    assert distance > 0.0
    assert abs(frechet_distance(mu1, sigma1, mu1, sigma1)) < 1e-6 * np.trace(sigma1)


def test_nonfinite_square_root_adds_eps(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulate a singular product by making the first sqrtm call return NaN.
    real_sqrtm = frechet.linalg.sqrtm
    calls: list[np.ndarray] = []

    def failing_first_call(matrix: np.ndarray) -> np.ndarray:
        calls.append(matrix)
        if len(calls) == 1:
            return np.full_like(matrix, np.nan)
        return real_sqrtm(matrix)

    monkeypatch.setattr(frechet.linalg, "sqrtm", failing_first_call)
    mu1, variances1, mu2, variances2 = diagonal_case(3, seed=9)
    eps = 1e-3
    with caplog.at_level(logging.WARNING, logger=frechet.__name__):
        distance = frechet_distance(mu1, np.diag(variances1), mu2, np.diag(variances2), eps=eps)

    assert len(calls) == 2
    assert "adding 0.001 to the diagonal" in caplog.text
    # With eps on both diagonals the square-root term uses s + eps, the trace terms do not.
    square_root_term = np.sum(np.sqrt((variances1 + eps) * (variances2 + eps)))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(variances1 + variances2) - 2 * square_root_term
    assert distance == pytest.approx(expected, rel=1e-10)


def test_large_imaginary_part_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        frechet.linalg, "sqrtm", lambda matrix: matrix + 0.1j * np.eye(matrix.shape[0])
    )
    with pytest.raises(ValueError, match=r"imaginary diagonal part of 0\.1"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))


def test_small_imaginary_part_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sqrtm = frechet.linalg.sqrtm
    monkeypatch.setattr(
        frechet.linalg, "sqrtm", lambda matrix: real_sqrtm(matrix) + 1e-9j * np.eye(2)
    )
    distance = frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4.0 * np.eye(2))
    assert distance == pytest.approx(2.0 + 2.0 * (2.0 - 1.0) ** 2, rel=1e-12)


def test_feature_statistics_match_numpy() -> None:
    features = np.random.default_rng(10).normal(size=(50, 3))
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(features.T, ddof=1), rtol=1e-12)
    one_feature_mu, one_feature_sigma = feature_statistics(features[:, :1])
    assert one_feature_mu.shape == (1,)
    assert one_feature_sigma.shape == (1, 1)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        feature_statistics(np.zeros(5))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="differ in dimension, 2 and 3"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariance"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_statistics_round_trip(tmp_path: Path) -> None:
    features = np.random.default_rng(11).normal(size=(30, 4))
    statistics = statistics_of(features, **METADATA)
    assert statistics.metadata["n"] == 30
    path = tmp_path / "stats" / "cifar10_train.npz"
    save_statistics(path, statistics)
    loaded = load_statistics(path)
    np.testing.assert_array_equal(loaded.mu, statistics.mu)
    np.testing.assert_array_equal(loaded.sigma, statistics.sigma)
    assert loaded.metadata == {**METADATA, "n": 30}


def test_save_requires_metadata(tmp_path: Path) -> None:
    statistics = FeatureStatistics(np.zeros(2), np.eye(2), {"mode": "clean"})
    with pytest.raises(ValueError, match="dataset"):
        save_statistics(tmp_path / "stats.npz", statistics)
    assert not (tmp_path / "stats.npz").exists()


def test_load_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        load_statistics(tmp_path / "absent.npz")


def test_load_truncated_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "cifar10_train.npz"
    save_statistics(path, statistics_of(np.random.default_rng(3).normal(size=(30, 4)), **METADATA))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cifar10_train\.npz is corrupt or incomplete"):
        load_statistics(path)


def test_unlike_statistics_not_compared() -> None:
    rng = np.random.default_rng(12)
    reference = statistics_of(rng.normal(size=(40, 3)), **METADATA)
    samples = statistics_of(rng.normal(size=(40, 3)), **{**METADATA, "split": "samples"})
    assert frechet_distance_between(reference, samples) > 0.0
    legacy = statistics_of(rng.normal(size=(40, 3)), **{**METADATA, "mode": "legacy_tensorflow"})
    with pytest.raises(ValueError, match="differ in mode: 'clean' and 'legacy_tensorflow'"):
        frechet_distance_between(reference, legacy)
