"""Score networks, all called as net(x, sigma): the toy MLP and image-shaped nets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from qcsbm_bench.networks.convnet import ConvScoreNet
from qcsbm_bench.networks.embedding import GaussianFourierFeatures, SigmaEmbedding
from qcsbm_bench.networks.toy import ToyScoreNet
from qcsbm_bench.networks.unet import SmallUNet

IMAGE_ARCHITECTURES = ("ncsnpp", "unet")


def build_image_net(model_config: Mapping[str, Any], channels: int, resolution: int) -> nn.Module:
    """Build the image network named by model_config["arch"] for (channels, resolution) images.

    "ncsnpp": NCSN++ from a size preset (model_config["preset"]) with optional overrides of
    single settings. "unet": the small U-Net used by the estimator benchmarks.
    """
    arch = model_config.get("arch", "ncsnpp")
    if arch == "ncsnpp":
        from qcsbm_bench.networks.ncsnpp import build_ncsnpp

        return build_ncsnpp(model_config, channels=channels, resolution=resolution)
    if arch == "unet":
        return SmallUNet(channels=channels)
    raise ValueError(f"unknown image architecture {arch!r}; valid values are {IMAGE_ARCHITECTURES}")


__all__ = [
    "IMAGE_ARCHITECTURES",
    "ConvScoreNet",
    "GaussianFourierFeatures",
    "SigmaEmbedding",
    "SmallUNet",
    "ToyScoreNet",
    "build_image_net",
]
