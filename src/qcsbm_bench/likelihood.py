"""Negative log-likelihood by the probability-flow ODE (Song et al., 2021, Appendix D).

log p_0(x_0) = log p_1(x_1) + int_{t_min}^{1} div f~(x_t, t) dt, where
f~ = f - 1/2 g^2 s is the probability-flow drift and x_t solves dx/dt = f~ from x_0. The
divergence is exact (D reverse passes, for small D such as 2-D data) or Hutchinson's
estimate v^T (d f~ / dx) v with one probe per sample held fixed for the whole solve.
NLL is returned in nats per sample; `bits_per_dim` converts it for 8-bit images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from qcsbm_bench.jacobian import ScoreFn, draw_probes, input_requiring_grad, vjp
from qcsbm_bench.sde import SDE

DIVERGENCES = ("exact", "hutchinson")


@dataclass
class LikelihoodResult:
    """NLL per sample in nats (B,), the prior term log p_1(x_1) (B,), NFE and seconds."""

    nll: Tensor
    prior_log_prob: Tensor
    nfe: int
    seconds: float


def drift_and_divergence(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor, probes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Return f~(x, t) (shape of x) and its divergence per sample (B,).

    probes=None computes the exact trace of d f~ / dx; otherwise v^T (d f~ / dx) v.
    """
    with torch.enable_grad():
        x = input_requiring_grad(x)
        drift = sde.probability_flow_drift(x, t, score_fn(x, t))
        batch = x.shape[0]
        if probes is not None:
            grad = vjp(drift, x, probes, create_graph=False)
            divergence = (grad * probes).reshape(batch, -1).sum(dim=1)
        else:
            flat_drift = drift.reshape(batch, -1)
            divergence = torch.zeros(batch, dtype=x.dtype, device=x.device)
            for i in range(flat_drift.shape[1]):
                cotangent = torch.zeros_like(flat_drift)
                cotangent[:, i] = 1
                row = vjp(flat_drift, x, cotangent, create_graph=False).reshape(batch, -1)
                divergence = divergence + row[:, i]
    return drift.detach(), divergence.detach()


def ode_nll(
    score_fn: ScoreFn,
    sde: SDE,
    x0: Tensor,
    divergence: str = "exact",
    probe: str = "rademacher",
    rtol: float = 1e-3,
    atol: float = 1e-5,
    t_min: float = 1e-5,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """Integrate the probability-flow ODE from t_min to 1 and return -log p(x0) in nats."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; valid values are {DIVERGENCES}")
    started = time.perf_counter()
    shape = x0.shape
    batch = shape[0]
    dtype, device = x0.dtype, x0.device
    probes = None if divergence == "exact" else draw_probes(x0, probe, generator)
    calls = 0

    def rhs(t_value: float, state: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        x = torch.as_tensor(state[:-batch], device=device).reshape(shape).to(dtype)
        t = torch.full((batch,), t_value, dtype=dtype, device=device)
        drift, div = drift_and_divergence(score_fn, sde, x, t, probes)
        return np.concatenate(
            [drift.reshape(-1).double().cpu().numpy(), div.double().cpu().numpy()]
        )

    start_state = np.concatenate([x0.reshape(-1).double().cpu().numpy(), np.zeros(batch)])
    solution = solve_ivp(rhs, (t_min, 1.0), start_state, method="RK45", rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"likelihood ODE solve failed: {solution.message}")
    end_state = solution.y[:, -1]
    x1 = torch.as_tensor(end_state[:-batch], device=device).reshape(shape).to(dtype)
    delta_log_prob = torch.as_tensor(end_state[-batch:], device=device).to(dtype)
    prior = sde.prior_log_prob(x1)
    nll = -(prior + delta_log_prob)
    return LikelihoodResult(nll, prior, calls, time.perf_counter() - started)


def bits_per_dim(nll: Tensor, dim: int, n_bins: int = 256, data_range: float = 1.0) -> Tensor:
    """Convert NLL in nats of dequantised data to bits/dim of the discrete data.

    Data with n_bins levels scaled to an interval of width data_range has bins of width
    data_range / n_bins, so bits/dim = nll / (D ln 2) + log2(n_bins / data_range); that is
    +8 for 8-bit data scaled to [0, 1].
    """
    return nll / (dim * math.log(2)) + math.log2(n_bins / data_range)
