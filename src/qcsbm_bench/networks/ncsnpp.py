"""NCSN++ score network (Song et al., ICLR 2021), continuous-time VE "deep" variant.

net(x, sigma) ~ grad_x log p_sigma(x) for images x in [0, 1]. Shapes: x (B, C, R, R), sigma
(B,) -> (B, C, R, R), with R the resolution that the network was built for. The network
rescales x to 2x - 1 and embeds log(sigma) with Gaussian Fourier features and a two-layer
MLP. A U-Net of BigGAN residual blocks with FIR resampling, self-attention and a
progressive-input path follows, and the output is divided by sigma per sample.

Parameter counts, from `count_parameters(build_ncsnpp({"preset": ...}, 3, 32))`:
- "paper": 107,586,947, which rounds to the 108M usually given for NCSN++ cont. (deep,
  VE). The reference implementation (yang-song/score_sde_pytorch) stores the 128 fixed
  Fourier frequencies as a parameter without gradient, so summing all of its parameters
  gives 128 more, 107,587,075. Here they are a buffer.
- "small": 988,195. "tiny": 46,515.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcsbm_bench.networks.embedding import SigmaEmbedding, check_image_inputs
from qcsbm_bench.networks.ncsnpp_layers import (
    NEAR_ZERO_SCALE,
    BigGANResBlock,
    PyramidDownsample,
    Resample,
    SelfAttention,
    add_skip,
    group_norm,
    variance_scaling_,
)

__all__ = [
    "NCSNPP_PRESETS",
    "OVERRIDE_KEYS",
    "NCSNpp",
    "NCSNppConfig",
    "build_ncsnpp",
    "count_parameters",
]

logger = logging.getLogger(__name__)

RESBLOCKS = ("biggan",)
PROGRESSIVE_INPUTS = ("residual", "none")
MIN_RESOLUTION = 2


@dataclass(frozen=True)
class NCSNppConfig:
    """Architecture settings of NCSN++. The defaults are the "paper" preset.

    nf: channels at the first level. ch_mult: channel multiplier per level, where each
    level after the first halves the resolution. num_res_blocks: residual blocks per level
    in the down path (the up path has one more). attn_resolutions: resolutions (pixels per
    side) whose levels get self-attention; the middle block has attention in any case.
    dropout: in the residual branches. fourier_scale: std of the Fourier frequencies of
    log(sigma). fir_kernel: 1-D FIR taps of the resampling filter. skip_rescale: divide
    each skip + residual sum by sqrt(2). resblock: "biggan" only. progressive_input:
    "residual" adds a downsampled copy of the input at each level, "none" omits it.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 8
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    fourier_scale: float = 16.0
    fir_kernel: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)
    skip_rescale: bool = True
    resblock: str = "biggan"
    progressive_input: str = "residual"

    def __post_init__(self) -> None:
        if self.nf < 1:
            raise ValueError(f"nf must be a positive integer, got {self.nf}.")
        if len(self.ch_mult) == 0 or min(self.ch_mult) < 1:
            raise ValueError(
                f"ch_mult must be a non-empty list of positive integers, got {self.ch_mult}."
            )
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be at least 1, got {self.num_res_blocks}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.fourier_scale <= 0:
            raise ValueError(f"fourier_scale must be positive, got {self.fourier_scale}.")
        if self.resblock not in RESBLOCKS:
            raise ValueError(f"unknown resblock {self.resblock!r}; valid values are {RESBLOCKS}")
        if self.progressive_input not in PROGRESSIVE_INPUTS:
            raise ValueError(
                f"unknown progressive_input {self.progressive_input!r}; valid values are "
                f"{PROGRESSIVE_INPUTS}"
            )


NCSNPP_PRESETS: dict[str, dict[str, Any]] = {
    # Song et al. (2021), NCSN++ cont. (deep, VE), the network of Chao et al. (2023).
    "paper": asdict(NCSNppConfig()),
    # A CPU-sized net: attention only in the middle block, at the lowest resolution.
    "small": {
        **asdict(NCSNppConfig()),
        "nf": 32,
        "ch_mult": (1, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (),
        "dropout": 0.0,
    },
    # The smallest net with every kind of block, for unit tests.
    "tiny": {
        **asdict(NCSNppConfig()),
        "nf": 8,
        "ch_mult": (1, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (),
        "dropout": 0.0,
    },
}

OVERRIDE_KEYS = tuple(NCSNppConfig.__dataclass_fields__)
_SELECTOR_KEYS = ("arch", "preset")


class _DownLevel(nn.Module):
    """One resolution of the down path: residual blocks (each optionally followed by
    attention), then, except at the lowest level, a downsampling block and the
    progressive-input step."""

    def __init__(self, blocks: list[nn.Module], attentions: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)
        self.downsample: BigGANResBlock | None = None
        self.pyramid: PyramidDownsample | None = None


class _UpLevel(nn.Module):
    """One resolution of the up path: num_res_blocks + 1 residual blocks that each take a
    skip tensor, optional attention, then, except at the top level, an upsampling block."""

    def __init__(self, blocks: list[nn.Module], attention: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention
        self.upsample: BigGANResBlock | None = None


class NCSNpp(nn.Module):
    """NCSN++ U-Net for (channels, resolution, resolution) images, see the module docstring.

    With `scale_by_sigma` (the default) the output is divided by sigma, so it is directly a
    score estimate. With False the network returns the raw output before that division.
    Initialisation: DDPM variance scaling (see `ncsnpp_layers`), with scale 1e-10 on the
    last conv of each residual branch, of each attention block and of the whole network,
    as in the published NCSN++. The output then starts near 0, so the DSM loss starts at
    the value of a zero score, D / 2 per sample with the half-sum convention.
    """

    def __init__(
        self,
        channels: int,
        resolution: int,
        config: NCSNppConfig | None = None,
        scale_by_sigma: bool = True,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels}.")
        config = config or NCSNppConfig()
        self.config = config
        self.channels = channels
        self.resolution = resolution
        self.scale_by_sigma = scale_by_sigma
        level_resolutions = _level_resolutions(resolution, config.ch_mult)
        _check_attention_resolutions(config.attn_resolutions, level_resolutions)

        nf = config.nf
        self.embed_dim = 4 * nf
        widths = [nf * mult for mult in config.ch_mult]
        self.embedding = SigmaEmbedding(nf, self.embed_dim, scale=config.fourier_scale)
        for layer in self.embedding.mlp:
            if isinstance(layer, nn.Linear):
                variance_scaling_(layer)
        self.conv_in = nn.Conv2d(channels, nf, kernel_size=3, padding=1)
        variance_scaling_(self.conv_in)

        skip_widths = self._build_down_path(level_resolutions, widths)
        self.mid_block_in = self._resblock(widths[-1], widths[-1])
        self.mid_attention = SelfAttention(widths[-1], config.skip_rescale)
        self.mid_block_out = self._resblock(widths[-1], widths[-1])
        current = self._build_up_path(level_resolutions, widths, skip_widths)

        self.norm_out = group_norm(current)
        self.conv_out = nn.Conv2d(current, channels, kernel_size=3, padding=1)
        # NOTE: the conservative image score -grad ||net||^2 / (2 sigma) is quadratic in this
        # conv, so it starts near 0 with small gradients. In 300-step Adam runs (tiny preset,
        # 16x16, lr 2e-4, clip 1) a CSBM stayed at the zero-score loss D / 2 or above for
        # output init scales 1e-10, 1e-4, 1e-2 and 1. Scale 1 started near 1e9, so no scale
        # tried gave it a faster start. 100 steps from a trained USBM ended on the same plateau. On
        # digits (small preset, batch 16) the loss left D / 2 = 32 only after about 1500
        # steps and was 20-23 at 3000, with NLL 13.3 bits/dim, where the USBM had 7.25 after
        # 300 steps. Whether it catches up at paper scale was not measured.
        variance_scaling_(self.conv_out, NEAR_ZERO_SCALE)

    def _resblock(
        self, in_channels: int, out_channels: int, resample: Resample = "none"
    ) -> nn.Module:
        return BigGANResBlock(
            in_channels,
            out_channels,
            self.embed_dim,
            resample=resample,
            dropout=self.config.dropout,
            skip_rescale=self.config.skip_rescale,
            fir_taps=self.config.fir_kernel,
        )

    def _attention(self, level_resolution: int, width: int) -> nn.Module:
        if level_resolution in self.config.attn_resolutions:
            return SelfAttention(width, self.config.skip_rescale)
        return nn.Identity()

    def _build_down_path(self, level_resolutions: list[int], widths: list[int]) -> list[int]:
        """Create self.down_levels and return the channel count of every skip tensor that
        the down path pushes, in push order (the up path pops them in reverse)."""
        config = self.config
        skip_widths = [config.nf]
        pyramid_width = self.channels
        self.down_levels = nn.ModuleList()
        for index, (level_resolution, width) in enumerate(
            zip(level_resolutions, widths, strict=True)
        ):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(self._resblock(skip_widths[-1], width))
                skip_widths.append(width)
            attentions = [self._attention(level_resolution, width) for _ in blocks]
            level = _DownLevel(blocks, attentions)

            if index < len(widths) - 1:
                level.downsample = self._resblock(width, width, resample="down")
                if config.progressive_input == "residual":
                    level.pyramid = PyramidDownsample(pyramid_width, width, config.fir_kernel)
                    pyramid_width = width
                skip_widths.append(width)
            self.down_levels.append(level)
        return skip_widths

    def _build_up_path(
        self, level_resolutions: list[int], widths: list[int], skip_widths: list[int]
    ) -> int:
        """Create self.up_levels, from the lowest resolution back to the input resolution,
        consuming skip_widths, and return the channel count of the up path's output."""
        self.up_levels = nn.ModuleList()
        current = widths[-1]
        for index in reversed(range(len(widths))):
            blocks = []
            for _ in range(self.config.num_res_blocks + 1):
                blocks.append(self._resblock(current + skip_widths.pop(), widths[index]))
                current = widths[index]
            level = _UpLevel(blocks, self._attention(level_resolutions[index], current))
            if index > 0:
                level.upsample = self._resblock(current, current, resample="up")
            self.up_levels.append(level)
        if skip_widths:
            raise RuntimeError(f"NCSN++ skip bookkeeping left {len(skip_widths)} skips unused.")
        return current

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        check_image_inputs(x, sigma, self.channels)
        if x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(
                f"this NCSN++ was built for {self.resolution}x{self.resolution} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}. Build it with the data's resolution."
            )
        embedding = self.embedding(sigma)
        centred = 2.0 * x - 1.0
        skips = self._down(centred, embedding)

        h = self.mid_block_in(skips[-1], embedding)
        h = self.mid_block_out(self.mid_attention(h), embedding)

        for level in self.up_levels:
            for block in level.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            h = level.attention(h)
            if level.upsample is not None:
                h = level.upsample(h, embedding)

        out: Tensor = self.conv_out(F.silu(self.norm_out(h)))
        if self.scale_by_sigma:
            out = out / sigma[:, None, None, None]
        return out

    def _down(self, centred: Tensor, embedding: Tensor) -> list[Tensor]:
        """Run the down path and return every skip tensor, the last one at the lowest level.

        With progressive input "residual", each downsampling step also downsamples the
        running input pyramid (first the centred image, then the previous combined
        features) and combines it with the block's output by add_skip.
        """
        pyramid = centred
        skips = [self.conv_in(centred)]
        for level in self.down_levels:
            for block, attention in zip(level.blocks, level.attentions, strict=True):
                skips.append(attention(block(skips[-1], embedding)))
            if level.downsample is None:
                continue
            h = level.downsample(skips[-1], embedding)
            if level.pyramid is not None:
                h = add_skip(level.pyramid(pyramid), h, self.config.skip_rescale)
                pyramid = h
            skips.append(h)
        return skips


def _level_resolutions(resolution: int, ch_mult: Sequence[int]) -> list[int]:
    """Return the resolution of each level, halving per level, or raise ValueError if a level
    would be smaller than MIN_RESOLUTION or the halving would not divide evenly."""
    levels = len(ch_mult)
    lowest, remainder = divmod(resolution, 2 ** (levels - 1))
    if resolution < 1 or remainder != 0 or lowest < MIN_RESOLUTION:
        raise ValueError(
            f"NCSN++ with ch_mult={tuple(ch_mult)} has {levels} levels, each at half the "
            f"resolution of the one above. Every level needs at least {MIN_RESOLUTION}x"
            f"{MIN_RESOLUTION} pixels, so the resolution must be a multiple of "
            f"{2 ** (levels - 1)} and at least {MIN_RESOLUTION * 2 ** (levels - 1)}, got "
            f"resolution {resolution}. Use "
            "fewer ch_mult entries or larger images."
        )
    return [resolution // 2**level for level in range(levels)]


def _check_attention_resolutions(requested: Sequence[int], present: Sequence[int]) -> None:
    """Raise ValueError if an attention resolution is not a level of the network.

    A resolution that never occurs would silently build a net without that attention, so
    it is an error, not a warning. The middle block has attention at any setting.
    """
    missing = [value for value in requested if value not in present]
    if missing:
        raise ValueError(
            f"attn_resolutions {tuple(requested)} contains {missing}, which is not a level "
            f"of this network (levels: {tuple(present)}). Use resolutions from that list, "
            "or an empty list for attention in the middle block only."
        )


def count_parameters(net: nn.Module) -> int:
    """Return the number of trainable parameter entries (buffers such as the Fourier
    frequencies excluded)."""
    return sum(parameter.numel() for parameter in net.parameters() if parameter.requires_grad)


def build_ncsnpp(model_config: Mapping[str, Any], channels: int, resolution: int) -> NCSNpp:
    """Build NCSN++ from NCSNPP_PRESETS[model_config["preset"]] ("paper" when absent) with
    the overrides in model_config. Override keys are OVERRIDE_KEYS, and "arch" and "preset"
    are skipped.

    Raises ValueError for an unknown preset, an unknown key, or settings that do not fit
    (channels, resolution).
    """
    preset = model_config.get("preset", "paper")
    if preset not in NCSNPP_PRESETS:
        raise ValueError(
            f"unknown NCSN++ preset {preset!r}; valid presets are {tuple(NCSNPP_PRESETS)}"
        )
    unknown = sorted(key for key in model_config if key not in (*OVERRIDE_KEYS, *_SELECTOR_KEYS))
    if unknown:
        raise ValueError(
            f"unknown NCSN++ setting(s) {unknown}; valid keys are "
            f"{(*_SELECTOR_KEYS, *OVERRIDE_KEYS)}"
        )
    settings = dict(NCSNPP_PRESETS[preset])
    settings.update({key: model_config[key] for key in OVERRIDE_KEYS if key in model_config})
    for key in ("ch_mult", "attn_resolutions", "fir_kernel"):
        settings[key] = tuple(settings[key])

    net = NCSNpp(channels, resolution, NCSNppConfig(**settings))
    logger.info(
        "built NCSN++ preset %r for %dx%dx%d images, %d parameters, settings %s",
        preset,
        channels,
        resolution,
        resolution,
        count_parameters(net),
        settings,
    )
    return net
