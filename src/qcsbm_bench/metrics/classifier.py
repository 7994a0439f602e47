"""A small CNN classifier whose penultimate features give a Frechet distance for offline data.

Datasets without an Inception reference, such as sklearn digits (1 x 8 x 8) or 3 x 32 x 32
photo patches, have no FID. A classifier trained on the dataset's labelled training split
supplies features instead, and the Frechet distance of those features is reported as
"FD (<dataset> classifier)". Its value depends on the trained classifier, so it is comparable
only between sample sets scored with the same checkpoint, never with an FID.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qcsbm_bench.artifacts import load_checkpoint, save_checkpoint
from qcsbm_bench.grids import pixel_tensor

logger = logging.getLogger(__name__)

DEFAULT_WIDTH = 32
DEFAULT_FEATURE_DIM = 64
DEFAULT_HELD_OUT_FRACTION = 0.2
# Weights and inputs are float32 whatever torch's default dtype is, so that features agree
# between training and scoring jobs.
MODEL_DTYPE = torch.float32


def classifier_fd_name(dataset: str) -> str:
    """Return the metric label "FD (<dataset> classifier)" for this Frechet distance."""
    return f"FD ({dataset} classifier)"


@dataclass(frozen=True)
class ClassifierArchitecture:
    """Settings that rebuild a FeatureClassifier from its saved weights."""

    in_channels: int
    n_classes: int
    width: int = DEFAULT_WIDTH
    feature_dim: int = DEFAULT_FEATURE_DIM


class FeatureClassifier(nn.Module):
    """Three 3x3 convolutions, global average pooling, a feature layer and a ReLU-linear head.

    Input: images scaled to [-1, 1], shape (N, C, H, W) with H, W >= 4. Features: outputs of
    the penultimate linear layer before its ReLU, shape (N, feature_dim). Taking them before
    the ReLU keeps units that are zero for every image out of the covariance, which would make
    it singular. Output: logits (N, n_classes).
    """

    def __init__(self, architecture: ClassifierArchitecture) -> None:
        super().__init__()
        self.architecture = architecture
        width = architecture.width
        self.body = nn.Sequential(
            nn.Conv2d(architecture.in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, architecture.feature_dim),
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Linear(architecture.feature_dim, architecture.n_classes)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _validate_images(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 in [0, 255], got dtype {array.dtype}. Convert data in "
            "[0, 1] with (x * 255).round().clip(0, 255) cast to uint8."
        )
    if array.ndim != 4 or min(array.shape[2:]) < 4:
        raise ValueError(f"images must have shape (N, C, H, W) with H, W >= 4, got {array.shape}.")
    return array


def _to_model_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    # Maps uint8 [0, 255] to [-1, 1].
    return pixel_tensor(images, MODEL_DTYPE).to(device) / 127.5 - 1.0


@torch.no_grad()
def _accuracy(model: FeatureClassifier, images: np.ndarray, labels: np.ndarray) -> float:
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, images.shape[0], 512):
        logits = model(_to_model_input(images[start : start + 512], device))
        predictions = logits.argmax(dim=1).cpu().numpy()
        correct += int((predictions == labels[start : start + 512]).sum())
    return correct / images.shape[0]


def train_feature_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
    width: int = DEFAULT_WIDTH,
    feature_dim: int = DEFAULT_FEATURE_DIM,
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Train a FeatureClassifier with Adam and cross-entropy on a seeded split of the data.

    A seeded permutation holds out round(held_out_fraction * N) images for the held-out accuracy.
    Minibatches are drawn with replacement from the rest. The seed fixes the split, the initial
    weights and the minibatches, so a rerun with the same device and torch thread count gives
    the same weights. A different thread count changes the float32 sums, and so the weights.

    Args:
        images: uint8 training images, shape (N, C, H, W).
        labels: integer class labels in [0, n_classes), shape (N,).
        n_classes: number of classes.
        steps, batch_size, lr: optimiser steps, minibatch size and Adam learning rate.
        seed: seed of the split, the initialisation and the minibatch draws.
        device: device to train on.
        held_out_fraction: share of images held out, in (0, 1).
        width, feature_dim: convolution width and feature size (F).

    Returns:
        The trained model in eval mode and stats: train_accuracy and held_out_accuracy
        (fractions), final_loss (mean cross-entropy over the last 10% of steps, nats), n_train,
        n_held_out, steps, batch_size, lr, seed.
    """
    array = _validate_images(images)
    label_array = np.asarray(labels)
    if label_array.shape != (array.shape[0],) or not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({array.shape[0]},), got dtype "
            f"{label_array.dtype} and shape {label_array.shape}."
        )
    if label_array.min() < 0 or label_array.max() >= n_classes:
        raise ValueError(
            f"labels must lie in [0, {n_classes}), got range [{label_array.min()}, "
            f"{label_array.max()}]. Check n_classes."
        )
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}.")
    if steps < 1 or batch_size < 1 or lr <= 0.0:
        raise ValueError(
            f"steps, batch_size and lr must be positive, got {steps}, {batch_size} and {lr}."
        )
    n_held_out = round(held_out_fraction * array.shape[0])
    if n_held_out < 1 or n_held_out >= array.shape[0]:
        raise ValueError(
            f"held_out_fraction {held_out_fraction} of {array.shape[0]} images leaves an empty "
            "split; use more images or another fraction."
        )

    order = np.random.default_rng(seed).permutation(array.shape[0])
    held_out, train = order[:n_held_out], order[n_held_out:]
    train_images, train_labels = array[train], label_array[train]

    device = torch.device(device)
    architecture = ClassifierArchitecture(array.shape[1], n_classes, width, feature_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(architecture).to(device=device, dtype=MODEL_DTYPE)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    train_targets = torch.from_numpy(train_labels.astype(np.int64))

    model.train()
    recent_losses: list[float] = []
    for step in range(steps):
        batch = torch.randint(train.shape[0], (batch_size,), generator=generator)
        inputs = _to_model_input(train_images[batch.numpy()], device)
        loss = nn.functional.cross_entropy(model(inputs), train_targets[batch].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step >= steps - max(1, steps // 10):
            recent_losses.append(loss.item())
    model.eval()

    stats: dict[str, Any] = {
        "train_accuracy": _accuracy(model, train_images, train_labels),
        "held_out_accuracy": _accuracy(model, array[held_out], label_array[held_out]),
        "final_loss": float(np.mean(recent_losses)),
        "n_train": int(train.shape[0]),
        "n_held_out": int(n_held_out),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }
    logger.info(
        "Feature classifier: train accuracy %.4f, held-out accuracy %.4f after %d steps.",
        stats["train_accuracy"],
        stats["held_out_accuracy"],
        steps,
    )
    return model, stats


@torch.no_grad()
def classifier_features(
    model: FeatureClassifier, images: np.ndarray, batch_size: int = 512
) -> np.ndarray:
    """Compute penultimate-layer features (N, F), float64, of uint8 images (N, C, H, W)."""
    array = _validate_images(images)
    if array.shape[1] != model.architecture.in_channels:
        raise ValueError(
            f"images have {array.shape[1]} channels but the classifier expects "
            f"{model.architecture.in_channels}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    model.eval()
    device = next(model.parameters()).device
    features = np.empty((array.shape[0], model.architecture.feature_dim), dtype=np.float64)
    for start in range(0, array.shape[0], batch_size):
        batch = _to_model_input(array[start : start + batch_size], device)
        features[start : start + batch.shape[0]] = model.features(batch).double().cpu().numpy()
    return features


def save_classifier(
    model: FeatureClassifier, path: Path, stats: Mapping[str, Any] | None = None
) -> None:
    """Save weights, architecture and optional training stats for weights_only loading."""
    state = {
        "architecture": asdict(model.architecture),
        "state_dict": model.state_dict(),
        "stats": dict(stats or {}),
    }
    save_checkpoint(state, Path(path))


def load_classifier(path: Path, device: str | torch.device = "cpu") -> FeatureClassifier:
    """Rebuild a FeatureClassifier in eval mode from a file written by save_classifier."""
    state = load_checkpoint(Path(path), map_location=str(device))
    missing = {"architecture", "state_dict"} - set(state)
    if missing:
        raise ValueError(
            f"{path} lacks {sorted(missing)}, so it is not a feature classifier checkpoint; "
            "retrain the classifier."
        )
    model = FeatureClassifier(ClassifierArchitecture(**state["architecture"]))
    model = model.to(device=torch.device(device), dtype=MODEL_DTYPE)
    model.load_state_dict(state["state_dict"])
    return model.eval()
