"""Forward SDEs of score-based generative modelling (Song et al., ICLR 2021).

Every later piece (scores, losses, samplers, likelihood) takes an `SDE` object, so the
variance-exploding and variance-preserving processes are interchangeable. Shapes: `x` is
(B, ...) with any trailing data shape, `t` is (B,) SDE time in [t_min, 1].
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


def batch_broadcast(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample values (B,) so they broadcast against a (B, ...) tensor."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def draw(
    kind: str,
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Draw "normal" N(0, 1) or "uniform" U[0, 1) values on `device`.

    The values are drawn on the generator's own device and then moved, because torch
    rejects a CPU generator for CUDA tensors. A seeded CPU generator therefore gives the
    same numbers whatever device the model runs on.
    """
    if kind not in ("normal", "uniform"):
        raise ValueError(f"unknown distribution {kind!r}; use 'normal' or 'uniform'")
    sampler = torch.randn if kind == "normal" else torch.rand
    source = generator.device if generator is not None else device
    return sampler(tuple(shape), generator=generator, dtype=dtype, device=source).to(device)


class SDE(ABC):
    """A forward SDE dx = f(x, t) dt + g(t) dw with a Gaussian perturbation kernel.

    The kernel is p_t(x_t | x_0) = N(x_t; mean_coeff(t) x_0, marginal_std(t)^2 I), and
    `marginal_std` is the sigma that score networks are conditioned on and that weights
    the DSM and quasi-conservative losses.
    """

    def __init__(self, t_min: float) -> None:
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
        self.t_min = float(t_min)
        self.t_max = 1.0

    @abstractmethod
    def marginal_std(self, t: Tensor) -> Tensor:
        """Return sigma(t), the std of x_t given x_0, shape of t."""

    @abstractmethod
    def mean_coeff(self, t: Tensor) -> Tensor:
        """Return the factor m(t) in E[x_t | x_0] = m(t) x_0, shape of t."""

    @abstractmethod
    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Return f(x, t) with the shape of x and g(t) with shape (B,)."""

    @abstractmethod
    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """Return the one-step increments (f_i with the shape of x, G_i (B,)) from t - dt to t.

        x_t = x_{t-dt} + f_i + G_i z is the discrete forward chain that the reverse-diffusion
        predictor inverts.
        """

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Std of the Gaussian prior N(0, prior_std^2 I) at t = 1."""

    def perturb(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t = m(t) x_0 + sigma(t) z for given standard normal noise z."""
        return (
            batch_broadcast(self.mean_coeff(t), x0) * x0
            + batch_broadcast(self.marginal_std(t), x0) * noise
        )

    def sample_time(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Draw t ~ U(t_min, 1), shape (batch_size,)."""
        u = draw("uniform", (batch_size,), generator, dtype, device)
        return self.t_min + (self.t_max - self.t_min) * u

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Draw x_1 from the prior N(0, prior_std^2 I) on `device`, drawn on the generator's."""
        return self.prior_std * draw("normal", shape, generator, dtype, device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """Return log N(x; 0, prior_std^2 I) in nats, summed over all but the batch dim, (B,)."""
        dim = x[0].numel()
        sq_norm = x.reshape(x.shape[0], -1).pow(2).sum(dim=1)
        return -0.5 * dim * math.log(2 * math.pi * self.prior_std**2) - sq_norm / (
            2 * self.prior_std**2
        )

    def probability_flow_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Return the probability-flow ODE drift f(x, t) - 1/2 g(t)^2 s(x, t), shape of x."""
        drift, diffusion = self.drift_diffusion(x, t)
        return drift - 0.5 * batch_broadcast(diffusion**2, x) * score

    def tweedie_denoise(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Return E[x_0 | x_t] = (x_t + sigma(t)^2 s(x_t, t)) / m(t) (Tweedie's formula)."""
        sigma = batch_broadcast(self.marginal_std(t), x)
        return (x + sigma**2 * score) / batch_broadcast(self.mean_coeff(t), x)


class VESDE(SDE):
    """Variance-exploding SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    Drift 0, diffusion g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min)), perturbation
    x_t = x_0 + sigma(t) z and prior N(0, sigma_max^2 I). As in NCSN++, the kernel ignores
    the variance sigma_min^2 that the SDE itself would have at t = 0.
    """

    def __init__(self, sigma_min: float, sigma_max: float, t_min: float = 1e-5) -> None:
        super().__init__(t_min)
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(
                f"VESDE needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
                f"sigma_max={sigma_max}"
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def marginal_std(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def mean_coeff(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        diffusion = self.marginal_std(t) * math.sqrt(2 * self._log_ratio)
        return torch.zeros_like(x), diffusion

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        # The NCSN chain: sigma_i^2 = sigma_{i-1}^2 + G_i^2, with sigma(t - dt) at the level below.
        sigma = self.marginal_std(t)
        sigma_below = torch.where(t - dt > 0, self.marginal_std(t - dt), torch.zeros_like(t))
        return torch.zeros_like(x), torch.sqrt(sigma**2 - sigma_below**2)

    @property
    def prior_std(self) -> float:
        return self.sigma_max


class VPSDE(SDE):
    """Variance-preserving SDE with linear beta(t) = beta_min + t (beta_max - beta_min).

    Drift -1/2 beta(t) x, diffusion sqrt(beta(t)), mean factor
    m(t) = exp(-1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min), sigma(t) = sqrt(1 - m(t)^2)
    and prior N(0, I).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3) -> None:
        super().__init__(t_min)
        if not 0.0 < beta_min < beta_max:
            raise ValueError(
                f"VPSDE needs 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}"
            )
        if t_min <= 0.0:
            raise ValueError(f"VPSDE needs t_min > 0 because sigma(0) = 0, got t_min={t_min}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal_std(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self._log_mean_coeff(t)))

    def mean_coeff(self, t: Tensor) -> Tensor:
        return torch.exp(self._log_mean_coeff(t))

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * batch_broadcast(beta, x) * x, torch.sqrt(beta)

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        # The DDPM chain: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z with beta_i = beta(t) dt.
        beta_step = self.beta(t) * dt
        drift = (torch.sqrt(1.0 - batch_broadcast(beta_step, x)) - 1.0) * x
        return drift, torch.sqrt(beta_step)

    @property
    def prior_std(self) -> float:
        return 1.0


def build_sde(kind: str, **params: float) -> SDE:
    """Build an SDE from its config name ("ve" or "vp") and parameters."""
    if kind == "ve":
        return VESDE(**params)
    if kind == "vp":
        return VPSDE(**params)
    raise ValueError(f"unknown SDE kind {kind!r}; valid kinds are 've' and 'vp'")
