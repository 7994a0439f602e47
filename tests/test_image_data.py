"""Image data prep and loading, on tiny files written in each dataset's on-disk format."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import skimage.data
import torch
from sklearn.datasets import load_digits

from qcsbm_bench.data.image_sources import CIFAR_URL, IMAGENET32_URL, SVHN_URL
from qcsbm_bench.data.images import (
    DatasetNotFoundError,
    ImageData,
    MalformedDatasetError,
    PreparedDataError,
    load_image_dataset,
    prepare_image_dataset,
    sample_batch,
    to_float,
)
from qcsbm_bench.data.packaged_images import PHOTO_FILES, TEST_PHOTOS

# ---------------------------------------------------------------------------------------------
# Writers of tiny raw files in the formats of the official releases


def _write_pickle(path: Path, content: object) -> None:
    # The official batches were pickled by Python 2. Read with encoding="latin1", as torchvision
    # does, their keys come back as str, so str keys here give the same dicts.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=2)


def _random_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Write cifar-10-batches-py with 2 images per train batch and 3 test images.

    Returns the expected train and test images (N, 3, 32, 32) and labels. Image 0 of
    data_batch_1 has red 201 and blue 17 at row 5, column 7.
    """
    folder = root / "cifar-10-batches-py"
    train_rows, train_labels = [], []
    for index in range(1, 6):
        rows = _random_rows(rng, 2)
        if index == 1:
            rows[0, 0 * 1024 + 5 * 32 + 7] = 201
            rows[0, 2 * 1024 + 5 * 32 + 7] = 17
        labels = [int(label) for label in rng.integers(0, 10, size=2)]
        _write_pickle(
            folder / f"data_batch_{index}",
            {
                "batch_label": f"training batch {index} of 5",
                "labels": labels,
                "data": rows,
                "filenames": [f"image_{index}_{i}.png" for i in range(2)],
            },
        )
        train_rows.append(rows)
        train_labels += labels
    test_rows = _random_rows(rng, 3)
    test_labels = [3, 0, 9]
    _write_pickle(
        folder / "test_batch",
        {"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test_rows},
    )
    _write_pickle(
        folder / "batches.meta",
        {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 2},
    )
    return (
        np.concatenate(train_rows).reshape(-1, 3, 32, 32),
        np.asarray(train_labels),
        test_rows.reshape(-1, 3, 32, 32),
        np.asarray(test_labels),
    )


def write_cifar100(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    folder = root / "cifar-100-python"
    splits = []
    for name, count in (("train", 4), ("test", 2)):
        rows = _random_rows(rng, count)
        fine = [int(label) for label in rng.integers(10, 100, size=count)]
        coarse = [label % 20 for label in fine]
        _write_pickle(
            folder / name,
            {"data": rows, "fine_labels": fine, "coarse_labels": coarse, "filenames": []},
        )
        splits += [rows.reshape(-1, 3, 32, 32), np.asarray(fine)]
    _write_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    return tuple(splits)


def write_svhn(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Write train_32x32.mat (3 images) and test_32x32.mat (1 image): X (32, 32, 3, N), y (N, 1).

    Train image 0 has green 77 at row 3, column 9. Its label is 10, which means the digit 0.
    """
    root.mkdir(parents=True, exist_ok=True)
    splits = []
    for name, labels in (("train", [10, 3, 7]), ("test", [10])):
        X = rng.integers(0, 256, size=(32, 32, 3, len(labels)), dtype=np.uint8)
        if name == "train":
            X[3, 9, 1, 0] = 77
        y = np.asarray(labels, dtype=np.uint8)[:, None]
        scipy.io.savemat(root / f"{name}_32x32.mat", {"X": X, "y": y})
        splits += [X.transpose(3, 2, 0, 1), np.asarray([label % 10 for label in labels])]
    return tuple(splits)


def _write_imagenet32_batch(path: Path, rows: np.ndarray, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, data=rows, labels=labels, mean=rows.mean(axis=0))


def write_imagenet32(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Write the ten train batches and val_data.npz in subfolders, as the archives extract.

    Batch k contains 2 images with labels 100 k and 100 k + 1, so the batch order shows in them.
    """
    train_rows, train_labels = [], []
    for index in range(1, 11):
        rows = _random_rows(rng, 2)
        labels = np.asarray([100 * index - 99, 100 * index - 98])
        _write_imagenet32_batch(
            root / "Imagenet32_train_npz" / f"train_data_batch_{index}.npz", rows, labels
        )
        train_rows.append(rows)
        train_labels.append(labels)
    val_rows = _random_rows(rng, 3)
    val_rows[0, 1 * 1024 + 30 * 32 + 2] = 250
    val_labels = np.asarray([1, 1000, 500])
    _write_imagenet32_batch(root / "Imagenet32_val_npz" / "val_data.npz", val_rows, val_labels)
    return (
        np.concatenate(train_rows).reshape(-1, 3, 32, 32),
        np.concatenate(train_labels) - 1,
        val_rows.reshape(-1, 3, 32, 32),
        val_labels - 1,
    )


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    # torchvision 0.29.1 compares the md5 of each official file through the module-level
    # check_integrity in torchvision/datasets/cifar.py (CIFAR10._check_integrity and _load_meta)
    # and svhn.py (SVHN._check_integrity). Tiny test files cannot match those sums, so the
    # check is replaced by an existence check.
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    def file_exists(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", file_exists)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", file_exists)


def prepare(name: str, tmp_path: Path, root: Path | None = None, **kwargs: object) -> Path:
    return prepare_image_dataset(
        name, tmp_path / "prepared" / name, root=root, download=False, seed=0, **kwargs
    )


def check_round_trip(out_dir: Path, expected: tuple[np.ndarray, ...], hflip: bool) -> None:
    train_images, train_labels, test_images, test_labels = expected
    train = load_image_dataset(out_dir, "train")
    test = load_image_dataset(out_dir, "test")
    np.testing.assert_array_equal(train.images, train_images)
    np.testing.assert_array_equal(test.images, test_images)
    np.testing.assert_array_equal(train.labels, train_labels)
    np.testing.assert_array_equal(test.labels, test_labels)
    assert train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert train.meta["hflip"] is hflip
    assert train.hflip is hflip
    assert train.meta["n_train"] == len(train_labels)
    assert train.meta["n_test"] == len(test_labels)
    for name, digest in train.meta["sha256"].items():
        assert hashlib.sha256((out_dir / name).read_bytes()).hexdigest() == digest


# ---------------------------------------------------------------------------------------------
# Round trips through the real readers


def test_cifar10_round_trip(tmp_path: Path, skip_md5: None) -> None:
    expected = write_cifar10(tmp_path / "raw", np.random.default_rng(1))
    out_dir = prepare("cifar10", tmp_path, tmp_path / "raw")
    check_round_trip(out_dir, expected, hflip=True)
    train = load_image_dataset(out_dir, "train")
    assert train.images[0, 0, 5, 7] == 201
    assert train.images[0, 2, 5, 7] == 17
    assert train.images.shape == (10, 3, 32, 32)
    assert train.meta["channels"] == 3
    assert train.meta["resolution"] == 32


def test_cifar100_fine_labels(tmp_path: Path, skip_md5: None) -> None:
    expected = write_cifar100(tmp_path / "raw", np.random.default_rng(2))
    out_dir = prepare("cifar100", tmp_path, tmp_path / "raw")
    check_round_trip(out_dir, expected, hflip=True)
    train = load_image_dataset(out_dir)
    assert train.labels.min() >= 10
    assert train.meta["n_classes"] == 100


def test_svhn_round_trip(tmp_path: Path, skip_md5: None) -> None:
    expected = write_svhn(tmp_path / "raw", np.random.default_rng(3))
    out_dir = prepare("svhn", tmp_path, tmp_path / "raw")
    check_round_trip(out_dir, expected, hflip=False)
    train = load_image_dataset(out_dir)
    assert train.images[0, 1, 3, 9] == 77
    assert train.labels[0] == 0
    assert load_image_dataset(out_dir, "test").images.shape == (1, 3, 32, 32)


def test_imagenet32_round_trip(tmp_path: Path) -> None:
    expected = write_imagenet32(tmp_path / "raw", np.random.default_rng(4))
    out_dir = prepare("imagenet32", tmp_path, tmp_path / "raw")
    check_round_trip(out_dir, expected, hflip=False)
    train = load_image_dataset(out_dir)
    assert train.labels[-1] == 1000 - 98 - 1
    test = load_image_dataset(out_dir, "test")
    assert test.images[0, 1, 30, 2] == 250
    np.testing.assert_array_equal(test.labels, [0, 999, 499])


# ---------------------------------------------------------------------------------------------
# Errors on missing and malformed raw files


@pytest.mark.parametrize(
    ("name", "url", "expected_file"),
    [
        ("cifar10", CIFAR_URL, "data_batch_1"),
        ("cifar100", CIFAR_URL, "train"),
        ("svhn", SVHN_URL, "train_32x32.mat"),
        ("imagenet32", IMAGENET32_URL, "val_data.npz"),
    ],
)
def test_missing_root_error(tmp_path: Path, name: str, url: str, expected_file: str) -> None:
    root = tmp_path / "no-such-folder"
    with pytest.raises(DatasetNotFoundError) as caught:
        prepare(name, tmp_path, root)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(root) in message
    assert expected_file in message
    assert url in message
    assert "data.root" in message
    assert not (tmp_path / "prepared" / name / "meta.json").exists()


def test_missing_root_mentions_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"data\.download"):
        prepare("cifar10", tmp_path, tmp_path / "empty")


def test_imagenet32_missing_batch(tmp_path: Path) -> None:
    write_imagenet32(tmp_path / "raw", np.random.default_rng(5))
    (tmp_path / "raw" / "Imagenet32_train_npz" / "train_data_batch_7.npz").unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        prepare("imagenet32", tmp_path, tmp_path / "raw")
    assert "train_data_batch_7.npz" in str(caught.value)
    assert "train_data_batch_1.npz," not in str(caught.value)


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        ({"data": np.zeros((2, 3072), np.uint8)}, "labels"),
        ({"data": np.zeros((2, 3000), np.uint8), "labels": np.asarray([1, 2])}, "3072"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": np.asarray([1, 2])}, "uint8"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": np.asarray([0, 2])}, "1..1000"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": np.asarray([1, 2, 3])}, "labels"),
    ],
)
def test_imagenet32_malformed_npz(
    tmp_path: Path, contents: dict[str, np.ndarray], expected: str
) -> None:
    write_imagenet32(tmp_path / "raw", np.random.default_rng(6))
    path = tmp_path / "raw" / "Imagenet32_val_npz" / "val_data.npz"
    np.savez(path, **contents)
    with pytest.raises(MalformedDatasetError) as caught:
        prepare("imagenet32", tmp_path, tmp_path / "raw")
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_imagenet32_not_a_zip(tmp_path: Path) -> None:
    write_imagenet32(tmp_path / "raw", np.random.default_rng(7))
    path = tmp_path / "raw" / "Imagenet32_train_npz" / "train_data_batch_3.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MalformedDatasetError, match=r"train_data_batch_3\.npz"):
        prepare("imagenet32", tmp_path, tmp_path / "raw")


def test_truncated_cifar_pickle(tmp_path: Path, skip_md5: None) -> None:
    write_cifar10(tmp_path / "raw", np.random.default_rng(8))
    path = tmp_path / "raw" / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(MalformedDatasetError) as caught:
        prepare("cifar10", tmp_path, tmp_path / "raw")
    assert str(path) in str(caught.value)
    assert "data_batch_1" not in str(caught.value)


def test_cifar_pickle_wrong_shape(tmp_path: Path, skip_md5: None) -> None:
    write_cifar10(tmp_path / "raw", np.random.default_rng(9))
    path = tmp_path / "raw" / "cifar-10-batches-py" / "data_batch_2"
    _write_pickle(path, {"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]})
    with pytest.raises(MalformedDatasetError) as caught:
        prepare("cifar10", tmp_path, tmp_path / "raw")
    assert str(path) in str(caught.value)
    assert "(2, 3000)" in str(caught.value)


def test_cifar_meta_missing_key(tmp_path: Path, skip_md5: None) -> None:
    write_cifar100(tmp_path / "raw", np.random.default_rng(14))
    path = tmp_path / "raw" / "cifar-100-python" / "meta"
    _write_pickle(path, {"coarse_label_names": ["coarse0"]})
    with pytest.raises(MalformedDatasetError) as caught:
        prepare("cifar100", tmp_path, tmp_path / "raw")
    assert str(path) in str(caught.value)
    assert "fine_label_names" in str(caught.value)


def test_cifar_md5_mismatch_named(tmp_path: Path) -> None:
    # No skip_md5 here: torchvision's own md5 check rejects the tiny files.
    write_cifar10(tmp_path / "raw", np.random.default_rng(10))
    with pytest.raises(MalformedDatasetError) as caught:
        prepare("cifar10", tmp_path, tmp_path / "raw")
    message = str(caught.value)
    assert "md5" in message
    assert str(tmp_path / "raw" / "cifar-10-batches-py" / "test_batch") in message
    assert "Dataset not found or corrupted" not in message


def test_svhn_bad_mat(tmp_path: Path, skip_md5: None) -> None:
    write_svhn(tmp_path / "raw", np.random.default_rng(11))
    path = tmp_path / "raw" / "test_32x32.mat"
    path.write_bytes(b"not a MATLAB file" * 20)
    with pytest.raises(MalformedDatasetError) as caught:
        prepare("svhn", tmp_path, tmp_path / "raw")
    assert str(path) in str(caught.value)
    assert "(32, 32, 3, N)" in str(caught.value)


def test_svhn_wrong_image_size(tmp_path: Path, skip_md5: None) -> None:
    write_svhn(tmp_path / "raw", np.random.default_rng(12))
    path = tmp_path / "raw" / "train_32x32.mat"
    X = np.zeros((28, 28, 3, 2), np.uint8)
    scipy.io.savemat(path, {"X": X, "y": np.asarray([[1], [2]], np.uint8)})
    with pytest.raises(MalformedDatasetError) as caught:
        prepare("svhn", tmp_path, tmp_path / "raw")
    assert str(path) in str(caught.value)
    assert "(2, 3, 28, 28)" in str(caught.value)


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown image dataset 'cifar-10'") as caught:
        prepare("cifar-10", tmp_path)
    for name in ("cifar10", "cifar100", "svhn", "imagenet32", "digits", "photos"):
        assert name in str(caught.value)


def test_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        prepare("digits", tmp_path, options={"test_fracton": 0.1})
    with pytest.raises(ValueError, match="n_train"):
        prepare("photos", tmp_path, options={"n_train": 0})


# ---------------------------------------------------------------------------------------------
# Verification of prepared folders


@pytest.fixture
def prepared_digits(tmp_path: Path) -> Path:
    return prepare("digits", tmp_path)


def test_corrupted_npy_rejected(prepared_digits: Path) -> None:
    path = prepared_digits / "train.npy"
    content = bytearray(path.read_bytes())
    content[-10] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(PreparedDataError) as caught:
        load_image_dataset(prepared_digits, "train")
    assert "train.npy" in str(caught.value)
    assert "Delete the folder" in str(caught.value)
    assert len(load_image_dataset(prepared_digits, "test")) == 359
    assert len(load_image_dataset(prepared_digits, "train", verify=False)) == 1438


def test_wrong_version_rejected(prepared_digits: Path) -> None:
    meta_path = prepared_digits / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PreparedDataError) as caught:
        load_image_dataset(prepared_digits)
    assert "version 2" in str(caught.value)
    assert "Delete the folder" in str(caught.value)


def test_shape_mismatch_rejected(prepared_digits: Path) -> None:
    meta_path = prepared_digits / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["n_test"] = 360
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PreparedDataError, match=r"test\.npy has shape \(359, 1, 8, 8\)"):
        load_image_dataset(prepared_digits, "test", verify=False)


def test_failed_prep_leaves_no_meta(tmp_path: Path) -> None:
    write_imagenet32(tmp_path / "raw", np.random.default_rng(13))
    out_dir = prepare("imagenet32", tmp_path, tmp_path / "raw")
    assert load_image_dataset(out_dir, "test").meta["n_test"] == 3
    # A flipped pixel byte in the last train batch keeps the npy header readable, so the
    # second prep fails only on the zip CRC check while it writes train.npy.
    path = tmp_path / "raw" / "Imagenet32_train_npz" / "train_data_batch_10.npz"
    content = bytearray(path.read_bytes())
    content[1000] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(MalformedDatasetError, match=r"train_data_batch_10\.npz"):
        prepare("imagenet32", tmp_path, tmp_path / "raw")
    assert not (out_dir / "meta.json").exists()
    with pytest.raises(PreparedDataError, match=r"meta\.json is missing"):
        load_image_dataset(out_dir)
    assert not list(out_dir.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# Offline datasets: scikit-learn digits and scikit-image photos


def test_digits_load_from_sklearn(prepared_digits: Path) -> None:
    train = load_image_dataset(prepared_digits, "train")
    test = load_image_dataset(prepared_digits, "test")
    assert train.images.shape == (1438, 1, 8, 8)
    assert test.images.shape == (359, 1, 8, 8)
    assert train.images.dtype == np.uint8
    assert train.hflip is False
    assert train.images.max() == 255
    bunch = load_digits()
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8).reshape(len(bunch.images), -1)
    prepared = np.concatenate([train.images, test.images]).reshape(len(bunch.images), -1)
    expected_rows = sorted(
        (row.tobytes(), int(label)) for row, label in zip(expected, bunch.target, strict=True)
    )
    labels = np.concatenate([train.labels, test.labels])
    prepared_rows = sorted(
        (row.tobytes(), int(label)) for row, label in zip(prepared, labels, strict=True)
    )
    assert prepared_rows == expected_rows
    assert set(np.unique(prepared)) <= set(np.rint(np.arange(17) * 255 / 16).astype(int))


def test_digits_seeded_split(tmp_path: Path, prepared_digits: Path) -> None:
    first = load_image_dataset(prepared_digits, "test")
    again = prepare_image_dataset("digits", tmp_path / "again", root=None, download=False, seed=0)
    other = prepare_image_dataset(
        "digits",
        tmp_path / "other",
        root=None,
        download=False,
        seed=1,
        options={"test_fraction": 0.5},
    )
    np.testing.assert_array_equal(load_image_dataset(again, "test").images, first.images)
    other_test = load_image_dataset(other, "test")
    assert len(other_test) == round(0.5 * 1797)
    assert not np.array_equal(other_test.images[:359], first.images)


def _is_crop_of(patch: np.ndarray, photo: np.ndarray) -> bool:
    """Whether the (3, 32, 32) patch equals photo[r : r + 32, c : c + 32] somewhere."""
    candidates = np.argwhere(np.all(photo[:-31, :-31] == patch[:, 0, 0], axis=-1))
    return any(
        np.array_equal(photo[row : row + 32, col : col + 32].transpose(2, 0, 1), patch)
        for row, col in candidates
    )


def test_photos_disjoint_sources(tmp_path: Path) -> None:
    out_dir = prepare("photos", tmp_path, options={"n_train": 36, "n_test": 10})
    train = load_image_dataset(out_dir, "train")
    test = load_image_dataset(out_dir, "test")
    assert train.images.shape == (36, 3, 32, 32)
    assert test.images.shape == (10, 3, 32, 32)
    assert train.images.dtype == np.uint8
    assert train.hflip is True
    assert train.meta["n_classes"] == len(PHOTO_FILES)
    names = list(PHOTO_FILES)
    test_labels = {names.index(name) for name in TEST_PHOTOS}
    assert set(test.labels.tolist()) == test_labels
    assert set(train.labels.tolist()) == set(range(len(names))) - test_labels
    for data in (train, test):
        for patch, label in zip(data.images[:3], data.labels[:3], strict=True):
            photo = getattr(skimage.data, names[label])()
            assert _is_crop_of(patch, photo)


def test_photos_seeded(tmp_path: Path) -> None:
    options = {"n_train": 12, "n_test": 4}
    first = prepare_image_dataset(
        "photos", tmp_path / "a", root=None, download=False, seed=5, options=options
    )
    again = prepare_image_dataset(
        "photos", tmp_path / "b", root=None, download=False, seed=5, options=options
    )
    other = prepare_image_dataset(
        "photos", tmp_path / "c", root=None, download=False, seed=6, options=options
    )
    first_meta = json.loads((first / "meta.json").read_text())
    assert first_meta["sha256"] == json.loads((again / "meta.json").read_text())["sha256"]
    other_train = load_image_dataset(other, "train").images
    assert not np.array_equal(load_image_dataset(first, "train").images, other_train)


# ---------------------------------------------------------------------------------------------
# Float conversion and batches


def _ramp_data() -> ImageData:
    # One image whose columns hold 0, 8, ..., 248, so a left-right flip changes it.
    ramp = (np.arange(32, dtype=np.uint8) * 8)[None, None, None, :].repeat(32, axis=2)
    images = np.repeat(ramp, 3, axis=1)
    meta = {"dataset": "ramp", "hflip": True}
    return ImageData(images=images, labels=np.zeros(1, np.int64), meta=meta, split="train")


def test_to_float_values() -> None:
    images = np.asarray([[0, 1, 128, 255]], dtype=np.uint8)
    result = to_float(images)
    assert result.dtype == torch.float64
    torch.testing.assert_close(result, torch.tensor([[0.0, 1 / 255, 128 / 255, 1.0]]))
    assert to_float(torch.from_numpy(images), torch.float32).dtype == torch.float32
    with pytest.raises(TypeError, match="uint8"):
        to_float(images.astype(np.float32))


def test_sample_batch_no_flip() -> None:
    data = _ramp_data()
    original = to_float(data.images)
    batch = sample_batch(data, 16, torch.Generator().manual_seed(0), hflip=False)
    assert batch.shape == (16, 3, 32, 32)
    torch.testing.assert_close(batch, original.expand(16, -1, -1, -1))


def test_sample_batch_flips_when_asked() -> None:
    data = _ramp_data()
    original = to_float(data.images)[0]
    batch = sample_batch(data, 64, torch.Generator().manual_seed(0), hflip=True)
    unchanged = [torch.equal(image, original) for image in batch]
    mirrored = [torch.equal(image, original.flip(-1)) for image in batch]
    assert all(a or b for a, b in zip(unchanged, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54
    assert sum(unchanged) + sum(mirrored) == 64
