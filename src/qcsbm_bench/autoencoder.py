"""One-layer autoencoder score field trained only to make its Jacobian symmetric.

The score field on R^2 (D = H = 2) is

    s(x) = R swish_beta(W^T x + b) + c,    swish_beta(u) = u * sigmoid(beta u),

with W, R of shape (D, H), b of shape (H,), c of shape (D,) and one learnable scalar beta.
Its Jacobian is

    J(x) = R diag(swish_beta'(W^T x + b)) W^T,
    swish_beta'(u) = sigmoid(beta u) + beta u sigmoid(beta u) (1 - sigmoid(beta u)).

Tied weights (R = W) make J symmetric, but tying is sufficient, not necessary: in 2-D the
antisymmetric part is J_12 - J_21 = sum_h swish_beta'(u_h) (R_1h W_2h - R_2h W_1h), which
vanishes for all x whenever each column of R is parallel to the matching column of W.

Training minimises only the quasi-conservative loss

    L_QC = mean over grid points of 1/2 ||J(x) - J(x)^T||_F^2,

in (score unit / data unit)^2, on a square grid, and logs how far R W^T is from symmetric and
how far R is from W.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from qcsbm_bench.atomic import atomic_open

logger = logging.getLogger(__name__)

DIMENSION = 2
HIDDEN = 2


class OneLayerAutoencoder(torch.nn.Module):
    """Score field s(x) = R swish_beta(W^T x + b) + c on R^2 with an analytic Jacobian.

    W, R, b and c start as U(-1, 1) draws, in that order, from a torch Generator seeded with
    `seed`. beta starts at 1. All parameters are float64.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)

        def uniform(*shape: int) -> torch.nn.Parameter:
            values = 2.0 * torch.rand(*shape, generator=generator, dtype=torch.float64) - 1.0
            return torch.nn.Parameter(values)

        self.W = uniform(DIMENSION, HIDDEN)
        self.R = uniform(DIMENSION, HIDDEN)
        self.b = uniform(HIDDEN)
        self.c = uniform(DIMENSION)
        self.beta = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Compute u = W^T x + b for x of shape (B, D), returning shape (B, H)."""
        return x @ self.W + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the score s(x) for x of shape (B, D), returning shape (B, D)."""
        u = self.pre_activation(x)
        activation = u * torch.sigmoid(self.beta * u)
        return activation @ self.R.T + self.c

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Compute J(x) = R diag(swish_beta'(u)) W^T for x (B, D), returning (B, D, D).

        Entry J[b, i, j] is ds_i / dx_j at point b.
        """
        u = self.pre_activation(x)
        gate = torch.sigmoid(self.beta * u)
        slope = gate + self.beta * u * gate * (1.0 - gate)
        return torch.einsum("ih,bh,jh->bij", self.R, slope, self.W)


def quasi_conservative_loss(jacobian: torch.Tensor) -> torch.Tensor:
    """Compute L_QC = mean over the batch of 1/2 ||J - J^T||_F^2 for J of shape (B, D, D)."""
    antisymmetric = jacobian - jacobian.transpose(1, 2)
    return 0.5 * antisymmetric.pow(2).sum(dim=(1, 2)).mean()


def make_grid(grid_size: int, extent: float) -> torch.Tensor:
    """Build the grid_size x grid_size grid over [-extent, extent]^2 as float64 points (G^2, 2)."""
    axis = torch.linspace(-extent, extent, grid_size, dtype=torch.float64)
    first, second = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([first.reshape(-1), second.reshape(-1)], dim=1)


def _curve_row(step: int, loss: float, model: OneLayerAutoencoder) -> dict[str, float]:
    with torch.no_grad():
        product = model.R @ model.W.T
        asym_rw = 0.5 * (product - product.T).pow(2).sum()
        weight_gap = torch.linalg.norm(model.R - model.W)
        return {
            "step": step,
            "L_QC": loss,
            "asym_rw": asym_rw.item(),
            "weight_gap": weight_gap.item(),
            "beta": model.beta.item(),
        }


def run_autoencoder(
    steps: int = 10001,
    lr: float = 1e-4,
    grid_size: int = 40,
    extent: float = 10.0,
    seed: int = 0,
    log_every: int = 10,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train OneLayerAutoencoder on L_QC alone with Adam and gradient-norm clipping at 1.

    Each of the `steps` updates uses the loss on the full grid of make_grid(grid_size, extent).
    A row is recorded before the update at step 0, every `log_every` steps and at the last
    step, with keys step, L_QC, asym_rw (1/2 ||R W^T - W R^T||_F^2), weight_gap (||R - W||_F)
    and beta. With the defaults the rows are steps 0, 10, ..., 10000.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if log_every < 1:
        raise ValueError(f"log_every must be at least 1, got {log_every}.")
    if grid_size < 2 or extent <= 0:
        raise ValueError(
            f"grid_size must be at least 2 and extent positive, got grid_size={grid_size}, "
            f"extent={extent}."
        )

    model = OneLayerAutoencoder(seed=seed)
    grid = make_grid(grid_size, extent)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    rows: list[dict[str, float]] = []

    for step in tqdm(range(steps), desc="autoencoder L_QC", disable=not progress):
        loss = quasi_conservative_loss(model.jacobian(grid))
        if step % log_every == 0 or step == steps - 1:
            rows.append(_curve_row(step, loss.item(), model))

        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimiser.step()

    logger.info(
        "Autoencoder run finished after %d steps: L_QC %.3e -> %.3e, weight_gap %.3f -> %.3f",
        steps,
        rows[0]["L_QC"],
        rows[-1]["L_QC"],
        rows[0]["weight_gap"],
        rows[-1]["weight_gap"],
    )
    return rows


def write_curves(rows: Sequence[dict[str, float]], path: Path) -> None:
    """Write one JSON object per row to `path`, through a temporary file and an atomic rename."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
