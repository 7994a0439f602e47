"""Plain convolutional score network without downsampling.

Implements s(x, sigma) for images. Shapes: x (B, C, H, W), sigma (B,) -> (B, C, H, W). It
works on any H, W >= 1 because every convolution is 3x3 with padding 1 and stride 1.
"""

from __future__ import annotations

from torch import Tensor, nn

from qcsbm_bench.networks.embedding import SigmaEmbedding, check_image_inputs

__all__ = ["ConvScoreNet"]


class _ConvLayer(nn.Module):
    """3x3 conv, plus the projected sigma embedding per channel, then GroupNorm and SiLU."""

    def __init__(self, in_channels: int, width: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.embed_proj = nn.Linear(embed_dim, width)
        self.norm = nn.GroupNorm(groups, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv(h) + self.embed_proj(embedding)[:, :, None, None]
        return self.act(self.norm(h))


class ConvScoreNet(nn.Module):
    """Stack of `depth` 3x3 conv layers of `width` channels and a 3x3 output conv.

    Each layer adds a projection of the sigma embedding, then applies GroupNorm and SiLU.
    GroupNorm normalises each sample on its own, so outputs of different samples never
    interact. With `scale_by_sigma` the output is divided by sigma (the NCSN++ convention),
    so it is directly a score estimate.
    """

    def __init__(
        self,
        channels: int = 3,
        width: int = 32,
        depth: int = 4,
        groups: int = 8,
        scale_by_sigma: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}.")
        if width % groups != 0:
            raise ValueError(
                f"width ({width}) must be divisible by groups ({groups}) for GroupNorm."
            )
        self.channels = channels
        self.scale_by_sigma = scale_by_sigma
        embed_dim = 4 * width
        self.embedding = SigmaEmbedding(n_frequencies=width, embed_dim=embed_dim)
        self.layers = nn.ModuleList(
            _ConvLayer(channels if i == 0 else width, width, embed_dim, groups)
            for i in range(depth)
        )
        self.conv_out = nn.Conv2d(width, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        check_image_inputs(x, sigma, self.channels)
        embedding = self.embedding(sigma)
        h = x
        for layer in self.layers:
            h = layer(h, embedding)
        out: Tensor = self.conv_out(h)
        if self.scale_by_sigma:
            out = out / sigma[:, None, None, None]
        return out
