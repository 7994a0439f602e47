"""SDEs, score parameterisations, asymmetry metrics and the training objective."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import FieldCase, MLPField, mlp_cases
from hypothesis import given, settings
from torch import Tensor, nn

from qcsbm_bench.asymmetry import asymmetry_exact, asymmetry_hutchinson
from qcsbm_bench.jacobian import SampleCouplingError, draw_probes, exact_jacobian, replicate
from qcsbm_bench.losses import dsm_loss, training_loss
from qcsbm_bench.networks.toy import ToyScoreNet
from qcsbm_bench.regulariser import QCConfig, qc_penalty, qc_penalty_and_score
from qcsbm_bench.scores import (
    ConservativeScore,
    UnconstrainedScore,
    build_score_model,
)
from qcsbm_bench.sde import VESDE, VPSDE, build_sde

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


class FieldNet(nn.Module):
    """Adapt an MLPField(x, t) to the network signature net(x, sigma)."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.field(x, torch.log(sigma))


# SDEs


def test_ve_sigma_endpoints_and_diffusion() -> None:
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.0, 0.5, 1.0], requires_grad=True)
    sigma = sde.marginal_std(t)
    torch.testing.assert_close(sigma[0], torch.tensor(0.01))
    torch.testing.assert_close(sigma[2], torch.tensor(50.0))
    torch.testing.assert_close(sigma[1], torch.tensor(math.sqrt(0.01 * 50.0)))

    # g(t)^2 = d sigma^2 / dt for a drift-free SDE.
    (dvar,) = torch.autograd.grad(sigma.pow(2).sum(), t)
    _, diffusion = sde.drift_diffusion(torch.zeros(3, 2), t.detach())
    torch.testing.assert_close(diffusion**2, dvar)


def test_vp_variance_follows_its_ode() -> None:
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.linspace(0.01, 1.0, 7, requires_grad=True)
    std = sde.marginal_std(t)
    mean = sde.mean_coeff(t)
    torch.testing.assert_close(std**2 + mean**2, torch.ones(7))

    # Var' = -beta Var + beta for x_0 = 0 (the variance ODE of dx = -beta/2 x dt + sqrt(beta) dw).
    (dvar,) = torch.autograd.grad(std.pow(2).sum(), t)
    beta = sde.beta(t.detach())
    torch.testing.assert_close(dvar, -beta * std.detach() ** 2 + beta)


@pytest.mark.parametrize("sde", [VESDE(0.1, 3.0), VPSDE()])
def test_prior_log_prob_matches_torch(sde: VESDE | VPSDE) -> None:
    x = torch.randn(4, 3, 2) * 2
    normal = torch.distributions.Normal(0.0, sde.prior_std)
    expected = normal.log_prob(x).sum(dim=(1, 2))
    torch.testing.assert_close(sde.prior_log_prob(x), expected)


def test_perturb_moments() -> None:
    sde = VESDE(0.1, 3.0)
    x0 = torch.full((20000, 2), 1.5)
    t = torch.full((20000,), 0.8)
    x_t = sde.perturb(x0, t, torch.randn(20000, 2))
    sigma = sde.marginal_std(t[:1]).item()
    assert x_t.mean().item() == pytest.approx(1.5, abs=5 * sigma / 200)
    assert x_t.std().item() == pytest.approx(sigma, rel=0.02)


def test_ve_discretization_chain_adds_variance() -> None:
    sde = VESDE(0.1, 3.0)
    t = torch.tensor([1.0, 0.5])
    _, step_std = sde.discretize(torch.zeros(2, 2), t, dt=0.01)
    expected = sde.marginal_std(t) ** 2 - sde.marginal_std(t - 0.01) ** 2
    torch.testing.assert_close(step_std**2, expected)


def test_invalid_sde_parameters_rejected() -> None:
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=3.0, sigma_max=3.0)
    with pytest.raises(ValueError, match="t_min"):
        VESDE(0.1, 3.0, t_min=1.0)
    with pytest.raises(ValueError, match="'ve' and 'vp'"):
        build_sde("sub-vp")


# Score parameterisations


def test_conservative_score_is_minus_energy_gradient() -> None:
    sde = VESDE(0.1, 3.0)
    model = ConservativeScore(ToyScoreNet(), sde, form="residual")
    x = torch.randn(6, 2, requires_grad=True)
    t = torch.rand(6)
    sigma = sde.marginal_std(t)
    residual = x - model.net(x, sigma)
    energy = residual.pow(2).sum(dim=1) / (2 * sigma)
    (expected,) = torch.autograd.grad(energy.sum(), x)
    torch.testing.assert_close(model(x, t), -expected)


def test_norm_energy_form() -> None:
    sde = VESDE(0.1, 3.0)
    model = ConservativeScore(ToyScoreNet(), sde, form="norm")
    x = torch.randn(6, 2)
    t = torch.rand(6)
    sigma = sde.marginal_std(t)
    expected = model.net(x, sigma).pow(2).sum(dim=1) / (2 * sigma)
    torch.testing.assert_close(model.energy(x, t), expected)


def test_residual_unconstrained_form() -> None:
    sde = VESDE(0.1, 3.0)
    model = UnconstrainedScore(ToyScoreNet(), sde, form="residual")
    x = torch.randn(6, 2)
    t = torch.rand(6)
    sigma = sde.marginal_std(t)
    expected = (x - model.net(x, sigma)) / sigma[:, None]
    torch.testing.assert_close(model(x, t), expected)


def test_conservative_graph_only_when_needed() -> None:
    model = build_score_model("csbm", ToyScoreNet(), VESDE(0.1, 3.0), "toy")
    x = torch.randn(5, 2)
    t = torch.rand(5)

    model.eval()
    with torch.no_grad():
        sampled = model(x, t)
    assert not sampled.requires_grad

    model.train()
    trained = model(x, t)
    assert trained.requires_grad
    torch.testing.assert_close(trained.detach(), sampled)


def test_build_rejects_unknown_names() -> None:
    sde = VESDE(0.1, 3.0)
    with pytest.raises(ValueError, match="csbm"):
        build_score_model("ncsn", ToyScoreNet(), sde, "toy")
    with pytest.raises(ValueError, match="'toy' or 'image'"):
        build_score_model("usbm", ToyScoreNet(), sde, "audio")


@SETTINGS
@given(case=mlp_cases(max_dim=6))
def test_conservative_asymmetry_vanishes(case: FieldCase) -> None:
    model = ConservativeScore(FieldNet(case.field), VESDE(0.1, 3.0), form="residual")
    with torch.no_grad():
        exact = asymmetry_exact(model, case.x, case.t)
        estimate = asymmetry_hutchinson(model, case.x, case.t, n_probes=4)
    _, jacobian = exact_jacobian(model, case.x, case.t)
    scale = jacobian.pow(2).sum(dim=(1, 2))
    assert torch.all(exact.asym <= 1e-12 * scale)
    assert torch.all(exact.nasym <= 1e-12)
    assert torch.all(estimate.asym.abs() <= 1e-10 * scale)


# Asymmetry metrics


def linear_field(matrix: Tensor) -> nn.Module:
    class Linear(nn.Module):
        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return x @ matrix.T

    return Linear()


@SETTINGS
@given(case=mlp_cases(max_dim=8))
def test_linear_field_closed_forms(case: FieldCase) -> None:
    dim = case.x.shape[1]
    generator = torch.Generator().manual_seed(dim)
    matrix = torch.randn(dim, dim, generator=generator)
    field = linear_field(matrix)
    antisym_sq = (matrix - matrix.T).pow(2).sum()

    result = asymmetry_exact(field, case.x, case.t)
    torch.testing.assert_close(result.asym, (0.5 * antisym_sq).expand(case.x.shape[0]))
    expected_nasym = 0.25 * antisym_sq / matrix.pow(2).sum()
    torch.testing.assert_close(result.nasym, expected_nasym.expand(case.x.shape[0]))
    assert torch.all((result.nasym >= 0) & (result.nasym <= 1))

    penalty = qc_penalty(field, case.x, case.t, QCConfig("exact"), create_graph=False)
    torch.testing.assert_close(penalty, result.asym)


def test_hutchinson_nasym_converges_to_exact() -> None:
    field = MLPField(dim=3, width=8, depth=2, activation="swish", seed=4)
    x = torch.randn(3, 3)
    t = torch.rand(3)
    exact = asymmetry_exact(field, x, t)
    generator = torch.Generator().manual_seed(0)
    estimate = asymmetry_hutchinson(field, x, t, n_probes=20000, generator=generator)
    torch.testing.assert_close(estimate.nasym, exact.nasym, rtol=0.05, atol=0)


def test_asymmetry_under_no_grad() -> None:
    field = MLPField(dim=2, width=8, depth=2, activation="elu", seed=1)
    x = torch.randn(4, 2)
    t = torch.rand(4)
    expected = asymmetry_exact(field, x, t)
    with torch.no_grad():
        exact = asymmetry_exact(field, x, t)
        estimate = asymmetry_hutchinson(field, x, t)
    torch.testing.assert_close(exact.asym, expected.asym)
    assert estimate.asym.shape == (4,)


class BatchNormField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.norm = nn.BatchNorm1d(2)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.norm(self.linear(x))


def test_batch_statistics_rejected() -> None:
    field = BatchNormField().train()
    x = torch.randn(8, 2)
    t = torch.rand(8)
    with pytest.raises(SampleCouplingError, match="BatchNorm1d"):
        qc_penalty(field, x, t, QCConfig("hutchinson-vjp"))
    with pytest.raises(SampleCouplingError, match="batch statistics"):
        asymmetry_exact(field, x, t)
    csbm = ConservativeScore(FieldNetWithBatchNorm(), VESDE(0.1, 3.0), form="norm")
    with pytest.raises(SampleCouplingError):
        csbm(x, t)

    field.eval()
    assert qc_penalty(field, x, t, QCConfig("exact")).shape == (8,)


class FieldNetWithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.field = BatchNormField()

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.field(x, sigma)


# Objective


def test_dsm_loss_hand_values() -> None:
    score = torch.ones(2, 3)
    noise = torch.full((2, 3), 0.5)
    sigma = torch.tensor([2.0, 1.0])
    expected = torch.tensor([3 * 2.5**2, 3 * 1.5**2])
    torch.testing.assert_close(dsm_loss(score, noise, sigma, "sum"), expected)
    torch.testing.assert_close(dsm_loss(score, noise, sigma, "half-sum"), expected / 2)
    with pytest.raises(ValueError, match="half-sum"):
        dsm_loss(score, noise, sigma, "mean")


def test_oracle_score_minimises_dsm() -> None:
    """For data N(0, I) under the VE SDE, s = -x / (1 + sigma^2) beats a perturbed score."""
    sde = VESDE(0.1, 3.0)
    x0 = torch.randn(100_000, 2)
    t = torch.rand(100_000)
    noise = torch.randn(100_000, 2)
    x_t = sde.perturb(x0, t, noise)
    sigma = sde.marginal_std(t)
    oracle = -x_t / (1 + sigma**2)[:, None]
    best = dsm_loss(oracle, noise, sigma).mean()
    worse = dsm_loss(oracle * 1.1, noise, sigma).mean()
    assert best < worse
    # E||sigma s* + z||^2 = D / (1 + sigma^2) per sample for this Gaussian case.
    expected = (2 / (1 + sigma**2)).mean()
    assert best.item() == pytest.approx(expected.item(), rel=0.02)


def test_objective_parts_and_shared_score() -> None:
    torch.manual_seed(0)
    model = build_score_model("qcsbm", ToyScoreNet(), VESDE(0.1, 3.0, t_min=0.0), "toy")
    x0 = torch.randn(32, 2)
    generator = torch.Generator().manual_seed(7)
    parts = training_loss(model, x0, 0.1, QCConfig("exact"), generator=generator)
    assert parts.qc_weighted is not None
    torch.testing.assert_close(parts.total, parts.dsm + 0.1 * parts.qc_weighted)

    # The DSM part computed from the shared score equals a fresh evaluation.
    generator = torch.Generator().manual_seed(7)
    t = model.sde.sample_time(32, generator=generator)
    noise = torch.randn(32, 2, generator=generator)
    x_t = model.sde.perturb(x0, t, noise)
    fresh = dsm_loss(model(x_t, t), noise, model.sde.marginal_std(t)).mean()
    torch.testing.assert_close(parts.dsm, fresh)

    dsm_only = training_loss(model, x0, 0.0)
    assert dsm_only.qc is None
    with pytest.raises(ValueError, match="lambda_qc"):
        training_loss(model, x0, -0.1)


def test_atomic_open_permissions_and_failure(tmp_path: Path) -> None:
    import os
    import stat

    from qcsbm_bench.atomic import atomic_open

    path = tmp_path / "out.txt"
    with atomic_open(path) as handle:
        handle.write("new")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask

    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("estimator", ["hutchinson-vjp", "hutchinson-jvp"])
def test_given_probes_match_drawn_probes(estimator: str) -> None:
    field = MLPField(dim=3, width=8, depth=2, activation="swish", seed=0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    t = torch.full((5,), 0.5)
    config = QCConfig(estimator=estimator, n_probes=2)
    drawn, _ = qc_penalty_and_score(field, x, t, config, torch.Generator().manual_seed(2))
    x_rep, _ = replicate(x, t, 2)
    probes = draw_probes(x_rep, "rademacher", torch.Generator().manual_seed(2))
    given_probes, _ = qc_penalty_and_score(field, x, t, config, probes=probes)
    torch.testing.assert_close(given_probes, drawn, rtol=0, atol=0)


def test_given_probes_wrong_shape_rejected() -> None:
    field = MLPField(dim=3, width=8, depth=2, activation="swish", seed=0)
    x = torch.randn(5, 3)
    t = torch.full((5,), 0.5)
    with pytest.raises(ValueError, match=r"probes have shape \(5, 3\), expected \(10, 3\)"):
        qc_penalty_and_score(field, x, t, QCConfig(n_probes=2), probes=torch.ones(5, 3))
