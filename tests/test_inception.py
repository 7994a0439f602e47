"""Tests for the Inception feature extractor and the Inception Score.

The real inception-2015-12-05.pt (about 95 MB) is not available offline. The extractor tests
therefore save a scripted stand-in under the real file name, with the same forward signature
and the submodules layers and output, and run the real loading, checksum and batching code on
it. The Inception Score tests use logits with known class distributions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer
from conftest import read_only
from torch import Tensor, nn

from qcsbm_bench.metrics.inception import (
    FEATURE_DIM,
    INCEPTION_FILENAME,
    INCEPTION_URL,
    WEIGHTS_CONFIG_KEY,
    load_inception,
)
from qcsbm_bench.metrics.inception_score import inception_score

N_CLASSES = 1008

# torch 2.14 deprecates TorchScript, the only format clean-fid's network exists in.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]


class StandInInception(nn.Module):
    """A tiny network with the call interface of clean-fid's Inception TorchScript file."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=13, stride=13),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(8, FEATURE_DIM, kernel_size=1),
        )
        self.output = nn.Linear(FEATURE_DIM, N_CLASSES)

    def forward(
        self,
        img: Tensor,
        return_features: bool = False,
        use_fp16: bool = False,
        no_output_bias: bool = False,
    ) -> Tensor:
        x = F.interpolate(img.to(torch.float32), size=(299, 299), mode="bilinear")
        # TorchScript cannot read module-level constants, so the 2048 is written out.
        features = self.layers((x - 128.0) / 128.0).reshape(-1, 2048)
        if return_features:
            return features
        bias = None if no_output_bias else self.output.bias
        logits = F.linear(features, self.output.weight, bias)
        return F.softmax(logits, dim=1)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = torch.jit.script(StandInInception().float().eval())
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILENAME
    torch.jit.save(module, str(path))
    return path


def random_images(count: int, channels: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, channels, size, size), dtype=np.uint8)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_names_path_and_url(tmp_path: Path) -> None:
    missing = tmp_path / "weights" / INCEPTION_FILENAME
    with pytest.raises(FileNotFoundError) as error:
        load_inception(missing, sha256=None)
    message = str(error.value)
    assert str(missing) in message
    assert INCEPTION_URL in message
    assert WEIGHTS_CONFIG_KEY in message


def test_wrong_checksum_rejected(weights_file: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ValueError) as error:
        load_inception(weights_file, sha256=wrong)
    assert wrong in str(error.value)
    assert sha256_of(weights_file) in str(error.value)
    assert "evaluate.fid.sha256" in str(error.value)


def test_matching_checksum_loads(weights_file: Path) -> None:
    extractor = load_inception(weights_file, sha256=sha256_of(weights_file).upper())
    assert extractor.mode == "clean"
    assert extractor.n_classes == N_CLASSES


def test_folder_path_finds_file(weights_file: Path) -> None:
    extractor = load_inception(weights_file.parent, sha256=None, mode="legacy_tensorflow")
    assert extractor.mode == "legacy_tensorflow"


def test_unreadable_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / INCEPTION_FILENAME
    path.write_bytes(b"not a TorchScript archive")
    with pytest.raises(ValueError, match="not a readable TorchScript"):
        load_inception(path, sha256=None)


def test_unknown_mode_rejected(weights_file: Path) -> None:
    with pytest.raises(ValueError, match="legacy_pytorch"):
        load_inception(weights_file, sha256=None, mode="legacy_pytorch")


def test_output_shapes_and_mode(weights_file: Path) -> None:
    outputs = load_inception(weights_file, sha256=None)(random_images(5), batch_size=2)
    assert outputs.features.shape == (5, FEATURE_DIM)
    assert outputs.logits.shape == (5, N_CLASSES)
    assert outputs.features.dtype == np.float64
    assert outputs.logits.dtype == np.float64
    assert outputs.mode == "clean"


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_features_match_cleanfid_wrapper(weights_file: Path, mode: str) -> None:
    # clean-fid's own wrapper on the same file: in "clean" mode it takes images already resized
    # by its "clean" resizer, in "legacy_tensorflow" mode it resizes inside the network.
    images = random_images(4, size=20, seed=1)
    outputs = load_inception(weights_file, sha256=None, mode=mode)(images)

    wrapper = InceptionV3W(str(weights_file.parent), download=False)
    wrapper.resize_inside = mode == "legacy_tensorflow"
    if mode == "clean":
        resize = build_resizer("clean")
        resized = np.stack([resize(image.transpose(1, 2, 0)) for image in images])
        wrapper_input = torch.from_numpy(resized.transpose(0, 3, 1, 2).copy())
    else:
        wrapper_input = torch.from_numpy(images).float()
    with torch.no_grad():
        expected = wrapper(wrapper_input).double().numpy()
    np.testing.assert_allclose(outputs.features, expected, rtol=1e-6, atol=1e-6)


def test_modes_give_different_features(weights_file: Path) -> None:
    images = random_images(3, size=20, seed=2)
    clean = load_inception(weights_file, sha256=None, mode="clean")(images)
    legacy = load_inception(weights_file, sha256=None, mode="legacy_tensorflow")(images)
    assert np.abs(clean.features - legacy.features).max() > 1e-3


def test_logits_are_unbiased_network_logits(weights_file: Path) -> None:
    # The network returns softmax(features W^T) with no_output_bias=True, so the softmax of
    # the returned logits must equal it.
    images = random_images(4, size=20, seed=3)
    outputs = load_inception(weights_file, sha256=None, mode="legacy_tensorflow")(images)
    network = torch.jit.load(str(weights_file))
    with torch.no_grad():
        expected = network(torch.from_numpy(images).float(), no_output_bias=True)
    probabilities = torch.softmax(torch.from_numpy(outputs.logits), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected.double().numpy(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_batching_is_samplewise(weights_file: Path, mode: str) -> None:
    extractor = load_inception(weights_file, sha256=None, mode=mode)
    images = random_images(6, seed=4)
    whole = extractor(images, batch_size=6)
    first, second = extractor(images[:3]), extractor(images[3:])
    np.testing.assert_allclose(
        whole.features, np.concatenate([first.features, second.features]), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        whole.logits, np.concatenate([first.logits, second.logits]), rtol=1e-6, atol=1e-6
    )
    uneven = extractor(images, batch_size=4)
    np.testing.assert_allclose(whole.features, uneven.features, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("reject_read_only_arrays")
@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_read_only_images_accepted(weights_file: Path, mode: str) -> None:
    extractor = load_inception(weights_file, sha256=None, mode=mode)
    images = random_images(3, seed=7)
    outputs = extractor(read_only(images))
    expected = extractor(images)
    np.testing.assert_array_equal(outputs.features, expected.features)
    np.testing.assert_array_equal(outputs.logits, expected.logits)


def test_grey_images_repeat_to_rgb(weights_file: Path) -> None:
    extractor = load_inception(weights_file, sha256=None)
    grey = random_images(2, channels=1, seed=5)
    np.testing.assert_array_equal(
        extractor(grey).features, extractor(np.repeat(grey, 3, axis=1)).features
    )


def test_torch_tensor_input_accepted(weights_file: Path) -> None:
    extractor = load_inception(weights_file, sha256=None)
    images = random_images(2, seed=6)
    np.testing.assert_array_equal(
        extractor(torch.from_numpy(images)).features, extractor(images).features
    )


def test_invalid_images_rejected(weights_file: Path) -> None:
    extractor = load_inception(weights_file, sha256=None)
    with pytest.raises(ValueError, match="uint8"):
        extractor(random_images(2).astype(np.float32) / 255.0)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        extractor(random_images(2, channels=4))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        extractor(random_images(2)[0])
    with pytest.raises(ValueError, match="batch_size"):
        extractor(random_images(2), batch_size=0)


# Inception Score

# A logit gap of 1000 makes softmax one-hot to within exp(-1000), which is 0 in float64.
CONFIDENT = 1000.0


def one_hot_logits(classes: np.ndarray, n_classes: int) -> np.ndarray:
    logits = np.zeros((classes.shape[0], n_classes))
    logits[np.arange(classes.shape[0]), classes] = CONFIDENT
    return logits


def test_uniform_logits_score_one() -> None:
    # p(y|x) = p(y) for every x, so every KL term is 0 and IS = exp(0) = 1.
    mean, std = inception_score(np.full((50, 1008), 3.7))
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_identical_confident_logits_score_one() -> None:
    mean, _ = inception_score(one_hot_logits(np.full(40, 7), 1008))
    assert mean == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n_used", [2, 10, 1000])
def test_distinct_confident_classes_score_class_count(n_used: int) -> None:
    # Each split contains every used class equally often, so p(y) is uniform on n_used classes
    # and KL(one-hot || p(y)) = log n_used for every sample.
    classes = np.tile(np.arange(n_used), 10)
    mean, std = inception_score(one_hot_logits(classes, 1008), n_splits=10)
    assert mean == pytest.approx(n_used, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-8 * n_used)


def test_splits_are_consecutive_slices() -> None:
    # The first half contains one class and the second half another. One split sees two classes,
    # two splits each see a single class.
    classes = np.repeat([0, 1], 20)
    logits = one_hot_logits(classes, 5)
    assert inception_score(logits, n_splits=1)[0] == pytest.approx(2.0, rel=1e-12)
    assert inception_score(logits, n_splits=2)[0] == pytest.approx(1.0, rel=1e-12)


def test_split_mean_and_population_std() -> None:
    # Split one covers 2 classes (IS 2), split two covers 4 classes (IS 4): mean 3 and
    # population standard deviation 1.
    classes = np.concatenate([np.tile([0, 1], 4), np.tile([2, 3, 4, 5], 2)])
    mean, std = inception_score(one_hot_logits(classes, 6), n_splits=2)
    assert mean == pytest.approx(3.0, rel=1e-12)
    assert std == pytest.approx(1.0, rel=1e-12)


def test_soft_predictions_closed_form() -> None:
    # Two samples over two classes with p(y|x) = (a, 1 - a) and (1 - a, a): p(y) is uniform
    # and each KL term is log 2 - H(a), so IS = 2 exp(-H(a)).
    a = 0.8
    logits = np.log(np.array([[a, 1 - a], [1 - a, a]]))
    entropy = -(a * np.log(a) + (1 - a) * np.log(1 - a))
    mean, _ = inception_score(logits, n_splits=1)
    assert mean == pytest.approx(2.0 * np.exp(-entropy), rel=1e-12)


def test_logit_shift_invariance() -> None:
    logits = np.random.default_rng(0).normal(size=(30, 12))
    assert inception_score(logits, n_splits=3) == pytest.approx(
        inception_score(logits + 5.0, n_splits=3), rel=1e-12
    )


def test_inception_score_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="2-D"):
        inception_score(np.zeros(10))
    with pytest.raises(ValueError, match="between 1 and the number of samples 5, got 10"):
        inception_score(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        inception_score(np.array([[np.nan, 0.0]]), n_splits=1)
