"""Small U-Net score network with residual blocks and skip connections.

Implements s(x, sigma) for images. Shapes: x (B, C, H, W), sigma (B,) -> (B, C, H, W).
There is one resolution level per entry of `channel_mult` and each level after the first
halves H and W, so H and W must be multiples of 2 ** (len(channel_mult) - 1). At the
default channel_mult = (1, 2, 2) that is a multiple of 4, which covers 4x4, 28x28 and
32x32 inputs without padding (4x4 reaches 1x1 at the lowest level).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcsbm_bench.networks.embedding import SigmaEmbedding, check_image_inputs

__all__ = ["SmallUNet"]


class _ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the projected sigma embedding added in between.

    Shapes: h (B, in_channels, H, W), embedding (B, embed_dim) -> (B, out_channels, H, W).
    The shortcut is a 1x1 conv when the channel count changes and the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.embed_proj = nn.Linear(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.act = nn.SiLU()
        self.shortcut: nn.Module
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        out = self.conv1(self.act(self.norm1(h)))
        out = out + self.embed_proj(self.act(embedding))[:, :, None, None]
        out = self.conv2(self.act(self.norm2(out)))
        result: Tensor = self.shortcut(h) + out
        return result


class SmallUNet(nn.Module):
    """U-Net with one residual block per level, a middle block and a skip per level.

    Level i has base_width * channel_mult[i] channels. Downsampling is 2x2 average pooling
    and upsampling is nearest-neighbour interpolation, so both are parameter-free and the
    next residual block does the learned mixing. Every normalisation is GroupNorm, so
    samples never interact. With `scale_by_sigma` the output
    is divided by sigma (the NCSN++ convention), so it is directly a score estimate.
    At the defaults the network has 579,779 parameters for 3 channels.
    """

    def __init__(
        self,
        channels: int = 3,
        base_width: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        groups: int = 8,
        scale_by_sigma: bool = True,
    ) -> None:
        super().__init__()
        if len(channel_mult) == 0:
            raise ValueError("channel_mult must have at least one entry, got an empty sequence.")
        widths = [base_width * m for m in channel_mult]
        for width in [base_width, *widths]:
            if width % groups != 0:
                raise ValueError(
                    f"every level width base_width * m must be divisible by groups ({groups}) "
                    f"for GroupNorm, got width {width} from base_width={base_width}, "
                    f"channel_mult={tuple(channel_mult)}. Change base_width or groups."
                )
        self.channels = channels
        self.scale_by_sigma = scale_by_sigma
        self.size_multiple = 2 ** (len(widths) - 1)
        embed_dim = 4 * base_width
        self.embedding = SigmaEmbedding(n_frequencies=base_width, embed_dim=embed_dim)
        self.conv_in = nn.Conv2d(channels, base_width, kernel_size=3, padding=1)

        self.down_blocks = nn.ModuleList()
        previous = base_width
        for width in widths:
            self.down_blocks.append(_ResidualBlock(previous, width, embed_dim, groups))
            previous = width

        self.middle_block = _ResidualBlock(previous, previous, embed_dim, groups)

        # The up path visits the levels in reverse order, and each block takes the skip
        # tensor that the down block of the same level produced.
        self.up_blocks = nn.ModuleList()
        for width in reversed(widths):
            self.up_blocks.append(_ResidualBlock(previous + width, width, embed_dim, groups))
            previous = width

        self.norm_out = nn.GroupNorm(groups, previous)
        self.conv_out = nn.Conv2d(previous, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        check_image_inputs(x, sigma, self.channels)
        height, width = x.shape[-2:]
        if height % self.size_multiple != 0 or width % self.size_multiple != 0:
            raise ValueError(
                f"SmallUNet needs H and W to be multiples of {self.size_multiple}, got "
                f"{height}x{width}. Pad the images or use fewer entries in channel_mult."
            )
        embedding = self.embedding(sigma)

        n_levels = len(self.down_blocks)
        h = self.conv_in(x)
        skips: list[Tensor] = []
        for level, block in enumerate(self.down_blocks):
            h = block(h, embedding)
            skips.append(h)
            if level < n_levels - 1:
                h = F.avg_pool2d(h, kernel_size=2)

        h = self.middle_block(h, embedding)

        for index, block in enumerate(self.up_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            if index < n_levels - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")

        out: Tensor = self.conv_out(F.silu(self.norm_out(h)))
        if self.scale_by_sigma:
            out = out / sigma[:, None, None, None]
        return out
