"""Building blocks of NCSN++ (Song et al., ICLR 2021): FIR resampling, BigGAN residual blocks,
self-attention and the progressive-input path.

Every operation here is plain conv2d, padding, reshapes, GroupNorm, softmax and SiLU, so all
of it supports double backward (create_graph=True), which the conservative score and the
quasi-conservative regulariser need. GroupNorm normalises each sample on its own, so no
sample's output depends on another sample's input.

Initialisation (chosen for this package, stated once here): every conv and linear weight
gets the variance-scaling init of DDPM (Ho et al., 2020), uniform with variance
scale / fan_avg, where fan_avg = (fan_in + fan_out) / 2, and every bias starts at zero. The
last conv of each residual branch and the output projection of each attention block use
scale 1e-10 (NEAR_ZERO_SCALE), so each block starts close to its skip path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NEAR_ZERO_SCALE",
    "RESAMPLE_MODES",
    "BigGANResBlock",
    "FIRDownsample",
    "FIRUpsample",
    "PyramidDownsample",
    "Resample",
    "SelfAttention",
    "add_skip",
    "fir_downsample",
    "fir_kernel_2d",
    "fir_upsample",
    "group_norm",
    "variance_scaling_",
]

NEAR_ZERO_SCALE = 1e-10
RESAMPLE_MODES = ("none", "up", "down")
Resample = Literal["none", "up", "down"]

# Up- and downsampling factor of every resampling step in NCSN++.
_FACTOR = 2


def variance_scaling_(layer: nn.Conv2d | nn.Linear, scale: float = 1.0) -> None:
    """Initialise a layer in place: weight ~ U(-a, a) with a^2 = 3 scale / fan_avg, bias 0.

    fan_avg = (fan_in + fan_out) / 2 with fan_in = in_features * kernel area and fan_out =
    out_features * kernel area, so Var(weight) = scale / fan_avg (the DDPM "fan_avg,
    uniform" variance-scaling init).
    """
    weight = layer.weight
    receptive_field = weight[0, 0].numel()
    fan_in = weight.shape[1] * receptive_field
    fan_out = weight.shape[0] * receptive_field
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if layer.bias is not None:
            layer.bias.zero_()


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(channels // 4, 32) groups, the NCSN++ rule."""
    groups = min(channels // 4, 32)
    if groups < 1 or channels % groups != 0:
        raise ValueError(
            f"GroupNorm with min(channels // 4, 32) groups needs channels >= 4 and divisible "
            f"by the group count, got channels={channels}. Use nf and ch_mult whose products "
            "are multiples of 4, and of 32 from 128 channels upwards."
        )
    return nn.GroupNorm(groups, channels, eps=1e-6)


def add_skip(skip: Tensor, branch: Tensor, rescale: bool) -> Tensor:
    """Return skip + branch, divided by sqrt(2) when `rescale` (NCSN++ skip_rescale)."""
    total = skip + branch
    return total / math.sqrt(2.0) if rescale else total


# FIR resampling (the upfirdn2d convention of StyleGAN2, used by NCSN++)


def fir_kernel_2d(taps: Sequence[float]) -> Tensor:
    """Build the separable FIR kernel outer(k, k) / sum(k)^2, shape (K, K), entries sum to 1.

    The taps must number at least 2 (the resampling factor) and have a non-zero sum. The
    result has the default dtype, and under a `torch.device(...)` context that device.
    """
    values = [float(tap) for tap in taps]
    if len(values) < _FACTOR:
        raise ValueError(
            f"fir_kernel needs at least {_FACTOR} taps for factor-{_FACTOR} resampling, got "
            f"{values}. Use e.g. [1, 3, 3, 1]."
        )
    total = sum(values)
    if not all(math.isfinite(value) for value in values) or total == 0.0:
        raise ValueError(f"fir_kernel taps must be finite with a non-zero sum, got {values}.")
    kernel_1d = torch.tensor(values) / total
    return torch.outer(kernel_1d, kernel_1d)


def _depthwise(kernel: Tensor, channels: int, like: Tensor) -> Tensor:
    """Return the flipped kernel as a depthwise conv2d weight (channels, 1, K, K).

    conv2d computes a correlation, so flipping the kernel makes it the convolution that
    upfirdn2d defines. The kernels used here are symmetric, where the flip changes nothing.
    """
    size = kernel.shape[-1]
    flipped = kernel.flip(0, 1).to(dtype=like.dtype, device=like.device)
    return flipped.expand(channels, 1, size, size)


def fir_downsample(x: Tensor, kernel: Tensor) -> Tensor:
    """Blur with a normalised FIR kernel, then keep every second pixel.

    y = downsample_2(pad(x) conv k) with zero padding ((p + 1) // 2, p // 2) per axis and
    p = K - 2, the upfirdn2d convention. Shapes: x (B, C, H, W), kernel (K, K) ->
    (B, C, H / 2, W / 2); H and W must be even. A constant image stays that constant away
    from the border, and the zero padding lowers the border pixels (by 1/8 per side for
    [1, 3, 3, 1]).
    """
    return _fir_filter(x, kernel, extra_pad=0, stride=_FACTOR)


def _fir_filter(x: Tensor, kernel: Tensor, extra_pad: int, stride: int) -> Tensor:
    """Zero-pad by ((p + 1) // 2, p // 2) per axis, p = K - 2 + extra_pad, then filter."""
    pad = kernel.shape[-1] - _FACTOR + extra_pad
    before, after = (pad + 1) // 2, pad // 2
    padded = F.pad(x, (before, after, before, after))
    weight = _depthwise(kernel, x.shape[1], x)
    return F.conv2d(padded, weight, stride=stride, groups=x.shape[1])


def fir_upsample(x: Tensor, kernel: Tensor) -> Tensor:
    """Insert zeros between pixels, then filter with the FIR kernel times 4 (= factor^2).

    y = pad(upsample_2(x)) conv (4 k), zero padding ((p + 1) // 2 + 1, p // 2) per axis and
    p = K - 2, the upfirdn2d convention. The factor 4 keeps the mean brightness, because
    only one pixel in four is non-zero after zero insertion. Shapes: x (B, C, H, W), kernel
    (K, K) -> (B, C, 2H, 2W). For [1, 3, 3, 1] an interior output pixel is 3/4 of its source
    pixel plus 1/4 of the next one away from it, per axis.
    """
    batch, channels, height, width = x.shape
    # (B, C, H, 1, W, 1) padded to (B, C, H, 2, W, 2) puts each pixel at an even position.
    spread = F.pad(x.reshape(batch, channels, height, 1, width, 1), (0, 1, 0, 0, 0, 1))
    upsampled = spread.reshape(batch, channels, height * _FACTOR, width * _FACTOR)

    pad = kernel.shape[-1] - _FACTOR
    before, after = (pad + 1) // 2 + _FACTOR - 1, pad // 2
    padded = F.pad(upsampled, (before, after, before, after))
    weight = _depthwise(kernel * _FACTOR**2, channels, x)
    return F.conv2d(padded, weight, groups=channels)


class _FIRResample(nn.Module):
    """Base of the FIR resampling layers, with the 2-D kernel as a buffer that follows
    `.to(device, dtype)`.

    The buffer is not persistent: it is rebuilt from the taps, so state dicts keep only
    learned weights.
    """

    kernel: Tensor

    def __init__(self, taps: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel_2d(taps), persistent=False)


class FIRDownsample(_FIRResample):
    """Parameter-free FIR downsampling by 2, see `fir_downsample`."""

    def forward(self, x: Tensor) -> Tensor:
        return fir_downsample(x, self.kernel)


class FIRUpsample(_FIRResample):
    """Parameter-free FIR upsampling by 2, see `fir_upsample`."""

    def forward(self, x: Tensor) -> Tensor:
        return fir_upsample(x, self.kernel)


# Blocks


class BigGANResBlock(nn.Module):
    """BigGAN-style residual block with optional FIR up- or downsampling inside it.

    Branch: GroupNorm, SiLU, [resample], 3x3 conv, + Linear(SiLU(embedding)) per channel,
    GroupNorm, SiLU, dropout, 3x3 conv (near-zero init). Skip: [resample], then a 1x1 conv
    when the channel count changes or the block resamples, else the identity. Output is
    add_skip(skip, branch, skip_rescale). Shapes: h (B, in_channels, H, W), embedding
    (B, embed_dim) -> (B, out_channels, H', W') with H' = 2H ("up"), H / 2 ("down") or H.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        resample: Resample = "none",
        dropout: float = 0.0,
        skip_rescale: bool = True,
        fir_taps: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if resample not in RESAMPLE_MODES:
            raise ValueError(
                f"unknown resample mode {resample!r}; valid values are {RESAMPLE_MODES}"
            )
        self.skip_rescale = skip_rescale
        self.resample: nn.Module
        if resample == "up":
            self.resample = FIRUpsample(fir_taps)
        elif resample == "down":
            self.resample = FIRDownsample(fir_taps)
        else:
            self.resample = nn.Identity()

        self.norm_in = group_norm(in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.embed_proj = nn.Linear(embed_dim, out_channels)
        self.norm_out = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or resample != "none":
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)
            variance_scaling_(self.shortcut)

        variance_scaling_(self.conv_in)
        variance_scaling_(self.embed_proj)
        variance_scaling_(self.conv_out, NEAR_ZERO_SCALE)

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        branch = self.resample(F.silu(self.norm_in(h)))
        branch = self.conv_in(branch)
        branch = branch + self.embed_proj(F.silu(embedding))[:, :, None, None]
        branch = self.conv_out(self.dropout(F.silu(self.norm_out(branch))))
        skip = self.shortcut(self.resample(h))
        return add_skip(skip, branch, self.skip_rescale)


class SelfAttention(nn.Module):
    """Single-head self-attention over the H * W positions, with a residual connection.

    out = proj(softmax(q^T k / sqrt(C)) v) with q, k, v 1x1 convs of GroupNorm(h), and the
    result is add_skip(h, out, skip_rescale). Shapes: (B, C, H, W) -> (B, C, H, W). Written
    with einsum and softmax rather than a fused attention kernel, so it has a double
    backward on every backend.
    """

    def __init__(self, channels: int, skip_rescale: bool = True) -> None:
        super().__init__()
        self.skip_rescale = skip_rescale
        self.norm = group_norm(channels)
        self.query = nn.Conv2d(channels, channels, kernel_size=1)
        self.key = nn.Conv2d(channels, channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)
        for layer in (self.query, self.key, self.value):
            variance_scaling_(layer)
        variance_scaling_(self.proj, NEAR_ZERO_SCALE)

    def forward(self, h: Tensor) -> Tensor:
        batch, channels, height, width = h.shape
        normed = self.norm(h)
        query = self.query(normed).reshape(batch, channels, height * width)
        key = self.key(normed).reshape(batch, channels, height * width)
        value = self.value(normed).reshape(batch, channels, height * width)

        logits = torch.einsum("bci,bcj->bij", query, key) / math.sqrt(channels)
        weights = torch.softmax(logits, dim=-1)
        attended = torch.einsum("bij,bcj->bci", weights, value)
        out = self.proj(attended.reshape(batch, channels, height, width))
        return add_skip(h, out, self.skip_rescale)


class PyramidDownsample(nn.Module):
    """Step of the progressive-input path: FIR blur fused with a 3x3 stride-2 conv.

    The input is zero-padded by ((K + 1) // 2, K // 2) per axis and filtered with the FIR
    kernel at full resolution, then a 3x3 conv with stride 2 and no padding halves H and W.
    This is the FIR "downsample with conv" of StyleGAN2, which NCSN++ uses for its
    progressive input. Shapes: (B, in_channels, H, W) -> (B, out_channels, H / 2,
    W / 2), H and W even.
    """

    kernel: Tensor

    def __init__(
        self, in_channels: int, out_channels: int, fir_taps: Sequence[float] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel_2d(fir_taps), persistent=False)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=_FACTOR)
        variance_scaling_(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        # The 3x3 conv without padding needs 2 more pixels per axis than a 1x1 one would.
        blurred = _fir_filter(x, self.kernel, extra_pad=2, stride=1)
        out: Tensor = self.conv(blurred)
        return out
