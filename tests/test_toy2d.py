"""Tests for the 2-D toy data sets against their defining formulas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qcsbm_bench.data.toy2d import (
    TOY_DATASETS,
    load_toy_dataset,
    prepare_toy_dataset,
    sample_toy,
)

# Mode centres of the 8-Gaussians set: 8 c_k / sqrt(2) with c_k at angles k * 45 degrees.
ANGLES = np.arange(8) * (np.pi / 4.0)
CENTRES = (8.0 / np.sqrt(2.0)) * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)
MODE_STD = 1.0 / np.sqrt(2.0)


def draw(name: str, n: int, seed: int = 0) -> np.ndarray:
    return sample_toy(name, n, np.random.default_rng(seed))


@pytest.mark.parametrize("name", TOY_DATASETS)
@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_sample_shape_and_dtype(name: str, n: int) -> None:
    points = draw(name, n)
    assert points.shape == (n, 2)
    assert points.dtype == np.float64
    assert np.all(np.isfinite(points))


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_same_seed_same_points(name: str) -> None:
    np.testing.assert_array_equal(draw(name, 500, seed=3), draw(name, 500, seed=3))


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_different_seeds_differ(name: str) -> None:
    assert not np.array_equal(draw(name, 500, seed=3), draw(name, 500, seed=4))


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="'moons'") as info:
        draw("moons", 10)
    for name in TOY_DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("n", [0, -5])
def test_nonpositive_size_raises(n: int) -> None:
    with pytest.raises(ValueError, match=str(n)):
        draw("spirals", n)


def nearest_centre(points: np.ndarray) -> np.ndarray:
    squared = ((points[:, None, :] - CENTRES[None, :, :]) ** 2).sum(axis=-1)
    return squared.argmin(axis=1)


def test_8gaussians_modes_and_spread() -> None:
    n = 40_000
    points = draw("8gaussians", n, seed=11)
    mode = nearest_centre(points)
    residual = points - CENTRES[mode]

    # Each residual is N(0, I / 2), so |residual|^2 / (1/2) ~ chi2(2) and
    # P(|residual| > 4.5) = exp(-4.5^2) ~ 1.6e-9 per point. A wrong centre scale fails this.
    assert np.linalg.norm(residual, axis=1).max() < 4.5

    # Mean of each mode's residual is 0 with standard error MODE_STD / sqrt(n_k).
    for k in range(8):
        members = residual[mode == k]
        tolerance = 5.0 * MODE_STD / math.sqrt(len(members))
        np.testing.assert_allclose(members.mean(axis=0), 0.0, atol=tolerance)

    # The radial residual (along c_k) has std 1/sqrt(2). Points that cross into a neighbour's
    # cell bias it by about 0.1 % (measured with 4e6 points), far below the sampling tolerance.
    # A sample std of n normal draws has standard error std / sqrt(2 (n - 1)).
    unit = CENTRES[mode] / np.linalg.norm(CENTRES[mode], axis=1, keepdims=True)
    radial = (residual * unit).sum(axis=1)
    std_tolerance = 5.0 * MODE_STD / math.sqrt(2.0 * (n - 1))
    assert abs(radial.std(ddof=1) - MODE_STD) < std_tolerance


def test_8gaussians_all_modes_equally_frequent() -> None:
    n = 40_000
    counts = np.bincount(nearest_centre(draw("8gaussians", n, seed=12)), minlength=8)
    assert np.all(counts > 0)
    # Each count is about Binomial(n, 1/8); allow 5 standard deviations.
    expected = n / 8.0
    tolerance = 5.0 * math.sqrt(n * (1.0 / 8.0) * (7.0 / 8.0))
    np.testing.assert_allclose(counts, expected, atol=tolerance)


def test_checkerboard_support_and_parity() -> None:
    n = 40_000
    points = draw("checkerboard", n, seed=13)

    # x1 ~ U[-2, 2) and x2 in [-2, 2) before scaling by 3.
    assert np.all(points >= -6.0)
    assert np.all(points < 6.0)

    # floor(x2) = (floor(x1) mod 2) - 2 B has the parity of floor(x1), so after the scaling
    # floor(X1 / 3) + floor(X2 / 3) is even for every point.
    cell = np.floor(points / 3.0).astype(int)
    assert np.all((cell[:, 0] + cell[:, 1]) % 2 == 0)

    # The 8 filled 3 x 3 squares are equally likely, each Binomial(n, 1/8).
    cell_index = (cell[:, 0] + 2) * 4 + (cell[:, 1] + 2)
    counts = np.bincount(cell_index, minlength=16)
    filled = counts[counts > 0]
    assert len(filled) == 8
    tolerance = 5.0 * math.sqrt(n * (1.0 / 8.0) * (7.0 / 8.0))
    np.testing.assert_allclose(filled, n / 8.0, atol=tolerance)


def test_checkerboard_uniform_inside_square() -> None:
    # Within its square a point is uniform, so the position modulo 3 has mean 1.5 and
    # variance 9 / 12 in each coordinate.
    n = 40_000
    offset = np.mod(draw("checkerboard", n, seed=14), 3.0)
    np.testing.assert_allclose(offset.mean(axis=0), 1.5, atol=5.0 * math.sqrt(0.75 / n))
    np.testing.assert_allclose(offset.var(axis=0), 0.75, rtol=0.03)


SPIRAL_SCALE = 2.3 / 3.0
SPIRAL_MAX_RADIUS = 3.0 * np.pi


def test_spirals_mirror_symmetry() -> None:
    n = 40_000
    points = draw("spirals", n, seed=15)

    # Both arms hold n / 2 points and mirror each other, so the mean is 0 up to sampling error.
    tolerance = 5.0 * points.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(points.mean(axis=0)) < tolerance)

    # The mirror x -> -x maps quadrant 1 to 3 and 2 to 4, so those counts match in law.
    quadrant_1 = np.sum((points[:, 0] > 0) & (points[:, 1] > 0))
    quadrant_3 = np.sum((points[:, 0] < 0) & (points[:, 1] < 0))
    quadrant_2 = np.sum((points[:, 0] < 0) & (points[:, 1] > 0))
    quadrant_4 = np.sum((points[:, 0] > 0) & (points[:, 1] < 0))
    assert abs(quadrant_1 - quadrant_3) < 5.0 * math.sqrt(quadrant_1 + quadrant_3)
    assert abs(quadrant_2 - quadrant_4) < 5.0 * math.sqrt(quadrant_2 + quadrant_4)


def test_spirals_radius_bounds_and_law() -> None:
    n = 40_000
    radius = np.linalg.norm(draw("spirals", n, seed=16), axis=1) / SPIRAL_SCALE
    jitter = 0.5 * math.sqrt(2.0)

    # |point| / scale lies within the jitter norm of r, and 0 <= r < 3 pi.
    assert radius.max() <= SPIRAL_MAX_RADIUS + jitter

    # r = sqrt(U) 3 pi gives P(r <= a) = (a / 3 pi)^2, and |point| / scale differs from r by at
    # most the jitter norm, which brackets the empirical distribution of the radius.
    binomial_slack = 5.0 * math.sqrt(0.25 / n)
    for a in (2.0, 4.0, 6.0, 8.0):
        fraction = np.mean(radius <= a)
        lower = min(1.0, (max(a - jitter, 0.0) / SPIRAL_MAX_RADIUS) ** 2)
        upper = min(1.0, ((a + jitter) / SPIRAL_MAX_RADIUS) ** 2)
        assert lower - binomial_slack <= fraction <= upper + binomial_slack


def test_spirals_points_lie_on_arms() -> None:
    # Every point, or its mirror image, equals r (-cos r, sin r) + u with u in [0, 0.5)^2.
    points = draw("spirals", 1000, seed=17) / SPIRAL_SCALE
    grid = np.linspace(0.0, SPIRAL_MAX_RADIUS, 20_001)
    curve = np.stack([-grid * np.cos(grid), grid * np.sin(grid)], axis=1)
    # The curve moves at most sqrt(1 + r^2) < 9.5 per unit r, so a grid step of about 4.7e-4
    # misplaces it by under 0.005. The test allows 0.01.
    slack = 0.01
    on_arm = np.zeros(len(points), dtype=bool)
    for sign in (1.0, -1.0):
        offset = sign * points[:, None, :] - curve[None, :, :]
        inside = np.all((offset >= -slack) & (offset <= 0.5 + slack), axis=-1)
        on_arm |= inside.any(axis=1)
    assert on_arm.all()


def test_spirals_odd_size_splits_arms() -> None:
    # With n = 1 the single point belongs to the first (unmirrored) arm.
    for seed in range(20):
        point = draw("spirals", 1, seed=seed)[0] / SPIRAL_SCALE
        grid = np.linspace(0.0, SPIRAL_MAX_RADIUS, 20_001)
        curve = np.stack([-grid * np.cos(grid), grid * np.sin(grid)], axis=1)
        offset = point[None, :] - curve
        assert np.any(np.all((offset >= -0.01) & (offset <= 0.51), axis=-1))


def test_prepare_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "checkerboard.npz"
    metadata = prepare_toy_dataset("checkerboard", 300, 200, seed=5, path=path)
    train, test = load_toy_dataset(path)

    assert train.shape == (300, 2)
    assert test.shape == (200, 2)
    assert train.dtype == np.float64
    assert not np.array_equal(train[:200], test)
    assert metadata["name"] == "checkerboard"
    assert metadata["seed"] == 5
    assert metadata["n_train"] == 300
    assert metadata["n_test"] == 200
    assert metadata["numpy_version"] == np.__version__
    assert set(metadata["sha256"]) == {"train", "test"}

    # The stored metadata equals the returned one, and no temporary file is left behind.
    with np.load(path) as archive:
        assert json.loads(str(archive["metadata"])) == metadata
    assert [entry.name for entry in path.parent.iterdir()] == ["checkerboard.npz"]


def test_prepare_is_deterministic(tmp_path: Path) -> None:
    first = prepare_toy_dataset("spirals", 100, 50, seed=9, path=tmp_path / "a.npz")
    second = prepare_toy_dataset("spirals", 100, 50, seed=9, path=tmp_path / "b.npz")
    other = prepare_toy_dataset("spirals", 100, 50, seed=10, path=tmp_path / "c.npz")
    assert first["sha256"] == second["sha256"]
    assert first["sha256"]["train"] != other["sha256"]["train"]
    np.testing.assert_array_equal(
        load_toy_dataset(tmp_path / "a.npz")[0], load_toy_dataset(tmp_path / "b.npz")[0]
    )


def test_prepare_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_test=0"):
        prepare_toy_dataset("spirals", 10, 0, seed=0, path=tmp_path / "x.npz")
    with pytest.raises(ValueError, match="-1"):
        prepare_toy_dataset("spirals", 10, 10, seed=-1, path=tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_load_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError) as info:
        load_toy_dataset(path)
    assert str(path) in str(info.value)
    assert "qcsbm-bench prep-data" in str(info.value)


def test_load_corrupted_bytes_raises(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    prepare_toy_dataset("8gaussians", 500, 100, seed=1, path=path)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="Invalid toy data file") as info:
        load_toy_dataset(path)
    assert str(path) in str(info.value)


def test_load_truncated_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    prepare_toy_dataset("8gaussians", 500, 100, seed=1, path=path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        load_toy_dataset(path)


def test_load_checksum_mismatch_raises(tmp_path: Path) -> None:
    # A well-formed archive whose train array was changed after the digest was recorded.
    path = tmp_path / "toy.npz"
    prepare_toy_dataset("8gaussians", 50, 20, seed=1, path=path)
    with np.load(path) as archive:
        train, test, metadata = archive["train"], archive["test"], archive["metadata"]
    train = train.copy()
    train[0, 0] += 1.0
    np.savez(path, train=train, test=test, metadata=metadata)
    with pytest.raises(ValueError, match="SHA-256"):
        load_toy_dataset(path)


def test_load_missing_array_raises(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    np.savez(path, train=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="missing arrays"):
        load_toy_dataset(path)


def test_load_wrong_shape_raises(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    prepare_toy_dataset("8gaussians", 50, 20, seed=1, path=path)
    with np.load(path) as archive:
        test, metadata = archive["test"], archive["metadata"]
    np.savez(path, train=np.zeros((50, 3)), test=test, metadata=metadata)
    with pytest.raises(ValueError, match=r"shape \(50, 3\)"):
        load_toy_dataset(path)
