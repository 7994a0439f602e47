"""Readers of the raw image dataset files: CIFAR-10, CIFAR-100, SVHN and ImageNet32.

Each reader returns a RawDataset with uint8 images (N, C, H, W), int64 labels 0..K-1 for the
train and test splits, and a JSON-ready description of what it read. The readers of the
digits and photos that ship with Python packages are in packaged_images. CIFAR and SVHN go through
torchvision's dataset classes. The readers turn torchvision's generic "Dataset not found or
corrupted" into errors that name the path, the expected files and the fix.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
IMAGENET32_URL = "https://image-net.org/download-images.php"
CONFIG_KEYS_HINT = (
    "Set data.root in the config to that folder, or set data.download: true to let "
    "torchvision download the files into data.root."
)

IMAGENET32_TRAIN_FILES = tuple(f"train_data_batch_{index}.npz" for index in range(1, 11))
IMAGENET32_TEST_FILES = ("val_data.npz",)


class DatasetNotFoundError(FileNotFoundError):
    """Missing raw files of a dataset. The message names the path, the files and the fix."""


class MalformedDatasetError(ValueError):
    """A raw file that exists but lacks the expected format. The message names the file."""


@dataclass
class RawSplit:
    """One split: int64 labels (N,) and uint8 image chunks (n_i, C, H, W) with sum n_i = N.

    `chunks` may be a generator that reads one file at a time, so it can be consumed once.
    """

    labels: np.ndarray
    image_shape: tuple[int, int, int]
    chunks: Iterable[np.ndarray]


@dataclass
class RawDataset:
    train: RawSplit
    test: RawSplit
    source: dict[str, Any] = field(default_factory=dict)


def _check_split(
    location: str, images: np.ndarray, labels: np.ndarray, shape: tuple[int, ...], n_classes: int
) -> None:
    """Raise MalformedDatasetError unless images are uint8 (N, *shape) with N labels 0..K-1."""
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise MalformedDatasetError(
            f"{location}: images have shape {images.shape} and dtype {images.dtype}, expected "
            f"(N, {', '.join(map(str, shape))}) uint8; replace the file with the official release"
        )
    if labels.shape != (images.shape[0],):
        raise MalformedDatasetError(
            f"{location}: labels of shape {labels.shape} for {images.shape[0]} images, expected "
            "one label per image; replace the file with the official release"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise MalformedDatasetError(
            f"{location}: labels span {labels.min()}..{labels.max()}, expected 0..{n_classes - 1}"
        )


def _require_files(dataset: str, folder: Path, names: Sequence[str], advice: str) -> None:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{dataset}: raw files not found in {folder}: missing {', '.join(missing)}. "
            f"{advice} {CONFIG_KEYS_HINT}"
        )


def _open_torchvision(
    dataset: str, construct: Callable[[], Any], checksums: Sequence[tuple[Path, str]], advice: str
) -> Any:
    """Call a torchvision dataset constructor and re-raise its errors with paths and fixes."""
    from torchvision.datasets.utils import check_integrity

    try:
        return construct()
    except OSError as error:
        # A failed download raises urllib's URLError, which is an OSError.
        # NOTE: no test runs download=True, because the test machines have no network.
        raise DatasetNotFoundError(
            f"{dataset}: torchvision could not read or download the raw files ({error}). {advice} "
            f"{CONFIG_KEYS_HINT}"
        ) from error
    except RuntimeError as error:
        # torchvision 0.29.1 raises RuntimeError("Dataset not found or corrupted...") when a
        # file is missing or its md5 differs from the official release.
        problems = [
            f"{path} (missing)"
            if not path.is_file()
            else f"{path} (md5 differs from the official {md5})"
            for path, md5 in checksums
            if not check_integrity(str(path), md5)
        ]
        detail = "; ".join(problems) or str(error)
        raise MalformedDatasetError(
            f"{dataset}: raw files failed torchvision's integrity check: {detail}. The files are "
            f"truncated or not the official release; delete them and download again. {advice}"
        ) from error


def _describe_cifar_problem(path: Path, keys: Sequence[str]) -> str | None:
    """Return what is wrong with one CIFAR python pickle, or None when it reads as expected.

    `keys` are the dict keys the file must have. With "data" among them, data must be
    (N, 3072) uint8 with one label per row under the other key.
    """
    try:
        with path.open("rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except Exception as error:  # a damaged pickle can raise almost any exception type
        return f"{path} is not a readable pickle ({type(error).__name__}: {error}), maybe truncated"
    if not isinstance(entry, dict):
        return f"{path} contains a {type(entry).__name__}, expected a dict"
    if any(key not in entry for key in keys):
        return f"{path} has keys {sorted(map(str, entry))}, expected {list(keys)}"
    if "data" not in keys:
        return None
    data = np.asarray(entry["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        return f"{path}: data has shape {data.shape} {data.dtype}, expected (N, 3072) uint8"
    label_key = next(key for key in keys if key != "data")
    if len(entry[label_key]) != data.shape[0]:
        return f"{path}: {len(entry[label_key])} labels for {data.shape[0]} images"
    return None


def read_cifar(name: str, root: Path, download: bool) -> RawDataset:
    """Read CIFAR-10 or CIFAR-100 ("cifar10" / "cifar100") through torchvision.

    torchvision's `.data` is (N, 32, 32, 3) HWC uint8, transposed here to (N, 3, 32, 32).
    CIFAR-100 labels are the 100 fine classes.
    """
    import torchvision
    from torchvision import datasets

    dataset_class = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    n_classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / dataset_class.base_folder
    checksums = [
        (folder / file_name, md5)
        for file_name, md5 in dataset_class.train_list + dataset_class.test_list
    ] + [(folder / dataset_class.meta["filename"], dataset_class.meta["md5"])]
    advice = (
        f"Expected the folder {dataset_class.base_folder}/ inside data.root, from the python "
        f"version ({dataset_class.filename}, extracted), available at {CIFAR_URL}."
    )
    if not download:
        _require_files(name, folder, [path.name for path, _ in checksums], advice)

    splits = {}
    for split, file_list in (
        ("train", dataset_class.train_list),
        ("test", dataset_class.test_list),
    ):
        try:
            dataset = _open_torchvision(
                name,
                lambda train=(split == "train"): dataset_class(
                    str(root), train=train, download=download
                ),
                checksums,
                advice,
            )
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            AttributeError,
            ImportError,
        ) as error:
            if isinstance(error, MalformedDatasetError):
                raise
            problems = [
                _describe_cifar_problem(folder / file_name, ("data", label_key))
                for file_name, _ in file_list
            ]
            meta_file = dataset_class.meta
            problems.append(
                _describe_cifar_problem(folder / meta_file["filename"], [meta_file["key"]])
            )
            detail = "; ".join(problem for problem in problems if problem) or str(error)
            raise MalformedDatasetError(
                f"{name}: could not read the {split} split in {folder}: {detail}. Expected python "
                f"pickles of dicts with 'data' (N, 3072) uint8 and '{label_key}'; delete the "
                f"folder and download again. {advice}"
            ) from error
        images = np.ascontiguousarray(np.asarray(dataset.data).transpose(0, 3, 1, 2))
        labels = np.asarray(dataset.targets, dtype=np.int64)
        _check_split(f"{name} {split} split in {folder}", images, labels, (3, 32, 32), n_classes)
        splits[split] = RawSplit(labels, (3, 32, 32), [images])
    source = {
        "reader": f"torchvision.datasets.{dataset_class.__name__}",
        "torchvision": torchvision.__version__,
        "root": str(root),
        "files": [str(path) for path, _ in checksums],
    }
    return RawDataset(splits["train"], splits["test"], source)


def read_svhn(root: Path, download: bool) -> RawDataset:
    """Read SVHN cropped digits (train_32x32.mat, test_32x32.mat in `root`) through torchvision.

    The .mat files store X as (32, 32, 3, N) and y as (N, 1) with 10 for the digit 0.
    torchvision transposes X to (N, 3, 32, 32) and maps label 10 to 0.
    """
    import scipy.io.matlab
    import torchvision
    from torchvision import datasets

    files = {split: datasets.SVHN.split_list[split] for split in ("train", "test")}
    checksums = [(root / file_name, md5) for _, file_name, md5 in files.values()]
    advice = (
        f"Expected the cropped-digit files {files['train'][1]} and {files['test'][1]} directly "
        f"in data.root, available at {SVHN_URL}."
    )
    if not download:
        _require_files("svhn", root, [path.name for path, _ in checksums], advice)

    splits = {}
    for split, (_, file_name, _) in files.items():
        path = root / file_name
        try:
            dataset = _open_torchvision(
                "svhn",
                lambda split=split: datasets.SVHN(str(root), split=split, download=download),
                checksums,
                advice,
            )
        except (scipy.io.matlab.MatReadError, ValueError, KeyError, TypeError) as error:
            if isinstance(error, MalformedDatasetError):
                raise
            raise MalformedDatasetError(
                f"svhn: {path} is not a valid cropped-digit .mat file ({type(error).__name__}: "
                f"{error}); expected a MATLAB file with X of shape (32, 32, 3, N) uint8 and y of "
                f"shape (N, 1) with labels 1..10. Delete it and download again. {advice}"
            ) from error
        images = np.ascontiguousarray(dataset.data)
        # torchvision squeezes y, which leaves a 0-d array when the file contains one image.
        labels = np.atleast_1d(np.asarray(dataset.labels, dtype=np.int64))
        _check_split(f"svhn file {path}", images, labels, (3, 32, 32), 10)
        splits[split] = RawSplit(labels, (3, 32, 32), [images])
    source = {
        "reader": "torchvision.datasets.SVHN",
        "torchvision": torchvision.__version__,
        "root": str(root),
        "files": [str(path) for path, _ in checksums],
    }
    return RawDataset(splits["train"], splits["test"], source)


def _find_imagenet32_files(root: Path) -> dict[str, Path]:
    """Find the ImageNet32 npz batches in `root` or in its direct subfolders."""
    names = IMAGENET32_TRAIN_FILES + IMAGENET32_TEST_FILES
    advice = (
        f"Expected {IMAGENET32_TRAIN_FILES[0]} .. {IMAGENET32_TRAIN_FILES[-1]} and "
        f"{IMAGENET32_TEST_FILES[0]} (the 'Downsampled ImageNet 32x32' npz batches of Chrabaszcz "
        f"et al. 2017, from {IMAGENET32_URL} after logging in) in data.root or in one of its "
        "subfolders. data.download cannot fetch them; download and extract them by hand."
    )
    if not root.is_dir():
        raise DatasetNotFoundError(f"imagenet32: data.root {root} is not a folder. {advice}")
    folders = [root, *sorted(path for path in root.iterdir() if path.is_dir())]
    found: dict[str, Path] = {}
    for name in names:
        matches = [folder / name for folder in folders if (folder / name).is_file()]
        if len(matches) > 1:
            raise MalformedDatasetError(
                f"imagenet32: {name} exists more than once: {', '.join(map(str, matches))}; "
                "keep one copy so the dataset is unambiguous"
            )
        if matches:
            found[name] = matches[0]
    missing = [name for name in names if name not in found]
    if missing:
        searched = ", ".join(str(folder) for folder in folders)
        raise DatasetNotFoundError(
            f"imagenet32: missing {', '.join(missing)} (searched {searched}). {advice}"
        )
    return found


def _read_imagenet32_labels(path: Path) -> np.ndarray:
    """Check the keys and the data header of one npz batch and return its labels 0..999 (int64).

    The batches store 1-based labels 1..1000 and data (N, 3072) uint8 in channel-major order.
    Only the header of `data` is read here, so a bad batch fails before anything is written.
    """
    expected = "an npz file with data (N, 3072) uint8 and labels (N,) in 1..1000"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "data" not in archive.files or "labels" not in archive.files:
                raise MalformedDatasetError(
                    f"imagenet32: {path} has keys {archive.files}, expected {expected}"
                )
            with archive.zip.open("data.npy") as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            labels = np.asarray(archive["labels"])
    except MalformedDatasetError:
        raise
    except Exception as error:  # zipfile, npy header and numpy errors have many types
        raise MalformedDatasetError(
            f"imagenet32: {path} is not a readable npz file ({type(error).__name__}: {error}); "
            f"expected {expected}. Delete it and extract it again."
        ) from error
    if len(shape) != 2 or shape[1] != 3 * 32 * 32 or dtype != np.uint8:
        raise MalformedDatasetError(
            f"imagenet32: {path} has data of shape {shape} {dtype}, expected {expected}"
        )
    if labels.shape != (shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise MalformedDatasetError(
            f"imagenet32: {path} has labels of shape {labels.shape} {labels.dtype} for "
            f"{shape[0]} images, expected {expected}"
        )
    if labels.size and (labels.min() < 1 or labels.max() > 1000):
        raise MalformedDatasetError(
            f"imagenet32: {path} has labels {labels.min()}..{labels.max()}, expected the "
            "original 1-based labels 1..1000"
        )
    return labels.astype(np.int64) - 1


def _iter_imagenet32_images(paths: Sequence[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        try:
            with np.load(path, allow_pickle=False) as archive:
                data = archive["data"]
        except Exception as error:  # zipfile CRC and numpy read errors have many types
            raise MalformedDatasetError(
                f"imagenet32: could not read data from {path} ({type(error).__name__}: {error}); "
                "delete it and extract it again"
            ) from error
        logger.info("read %d images from %s", data.shape[0], path)
        yield data.reshape(-1, 3, 32, 32)


def read_imagenet32(root: Path) -> RawDataset:
    """Read downsampled ImageNet 32x32, with the validation batch as the test split.

    Images are read one batch at a time while the prepared arrays are written.
    NOTE: only tiny batches written by np.savez were tested, not the official downloads.
    """
    found = _find_imagenet32_files(root)
    splits = {}
    for split, names in (("train", IMAGENET32_TRAIN_FILES), ("test", IMAGENET32_TEST_FILES)):
        paths = [found[name] for name in names]
        labels = np.concatenate([_read_imagenet32_labels(path) for path in paths])
        splits[split] = RawSplit(labels, (3, 32, 32), _iter_imagenet32_images(paths))
    source = {
        "reader": "numpy npz batches",
        "numpy": np.__version__,
        "root": str(root),
        "files": [str(found[name]) for name in IMAGENET32_TRAIN_FILES + IMAGENET32_TEST_FILES],
    }
    return RawDataset(splits["train"], splits["test"], source)
