"""Samplers and the ODE likelihood on Gaussian data, where the exact score is known.

For data N(0, s0^2 I) under the VE SDE, p_t = N(0, (s0^2 + sigma(t)^2) I) and the exact
score is -x / (s0^2 + sigma(t)^2).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from qcsbm_bench.likelihood import bits_per_dim, ode_nll
from qcsbm_bench.sampling import ode_sample, pc_sample
from qcsbm_bench.sde import VESDE

DATA_STD = 0.5


class GaussianScore:
    """The exact score of N(0, DATA_STD^2 I) perturbed by the VE SDE."""

    def __init__(self, sde: VESDE) -> None:
        self.sde = sde

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        variance = DATA_STD**2 + self.sde.marginal_std(t) ** 2
        return -x / variance[:, None]


@pytest.fixture
def sde() -> VESDE:
    return VESDE(sigma_min=0.01, sigma_max=20.0)


def test_pc_sampler_recovers_data_std(sde: VESDE) -> None:
    score = GaussianScore(sde)
    generator = torch.Generator().manual_seed(0)
    result = pc_sample(
        score, sde, (4000, 2), n_levels=300, denoise=False, generator=generator, progress=False
    )
    expected = math.sqrt(DATA_STD**2 + sde.sigma_min**2)
    assert result.samples.std().item() == pytest.approx(expected, rel=0.04)
    assert result.samples.mean().abs().item() < 0.05


def test_pc_sampler_counts_evaluations(sde: VESDE) -> None:
    score = GaussianScore(sde)
    result = pc_sample(score, sde, (10, 2), n_levels=50, corrector_steps=2, progress=False)
    assert result.nfe == 50 * 3 + 1
    result = pc_sample(
        score, sde, (10, 2), n_levels=50, corrector_steps=0, denoise=False, progress=False
    )
    assert result.nfe == 50


def test_ode_sampler_maps_prior_to_data(sde: VESDE) -> None:
    score = GaussianScore(sde)
    generator = torch.Generator().manual_seed(1)
    result = ode_sample(
        score,
        sde,
        (4000, 2),
        denoise=False,
        generator=generator,
        dtype=torch.float64,
        progress=False,
    )
    # The flow scales x by sqrt(v(t_min) / v(1)), and the prior has variance sigma_max^2.
    v_end = DATA_STD**2 + sde.marginal_std(torch.tensor(1e-5)).item() ** 2
    expected = sde.sigma_max * math.sqrt(v_end / (DATA_STD**2 + sde.sigma_max**2))
    assert result.samples.std().item() == pytest.approx(expected, rel=0.04)
    assert result.nfe > 5


def test_ode_nll_matches_closed_form(sde: VESDE) -> None:
    score = GaussianScore(sde)
    x0 = torch.randn(200, 2, generator=torch.Generator().manual_seed(2)) * DATA_STD
    result = ode_nll(score, sde, x0, divergence="exact", rtol=1e-6, atol=1e-8)

    # The flow is linear: x_1 = x_0 sqrt(v_1 / v_0), and log p_0 = log prior(x_1) + log-det.
    v_0 = DATA_STD**2 + sde.marginal_std(torch.tensor(1e-5)).item() ** 2
    v_1 = DATA_STD**2 + sde.sigma_max**2
    x1 = x0 * math.sqrt(v_1 / v_0)
    expected = -(sde.prior_log_prob(x1) + math.log(v_1 / v_0))  # D/2 log(v_1/v_0), D = 2.
    torch.testing.assert_close(result.nll, expected, rtol=1e-4, atol=1e-4)


def test_hutchinson_divergence_matches_exact_for_isotropic_field(sde: VESDE) -> None:
    """For J = c I, v^T J v = c ||v||^2 = c D for every Rademacher probe."""
    score = GaussianScore(sde)
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(3)) * DATA_STD
    exact = ode_nll(score, sde, x0, divergence="exact")
    estimate = ode_nll(
        score, sde, x0, divergence="hutchinson", generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(estimate.nll, exact.nll, rtol=1e-6, atol=1e-6)


def test_bits_per_dim_offset() -> None:
    nll = torch.tensor([0.0, 3072 * math.log(2)])
    torch.testing.assert_close(bits_per_dim(nll, 3072), torch.tensor([8.0, 9.0]))
    torch.testing.assert_close(bits_per_dim(nll, 3072, data_range=2.0), torch.tensor([7.0, 8.0]))


def test_unknown_divergence_rejected(sde: VESDE) -> None:
    with pytest.raises(ValueError, match="hutchinson"):
        ode_nll(GaussianScore(sde), sde, torch.zeros(2, 2), divergence="skilling")
