"""Jacobian asymmetry metrics Asym and NAsym (Chao et al., ICML 2023).

Asym  = 1/2 ||J - J^T||_F^2 = tr(J J^T) - tr(J J), in squared score units; 0 for a CSBM.
NAsym = ||(J - J^T) / 2||_F^2 / ||J||_F^2 in [0, 1], the share of J's squared Frobenius
norm that lies in its antisymmetric part.

The exact versions form J (D reverse passes). The Hutchinson versions use two VJPs per
probe, v^T J J^T v (estimates ||J||_F^2) and v^T J J v, with
NAsym_hat = 1/2 (vJJ^Tv - vJJv) / (vJJ^Tv + 1e-8), the per-image image-benchmark estimate.
All functions work under torch.no_grad() and return per-sample tensors of shape (B,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qcsbm_bench.jacobian import (
    ScoreFn,
    check_samplewise,
    draw_probes,
    exact_jacobian,
    replicate,
    vjp_quadratic_forms,
)
from qcsbm_bench.regulariser import antisymmetric_sq_norm

NASYM_EPS = 1e-8


@dataclass(frozen=True)
class Asymmetry:
    """Per-sample asymmetry values, each of shape (B,)."""

    asym: Tensor
    nasym: Tensor


def _check(score_fn: ScoreFn) -> None:
    if isinstance(score_fn, torch.nn.Module):
        check_samplewise(score_fn)


def asymmetry_exact(score_fn: ScoreFn, x: Tensor, t: Tensor) -> Asymmetry:
    """Compute Asym and NAsym from the full Jacobian of each sample."""
    _check(score_fn)
    _, jacobian = exact_jacobian(score_fn, x, t, create_graph=False)
    antisym_sq = antisymmetric_sq_norm(jacobian).detach()
    fro_sq = jacobian.pow(2).sum(dim=(1, 2)).detach()
    return Asymmetry(asym=0.5 * antisym_sq, nasym=0.25 * antisym_sq / fro_sq)


def asymmetry_hutchinson(
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    probe: str = "rademacher",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
) -> Asymmetry:
    """Estimate Asym and NAsym with n_probes probes per sample (means of both forms)."""
    _check(score_fn)
    batch = x.shape[0]
    x_rep, t_rep = replicate(x, t, n_probes)
    probes = draw_probes(x_rep, probe, generator)
    _, first, second = vjp_quadratic_forms(score_fn, x_rep, t_rep, probes, create_graph=False)
    first = first.detach().reshape(batch, n_probes).mean(dim=1)
    second = second.detach().reshape(batch, n_probes).mean(dim=1)
    asym = first - second
    return Asymmetry(asym=asym, nasym=0.5 * asym / (first + NASYM_EPS))
