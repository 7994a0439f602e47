"""Inception-v3 pool features (for FID) and logits (for IS) of uint8 images, as clean-fid computes.

The network is the TorchScript file inception-2015-12-05.pt that clean-fid 0.1.35 uses, a
PyTorch translation by NVIDIA of TensorFlow's 2015-12-05 Inception graph. Its weights are read
from a configured local file and are never downloaded.

Interface of the TorchScript module assumed here, read from clean-fid 0.1.35
(cleanfid/inception_torchscript.py) and from the Inception Score code of StyleGAN2-ADA.
NOTE: The tests run it on a stand-in module with this interface, never on the real file.

- ``base.layers(x)`` maps images normalised by (x - 128) / 128, shape (N, 3, 299, 299), to pool
  features that reshape to (N, 2048). clean-fid's "clean" mode calls it this way.
- ``base(x, return_features=True)`` takes values in [0, 255] of any height and width, resizes
  them to 299 x 299 by bilinear interpolation inside the network, normalises them the same way
  and returns the (N, 2048) pool features. clean-fid's "legacy_tensorflow" mode calls this.
- ``base.output`` is the 2048 -> 1008 linear classifier, and ``base(x)`` returns the softmax of
  its output. The logits returned here are features @ output.weight^T without the bias, because
  the original TensorFlow Inception Score multiplies pool_3 by the weight of the
  softmax/logits/MatMul op alone. StyleGAN2-ADA passes no_output_bias=True for the same reason.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cleanfid.resize import build_resizer
from tqdm import tqdm

from qcsbm_bench.artifacts import file_sha256
from qcsbm_bench.grids import pixel_tensor

logger = logging.getLogger(__name__)

INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
    "inception-2015-12-05.pt"
)
INCEPTION_FILENAME = "inception-2015-12-05.pt"
WEIGHTS_CONFIG_KEY = "evaluate.fid.inception_weights"
SHA256_CONFIG_KEY = "evaluate.fid.sha256"
# TODO: Neither clean-fid 0.1.35 nor torch-fidelity publishes a SHA-256 digest of
# inception-2015-12-05.pt, so no checksum is checked by default. Set the digest of a trusted
# copy (sha256sum inception-2015-12-05.pt) in the config.
INCEPTION_SHA256: str | None = None

FID_MODES = ("clean", "legacy_tensorflow")
FEATURE_DIM = 2048
DEFAULT_BATCH_SIZE = 128


@dataclass(frozen=True)
class InceptionOutputs:
    """Inception outputs of N images and the clean-fid mode that produced them.

    features: pool_3 features, shape (N, 2048), float64.
    logits: unbiased class logits, shape (N, n_classes) with n_classes = 1008 for the real
        file, float64. Softmax over all columns gives the class probabilities of the IS.
    mode: "clean" or "legacy_tensorflow". Statistics of different modes are not comparable.
    """

    features: np.ndarray
    logits: np.ndarray
    mode: str


def _resolve_weights_file(weights_path: Path) -> Path:
    path = Path(weights_path)
    if path.is_dir():
        path = path / INCEPTION_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights not found at {path} (config key {WEIGHTS_CONFIG_KEY}). This "
            f"project never downloads them. On a machine with network access, download "
            f"{INCEPTION_URL}, copy the file to {path}, or set {WEIGHTS_CONFIG_KEY} to where "
            "the file is."
        )
    return path


def load_inception(
    weights_path: Path,
    sha256: str | None = INCEPTION_SHA256,
    device: str | torch.device = "cpu",
    mode: str = "clean",
) -> InceptionExtractor:
    """Load clean-fid's Inception TorchScript file from a local path, checking its digest.

    Args:
        weights_path: the file inception-2015-12-05.pt, or a folder that contains it.
        sha256: expected hex SHA-256 digest of the file, or None to skip the check.
        device: device the network runs on.
        mode: clean-fid mode, "clean" (PIL bicubic resize to 299 x 299 outside the network)
            or "legacy_tensorflow" (bilinear resize inside the network).

    Raises:
        FileNotFoundError: if the file is missing. The message names the path, the download URL
            and the config key.
        ValueError: if the digest differs from sha256, the mode is unknown or the file is not
            the expected TorchScript module.
    """
    if mode not in FID_MODES:
        raise ValueError(f"unknown FID mode {mode!r}; use one of {FID_MODES}.")
    path = _resolve_weights_file(weights_path)

    if sha256 is not None:
        found = file_sha256(path)
        if found.lower() != sha256.strip().lower():
            raise ValueError(
                f"SHA-256 of the Inception weights {path} is {found}, expected {sha256}. The "
                f"file is corrupt or a different network. Download {INCEPTION_URL} again, or "
                f"correct the digest set with {SHA256_CONFIG_KEY}."
            )
    else:
        logger.warning("No SHA-256 digest configured for %s, so the file is not checked.", path)

    try:
        # clean-fid's network is published only as TorchScript, which torch 2.14 deprecates.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
            base = torch.jit.load(str(path), map_location=torch.device(device))
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable TorchScript file ({error}). Download {INCEPTION_URL} again."
        ) from error

    for attribute in ("layers", "output"):
        if not hasattr(base, attribute):
            raise ValueError(
                f"{path} has no submodule {attribute!r}, so it is not clean-fid's Inception "
                f"TorchScript network. Use the file from {INCEPTION_URL}."
            )
    logger.info("Loaded Inception network from %s for FID mode %s on %s.", path, mode, device)
    return InceptionExtractor(base.eval(), mode=mode, device=torch.device(device))


def _as_uint8_images(images: np.ndarray | torch.Tensor) -> np.ndarray:
    # Returns (N, 3, H, W) uint8, repeating a grey channel three times as PIL's convert("RGB")
    # does for the image files that clean-fid reads.
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 in [0, 255], got dtype {array.dtype}. Convert samples in "
            "[0, 1] with (x * 255).round().clip(0, 255) cast to uint8."
        )
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3, got {array.shape}.")
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    return array


class InceptionExtractor:
    """Batched Inception pool features and logits of uint8 images in one clean-fid mode."""

    def __init__(self, base: torch.jit.ScriptModule, mode: str, device: torch.device) -> None:
        if mode not in FID_MODES:
            raise ValueError(f"unknown FID mode {mode!r}; use one of {FID_MODES}.")
        self.base = base
        self.mode = mode
        self.device = device
        self.output_weight = base.output.weight.detach()
        self.n_classes = int(self.output_weight.shape[0])
        self._resize: Callable[[np.ndarray], np.ndarray] = build_resizer(mode)

    def _clean_input(self, batch: np.ndarray) -> torch.Tensor:
        # clean-fid's "clean" resizer maps one (H, W, 3) image to float32 (299, 299, 3) in
        # [0, 255] by a PIL bicubic resize of each channel in float, without quantisation.
        resized = [self._resize(image.transpose(1, 2, 0)) for image in batch]
        stacked = np.stack(resized).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32))

    def _batch_features(self, batch: np.ndarray) -> torch.Tensor:
        if self.mode == "clean":
            x = self._clean_input(batch).to(self.device)
            features = self.base.layers((x - 128.0) / 128.0)
        else:
            x = pixel_tensor(batch, torch.float32).to(self.device)
            features = self.base(x, return_features=True)
        return features.reshape(batch.shape[0], FEATURE_DIM)

    @torch.no_grad()
    def __call__(
        self,
        images: np.ndarray | torch.Tensor,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> InceptionOutputs:
        """Compute pool features (N, 2048) and unbiased logits (N, n_classes) of uint8 images.

        Args:
            images: uint8 array or tensor, shape (N, C, H, W) with C = 1 or 3.
            batch_size: images per forward pass. Results agree across batch sizes up to float32
                rounding.
            progress: show a tqdm progress bar over batches.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        array = _as_uint8_images(images)
        count = array.shape[0]
        features = np.empty((count, FEATURE_DIM), dtype=np.float64)
        logits = np.empty((count, self.n_classes), dtype=np.float64)
        starts = range(0, count, batch_size)
        for start in tqdm(starts, desc=f"Inception ({self.mode})", disable=not progress):
            batch = array[start : start + batch_size]
            batch_features = self._batch_features(batch)
            batch_logits = batch_features @ self.output_weight.T
            features[start : start + batch.shape[0]] = batch_features.double().cpu().numpy()
            logits[start : start + batch.shape[0]] = batch_logits.double().cpu().numpy()
        return InceptionOutputs(features=features, logits=logits, mode=self.mode)
