"""The toy 2-D score network of Chao et al. (ICML 2023): an MLP f(x, sigma) -> R^D.

Swish activations with a learnable beta, u * sigmoid(beta u), and a sigma branch (a tiny
MLP of log sigma) added to the input branch's features. Hidden widths 64-128-256 by
default, mirrored on the way out. Input (B, D), sigma (B,), output (B, D).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Swish(nn.Module):
    """u * sigmoid(beta u) with one learnable scalar beta (initialised to 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.ones(()))

    def forward(self, u: Tensor) -> Tensor:
        return u * torch.sigmoid(self.beta * u)


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers through `widths` with a Swish between them (none after the last)."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), Swish()]
    return nn.Sequential(*layers[:-1])


class ToyScoreNet(nn.Module):
    """f(x, sigma) = decoder(swish(encoder(x) + sigma_branch(log sigma)))."""

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (64, 128, 256)) -> None:
        super().__init__()
        if dim < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"invalid toy network shape: dim={dim}, hidden={list(hidden)}")
        hidden = list(hidden)
        self.encoder = _mlp([dim, *hidden])
        self.sigma_branch = _mlp([1, hidden[0], hidden[-1]])
        self.activation = Swish()
        self.decoder = _mlp([*reversed(hidden), dim])

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        log_sigma = torch.log(sigma).to(x.dtype).reshape(-1, 1)
        features = self.encoder(x) + self.sigma_branch(log_sigma)
        return self.decoder(self.activation(features))
