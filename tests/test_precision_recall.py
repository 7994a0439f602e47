"""Tests for k-NN precision, recall, density and coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qcsbm_bench.metrics.precision_recall import prdc, precision_recall

DTYPE = torch.float64
KEYS = {"precision", "recall", "density", "coverage"}


def gaussian(count: int, dimension: int, centre: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(count, dimension, generator=generator, dtype=DTYPE)
    points[:, 0] += centre
    return points


@pytest.mark.parametrize("chunk_size", [64, 2048])
def test_identical_sets_score_one(chunk_size: int) -> None:
    real = gaussian(300, 16, 0.0, seed=0)
    result = precision_recall(real, real.clone(), chunk_size=chunk_size)
    assert set(result) == KEYS
    assert result["precision"] == 1.0
    assert result["recall"] == 1.0
    assert result["coverage"] == 1.0
    # Each open real ball contains the point itself and its k - 1 nearer neighbours, so the
    # density of an exact copy is (N k) / (k N) = 1.
    assert result["density"] == pytest.approx(1.0, abs=1e-12)


def test_far_apart_sets_score_zero() -> None:
    real = gaussian(200, 4, 0.0, seed=1)
    fake = gaussian(150, 4, 1000.0, seed=2)
    result = precision_recall(real, fake)
    assert result == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_half_of_modes_covered() -> None:
    # Real data has two unit Gaussians 40 apart, and the fake data samples only the first one.
    real = torch.cat([gaussian(1000, 2, -20.0, seed=3), gaussian(1000, 2, 20.0, seed=4)])
    fake = gaussian(1000, 2, -20.0, seed=5)
    result = precision_recall(real, fake)

    # Real points of the second mode lie about 40 away from every fake ball, so recall and
    # coverage are at most 1/2. Within the first mode real and fake share a distribution, so
    # nearly every real point there is inside a fake ball and the other way round.
    assert 0.45 <= result["recall"] <= 0.5
    # Coverage within the first mode follows the same-distribution law below with N = M = 1000,
    # about 0.875, and the second mode adds nothing, so coverage is about 0.4375.
    expected_coverage = 0.5 * same_distribution_coverage(1000, 1000, 3)
    assert abs(result["coverage"] - expected_coverage) < 5.0 * (0.33 / 1000**0.5) / 2.0
    assert result["precision"] >= 0.9
    assert 0.8 <= result["density"] <= 1.2


def same_distribution_coverage(real_count: int, fake_count: int, k: int) -> float:
    # A real point is uncovered exactly when its k nearest neighbours among the other
    # N - 1 real and M fake points are all real. If both sets are drawn from one continuous
    # distribution, every ordering is equally likely, so
    # E[coverage] = 1 - prod_{i=1..k} (N - i) / (N + M - i).
    uncovered = 1.0
    for i in range(1, k + 1):
        uncovered *= (real_count - i) / (real_count + fake_count - i)
    return 1.0 - uncovered


def test_same_distribution_expected_coverage() -> None:
    # Coverage is a mean of N indicators with variance p (1 - p) <= 0.11 each when p ~ 0.875.
    # The indicators are weakly dependent, so a tolerance of 5 independent-case standard
    # errors is an estimate.
    count = 2000
    real = gaussian(count, 2, 0.0, seed=9)
    fake = gaussian(count, 2, 0.0, seed=10)
    result = precision_recall(real, fake)
    expected = same_distribution_coverage(count, count, 3)
    assert abs(result["coverage"] - expected) < 5.0 * (0.33 / count**0.5)
    # Density has expectation 1 when real and fake share a distribution.
    assert abs(result["density"] - 1.0) < 0.1


def test_hand_computed_one_dimensional_case() -> None:
    # Real points 0, 4, 12, 24, 40 with k = 2. The second-nearest-neighbour distances are
    #   0: 4, 12 -> 12;  4: 4, 8 -> 8;  12: 8, 12 -> 12;  24: 12, 16 -> 16;  40: 16, 28 -> 28.
    # Fake points 1, 2, 3, 66, 68, 70 have radii 2, 1, 2, 4, 2, 4, so the fake closed balls are
    #   [-1, 3], [1, 3], [1, 5], [62, 70], [66, 70], [66, 74].
    # precision: 1, 2, 3 lie in [-12, 12]; 66 and 68 lie in [12, 68] (68 on the closed
    #   boundary, |68 - 40| = 28); 70 lies in no real ball. Result 5 / 6.
    # recall: 0 is in [-1, 3] and 4 is in [1, 5]; 12, 24 and 40 are in no fake ball. Result 2 / 5.
    # density: open real balls around 0, 4, 12 each contain 1, 2 and 3 (3 + 3 + 3), the ball
    #   around 40 contains 66 but not 68 (open boundary), so 10 / (k M) = 10 / 12.
    # coverage: the nearest fake distances 1, 1, 9, 21, 26 are below the radii 12, 8, 12, 16, 28
    #   except for 24. Result 4 / 5.
    real = torch.tensor([[0.0], [4.0], [12.0], [24.0], [40.0]], dtype=DTYPE)
    fake = torch.tensor([[1.0], [2.0], [3.0], [66.0], [68.0], [70.0]], dtype=DTYPE)
    result = precision_recall(real, fake, k=2)
    assert result["precision"] == pytest.approx(5.0 / 6.0, abs=1e-12)
    assert result["recall"] == pytest.approx(2.0 / 5.0, abs=1e-12)
    assert result["density"] == pytest.approx(10.0 / 12.0, abs=1e-12)
    assert result["coverage"] == pytest.approx(4.0 / 5.0, abs=1e-12)


def test_chunk_size_leaves_result_unchanged() -> None:
    real = gaussian(230, 5, 0.0, seed=6)
    fake = gaussian(170, 5, 0.7, seed=7)
    reference = precision_recall(real, fake, chunk_size=2048)
    assert 0.0 < reference["precision"] < 1.0
    assert 0.0 < reference["recall"] < 1.0
    for chunk_size in (5, 7, 64, 170):
        assert precision_recall(real, fake, chunk_size=chunk_size) == reference


def test_float32_features_are_accepted() -> None:
    real = gaussian(100, 8, 0.0, seed=8).float()
    result = precision_recall(real, real.clone())
    assert result["precision"] == 1.0
    assert result["coverage"] == 1.0


def test_invalid_inputs_raise() -> None:
    real = torch.zeros(10, 3, dtype=DTYPE)
    with pytest.raises(ValueError, match="2-D"):
        precision_recall(torch.zeros(10, dtype=DTYPE), real)
    with pytest.raises(ValueError, match="3 and 4"):
        precision_recall(real, torch.zeros(10, 4, dtype=DTYPE))
    with pytest.raises(ValueError, match="k=3 with 10 real and 3 fake"):
        precision_recall(real, torch.zeros(3, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="k=10"):
        precision_recall(real, real, k=10)
    with pytest.raises(ValueError, match="got 0"):
        precision_recall(real, real, k=0)
    with pytest.raises(ValueError, match="chunk_size"):
        precision_recall(real, real, chunk_size=0)


def test_prdc_accepts_numpy_features() -> None:
    real = gaussian(120, 6, 0.0, seed=11)
    fake = gaussian(90, 6, 0.5, seed=12)
    result = prdc(real.numpy(), fake.numpy())
    assert result == precision_recall(real, fake)
    assert 0.0 < result["coverage"] < 1.0


def test_prdc_identical_and_far_apart_numpy_sets() -> None:
    real = gaussian(150, 8, 0.0, seed=13).numpy().astype(np.float32)
    identical = prdc(real, real.copy())
    assert identical["precision"] == 1.0
    assert identical["recall"] == 1.0
    assert identical["coverage"] == 1.0
    assert identical["density"] == pytest.approx(1.0, abs=1e-12)
    far = prdc(real, real + 1000.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
