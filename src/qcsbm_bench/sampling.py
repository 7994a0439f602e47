"""Samplers of the reverse-time SDE and of the probability-flow ODE (Song et al., 2021).

Both take any score model `score_fn(x, t)` with an `sde` and share one signature. Both
return the samples, the number of score-model evaluations on the whole batch (NFE, counted
by wrapping the model, not computed from settings) and the wall time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor
from tqdm import tqdm

from qcsbm_bench.jacobian import ScoreFn
from qcsbm_bench.sde import SDE, VESDE, batch_broadcast, draw

logger = logging.getLogger(__name__)


@dataclass
class SampleResult:
    """Samples (B, ...), score-model evaluations on the batch, and wall-clock seconds."""

    samples: Tensor
    nfe: int
    seconds: float


class CountingScore:
    """Wrap a score function and count its evaluations."""

    def __init__(self, score_fn: ScoreFn) -> None:
        self.score_fn = score_fn
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.score_fn(x, t)


def _time_batch(value: float, like: Tensor) -> Tensor:
    return torch.full((like.shape[0],), value, dtype=like.dtype, device=like.device)


def _flat_norm(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1)


def langevin_step_size(
    sde: SDE, score: Tensor, noise: Tensor, snr: float, t: Tensor, dt: float
) -> Tensor:
    """Return the corrector step 2 alpha (snr ||z|| / ||s||)^2 per sample, shape (B,).

    The norms are batch means of per-sample norms, as in Song et al. (2021, Alg. 4/5). A
    per-sample ratio would explode for points where s is near 0, which in 2-D is common.
    alpha = 1 for the VE SDE and 1 - beta_i for the VP SDE.
    """
    ratio = snr * _flat_norm(noise).mean() / _flat_norm(score).mean()
    if isinstance(sde, VESDE):
        alpha = torch.ones_like(t)
    else:
        _, step_std = sde.discretize(noise, t, dt)
        alpha = 1.0 - step_std**2
    return 2 * alpha * ratio**2


@torch.no_grad()
def pc_sample(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    n_levels: int = 1000,
    snr: float = 0.16,
    corrector_steps: int = 1,
    denoise: bool = True,
    t_min: float = 1e-5,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SampleResult:
    """Predictor-corrector sampling: reverse-diffusion predictor + Langevin corrector.

    Times t_i = linspace(1, t_min, n_levels), which for the VE SDE gives geometric sigmas.
    Per level: `corrector_steps` Langevin steps, then one predictor step
    x <- x + G_i^2 s(x, t_i) + G_i z. A final Tweedie step at t_min removes the last noise.
    NFE = n_levels (1 + corrector_steps) (+1 with denoising); some papers count only
    n_levels.
    """
    counted = CountingScore(score_fn)
    started = time.perf_counter()
    x = sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)
    times = torch.linspace(1.0, t_min, n_levels, dtype=torch.float64)
    dt = (1.0 - t_min) / max(n_levels - 1, 1)

    def gaussian() -> Tensor:
        return draw("normal", shape, generator, dtype, device)

    for t_value in tqdm(times.tolist(), desc="pc sampler", disable=not progress):
        t = _time_batch(t_value, x)
        for _ in range(corrector_steps):
            score = counted(x, t)
            noise = gaussian()
            step = batch_broadcast(langevin_step_size(sde, score, noise, snr, t, dt), x)
            x = x + step * score + torch.sqrt(2 * step) * noise
        score = counted(x, t)
        drift, step_std = sde.discretize(x, t, dt)
        x = x - drift + batch_broadcast(step_std**2, x) * score
        x = x + batch_broadcast(step_std, x) * gaussian()

    if denoise:
        t = _time_batch(t_min, x)
        x = sde.tweedie_denoise(x, t, counted(x, t))
    return SampleResult(x, counted.calls, time.perf_counter() - started)


@torch.no_grad()
def ode_sample(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    rtol: float = 1e-5,
    atol: float = 1e-6,
    denoise: bool = True,
    t_min: float = 1e-5,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SampleResult:
    """Probability-flow ODE sampling dx/dt = f - 1/2 g^2 s from t = 1 to t_min with RK45.

    The whole batch is one ODE state (scipy's adaptive RK45, float64), so all samples share
    the step sizes. NFE = solver evaluations (+1 with the final Tweedie denoising step).
    """
    del progress  # scipy's solver has no progress hook; NFE is reported instead.
    counted = CountingScore(score_fn)
    started = time.perf_counter()
    x_start = sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)

    def drift(t_value: float, state: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(state, device=device).reshape(shape).to(dtype)
        t = _time_batch(t_value, x)
        velocity = sde.probability_flow_drift(x, t, counted(x, t))
        return velocity.reshape(-1).double().cpu().numpy()

    solution = solve_ivp(
        drift,
        (1.0, t_min),
        x_start.reshape(-1).double().cpu().numpy(),
        method="RK45",
        rtol=rtol,
        atol=atol,
    )
    if not solution.success:
        raise RuntimeError(f"probability-flow ODE solve failed: {solution.message}")
    x = torch.as_tensor(solution.y[:, -1], device=device).reshape(shape).to(dtype)
    if denoise:
        t = _time_batch(t_min, x)
        x = sde.tweedie_denoise(x, t, counted(x, t))
    logger.info("ODE sampler: %d evaluations (solver reported %d)", counted.calls, solution.nfev)
    return SampleResult(x, counted.calls, time.perf_counter() - started)


SAMPLERS = {"pc": pc_sample, "ode": ode_sample}
