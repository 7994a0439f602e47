"""Hutchinson estimators of L_QC against the exact Jacobian value.

Two kinds of checks. Averaging over all 2^D Rademacher sign vectors is the exact
expectation over that probe distribution, so the mean of an unbiased estimator must equal
the exact value to float precision. Monte Carlo means over N probes must lie within a
tolerance derived from the estimator's variance for the sample's own Jacobian:
var(v^T A v) = sum_{i<j} (A_ij + A_ji)^2 for Rademacher v and 2 ||(A + A^T)/2||_F^2 for
Gaussian v, so the mean over N probes has standard error sqrt(var / N).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import FieldCase, conv_cases, mlp_cases
from hypothesis import HealthCheck, given, settings
from torch import Tensor, nn

from qcsbm_bench.jacobian import (
    draw_probes,
    exact_jacobian,
    jvp_antisymmetric_sq_norm,
    vjp_quadratic_forms,
)
from qcsbm_bench.regulariser import QCConfig, antisymmetric_sq_norm, qc_penalty

SETTINGS = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
Z_SCORE = 6.0  # A 6-sigma band: a false failure about once in 5e8 comparisons.


def all_sign_vectors(dim: int) -> Tensor:
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=dim)))


def enumerate_probes(case: FieldCase) -> tuple[Tensor, Tensor, Tensor]:
    """Replicate each sample once per sign vector: (B * 2^D, D) inputs and probes."""
    batch, dim = case.x.shape
    signs = all_sign_vectors(dim)
    x_rep = case.x.repeat_interleave(len(signs), dim=0)
    t_rep = case.t.repeat_interleave(len(signs), dim=0)
    probes = signs.repeat(batch, 1)
    return x_rep, t_rep, probes


def exact_penalty(case: FieldCase, create_graph: bool = False) -> Tensor:
    _, jacobian = exact_jacobian(case.field, case.x, case.t, create_graph=create_graph)
    return 0.5 * antisymmetric_sq_norm(jacobian)


def quadratic_form_std(matrix: Tensor, probe: str) -> Tensor:
    """Return the std of v^T A v for one probe, per sample, A of shape (B, D, D)."""
    sym = matrix + matrix.transpose(1, 2)
    if probe == "rademacher":
        off_diagonal = torch.triu(sym, diagonal=1)
        return off_diagonal.pow(2).sum(dim=(1, 2)).sqrt()
    return (2 * (sym / 2).pow(2).sum(dim=(1, 2))).sqrt()


def estimator_form_matrix(jacobian: Tensor, estimator: str) -> Tensor:
    """Return A with estimate = v^T A v: J J^T - J J (vjp), 1/2 M^T M with M = J - J^T (jvp)."""
    if estimator == "hutchinson-vjp":
        return jacobian @ jacobian.transpose(1, 2) - jacobian @ jacobian
    antisym = jacobian - jacobian.transpose(1, 2)
    return 0.5 * antisym.transpose(1, 2) @ antisym


def parameter_gradient(loss: Tensor, module: nn.Module) -> Tensor:
    grads = torch.autograd.grad(loss, list(module.parameters()), allow_unused=True)
    return torch.cat(
        [
            torch.zeros_like(p).flatten() if g is None else g.flatten()
            for g, p in zip(grads, module.parameters(), strict=True)
        ]
    )


def assert_mean_within_variance_band(
    case: FieldCase, estimator: str, probe: str, n_probes: int, seed: int
) -> None:
    """Check that an n_probes-probe mean lies within Z_SCORE standard errors of the exact value."""
    generator = torch.Generator().manual_seed(seed)
    config = QCConfig(estimator=estimator, probe=probe, n_probes=n_probes)
    estimate = qc_penalty(case.field, case.x, case.t, config, generator, create_graph=False)

    _, jacobian = exact_jacobian(case.field, case.x, case.t)
    exact = 0.5 * antisymmetric_sq_norm(jacobian)
    std = quadratic_form_std(estimator_form_matrix(jacobian, estimator), probe)
    band = Z_SCORE * std / n_probes**0.5 + 1e-12 * (1 + exact)
    assert torch.all((estimate - exact).abs() <= band), (estimate, exact, band)


@SETTINGS
@given(case=mlp_cases(max_dim=6))
def test_vjp_sign_enumeration_matches_exact(case: FieldCase) -> None:
    x_rep, t_rep, probes = enumerate_probes(case)
    _, first, second = vjp_quadratic_forms(case.field, x_rep, t_rep, probes, create_graph=False)
    estimate = (first - second).reshape(case.x.shape[0], -1).mean(dim=1)
    exact = exact_penalty(case)
    torch.testing.assert_close(estimate, exact, rtol=1e-9, atol=1e-14)


@SETTINGS
@given(case=mlp_cases(max_dim=6))
def test_jvp_sign_enumeration_matches_exact(case: FieldCase) -> None:
    x_rep, t_rep, probes = enumerate_probes(case)
    _, antisym_sq, _ = jvp_antisymmetric_sq_norm(
        case.field, x_rep, t_rep, probes, create_graph=False
    )
    estimate = 0.5 * antisym_sq.detach().reshape(case.x.shape[0], -1).mean(dim=1)
    exact = exact_penalty(case)
    torch.testing.assert_close(estimate, exact, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("estimator", ["hutchinson-vjp", "hutchinson-jvp"])
@SETTINGS
@given(case=mlp_cases(max_dim=6))
def test_sign_enumeration_gradient_matches_exact(case: FieldCase, estimator: str) -> None:
    x_rep, t_rep, probes = enumerate_probes(case)
    if estimator == "hutchinson-vjp":
        _, first, second = vjp_quadratic_forms(case.field, x_rep, t_rep, probes, True)
        per_probe = first - second
    else:
        _, antisym_sq, _ = jvp_antisymmetric_sq_norm(case.field, x_rep, t_rep, probes, True)
        per_probe = 0.5 * antisym_sq
    estimate = per_probe.reshape(case.x.shape[0], -1).mean(dim=1).sum()
    exact = exact_penalty(case, create_graph=True).sum()

    grad_estimate = parameter_gradient(estimate, case.field)
    grad_exact = parameter_gradient(exact, case.field)
    torch.testing.assert_close(grad_estimate, grad_exact, rtol=1e-8, atol=1e-13)


@SETTINGS
@given(case=mlp_cases(max_dim=6))
def test_detached_probe_product_biases_gradient(case: FieldCase) -> None:
    """Dropping the secondary gradient must show up as a wrong parameter gradient."""
    dim = case.x.shape[1]
    if dim == 1:
        return  # A 1x1 Jacobian is symmetric, so both gradients are zero.
    x_rep, t_rep, probes = enumerate_probes(case)
    _, first, second = vjp_quadratic_forms(
        case.field, x_rep, t_rep, probes, True, secondary_gradient=False
    )
    estimate = (first - second).reshape(case.x.shape[0], -1).mean(dim=1).sum()
    exact = exact_penalty(case, create_graph=True).sum()

    grad_estimate = parameter_gradient(estimate, case.field)
    grad_exact = parameter_gradient(exact, case.field)
    gap = (grad_estimate - grad_exact).norm()
    assert gap > 1e-3 * grad_exact.norm()


@pytest.mark.parametrize("estimator", ["hutchinson-vjp", "hutchinson-jvp"])
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@SETTINGS
@given(case=mlp_cases(max_dim=8))
def test_monte_carlo_mean_within_variance_band(case: FieldCase, estimator: str, probe: str) -> None:
    assert_mean_within_variance_band(case, estimator, probe, n_probes=4000, seed=0)


@pytest.mark.parametrize("estimator", ["hutchinson-vjp", "hutchinson-jvp"])
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@settings(max_examples=4, deadline=None, derandomize=True)
@given(case=conv_cases())
def test_conv_field_within_variance_band(case: FieldCase, estimator: str, probe: str) -> None:
    assert_mean_within_variance_band(case, estimator, probe, n_probes=2000, seed=1)


@pytest.mark.parametrize("estimator", ["hutchinson-vjp", "hutchinson-jvp"])
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@settings(max_examples=3, deadline=None, derandomize=True)
@given(case=conv_cases())
def test_conv_gradient_within_batch_means_band(case: FieldCase, estimator: str, probe: str) -> None:
    """The probe-averaged parameter gradient matches the exact one on a conv field.

    The tolerance comes from the spread of independent batch means of the gradient
    (n_chunks chunks of chunk_size probes each).
    """
    n_chunks, chunk_size = 12, 200
    generator = torch.Generator().manual_seed(2)
    config = QCConfig(estimator=estimator, probe=probe, n_probes=chunk_size)
    chunk_grads = torch.stack(
        [
            parameter_gradient(
                qc_penalty(case.field, case.x, case.t, config, generator).sum(), case.field
            )
            for _ in range(n_chunks)
        ]
    )
    exact_grad = parameter_gradient(exact_penalty(case, create_graph=True).sum(), case.field)

    mean = chunk_grads.mean(dim=0)
    standard_error = chunk_grads.std(dim=0) / n_chunks**0.5
    band = Z_SCORE * standard_error + 1e-9 * exact_grad.abs().max()
    assert torch.all((mean - exact_grad).abs() <= band)


@pytest.mark.parametrize("estimator", ["exact", "hutchinson-vjp", "hutchinson-jvp"])
@SETTINGS
@given(case=mlp_cases(max_dim=8))
def test_penalty_under_no_grad(case: FieldCase, estimator: str) -> None:
    config = QCConfig(estimator=estimator, n_probes=3)
    expected = qc_penalty(
        case.field, case.x, case.t, config, torch.Generator().manual_seed(5), create_graph=False
    )
    with torch.no_grad():
        value = qc_penalty(
            case.field, case.x, case.t, config, torch.Generator().manual_seed(5), create_graph=False
        )
    torch.testing.assert_close(value, expected)


class LinearField(nn.Module):
    """s(x, t) = A x for a fixed matrix A, so J = A everywhere."""

    def __init__(self, matrix: Tensor) -> None:
        super().__init__()
        self.matrix = nn.Parameter(matrix)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x @ self.matrix.T


def test_rotation_field_exact_with_one_rademacher_probe() -> None:
    """For J = [[a, -b], [b, a]], J J^T - J J has no symmetric off-diagonal part.

    Its Rademacher variance is then 0, so every single probe returns the exact value,
    while one Gaussian probe does not.
    """
    a, b = 0.7, 1.3
    field = LinearField(torch.tensor([[a, -b], [b, a]]))
    x = torch.randn(64, 2)
    t = torch.rand(64)
    expected = torch.full((64,), 4 * b**2)  # 1/2 ||J - J^T||_F^2 = 1/2 (2 (2b)^2).

    rademacher = qc_penalty(field, x, t, QCConfig("hutchinson-vjp"), create_graph=False)
    torch.testing.assert_close(rademacher, expected)

    gaussian = qc_penalty(field, x, t, QCConfig("hutchinson-vjp", probe="gaussian"))
    assert (gaussian - expected).abs().max() > 1e-3


def test_rademacher_exact_for_diagonal_matrix() -> None:
    """v^T M v = tr(M) for every sign vector when M is diagonal; not so for Gaussian v."""
    diagonal = torch.diag(torch.tensor([0.5, -2.0, 3.0, 1.5]))
    rademacher = draw_probes(torch.zeros(1000, 4), "rademacher", torch.Generator().manual_seed(0))
    values = torch.einsum("ni,ij,nj->n", rademacher, diagonal, rademacher)
    torch.testing.assert_close(values, torch.full((1000,), 3.0))

    gaussian = draw_probes(torch.zeros(1000, 4), "gaussian", torch.Generator().manual_seed(0))
    values = torch.einsum("ni,ij,nj->n", gaussian, diagonal, gaussian)
    assert values.std() > 1.0


def test_probe_mean_not_sum() -> None:
    field = LinearField(torch.tensor([[0.0, -2.0], [2.0, 0.0]]))
    x = torch.randn(5, 2)
    t = torch.rand(5)
    for estimator in ("hutchinson-vjp", "hutchinson-jvp"):
        config = QCConfig(estimator=estimator, n_probes=7)
        penalty = qc_penalty(field, x, t, config, create_graph=False)
        torch.testing.assert_close(penalty, torch.full((5,), 16.0))


def test_quadratic_form_variance_formulas() -> None:
    """The variance formulas behind every tolerance match the empirical variance."""
    generator = torch.Generator().manual_seed(3)
    matrix = torch.randn(1, 4, 4, generator=generator)
    n = 200_000
    for probe, draw in (
        ("rademacher", lambda: torch.randint(0, 2, (n, 4), generator=generator) * 2.0 - 1),
        ("gaussian", lambda: torch.randn(n, 4, generator=generator)),
    ):
        v = draw()
        values = torch.einsum("ni,ij,nj->n", v, matrix[0], v)
        expected_std = quadratic_form_std(matrix, probe)[0]
        assert values.mean().item() == pytest.approx(matrix[0].trace().item(), abs=0.05)
        assert values.std().item() == pytest.approx(expected_std.item(), rel=0.02)


def test_config_rejects_invalid_values() -> None:
    with pytest.raises(ValueError, match="hutchinson-vjp"):
        QCConfig(estimator="hutchinson")
    with pytest.raises(ValueError, match="rademacher"):
        QCConfig(probe="uniform")
    with pytest.raises(ValueError, match="n_probes"):
        QCConfig(n_probes=0)
