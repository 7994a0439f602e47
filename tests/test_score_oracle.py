"""Tests for the exact score of the Gaussian-smoothed empirical distribution."""

from __future__ import annotations

import math

import pytest
import torch

from qcsbm_bench.metrics.score_oracle import oracle_score, score_error

DTYPE = torch.float64


def log_density(x: torch.Tensor, centres: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # log p_sigma(x) for each row of x (B, D), with sigma (B,), written out directly.
    dimension = x.shape[1]
    squared = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(dim=-1)
    log_kernel = -squared / (2.0 * sigma[:, None] ** 2)
    normaliser = dimension * torch.log(sigma * math.sqrt(2.0 * math.pi))
    return torch.logsumexp(log_kernel, dim=1) - math.log(centres.shape[0]) - normaliser


def autograd_score(x: torch.Tensor, centres: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(log_density(x, centres, sigma).sum(), x)
    return gradient


def test_single_centre_is_gaussian_score() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=generator, dtype=DTYPE)
    centre = torch.randn(1, 3, generator=generator, dtype=DTYPE)
    sigma = 0.7
    expected = (centre - x) / sigma**2
    torch.testing.assert_close(oracle_score(x, centre, sigma), expected, rtol=1e-13, atol=1e-13)


def test_two_symmetric_centres_tanh() -> None:
    # For centres +a and -a, grad log p = (a tanh(a . x / sigma^2) - x) / sigma^2.
    generator = torch.Generator().manual_seed(1)
    a = torch.tensor([1.5, -0.5], dtype=DTYPE)
    centres = torch.stack([a, -a])
    x = 2.0 * torch.randn(50, 2, generator=generator, dtype=DTYPE)
    for sigma in (0.3, 1.0, 4.0):
        expected = (a[None, :] * torch.tanh(x @ a / sigma**2)[:, None] - x) / sigma**2
        torch.testing.assert_close(
            oracle_score(x, centres, sigma), expected, rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0])
def test_matches_autograd_of_log_density(seed: int, sigma: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(37, 4, generator=generator, dtype=DTYPE)
    x = centres[:10] + sigma * torch.randn(10, 4, generator=generator, dtype=DTYPE)
    x = torch.cat([x, 3.0 * torch.randn(6, 4, generator=generator, dtype=DTYPE)])
    sigma_vector = torch.full((x.shape[0],), sigma, dtype=DTYPE)
    expected = autograd_score(x, centres, sigma_vector)
    # The tolerance scales with the score's magnitude, about |x - c| / sigma^2.
    torch.testing.assert_close(
        oracle_score(x, centres, sigma), expected, rtol=1e-10, atol=1e-10 / sigma**2
    )


def test_mean_coeff_scales_centres() -> None:
    # With kernel N(a c_i, sigma^2 I) the score equals the a = 1 score for centres a c_i.
    generator = torch.Generator().manual_seed(5)
    centres = torch.randn(40, 3, generator=generator, dtype=DTYPE)
    x = 0.6 * torch.randn(15, 3, generator=generator, dtype=DTYPE)
    sigma = torch.linspace(0.2, 0.9, 15, dtype=DTYPE)
    mean_coeff = torch.linspace(0.3, 1.0, 15, dtype=DTYPE)
    result = oracle_score(x, centres, sigma, mean_coeff=mean_coeff)
    for row in range(15):
        a = float(mean_coeff[row])
        expected = autograd_score(x[row : row + 1], a * centres, sigma[row : row + 1])
        torch.testing.assert_close(result[row : row + 1], expected, rtol=1e-10, atol=1e-10)
    scalar = oracle_score(x, centres, sigma, mean_coeff=0.5)
    torch.testing.assert_close(scalar, oracle_score(x, 0.5 * centres, sigma))


def test_chunking_leaves_result_unchanged() -> None:
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(101, 3, generator=generator, dtype=DTYPE)
    x = torch.randn(53, 3, generator=generator, dtype=DTYPE)
    sigma = torch.rand(53, generator=generator, dtype=DTYPE) + 0.05
    reference = oracle_score(x, centres, sigma, batch_chunk_size=1000, centre_chunk_size=1000)
    for batch_chunk_size, centre_chunk_size in [(1, 1), (7, 10), (53, 100), (8, 101)]:
        chunked = oracle_score(
            x,
            centres,
            sigma,
            batch_chunk_size=batch_chunk_size,
            centre_chunk_size=centre_chunk_size,
        )
        torch.testing.assert_close(chunked, reference, rtol=1e-12, atol=1e-12)


def test_per_point_sigma_vector() -> None:
    generator = torch.Generator().manual_seed(4)
    centres = torch.randn(30, 2, generator=generator, dtype=DTYPE)
    x = torch.randn(12, 2, generator=generator, dtype=DTYPE)
    sigma = torch.linspace(0.1, 2.0, 12, dtype=DTYPE)
    result = oracle_score(x, centres, sigma)
    torch.testing.assert_close(result, autograd_score(x, centres, sigma), rtol=1e-10, atol=1e-8)
    for row in range(12):
        single = oracle_score(x[row : row + 1], centres, float(sigma[row]))
        torch.testing.assert_close(result[row : row + 1], single, rtol=1e-13, atol=1e-13)


def test_far_point_small_sigma_is_stable() -> None:
    # The logits reach about -1e8 here, which would underflow a naive softmax to 0 / 0.
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=DTYPE)
    x = torch.tensor([[100.0, 0.0]], dtype=DTYPE)
    sigma = 0.01
    result = oracle_score(x, centres, sigma)
    expected = (centres[1:] - x) / sigma**2
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=0.0)


def test_dtype_follows_input() -> None:
    centres = torch.randn(5, 2, dtype=torch.float32)
    x = torch.randn(4, 2, dtype=torch.float32)
    assert oracle_score(x, centres, 0.5).dtype == torch.float32
    assert oracle_score(x.double(), centres, 0.5).dtype == torch.float64


def test_invalid_inputs_raise() -> None:
    x = torch.zeros(4, 2, dtype=DTYPE)
    centres = torch.zeros(3, 2, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        oracle_score(torch.zeros(4, 3, dtype=DTYPE), centres, 1.0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        oracle_score(x, centres, torch.ones(5, dtype=DTYPE))
    with pytest.raises(ValueError, match="positive"):
        oracle_score(x, centres, 0.0)
    with pytest.raises(ValueError, match="mean_coeff must be positive"):
        oracle_score(x, centres, 1.0, mean_coeff=-0.5)
    with pytest.raises(ValueError, match="empty"):
        oracle_score(x, centres[:0], 1.0)


def test_score_error_half_squared_norm() -> None:
    oracle = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -4.0]], dtype=DTYPE)
    score = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=DTYPE)
    expected = torch.tensor([2.0, 0.0, 12.5], dtype=DTYPE)
    torch.testing.assert_close(score_error(score, oracle), expected)
    with pytest.raises(ValueError, match="shape"):
        score_error(score[:2], oracle)
