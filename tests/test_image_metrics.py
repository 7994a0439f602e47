"""Image bits/dim, per-level Jacobian asymmetry and sample grids, against closed forms.

For Gaussian image data N(mu, s0^2 I) under the VE SDE the exact score is
-(x - mu) / v(t) with v(t) = s0^2 + sigma(t)^2. Its probability-flow ODE is linear,
x_t - mu = (x_0 - mu) sqrt(v(t) / v(t_min)), with divergence D g^2 / (2 v), so
-log p(x_0) = -log N(x_1; 0, sigma_max^2 I) - D/2 ln(v(1) / v(t_min)) under the model's
prior. Its Jacobian -I / v is symmetric, so Asym = 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_only
from gaussian_images import GaussianImageScore
from PIL import Image
from torch import Tensor

from qcsbm_bench.grids import save_grid, tile_grid
from qcsbm_bench.image_asymmetry import asymmetry_by_level, level_average, level_times
from qcsbm_bench.image_likelihood import (
    dequantisation_generator,
    dequantise,
    image_bits_per_dim,
)
from qcsbm_bench.likelihood import ode_nll
from qcsbm_bench.networks import SmallUNet
from qcsbm_bench.scores import build_score_model
from qcsbm_bench.sde import VESDE

DATA_STD = 0.2
T_MIN = 1e-5


class AntisymmetricTermScore(GaussianImageScore):
    """The Gaussian score plus A x with A = -A^T (D, D), so J = -I / v + A."""

    def __init__(self, sde: VESDE, mean: Tensor, matrix: Tensor) -> None:
        super().__init__(sde, mean, DATA_STD)
        self.matrix = matrix

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        linear = (x.reshape(x.shape[0], -1) @ self.matrix.T).reshape(x.shape)
        return super().__call__(x, t) + linear


@pytest.fixture
def sde() -> VESDE:
    return VESDE(0.01, 50.0)


def image_mean(shape: tuple[int, int, int]) -> Tensor:
    return torch.linspace(0.2, 0.8, math.prod(shape)).reshape(shape)


def random_images(count: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def closed_form_nll(sde: VESDE, mean: Tensor, x0: Tensor) -> Tensor:
    """Return -log p(x0) in nats (B,) under the probability-flow ODE of the Gaussian score."""
    v_start = DATA_STD**2 + sde.marginal_std(torch.tensor(T_MIN)).item() ** 2
    v_end = DATA_STD**2 + sde.sigma_max**2
    x1 = mean + (x0 - mean) * math.sqrt(v_end / v_start)
    dim = x0[0].numel()
    return -(sde.prior_log_prob(x1) + 0.5 * dim * math.log(v_end / v_start))


def test_ode_nll_of_gaussian_images_closed_form(sde: VESDE) -> None:
    shape = (3, 4, 4)
    mean = image_mean(shape)
    x0 = mean + DATA_STD * torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    result = ode_nll(
        GaussianImageScore(sde, mean, DATA_STD),
        sde,
        x0,
        divergence="hutchinson",
        probe="rademacher",
        rtol=1e-8,
        atol=1e-10,
        t_min=T_MIN,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(result.nll, closed_form_nll(sde, mean, x0), rtol=1e-6, atol=1e-6)


def test_image_bits_per_dim_dequantised_closed_form(sde: VESDE) -> None:
    shape = (3, 4, 4)
    dim = math.prod(shape)
    mean = image_mean(shape)
    images = random_images(3, shape, seed=2)
    result = image_bits_per_dim(
        GaussianImageScore(sde, mean, DATA_STD),
        sde,
        images,
        batch_size=2,
        repeats=2,
        seed=5,
        rtol=1e-8,
        atol=1e-10,
        t_min=T_MIN,
        dtype=torch.float64,
    )

    for repeat in range(2):
        for batch, rows in enumerate([slice(0, 2), slice(2, 3)]):
            generator = dequantisation_generator(5, repeat, batch)
            x0 = dequantise(images[rows], generator)
            assert torch.all((x0 >= 0) & (x0 < 1))
            expected = closed_form_nll(sde, mean, x0).numpy()
            np.testing.assert_allclose(
                result["nll_nats_by_repeat"][repeat, rows], expected, rtol=1e-6
            )

    nats = result["nll_nats_by_repeat"]
    np.testing.assert_allclose(result["bits_per_dim_by_repeat"], nats / (dim * math.log(2)) + 8)
    np.testing.assert_allclose(result["bits_per_dim"], result["bits_per_dim_by_repeat"].mean(0))
    assert result["mean"] == pytest.approx(result["bits_per_dim"].mean())
    assert result["se"] == pytest.approx(result["bits_per_dim"].std(ddof=1) / math.sqrt(3))
    assert result["dim"] == dim
    assert result["nfe_mean"] > 5
    assert not np.allclose(nats[0], nats[1])


def test_dequantise_stays_in_bins() -> None:
    images = np.array([0, 1, 254, 255], dtype=np.uint8).reshape(4, 1, 1, 1)
    x = dequantise(images, torch.Generator().manual_seed(0)).reshape(-1)
    assert torch.all(torch.floor(x * 256) == torch.tensor([0.0, 1.0, 254.0, 255.0]))


def test_image_bits_per_dim_rejects_float_images(sde: VESDE) -> None:
    images = np.zeros((2, 1, 4, 4), dtype=np.float32)
    score = GaussianImageScore(sde, image_mean((1, 4, 4)), DATA_STD)
    with pytest.raises(ValueError, match="dtype uint8"):
        image_bits_per_dim(score, sde, images, batch_size=2, repeats=1, seed=0)


def test_level_times_values(sde: VESDE) -> None:
    assert level_times(4, T_MIN) == pytest.approx(
        [T_MIN, 0.25 + 0.75 * T_MIN, 0.5 + 0.5 * T_MIN, 0.75 + 0.25 * T_MIN]
    )
    with pytest.raises(ValueError, match="n_levels must be at least 1"):
        level_times(0, T_MIN)


def test_gaussian_score_has_zero_asymmetry(sde: VESDE) -> None:
    shape = (3, 4, 4)
    score = GaussianImageScore(sde, image_mean(shape), DATA_STD)
    rows = asymmetry_by_level(
        score,
        random_images(5, shape, seed=3),
        n_levels=4,
        batch_size=2,
        seed=0,
        dtype=torch.float64,
    )
    assert [row["level"] for row in rows] == [0, 1, 2, 3]
    for row, t_value in zip(rows, level_times(4, T_MIN), strict=True):
        assert row["t"] == pytest.approx(t_value)
        assert row["sigma"] == pytest.approx(sde.marginal_std(torch.tensor(t_value)).item())
        assert row["n"] == 5
        # NAsym is Asym relative to v^T J J^T v, the estimate of ||J||_F^2.
        assert abs(row["nasym"]) < 1e-10


@pytest.mark.usefixtures("reject_read_only_arrays")
def test_metrics_take_read_only_images(sde: VESDE) -> None:
    shape = (1, 4, 4)
    images = random_images(4, shape, seed=5)
    score = GaussianImageScore(sde, image_mean(shape), DATA_STD)
    arguments = {"n_levels": 2, "batch_size": 2, "seed": 0, "dtype": torch.float64}
    rows = asymmetry_by_level(score, read_only(images), **arguments)
    assert rows == asymmetry_by_level(score, images, **arguments)

    dequantised = dequantise(read_only(images), torch.Generator().manual_seed(1))
    expected = dequantise(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(dequantised, expected, rtol=0, atol=0)


class RecordingScore(GaussianImageScore):
    """The Gaussian score that also records every input x (B, C, H, W) and t (B,)."""

    def __init__(self, sde: VESDE, mean: Tensor) -> None:
        super().__init__(sde, mean, DATA_STD)
        self.inputs: list[tuple[Tensor, Tensor]] = []

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.inputs.append((x.detach().clone(), t.clone()))
        return super().__call__(x, t)


def test_asymmetry_draws_fresh_noise_per_level(sde: VESDE) -> None:
    shape = (1, 8, 8)
    images = random_images(3, shape, seed=8)
    score = RecordingScore(sde, image_mean(shape))
    asymmetry_by_level(score, images, n_levels=3, batch_size=3, seed=0, dtype=torch.float64)

    clean = torch.as_tensor(images, dtype=torch.float64) / 255
    noises = []
    for (x, t), t_value in zip(score.inputs, level_times(3, T_MIN), strict=True):
        assert torch.all(t == t_value)
        noises.append((x - clean) / sde.marginal_std(t)[:, None, None, None])
    for noise in noises:
        assert noise.std().item() == pytest.approx(1.0, abs=0.15)
    assert not torch.allclose(noises[0], noises[1])
    assert not torch.allclose(noises[1], noises[2])


def test_antisymmetric_term_asymmetry_matches_exact(sde: VESDE) -> None:
    shape = (1, 3, 3)
    dim = math.prod(shape)
    raw = torch.randn(dim, dim, generator=torch.Generator().manual_seed(4))
    matrix = 0.5 * (raw - raw.T)
    score = AntisymmetricTermScore(sde, image_mean(shape), matrix)
    n_images = 400
    rows = asymmetry_by_level(
        score,
        random_images(n_images, shape, seed=6),
        n_levels=2,
        batch_size=150,
        seed=1,
        dtype=torch.float64,
    )

    # J J^T - J J = 2 A A^T =: M, so each estimate is v^T M v with E = tr(M) = 2 ||A||_F^2.
    exact = 2 * matrix.pow(2).sum().item()
    product = 2 * matrix @ matrix.T
    # Rademacher variance of v^T M v: sum over i < j of (M_ij + M_ji)^2.
    variance = torch.triu(product + product.T, diagonal=1).pow(2).sum().item()
    tolerance = 4 * math.sqrt(variance / n_images)
    for row in rows:
        assert row["asym"] == pytest.approx(exact, abs=tolerance)
        assert row["asym_se"] == pytest.approx(math.sqrt(variance / n_images), rel=0.25)
        assert 0 < row["nasym"] <= 1
    assert level_average(rows)["asym"] == pytest.approx(exact, abs=tolerance)


def test_conservative_model_has_zero_asymmetry(sde: VESDE) -> None:
    torch.manual_seed(0)
    net = SmallUNet(1, base_width=8, channel_mult=(1,), groups=4)
    images = random_images(4, (1, 4, 4), seed=7)
    averages = {}
    for variant in ("csbm", "usbm"):
        model = build_score_model(variant, net, sde, form="image").eval()
        rows = asymmetry_by_level(
            model, images, n_levels=2, batch_size=4, seed=2, dtype=torch.float64
        )
        averages[variant] = level_average(rows)
    # The image-form CSBM has ||J||_F^2 ~ 1e13 at sigma = 0.01, so its absolute Asym is
    # float64 rounding of that size (~1e-3); NAsym divides that scale out.
    assert abs(averages["csbm"]["nasym"]) < 1e-10 * averages["usbm"]["nasym"]
    assert averages["usbm"]["nasym"] > 0.1


def test_asymmetry_needs_sde_attribute() -> None:
    def score(x: Tensor, t: Tensor) -> Tensor:
        return -x

    with pytest.raises(ValueError, match=r"no \.sde attribute"):
        asymmetry_by_level(score, random_images(2, (1, 2, 2), 0), batch_size=2, seed=0)


def test_level_average_means_over_levels() -> None:
    rows = [{"asym": 1.0, "nasym": 0.1}, {"asym": 3.0, "nasym": 0.3}]
    assert level_average(rows) == pytest.approx({"asym": 2.0, "nasym": 0.2})
    with pytest.raises(ValueError, match="at least one level"):
        level_average([])


def test_grid_size_and_pixels(tmp_path: Path) -> None:
    images = np.zeros((5, 3, 2, 3), dtype=np.uint8)
    for k in range(5):
        images[k] = 10 * (k + 1)
    images[3, :, 0, 0] = (200, 100, 50)
    path = save_grid(images, tmp_path / "grid.png", nrow=2, padding=2)

    with Image.open(path) as grid:
        assert grid.mode == "RGB"
        # Width 2 (3 + 2) + 2 and height 2 (2 + 2) + 2: four images, the fifth is left out.
        assert grid.size == (12, 10)
        pixels = np.asarray(grid)
    # Image 3 sits in row 1, column 1, so its top-left pixel is at y = 2 + 4, x = 2 + 5.
    assert pixels[6, 7].tolist() == [200, 100, 50]
    assert pixels[2, 2].tolist() == [10, 10, 10]
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert set(np.unique(pixels)) == {0, 10, 20, 30, 40, 200, 100, 50}


def test_grid_grey_and_short_batch(tmp_path: Path) -> None:
    images = np.full((3, 1, 2, 2), 255, dtype=np.uint8)
    grid = tile_grid(images, nrow=4, padding=1)
    # Three images fit in one row of three columns: width 3 (2 + 1) + 1, height 2 + 2.
    assert grid.shape == (1, 4, 10)
    path = save_grid(images, tmp_path / "grey.png", nrow=4, padding=1)
    with Image.open(path) as png:
        assert png.mode == "L"
        assert png.size == (10, 4)


def test_grid_rejects_bad_arguments(tmp_path: Path) -> None:
    images = np.zeros((4, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"must end in \.png"):
        save_grid(images, tmp_path / "grid.pdf", nrow=2)
    with pytest.raises(ValueError, match="nrow must be at least 1"):
        save_grid(images, tmp_path / "grid.png", nrow=0)
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\)"):
        save_grid(np.zeros((4, 2, 2, 2), dtype=np.uint8), tmp_path / "grid.png", nrow=2)
