"""Training objectives: denoising score matching and L_DSM + lambda * L_QC.

DSM (Vincent 2011, in the sigma^2-weighted form of Song et al. 2021), per sample:
    L_DSM = c * sum_dims (sigma(t) s(x_t, t) + z)^2,   x_t = m(t) x_0 + sigma(t) z,
with c = 1 ("sum", the toy experiments) or c = 1/2 ("half-sum", the image experiments).
The quasi-conservative term is sigma(t)^2 * L_QC(x_t) at the same perturbed points.
Both are in units of squared (sigma * score), i.e. dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qcsbm_bench.regulariser import QCConfig, qc_penalty_and_score
from qcsbm_bench.scores import ScoreModel
from qcsbm_bench.sde import batch_broadcast, draw

DSM_SCALES = {"sum": 1.0, "half-sum": 0.5}


def dsm_loss(score: Tensor, noise: Tensor, sigma: Tensor, convention: str = "sum") -> Tensor:
    """Return the per-sample DSM loss c * ||sigma s + z||^2, shape (B,)."""
    if convention not in DSM_SCALES:
        raise ValueError(
            f"unknown DSM convention {convention!r}; valid values are {tuple(DSM_SCALES)}"
        )
    residual = batch_broadcast(sigma, score) * score + noise
    return DSM_SCALES[convention] * residual.reshape(score.shape[0], -1).pow(2).sum(dim=1)


@dataclass
class LossParts:
    """Batch means of the objective and its parts; `total` carries the graph."""

    total: Tensor
    dsm: Tensor
    qc_weighted: Tensor | None
    qc: Tensor | None

    def as_floats(self) -> dict[str, float | None]:
        """Return the parts as plain floats for logging (None where not computed)."""

        def value(x: Tensor | None) -> float | None:
            return None if x is None else float(x.detach())

        return {
            "loss": value(self.total),
            "dsm": value(self.dsm),
            "qc_weighted": value(self.qc_weighted),
            "qc": value(self.qc),
        }


def training_loss(
    score_model: ScoreModel,
    x0: Tensor,
    lambda_qc: float = 0.0,
    qc_config: QCConfig | None = None,
    dsm_convention: str = "sum",
    generator: torch.Generator | None = None,
) -> LossParts:
    """Compute mean_b[L_DSM + lambda_qc * sigma^2 L_QC] on one batch of clean data x0.

    lambda_qc = 0 trains a USBM or CSBM and skips the regulariser entirely.
    """
    if lambda_qc < 0:
        raise ValueError(f"lambda_qc must be non-negative, got {lambda_qc}")
    sde = score_model.sde
    t = sde.sample_time(x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device)
    noise = draw("normal", x0.shape, generator, x0.dtype, x0.device)
    x_t = sde.perturb(x0, t, noise)
    sigma = sde.marginal_std(t)

    if lambda_qc == 0:
        score = score_model(x_t, t)
        dsm = dsm_loss(score, noise, sigma, dsm_convention).mean()
        return LossParts(total=dsm, dsm=dsm, qc_weighted=None, qc=None)

    # The estimator's own evaluation of s(x_t, t) serves the DSM term too, unless K > 1.
    penalty, shared_score = qc_penalty_and_score(
        score_model, x_t, t, qc_config or QCConfig(), generator=generator
    )
    score = score_model(x_t, t) if shared_score is None else shared_score
    dsm = dsm_loss(score, noise, sigma, dsm_convention).mean()
    qc_weighted = (sigma**2 * penalty).mean()
    total = dsm + lambda_qc * qc_weighted
    return LossParts(total=total, dsm=dsm, qc_weighted=qc_weighted, qc=penalty.mean())
