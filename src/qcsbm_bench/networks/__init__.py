"""Score networks for image-shaped data, all called as net(x, sigma)."""

from qcsbm_bench.networks.convnet import ConvScoreNet
from qcsbm_bench.networks.embedding import GaussianFourierFeatures, SigmaEmbedding
from qcsbm_bench.networks.unet import SmallUNet

__all__ = ["ConvScoreNet", "GaussianFourierFeatures", "SigmaEmbedding", "SmallUNet"]
