"""Noise-level embedding and input checks shared by the image score networks.

The embedding maps a noise std sigma of shape (B,) to a vector of shape (B, embed_dim). It
applies Gaussian Fourier features with scale 16 to log(sigma), the conditioning that the
continuous-time NCSN++ models use, and then a two-layer MLP with SiLU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["GaussianFourierFeatures", "SigmaEmbedding", "check_image_inputs"]


class GaussianFourierFeatures(nn.Module):
    """Fourier features [sin(2 pi u w), cos(2 pi u w)] of a scalar u per sample.

    Shapes: u (B,) -> (B, 2 * n_frequencies). The frequencies w are drawn once from
    N(0, scale^2) with the global torch generator and stay fixed. They are a persistent
    buffer, so they are saved in the state dict and follow `.to(device, dtype)`.
    """

    frequencies: Tensor

    def __init__(self, n_frequencies: int, scale: float = 16.0) -> None:
        super().__init__()
        if n_frequencies < 1:
            raise ValueError(f"n_frequencies must be at least 1, got {n_frequencies}.")
        self.register_buffer("frequencies", torch.randn(n_frequencies) * scale)

    def forward(self, u: Tensor) -> Tensor:
        angles = 2.0 * math.pi * u[:, None] * self.frequencies[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class SigmaEmbedding(nn.Module):
    """Embedding of the noise std: Fourier features of log(sigma), then Linear-SiLU-Linear.

    Shapes: sigma (B,) -> (B, embed_dim). sigma must be positive because the features take
    its logarithm. The values are not checked, so that the module stays usable inside
    torch.func transforms, and a sigma <= 0 gives NaN or infinite outputs.
    """

    def __init__(self, n_frequencies: int, embed_dim: int, scale: float = 16.0) -> None:
        super().__init__()
        self.fourier = GaussianFourierFeatures(n_frequencies, scale)
        self.mlp = nn.Sequential(
            nn.Linear(2 * n_frequencies, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )

    def forward(self, sigma: Tensor) -> Tensor:
        return self.mlp(self.fourier(torch.log(sigma)))


def check_image_inputs(x: Tensor, sigma: Tensor, channels: int) -> None:
    """Raise ValueError unless x has shape (B, channels, H, W) and sigma has shape (B,)."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"x must have shape (B, {channels}, H, W), got {tuple(x.shape)}. "
            "Add a batch dimension or construct the network with matching `channels`."
        )
    if sigma.shape != (x.shape[0],):
        raise ValueError(
            f"sigma must have shape (B,) = ({x.shape[0]},) to match x, got {tuple(sigma.shape)}."
        )
