"""Prepared image datasets: one verified, versioned folder of uint8 arrays per dataset.

`prepare_image_dataset` reads a raw dataset (readers in image_sources) and writes into one
folder: train.npy and test.npy with images (N, C, H, W) uint8, train_labels.npy and
test_labels.npy with labels (N,) int64, and meta.json. Each file is written to a temporary name
and renamed, and meta.json, which contains the sha256 of every array, comes last. A killed prep
therefore leaves no folder that passes verification. `load_image_dataset` reads one split back
and checks it. `to_float` and `sample_batch` turn uint8 images into float batches in [0, 1].
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qcsbm_bench.artifacts import file_sha256, write_json
from qcsbm_bench.atomic import atomic_open
from qcsbm_bench.config import IMAGE_DATASETS
from qcsbm_bench.data.image_sources import (
    DatasetNotFoundError,
    MalformedDatasetError,
    RawDataset,
    read_cifar,
    read_imagenet32,
    read_svhn,
)
from qcsbm_bench.data.packaged_images import PHOTO_FILES, read_digits, read_photos

__all__ = [
    "HFLIP",
    "IMAGE_DATASETS",
    "N_CLASSES",
    "DatasetNotFoundError",
    "ImageData",
    "MalformedDatasetError",
    "PreparedDataError",
    "load_image_dataset",
    "prepare_image_dataset",
    "read_meta",
    "sample_batch",
    "to_float",
]

logger = logging.getLogger(__name__)

FORMAT = "qcsbm-bench-images"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
PREP_COMMAND = "qcsbm-bench prep-images (Snakemake rule prep_image_data)"

# Random horizontal flips in training. CIFAR scenes and photo patches look just as natural when
# mirrored, but digits and house numbers do not. ImageNet32 runs without flips to match the
# reference NCSN++ training setup of the QCSBM comparison.
HFLIP = {
    "cifar10": True,
    "cifar100": True,
    "svhn": False,
    "imagenet32": False,
    "digits": False,
    "photos": True,
}

# Number of classes; the labels of every split lie in 0..N_CLASSES[name] - 1. Photo labels
# index the source photo, and train and test use different photos.
N_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "svhn": 10,
    "imagenet32": 1000,
    "digits": 10,
    "photos": len(PHOTO_FILES),
}

# Options per dataset (config keys data.digits and data.photos) and their defaults.
OPTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"test_fraction": 0.2},
    "photos": {"n_train": 8000, "n_test": 2000},
}


class PreparedDataError(ValueError):
    """A prepared folder that is incomplete, of another format version or altered since prep."""


@dataclass(frozen=True)
class ImageData:
    """One split of a prepared dataset.

    images: (N, C, H, W) uint8, a read-only memory map when loaded with mmap=True.
    labels: (N,) int64 class indices. meta: the folder's meta.json.
    """

    images: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any]
    split: str

    @property
    def hflip(self) -> bool:
        """Whether training on this dataset uses random horizontal flips."""
        return bool(self.meta["hflip"])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _check_dataset_name(name: str) -> None:
    if name not in IMAGE_DATASETS:
        raise ValueError(
            f"unknown image dataset {name!r}; valid names are {', '.join(IMAGE_DATASETS)}"
        )


def _resolve_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge `options` onto the dataset's defaults and check every value."""
    defaults = OPTION_DEFAULTS.get(name, {})
    requested = dict(options or {})
    unknown = sorted(set(requested) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(
            f"unknown option(s) {unknown} for image dataset {name!r} (config key data.{name}); "
            f"valid options: {valid}"
        )
    settings = {**defaults, **requested}
    for key in ("n_train", "n_test"):
        if key in settings:
            value = settings[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name}.{key} = {value!r}; expected a positive integer")
    if "test_fraction" in settings:
        value = settings["test_fraction"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ValueError(f"data.{name}.test_fraction = {value!r}; expected a number in (0, 1)")
    return settings


def _read_raw(
    name: str, root: Path | None, download: bool, seed: int, settings: Mapping[str, Any]
) -> RawDataset:
    if name == "digits":
        return read_digits(seed, settings["test_fraction"])
    if name == "photos":
        return read_photos(seed, settings["n_train"], settings["n_test"])
    if root is None:
        raise DatasetNotFoundError(
            f"{name}: no raw data folder given; set data.root in the config to the folder with "
            "the raw files"
        )
    root = Path(root)
    if name in ("cifar10", "cifar100"):
        return read_cifar(name, root, download)
    if name == "svhn":
        return read_svhn(root, download)
    if download:
        logger.warning(
            "imagenet32: data.download is ignored; the npz batches need a manual download"
        )
    return read_imagenet32(root)


def _write_npy(
    path: Path, shape: tuple[int, ...], dtype: np.dtype[Any], chunks: Iterable[np.ndarray]
) -> str:
    """Write chunks along axis 0 as one C-order .npy file and return its sha256 hex digest.

    Chunks are streamed, so an array larger than memory (ImageNet32 train, 3.9 GB) is never
    held whole. The file appears at `path` only once it is complete.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape},
    )
    digest = hashlib.sha256(header.getvalue())
    written = 0
    with atomic_open(path, "wb") as handle:
        handle.write(header.getvalue())
        for chunk in chunks:
            if chunk.dtype != dtype or chunk.shape[1:] != shape[1:]:
                raise ValueError(
                    f"{path.name}: chunk of shape {chunk.shape} {chunk.dtype} does not fit an "
                    f"array of shape {shape} {dtype}"
                )
            written += chunk.shape[0]
            data = memoryview(np.ascontiguousarray(chunk)).cast("B")
            handle.write(data)
            digest.update(data)
        if written != shape[0]:
            raise ValueError(f"{path.name}: wrote {written} rows, expected {shape[0]}")
    return digest.hexdigest()


def prepare_image_dataset(
    name: str,
    out_dir: Path,
    *,
    root: Path | None,
    download: bool,
    seed: int,
    options: Mapping[str, Any] | None = None,
) -> Path:
    """Read raw dataset `name`, write the prepared folder `out_dir` and return `out_dir`.

    root: folder with the raw files (torchvision roots, ImageNet32 npz batches); digits and
    photos ignore it. download: let torchvision download CIFAR or SVHN into root. seed: fixes
    the digits split and the photo patch positions. options: test_fraction for digits,
    n_train and n_test for photos.
    Raises DatasetNotFoundError for missing raw files, MalformedDatasetError for unreadable
    ones, and ValueError for an unknown name or option.
    """
    _check_dataset_name(name)
    settings = _resolve_options(name, options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        # Without its meta.json the folder fails verification until this prep completes.
        logger.info("removing %s from an earlier prep", meta_path)
        meta_path.unlink()

    logger.info("preparing %s from %s into %s", name, root, out_dir)
    raw = _read_raw(name, root, download, seed, settings)
    digests: dict[str, str] = {}
    for split in SPLITS:
        raw_split = getattr(raw, split)
        count = int(raw_split.labels.shape[0])
        digests[f"{split}.npy"] = _write_npy(
            out_dir / f"{split}.npy",
            (count, *raw_split.image_shape),
            np.dtype(np.uint8),
            raw_split.chunks,
        )
        digests[f"{split}_labels.npy"] = _write_npy(
            out_dir / f"{split}_labels.npy",
            (count,),
            np.dtype(np.int64),
            [raw_split.labels.astype(np.int64)],
        )
        logger.info("wrote %d %s images of shape %s", count, split, raw_split.image_shape)

    # Every dataset here has square images, so one resolution describes H and W.
    channels, resolution, _ = raw.train.image_shape
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dataset": name,
        "channels": channels,
        "resolution": resolution,
        "n_train": int(raw.train.labels.shape[0]),
        "n_test": int(raw.test.labels.shape[0]),
        "n_classes": N_CLASSES[name],
        "hflip": HFLIP[name],
        "seed": seed,
        "options": settings,
        "source": raw.source,
        "sha256": digests,
    }
    write_json(meta, meta_path)
    logger.info("prepared %s: %d train and %d test images", name, meta["n_train"], meta["n_test"])
    return out_dir


def _fail(out_dir: Path, problem: str) -> PreparedDataError:
    return PreparedDataError(
        f"prepared data folder {out_dir}: {problem}. Delete the folder and rerun {PREP_COMMAND}."
    )


def read_meta(out_dir: Path) -> dict[str, Any]:
    """Read and check meta.json of a prepared folder (format name and version, required keys)."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise _fail(out_dir, "meta.json is missing, so the prep never ran or was interrupted")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(out_dir, f"meta.json is not valid JSON ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _fail(out_dir, f"meta.json has format {found!r}, expected {FORMAT!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise _fail(
            out_dir,
            f"meta.json has format version {meta.get('version')!r}, but this code reads "
            f"version {FORMAT_VERSION}",
        )
    required = ("dataset", "channels", "resolution", "n_train", "n_test", "hflip", "sha256")
    missing = [key for key in required if key not in meta]
    if missing:
        raise _fail(out_dir, f"meta.json lacks the keys {missing}")
    if not isinstance(meta["sha256"], dict):
        raise _fail(out_dir, "meta.json has no table of sha256 digests per file")
    return meta


def load_image_dataset(
    out_dir: Path, split: str = "train", *, mmap: bool = True, verify: bool = True
) -> ImageData:
    """Load one split of a prepared folder and check it against meta.json.

    The format, version, shapes and dtypes are always checked. verify=True also compares the
    sha256 of the split's two files with meta.json, which reads every byte of them (3.9 GB
    for the ImageNet32 train split). mmap=True maps the images read-only instead of reading them.
    Raises PreparedDataError, naming the file and the fix, when a check fails.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")
    out_dir = Path(out_dir)
    meta = read_meta(out_dir)
    images_path = out_dir / f"{split}.npy"
    labels_path = out_dir / f"{split}_labels.npy"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise _fail(out_dir, f"{path.name} is missing")
        if verify:
            expected = meta["sha256"].get(path.name)
            if file_sha256(path) != expected:
                raise _fail(
                    out_dir,
                    f"{path.name} does not match its sha256 in meta.json (expected {expected}), "
                    "so it was changed or damaged after prep",
                )

    try:
        images = np.load(images_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise _fail(out_dir, f"{split} arrays are not readable .npy files ({error})") from error
    count = meta[f"n_{split}"]
    expected_shape = (count, meta["channels"], meta["resolution"], meta["resolution"])
    if images.shape != expected_shape or images.dtype != np.uint8:
        raise _fail(
            out_dir,
            f"{images_path.name} has shape {images.shape} {images.dtype}, but meta.json "
            f"describes {expected_shape} uint8",
        )
    if labels.shape != (count,) or labels.dtype != np.int64:
        raise _fail(
            out_dir,
            f"{labels_path.name} has shape {labels.shape} {labels.dtype}, expected "
            f"({count},) int64",
        )
    return ImageData(images=images, labels=labels, meta=meta, split=split)


def to_float(images: np.ndarray | Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Map uint8 images to floats x / 255 in [0, 1], any shape (usually (B, C, H, W)).

    dtype defaults to torch's default dtype. The result is on the input tensor's device, or
    on the CPU for a numpy array.
    """
    if isinstance(images, Tensor):
        tensor = images
    else:
        array = np.asarray(images)
        # torch.from_numpy warns on read-only arrays such as memory maps, so copy those.
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if tensor.dtype != torch.uint8:
        raise TypeError(
            f"to_float expects uint8 images, got dtype {tensor.dtype}; pass the arrays of a "
            "prepared dataset, which are uint8 in 0..255"
        )
    return tensor.to(dtype or torch.get_default_dtype()) / 255.0


def sample_batch(
    data: ImageData,
    batch_size: int,
    generator: torch.Generator,
    hflip: bool,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Draw `batch_size` images uniformly with replacement, as floats in [0, 1].

    Returns (batch_size, C, H, W) on the generator's device. With hflip=True each image is
    mirrored left-right with probability 1/2. Pass data.hflip for the dataset's setting.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}; expected a positive integer")
    if len(data) == 0:
        raise ValueError(f"the {data.split} split of {data.meta['dataset']} has no images")
    device = generator.device
    indices = torch.randint(len(data), (batch_size,), generator=generator, device=device)
    batch = to_float(data.images[indices.cpu().numpy()], dtype).to(device)
    if hflip:
        flip = torch.rand(batch_size, generator=generator, device=device) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    return batch
