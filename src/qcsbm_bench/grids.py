"""8-bit image arrays: validation, PNG files and sample grids.

Images are uint8 arrays of shape (N, C, H, W) with C = 1 (grey, PIL mode "L") or C = 3
(PIL mode "RGB"). Every file is written atomically through `atomic_open`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qcsbm_bench.atomic import atomic_open

PIL_MODES = {1: "L", 3: "RGB"}


def check_uint8_images(images: np.ndarray | torch.Tensor, name: str = "images") -> np.ndarray:
    """Return `images` as a uint8 NumPy array of shape (N, C, H, W), or raise ValueError.

    Float images are rejected rather than converted, because [0, 1] and [0, 255] floats
    cannot be distinguished reliably.
    """
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array or torch tensor, got {type(images)}")
    if array.dtype != np.uint8:
        raise ValueError(
            f"{name} must have dtype uint8 (8-bit pixel values 0..255), got {array.dtype}; "
            "quantise [0, 1] floats with image_sampling.quantise first"
        )
    if array.ndim != 4 or array.shape[0] == 0 or min(array.shape[1:]) == 0:
        raise ValueError(
            f"{name} must have shape (N, C, H, W) with every size >= 1, got {array.shape}"
        )
    return array


def pixel_tensor(images: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Convert a uint8 array to a new CPU tensor of the float `dtype`, with values 0..255.

    NumPy converts the array, so its one copy is the float array that torch then shares.
    torch.from_numpy on the uint8 array itself would warn for a read-only array, such as a
    memory-mapped prepared split.
    """
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    return torch.from_numpy(np.asarray(images).astype(numpy_dtype))


def to_pil_image(image: np.ndarray) -> Image.Image:
    """Convert one uint8 image (C, H, W) with C = 1 or 3 to a PIL image ("L" or "RGB")."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected one uint8 image of shape (C, H, W), got dtype {image.dtype} and "
            f"shape {image.shape}"
        )
    channels = image.shape[0]
    if channels not in PIL_MODES:
        raise ValueError(
            f"PNG output supports 1 (grey) or 3 (RGB) channels, got {channels}; "
            "write the npz arrays instead"
        )
    if channels == 1:
        return Image.fromarray(image[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGB")


def write_png(image: np.ndarray, path: Path) -> None:
    """Write one uint8 image (C, H, W) to `path` as a lossless PNG, atomically."""
    pil_image = to_pil_image(image)
    with atomic_open(path, "wb") as handle:
        pil_image.save(handle, format="PNG")


def tile_grid(images: np.ndarray, nrow: int, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile the first nrow * nrow images (N, C, H, W) into one image (C, H_grid, W_grid).

    The grid has min(N, nrow) columns and ceil(n / columns) rows for the n images used,
    with `padding` pixels of `pad_value` around and between the images:
    W_grid = columns (W + padding) + padding and H_grid = rows (H + padding) + padding.
    Image k sits in row k // columns and column k % columns.
    """
    images = check_uint8_images(images)
    if nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    if padding < 0:
        raise ValueError(f"padding must be a non-negative number of pixels, got {padding}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be a uint8 value in 0..255, got {pad_value}")

    used = images[: nrow * nrow]
    count, channels, height, width = used.shape
    columns = min(count, nrow)
    rows = math.ceil(count / columns)
    grid = np.full(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding),
        pad_value,
        dtype=np.uint8,
    )
    for k in range(count):
        top = padding + (k // columns) * (height + padding)
        left = padding + (k % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = used[k]
    return grid


def save_grid(
    images: np.ndarray, path: Path, nrow: int, padding: int = 2, pad_value: int = 0
) -> Path:
    """Write the first nrow * nrow images (N, C, H, W) as one PNG grid and return its path.

    See `tile_grid` for the layout. Only PNG output is supported.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"grid path must end in .png, got {path}; only PNG output is supported")
    write_png(tile_grid(images, nrow, padding, pad_value), path)
    return path
