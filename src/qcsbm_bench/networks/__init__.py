"""Score networks, all called as net(x, sigma): the toy MLP and image-shaped nets."""

from qcsbm_bench.networks.convnet import ConvScoreNet
from qcsbm_bench.networks.embedding import GaussianFourierFeatures, SigmaEmbedding
from qcsbm_bench.networks.toy import ToyScoreNet
from qcsbm_bench.networks.unet import SmallUNet

__all__ = [
    "ConvScoreNet",
    "GaussianFourierFeatures",
    "SigmaEmbedding",
    "SmallUNet",
    "ToyScoreNet",
]
