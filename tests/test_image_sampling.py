"""Sharded image sampling: seeds per batch, shard layout, npz/PNG output, resume and merge.

Numerical checks use the exact score of Gaussian image data N(mu, s0^2 I) under the VE SDE,
-(x - mu) / (s0^2 + sigma(t)^2). Its samples have per-pixel mean mu and, after the final
Tweedie step at t_min, std s0^2 / sqrt(s0^2 + sigma(t_min)^2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gaussian_images import GaussianImageScore
from PIL import Image
from torch import Tensor

from qcsbm_bench.image_merge import merge_shards
from qcsbm_bench.image_sampling import (
    ShardResult,
    batch_count,
    model_fingerprint,
    png_name,
    quantise,
    resolve_sampler_options,
    sample_shard,
    shard_batches,
    shard_path,
)
from qcsbm_bench.jacobian import ScoreFn
from qcsbm_bench.networks import SmallUNet
from qcsbm_bench.scores import build_score_model
from qcsbm_bench.sde import VESDE

DATA_STD = 0.1
SHAPE = (1, 4, 4)


class CountingCalls:
    """Count calls of a score function, and raise after `fail_after` calls if given."""

    def __init__(self, score_fn: GaussianImageScore, fail_after: int | None = None) -> None:
        self.score_fn = score_fn
        self.sde = score_fn.sde
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated kill")
        self.calls += 1
        return self.score_fn(x, t)


@pytest.fixture
def sde() -> VESDE:
    return VESDE(0.01, 50.0)


def gaussian_score(sde: VESDE, channels: int = 1) -> GaussianImageScore:
    mean = torch.linspace(0.3, 0.7, channels * 16).reshape(channels, 4, 4)
    return GaussianImageScore(sde, mean, DATA_STD)


def run_shard(score_fn: ScoreFn, sde: VESDE, out_dir: Path, **overrides: Any) -> ShardResult:
    arguments = {
        "sampler": "pc",
        "n_samples": 7,
        "batch_size": 2,
        "shard": 0,
        "n_shards": 1,
        "seed": 3,
        "shape": SHAPE,
        "sampler_options": {"n_levels": 6},
        "out_dir": out_dir,
        "png": False,
        "dtype": torch.float64,
    }
    arguments.update(overrides)
    return sample_shard(score_fn, sde, **arguments)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_shard_batches_balanced_and_contiguous() -> None:
    ranges = [shard_batches(10, k, 3) for k in range(3)]
    assert [len(r) for r in ranges] == [4, 3, 3]
    assert [i for r in ranges for i in r] == list(range(10))
    assert list(shard_batches(5, 0, 1)) == list(range(5))
    assert batch_count(7, 2) == 4
    assert batch_count(8, 2) == 4


@pytest.mark.parametrize(
    ("shard", "n_shards", "message"),
    [(3, 3, "shard must lie in 0..2"), (-1, 3, "shard must lie"), (0, 0, "n_shards must be")],
)
def test_shard_batches_rejects_bad_shard(shard: int, n_shards: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shard_batches(10, shard, n_shards)


def test_shard_batches_rejects_empty_shards() -> None:
    with pytest.raises(ValueError, match="exceeds the number of batches"):
        shard_batches(4, 0, 5)


def test_sampler_options_defaults_and_unknown_key() -> None:
    options = resolve_sampler_options("pc", {"n_levels": 10})
    assert options == {
        "n_levels": 10,
        "snr": 0.16,
        "corrector_steps": 1,
        "denoise": True,
        "t_min": 1e-5,
    }
    assert set(resolve_sampler_options("ode", {})) == {"rtol", "atol", "denoise", "t_min"}
    with pytest.raises(ValueError, match="'snr'"):
        resolve_sampler_options("ode", {"snr": 0.1})
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        resolve_sampler_options("ddim", {})


def test_quantise_clips_and_rounds() -> None:
    x = torch.tensor([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 128.4 / 255, 1.0, 1.3])
    assert quantise(x).tolist() == [0, 0, 0, 1, 128, 255, 255]
    assert quantise(x).dtype == np.uint8


def test_one_and_three_shards_give_identical_samples(sde: VESDE, tmp_path: Path) -> None:
    score = gaussian_score(sde)
    single = run_shard(score, sde, tmp_path / "one")
    three = [run_shard(score, sde, tmp_path / "three", shard=k, n_shards=3) for k in range(3)]
    merged_one = merge_shards([single.path], tmp_path / "one.npz", n_samples=7)
    merged_three = merge_shards([r.path for r in three], tmp_path / "three.npz", n_samples=7)

    images_one = load_npz(merged_one.path)["images"]
    images_three = load_npz(merged_three.path)["images"]
    assert images_one.shape == (7, *SHAPE)
    assert len(np.unique(images_one)) > 20
    np.testing.assert_array_equal(images_one, images_three)
    assert [r.indices.tolist() for r in three] == [[0, 1, 2, 3], [4, 5], [6]]


def test_pc_samples_match_gaussian_moments(sde: VESDE, tmp_path: Path) -> None:
    score = gaussian_score(sde)
    result = run_shard(
        score, sde, tmp_path, n_samples=400, batch_size=200, sampler_options={"n_levels": 200}
    )
    images = load_npz(result.path)["images"] / 255.0
    expected_std = DATA_STD**2 / math.sqrt(DATA_STD**2 + sde.sigma_min**2)
    np.testing.assert_allclose(images.mean(axis=0), score.mean.numpy(), atol=0.025)
    assert images.std(axis=0).mean() == pytest.approx(expected_std, rel=0.06)


def test_ode_samples_match_gaussian_moments(sde: VESDE, tmp_path: Path) -> None:
    score = gaussian_score(sde, channels=3)
    result = run_shard(
        score,
        sde,
        tmp_path,
        sampler="ode",
        n_samples=300,
        batch_size=300,
        shape=(3, 4, 4),
        sampler_options={},
    )
    images = load_npz(result.path)["images"] / 255.0
    # The flow maps x_1 ~ N(0, sigma_max^2) to mu + (x_1 - mu) sqrt(v(t_min) / v(1)).
    v_start = DATA_STD**2 + sde.sigma_min**2
    flow_std = sde.sigma_max * math.sqrt(v_start / (DATA_STD**2 + sde.sigma_max**2))
    expected_std = flow_std * DATA_STD**2 / v_start
    np.testing.assert_allclose(images.mean(axis=0), score.mean.numpy(), atol=0.03)
    assert images.std(axis=0).mean() == pytest.approx(expected_std, rel=0.06)
    assert result.mean_nfe > 5


def test_shard_file_records_nfe_and_settings(sde: VESDE, tmp_path: Path) -> None:
    options = {"n_levels": 4, "corrector_steps": 1, "denoise": True}
    result = run_shard(gaussian_score(sde), sde, tmp_path, sampler_options=options)
    saved = load_npz(shard_path(tmp_path, 0, 1))

    assert result.path == tmp_path / "shard-0000-of-0001.npz"
    assert saved["images"].dtype == np.uint8
    assert saved["images"].shape == (7, *SHAPE)
    assert saved["indices"].tolist() == list(range(7))
    assert saved["batch_ids"].tolist() == [0, 1, 2, 3]
    # PC NFE per batch: n_levels (1 + corrector_steps) + 1 for the denoising step.
    assert saved["nfe"].tolist() == [4 * 2 + 1] * 4
    assert result.mean_nfe == 9.0
    assert saved["seconds"].shape == (4,)
    assert '"seed": 3' in str(saved["settings"])
    assert not shard_path(tmp_path, 0, 1).with_suffix(".parts").exists()


def test_png_files_match_npz_grey_and_rgb(sde: VESDE, tmp_path: Path) -> None:
    for channels, mode in [(1, "L"), (3, "RGB")]:
        out_dir = tmp_path / mode
        result = run_shard(
            gaussian_score(sde, channels), sde, out_dir, shape=(channels, 4, 4), png=True
        )
        images = load_npz(result.path)["images"]
        files = sorted((out_dir / "png").iterdir())
        assert [f.name for f in files] == [png_name("pc", 3, i) for i in range(7)]
        with Image.open(out_dir / "png" / "pc-seed3-000005.png") as png:
            assert png.mode == mode
            assert png.size == (4, 4)
            pixels = np.asarray(png).reshape(4, 4, channels).transpose(2, 0, 1)
        np.testing.assert_array_equal(pixels, images[5])


def test_png_rerun_removes_stale_files(sde: VESDE, tmp_path: Path) -> None:
    png_dir = tmp_path / "png"
    run_shard(gaussian_score(sde), sde, tmp_path, n_samples=7, png=True)
    png_dir.joinpath("notes.txt").write_text("kept")
    png_dir.joinpath("ode-seed3-000006.png").write_bytes(b"another sampler")
    png_dir.joinpath("pc-seed9-000000.png").write_bytes(b"an earlier seed")

    # Shard 0 of 2 covers samples 0..1. Samples 2..3 belong to shard 1 of the new run, whose
    # job overwrites them, so only the names that no shard of the new run writes go.
    result = run_shard(gaussian_score(sde), sde, tmp_path, n_samples=4, n_shards=2, png=True)

    assert result.indices.tolist() == [0, 1]
    names = sorted(path.name for path in png_dir.iterdir())
    expected = [png_name("pc", 3, i) for i in range(4)]
    assert names == sorted([*expected, "notes.txt", "ode-seed3-000006.png"])
    images = load_npz(result.path)["images"]
    with Image.open(png_dir / png_name("pc", 3, 1)) as png:
        np.testing.assert_array_equal(np.asarray(png)[None], images[1])


def test_png_rejects_two_channels(sde: VESDE, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="png=True needs 1 or 3 channels"):
        run_shard(gaussian_score(sde), sde, tmp_path, shape=(2, 4, 4), png=True)


def test_unet_models_sample_and_fingerprint(sde: VESDE, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = SmallUNet(1, base_width=8, channel_mult=(1,), groups=4)
    fingerprints = []
    for variant in ("usbm", "csbm"):
        model = build_score_model(variant, net, sde, form="image").eval()
        result = run_shard(model, sde, tmp_path / variant, sampler_options={"n_levels": 3})
        saved = load_npz(result.path)
        assert saved["images"].shape == (7, *SHAPE)
        assert saved["nfe"].tolist() == [7] * 4
        fingerprints.append(json.loads(str(saved["settings"]))["model"])
    assert "unhashed" not in fingerprints
    assert fingerprints[0] != fingerprints[1]
    with torch.no_grad():
        net.conv_in.bias.add_(1e-3)
    assert model_fingerprint(model) != fingerprints[1]
    assert fingerprints[0] != fingerprints[1]


def test_resume_skips_saved_batches(sde: VESDE, tmp_path: Path) -> None:
    options = {"n_levels": 5, "corrector_steps": 1}
    per_batch = 5 * 2 + 1
    reference = run_shard(gaussian_score(sde), sde, tmp_path / "reference", sampler_options=options)

    # Fail in the third batch, after two batches were saved.
    killed = CountingCalls(gaussian_score(sde), fail_after=2 * per_batch + 3)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_shard(killed, sde, tmp_path / "resumed", sampler_options=options)
    parts = sorted((tmp_path / "resumed" / "shard-0000-of-0001.parts").iterdir())
    assert [p.name for p in parts] == ["batch-000000.npz", "batch-000001.npz"]

    rerun = CountingCalls(gaussian_score(sde))
    result = run_shard(rerun, sde, tmp_path / "resumed", sampler_options=options)
    assert result.resumed_batches == 2
    assert rerun.calls == 2 * per_batch
    np.testing.assert_array_equal(
        load_npz(result.path)["images"], load_npz(reference.path)["images"]
    )
    assert result.nfe.tolist() == [per_batch] * 4


def test_resume_ignores_batches_of_other_settings(sde: VESDE, tmp_path: Path) -> None:
    killed = CountingCalls(gaussian_score(sde), fail_after=2 * 13 + 1)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_shard(killed, sde, tmp_path, sampler_options={"n_levels": 6})
    rerun = CountingCalls(gaussian_score(sde))
    result = run_shard(rerun, sde, tmp_path, sampler_options={"n_levels": 6, "snr": 0.2})
    assert result.resumed_batches == 0
    assert rerun.calls == 4 * 13


def test_resume_resamples_unreadable_batches(sde: VESDE, tmp_path: Path) -> None:
    parts_dir = shard_path(tmp_path, 0, 1).with_suffix(".parts")
    parts_dir.mkdir(parents=True)
    (parts_dir / "batch-000000.npz").write_bytes(b"")
    (parts_dir / "batch-000001.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    rerun = CountingCalls(gaussian_score(sde))
    result = run_shard(rerun, sde, tmp_path)
    assert result.resumed_batches == 0
    assert rerun.calls == 4 * 13


def test_merge_reports_missing_indices(sde: VESDE, tmp_path: Path) -> None:
    shards = [run_shard(gaussian_score(sde), sde, tmp_path, shard=k, n_shards=3) for k in (0, 2)]
    with pytest.raises(ValueError, match=r"missing sample 2 index\(es\): 4, 5"):
        merge_shards([s.path for s in shards], tmp_path / "merged.npz", n_samples=7)
    assert not (tmp_path / "merged.npz").exists()


def test_merge_reports_duplicate_indices(sde: VESDE, tmp_path: Path) -> None:
    shards = [run_shard(gaussian_score(sde), sde, tmp_path, shard=k, n_shards=2) for k in (0, 1)]
    paths = [shards[0].path, shards[1].path, shards[1].path]
    with pytest.raises(ValueError, match="duplicate sample 3 index") as error:
        merge_shards(paths, tmp_path / "merged.npz", n_samples=7)
    assert "shard-0001-of-0002.npz" in str(error.value)


def test_merge_rejects_mixed_settings(sde: VESDE, tmp_path: Path) -> None:
    first = run_shard(gaussian_score(sde), sde, tmp_path / "a", shard=0, n_shards=2)
    second = run_shard(gaussian_score(sde), sde, tmp_path / "b", shard=1, n_shards=2, seed=4)
    with pytest.raises(ValueError, match=r"differ from .* in \['seed'\]") as error:
        merge_shards([first.path, second.path], tmp_path / "merged.npz", n_samples=7)
    assert str(second.path) in str(error.value)


def test_merge_rejects_wrong_sample_count(sde: VESDE, tmp_path: Path) -> None:
    result = run_shard(gaussian_score(sde), sde, tmp_path)
    with pytest.raises(ValueError, match="n_samples=8 but shard"):
        merge_shards([result.path], tmp_path / "merged.npz", n_samples=8)


def test_merge_writes_sorted_images_and_nfe_stats(sde: VESDE, tmp_path: Path) -> None:
    shards = [run_shard(gaussian_score(sde), sde, tmp_path, shard=k, n_shards=2) for k in (1, 0)]
    merged = merge_shards([s.path for s in shards], tmp_path / "merged.npz", n_samples=7)
    saved = load_npz(merged.path)
    assert saved["indices"].tolist() == list(range(7))
    assert saved["batch_ids"].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(saved["images"][4:], load_npz(shards[0].path)["images"])
    assert merged.nfe_mean == 6 * 2 + 1
    assert merged.nfe_std == 0.0
    assert float(saved["nfe_mean"]) == merged.nfe_mean
    assert merged.settings["sampler"] == "pc"


class DivergingScore:
    """A score that turns NaN for the samples of the first image in each batch."""

    def __init__(self, score_fn: GaussianImageScore) -> None:
        self.score_fn = score_fn

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        score = self.score_fn(x, t).clone()
        score[0] = float("nan")
        return score


def test_nonfinite_samples_flagged(tmp_path: Path, sde: VESDE) -> None:
    healthy = run_shard(gaussian_score(sde), sde, tmp_path / "healthy")
    assert load_npz(healthy.path)["finite"].all()
    result = run_shard(DivergingScore(gaussian_score(sde)), sde, tmp_path / "shards")
    shard = load_npz(result.path)
    # The corrector's step size uses batch-mean norms, so one NaN score spoils its batch.
    assert shard["finite"].shape == (7,)
    assert not shard["finite"].any()
    assert (shard["images"] == 0).all()
    merged = merge_shards([result.path], tmp_path / "merged.npz", n_samples=7)
    assert not load_npz(merged.path)["finite"].any()


def test_merge_names_truncated_shard(sde: VESDE, tmp_path: Path) -> None:
    shards = [run_shard(gaussian_score(sde), sde, tmp_path, shard=k, n_shards=2) for k in (0, 1)]
    data = shards[1].path.read_bytes()
    shards[1].path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="corrupt or incomplete") as error:
        merge_shards([s.path for s in shards], tmp_path / "merged.npz", n_samples=7)
    assert str(shards[1].path) in str(error.value)
    assert "delete it and rerun its sample-images job" in str(error.value)
    assert not (tmp_path / "merged.npz").exists()


def test_merge_rejects_shard_without_flags(tmp_path: Path, sde: VESDE) -> None:
    result = run_shard(gaussian_score(sde), sde, tmp_path / "shards")
    arrays = load_npz(result.path)
    del arrays["finite"]
    np.savez(result.path, **arrays)
    with pytest.raises(ValueError, match=r"lacks the arrays \['finite'\]"):
        merge_shards([result.path], tmp_path / "merged.npz", n_samples=7)
