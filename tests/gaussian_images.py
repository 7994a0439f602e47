"""An exact image score for tests: Gaussian data perturbed by a VE SDE."""

from __future__ import annotations

from torch import Tensor

from qcsbm_bench.sde import VESDE


class GaussianImageScore:
    """The exact score of N(mean, data_std^2 I) on images (B, C, H, W), perturbed by the VE SDE.

    At time t the perturbed data is N(mean, (data_std^2 + sigma_t^2) I), so the score is
    -(x - mean) / (data_std^2 + sigma_t^2).
    """

    def __init__(self, sde: VESDE, mean: Tensor, data_std: float) -> None:
        self.sde = sde
        self.mean = mean
        self.data_std = data_std

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        variance = self.data_std**2 + self.sde.marginal_std(t) ** 2
        return -(x - self.mean) / variance[:, None, None, None]
