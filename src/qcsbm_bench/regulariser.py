"""The quasi-conservative regulariser L_QC of Chao et al. (ICML 2023).

Per sample, L_QC(x) = 1/2 ||J - J^T||_F^2 = tr(J J^T) - tr(J J), with J = ds/dx (D x D), in
squared score units. It is zero exactly when J is symmetric, the local condition for s to
be a gradient field. The training objective weights it by sigma^2 (see `losses`).

Estimators (all return the per-sample value, shape (B,), averaged over K probes):
- "exact": the full Jacobian from D reverse-mode passes; for small D (toy 2-D data).
- "hutchinson-vjp": v^T J J^T v - v^T J J v from two VJPs, unbiased for E[v v^T] = I,
  and can be negative for a single probe.
- "hutchinson-jvp": 1/2 ||J v - J^T v||^2 from one JVP and one VJP, unbiased and never
  negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qcsbm_bench.jacobian import (
    PROBES,
    ScoreFn,
    check_samplewise,
    draw_probes,
    exact_jacobian,
    jvp_antisymmetric_sq_norm,
    replicate,
    vjp_quadratic_forms,
)

ESTIMATORS = ("exact", "hutchinson-vjp", "hutchinson-jvp")


@dataclass(frozen=True)
class QCConfig:
    """Settings of the L_QC estimator.

    estimator: one of ESTIMATORS. probe: "rademacher" or "gaussian" (Hutchinson only).
    n_probes: K probes per sample; the estimate is their mean. secondary_gradient: for
    "hutchinson-vjp", keep the gradient path through J^T v in the second VJP; False is an
    ablation with a biased parameter gradient.
    """

    estimator: str = "hutchinson-vjp"
    probe: str = "rademacher"
    n_probes: int = 1
    secondary_gradient: bool = True

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"unknown L_QC estimator {self.estimator!r}; valid values are {ESTIMATORS}"
            )
        if self.probe not in PROBES:
            raise ValueError(
                f"unknown probe distribution {self.probe!r}; valid values are {PROBES}"
            )
        if self.n_probes < 1:
            raise ValueError(f"n_probes must be a positive integer, got {self.n_probes}")


def antisymmetric_sq_norm(jacobian: Tensor) -> Tensor:
    """Return ||J - J^T||_F^2 per sample for J of shape (B, D, D), shape (B,)."""
    return (jacobian - jacobian.transpose(1, 2)).pow(2).sum(dim=(1, 2))


def qc_penalty_and_score(
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    config: QCConfig,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
    probes: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Estimate L_QC(x) = 1/2 ||J - J^T||_F^2 per sample (B,), and return s(x, t) with it.

    The score comes from the same evaluation that the estimator differentiates, so the DSM
    loss can reuse it; it is None when K > 1 probes replicate the batch. `score_fn(x, t)`
    is a score model or any samplewise function. With create_graph=True (training) both
    results are differentiable w.r.t. the parameters; works under torch.no_grad().
    `probes` (K B, ...) replaces the draw from `generator` for the Hutchinson estimators, in
    the row order of `jacobian.replicate`.
    """
    if isinstance(score_fn, torch.nn.Module):
        check_samplewise(score_fn)

    if config.estimator == "exact":
        score, jacobian = exact_jacobian(score_fn, x, t, create_graph=create_graph)
        penalty = 0.5 * antisymmetric_sq_norm(jacobian)
    else:
        batch = x.shape[0]
        x_rep, t_rep = replicate(x, t, config.n_probes)
        if probes is None:
            probes = draw_probes(x_rep, config.probe, generator)
        elif probes.shape != x_rep.shape:
            raise ValueError(
                f"probes have shape {tuple(probes.shape)}, expected {tuple(x_rep.shape)} "
                f"(n_probes = {config.n_probes} copies of x)"
            )
        if config.estimator == "hutchinson-vjp":
            score, first, second = vjp_quadratic_forms(
                score_fn, x_rep, t_rep, probes, create_graph, config.secondary_gradient
            )
            per_probe = first - second
        else:
            score, antisym_sq, _ = jvp_antisymmetric_sq_norm(
                score_fn, x_rep, t_rep, probes, create_graph
            )
            per_probe = 0.5 * antisym_sq
        penalty = per_probe.reshape(batch, config.n_probes).mean(dim=1)
        if config.n_probes > 1:
            score = None

    if not create_graph:
        penalty = penalty.detach()
        score = None if score is None else score.detach()
    return penalty, score


def qc_penalty(
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    config: QCConfig,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
) -> Tensor:
    """Estimate L_QC(x) = 1/2 ||J - J^T||_F^2 per sample, shape (B,).

    See `qc_penalty_and_score` for the arguments.
    """
    penalty, _ = qc_penalty_and_score(score_fn, x, t, config, generator, create_graph)
    return penalty
