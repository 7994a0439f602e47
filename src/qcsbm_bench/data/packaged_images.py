"""Readers of the image datasets that ship inside Python packages, for runs without network:
scikit-learn's 8x8 handwritten digits and 32x32 patches of scikit-image's sample photos.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from qcsbm_bench.artifacts import derive_seed
from qcsbm_bench.data.image_sources import (
    DatasetNotFoundError,
    MalformedDatasetError,
    RawDataset,
    RawSplit,
)

logger = logging.getLogger(__name__)

# Colour photographs that scikit-image 0.26 ships inside its package, so they load without a
# download: loader function name in skimage.data -> file name in skimage.data.data_dir.
PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "immunohistochemistry": "ihc.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "colorwheel": "color.png",
}
# Test patches come only from these photos, so no test patch is cut from a training photo.
TEST_PHOTOS = ("chelsea", "coffee")
PATCH_SIZE = 32


def read_digits(seed: int, test_fraction: float) -> RawDataset:
    """Read scikit-learn's bundled 8x8 digits and split them with a seeded permutation.

    The values 0..16 become 8-bit as round(v * 255 / 16), with ties to even (v = 8 -> 128).
    Images (N, 1, 8, 8) uint8; round(test_fraction * 1797) images go to the test split.
    """
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    n_test = round(test_fraction * len(images))
    if not 1 <= n_test < len(images):
        raise ValueError(
            f"data.digits.test_fraction = {test_fraction} puts {n_test} of {len(images)} images "
            "in the test split; choose a fraction that leaves both splits non-empty"
        )
    order = np.random.default_rng(derive_seed(seed, "digits", "split")).permutation(len(images))
    test, train = order[:n_test], order[n_test:]
    source = {"reader": "sklearn.datasets.load_digits", "scikit-learn": sklearn.__version__}
    return RawDataset(
        RawSplit(labels[train], (1, 8, 8), [images[train]]),
        RawSplit(labels[test], (1, 8, 8), [images[test]]),
        source,
    )


def _load_photos() -> dict[str, np.ndarray]:
    """Load the bundled photos as (H, W, 3) uint8, dropping any that would need a download."""
    import skimage.data

    photos = {}
    for name, file_name in PHOTO_FILES.items():
        # skimage.data fetches files that are not in its package folder over the network.
        if not (Path(skimage.data.data_dir) / file_name).is_file():
            logger.warning(
                "skipping photo %s: %s is not bundled with scikit-image", name, file_name
            )
            continue
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MalformedDatasetError(
                f"photos: skimage.data.{name}() returned {image.shape} {image.dtype}, expected "
                "(H, W, 3) uint8"
            )
        photos[name] = image
    return photos


def _cut_patches(
    photos: dict[str, np.ndarray], count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut `count` patches (3, 32, 32) at uniform random positions, spread evenly over photos.

    Returns shuffled patches (count, 3, 32, 32) uint8 and labels, the index in PHOTO_FILES.
    """
    names = list(photos)
    per_photo = [count // len(names) + (index < count % len(names)) for index in range(len(names))]
    patches, labels = [], []
    for name, n_patches in zip(names, per_photo, strict=True):
        photo = photos[name]
        rows = rng.integers(0, photo.shape[0] - PATCH_SIZE + 1, size=n_patches)
        cols = rng.integers(0, photo.shape[1] - PATCH_SIZE + 1, size=n_patches)
        for row, col in zip(rows, cols, strict=True):
            patches.append(photo[row : row + PATCH_SIZE, col : col + PATCH_SIZE].transpose(2, 0, 1))
        labels += [list(PHOTO_FILES).index(name)] * n_patches
    order = rng.permutation(count)
    return np.stack(patches)[order], np.asarray(labels, dtype=np.int64)[order]


def read_photos(seed: int, n_train: int, n_test: int) -> RawDataset:
    """Cut 32x32 RGB patches from scikit-image's bundled photos; test photos are disjoint."""
    import skimage

    photos = _load_photos()
    test_photos = {name: photos[name] for name in TEST_PHOTOS if name in photos}
    train_photos = {name: image for name, image in photos.items() if name not in TEST_PHOTOS}
    if not test_photos or not train_photos:
        raise DatasetNotFoundError(
            f"photos: scikit-image {skimage.__version__} in {skimage.__file__} lacks the bundled "
            f"photos (found {sorted(photos)}); reinstall scikit-image 0.26 from its wheel"
        )
    train = _cut_patches(
        train_photos, n_train, np.random.default_rng(derive_seed(seed, "photos", "train"))
    )
    test = _cut_patches(
        test_photos, n_test, np.random.default_rng(derive_seed(seed, "photos", "test"))
    )
    source = {
        "reader": "skimage.data",
        "scikit-image": skimage.__version__,
        "labels": list(PHOTO_FILES),
        "train_photos": list(train_photos),
        "test_photos": list(test_photos),
        "patch_size": PATCH_SIZE,
    }
    return RawDataset(
        RawSplit(train[1], (3, 32, 32), [train[0]]),
        RawSplit(test[1], (3, 32, 32), [test[0]]),
        source,
    )
