"""Image training: schedule, clipping, EMA, resuming, fine-tuning and checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ConvField
from ddp_worker import DATASET, fake_training_images, small_config
from torch import nn

import qcsbm_bench.train_images as train_images
from qcsbm_bench.artifacts import load_checkpoint, save_checkpoint
from qcsbm_bench.distributed import DistributedContext, rank_slice, rank_training_loss
from qcsbm_bench.ema import ExponentialMovingAverage
from qcsbm_bench.losses import training_loss
from qcsbm_bench.regulariser import QCConfig
from qcsbm_bench.scores import build_score_model
from qcsbm_bench.sde import VESDE


@pytest.fixture
def images(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Serve an in-memory training split instead of a prepared folder."""
    data = fake_training_images()
    monkeypatch.setattr(train_images, "load_training_images", lambda _data_dir: data)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return data


def train(config: dict, variant: str, out: Path, **kwargs: Any) -> dict:
    return train_images.train_image_run(
        config, DATASET, variant, 0, out.parent, out, progress=False, **kwargs
    )


def assert_same_tensors(actual: dict, expected: dict, label: str) -> None:
    assert actual.keys() == expected.keys(), label
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=f"{label} {name}")


def kill_at_step(
    config: dict, variant: str, out: Path, step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run training into `out` and interrupt it at `step`, as a killed job would be."""
    original_loss = train_images.rank_training_loss
    calls = {"count": 0}

    def failing_loss(*args: Any, **kwargs: Any) -> Any:
        calls["count"] += 1
        if calls["count"] == step + 1:
            raise KeyboardInterrupt(f"simulated kill at step {step}")
        return original_loss(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train_images, "rank_training_loss", failing_loss)
        with pytest.raises(KeyboardInterrupt):
            train(config, variant, out)


def stats_steps(run: Path) -> list[int]:
    lines = (run / "train_stats.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


# Learning rate, clipping and EMA


def test_warmup_lr_values() -> None:
    assert train_images.warmup_lr(2e-4, 1, 5000) == pytest.approx(2e-4 / 5000, rel=1e-15)
    assert train_images.warmup_lr(2e-4, 2500, 5000) == pytest.approx(1e-4, rel=1e-15)
    assert train_images.warmup_lr(2e-4, 5000, 5000) == 2e-4
    assert train_images.warmup_lr(2e-4, 600_001, 5000) == 2e-4
    assert train_images.warmup_lr(2e-4, 1, 0) == 2e-4
    with pytest.raises(ValueError, match="from 1"):
        train_images.warmup_lr(2e-4, 0, 5000)


@pytest.mark.parametrize(("scale", "clipped"), [(10.0, True), (0.5, False)])
def test_apply_update_clips_norm(scale: float, clipped: bool) -> None:
    layer = nn.Linear(3, 2)
    before = [p.detach().clone() for p in layer.parameters()]
    gradients = [torch.randn_like(p) for p in layer.parameters()]
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in gradients))
    for parameter, gradient in zip(layer.parameters(), gradients, strict=True):
        parameter.grad = gradient * (scale / norm)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)

    pre_clip = train_images.apply_update(layer.parameters(), optimizer, 0.1, grad_clip=1.0)

    assert float(pre_clip) == pytest.approx(scale, rel=1e-12)
    assert optimizer.param_groups[0]["lr"] == 0.1
    post_clip = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in layer.parameters()))
    assert post_clip == pytest.approx(1.0 if clipped else scale, rel=1e-6)
    # Plain SGD moves each weight by -lr * (clipped gradient).
    for old, parameter in zip(before, layer.parameters(), strict=True):
        torch.testing.assert_close(parameter.detach(), old - 0.1 * parameter.grad)


def test_ema_closed_form() -> None:
    model = nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
    ema = ExponentialMovingAverage(model, decay=0.9)
    start = ema.state_dict()["weight"].clone()
    target = torch.tensor([4.0, 0.0, -1.0])
    with torch.no_grad():
        model.weight.copy_(target)
        model.running_mean.copy_(torch.tensor([7.0, 8.0, 9.0]))
    for _ in range(5):
        ema.update(model)

    expected = target + 0.9**5 * (start - target)
    torch.testing.assert_close(ema.state_dict()["weight"], expected, rtol=1e-14, atol=1e-14)
    # Buffers are copied, not averaged.
    torch.testing.assert_close(ema.state_dict()["running_mean"], model.running_mean)


def test_ema_rejects_bad_decay() -> None:
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(nn.Linear(2, 2), decay=1.0)


# Per-rank loss


def conv_score_model(variant: str) -> Any:
    sde = VESDE(0.01, 50.0, t_min=1e-5)
    return build_score_model(variant, ConvField(1, "swish", seed=3), sde, form="image")


QC_CASES = [
    ("usbm", 0.0, QCConfig()),
    ("csbm", 0.0, QCConfig()),
    ("qcsbm", 1e-4, QCConfig("hutchinson-vjp", "rademacher", 1)),
    ("qcsbm", 1e-4, QCConfig("hutchinson-vjp", "gaussian", 2)),
    ("qcsbm", 1e-4, QCConfig("hutchinson-jvp", "rademacher", 1)),
    ("qcsbm", 1e-4, QCConfig("exact")),
]


@pytest.mark.parametrize(("variant", "lambda_qc", "qc_config"), QC_CASES)
def test_rank_loss_matches_training_loss(
    variant: str, lambda_qc: float, qc_config: QCConfig
) -> None:
    model = conv_score_model(variant).train()
    x0 = torch.rand(4, 1, 4, 4)
    expected = training_loss(
        model, x0, lambda_qc, qc_config, "half-sum", torch.Generator().manual_seed(5)
    )
    actual = rank_training_loss(
        model, x0, lambda_qc, qc_config, "half-sum", torch.Generator().manual_seed(5), slice(0, 4)
    )
    assert actual.as_floats() == expected.as_floats()


@pytest.mark.parametrize(("variant", "lambda_qc", "qc_config"), QC_CASES[1:3])
def test_rank_losses_average_to_global(variant: str, lambda_qc: float, qc_config: QCConfig) -> None:
    model = conv_score_model(variant).train()
    x0 = torch.rand(4, 1, 4, 4)

    def loss(rows: slice) -> float:
        generator = torch.Generator().manual_seed(5)
        parts = rank_training_loss(model, x0, lambda_qc, qc_config, "sum", generator, rows)
        return float(parts.total.detach())

    halves = (loss(slice(0, 2)) + loss(slice(2, 4))) / 2
    assert halves == pytest.approx(loss(slice(0, 4)), rel=1e-12)


def test_rank_slice_rejects_uneven_batch() -> None:
    context = DistributedContext(world_size=3, rank=1, local_rank=1, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        rank_slice(128, context)
    assert rank_slice(6, context) == slice(2, 4)


# Whole runs


def test_run_writes_outputs(images: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train(small_config(), "qcsbm", out)

    assert stats_steps(out) == [0, 2, 4, 5]
    rows = [json.loads(line) for line in (out / "train_stats.jsonl").read_text().splitlines()]
    assert rows[0]["lr"] == pytest.approx(2e-4 / 3)
    assert rows[-1]["lr"] == 2e-4
    for row in rows:
        assert row.keys() >= {"step", "loss", "dsm", "qc", "grad_norm", "lr", "seconds"}
        assert row["grad_norm"] > 0
    assert not (out / train_images.STATE_FILE).exists()
    assert json.loads((out / "run.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["steps"] == 6
    assert summary["images_per_second"] > 0
    assert summary["peak_rss_bytes"] > 0


def test_checkpoint_loads_weights_only(images: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(small_config(), "usbm", out)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state.keys() >= {"model", "ema", "optimizer", "step", "variant", "config"}
    assert state["step"] == 6
    assert state["variant"] == "usbm"
    assert state["config"]["channels"] == 1
    assert state["config"]["model"] == {"arch": "unet"}

    differing = [
        name for name in state["model"] if not torch.equal(state["model"][name], state["ema"][name])
    ]
    assert differing, "raw and EMA weights are identical after training"

    for weights in ("raw", "ema"):
        model = train_images.load_image_model(
            small_config(), "usbm", out / "checkpoint.pt", weights
        )
        assert not model.training
        saved = state["model" if weights == "raw" else "ema"]
        assert_same_tensors(model.state_dict(), saved, weights)
    with pytest.raises(ValueError, match="variant: 'usbm' in the checkpoint, 'csbm' expected"):
        train_images.load_image_model(small_config(), "csbm", out / "checkpoint.pt")


def test_killed_run_resumes_identically(
    images: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(steps=8)
    reference = tmp_path / "reference"
    train(config, "qcsbm", reference)

    killed = tmp_path / "killed"
    kill_at_step(config, "qcsbm", killed, 7, monkeypatch)
    assert load_checkpoint(killed / train_images.STATE_FILE)["step"] == 6
    assert not (killed / "checkpoint.pt").exists()

    summary = train(config, "qcsbm", killed)
    assert summary["resumed_from_step"] == 6
    expected = load_checkpoint(reference / "checkpoint.pt")
    resumed = load_checkpoint(killed / "checkpoint.pt")
    for key in ("model", "ema"):
        assert_same_tensors(resumed[key], expected[key], key)
    assert resumed["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for index, slots in expected["optimizer"]["state"].items():
        assert_same_tensors(resumed["optimizer"]["state"][index], slots, f"adam {index}")
    assert stats_steps(killed) == stats_steps(reference)


def test_changed_settings_start_afresh(
    images: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Log and checkpoint cadence do not change the weights, so the state still resumes.
    resumed = tmp_path / "resumed"
    kill_at_step(small_config(), "usbm", resumed, 4, monkeypatch)
    summary = train(small_config(log_every=1, checkpoint_every=2), "usbm", resumed)
    assert summary["resumed_from_step"] == 3

    out = tmp_path / "run"
    kill_at_step(small_config(), "usbm", out, 4, monkeypatch)
    summary = train(small_config(lr=1e-4), "usbm", out)
    assert summary["resumed_from_step"] is None
    assert "differing: train.lr" in caplog.text
    fresh = tmp_path / "fresh"
    train(small_config(lr=1e-4), "usbm", fresh)
    for key in ("model", "ema"):
        assert_same_tensors(
            load_checkpoint(out / "checkpoint.pt")[key],
            load_checkpoint(fresh / "checkpoint.pt")[key],
            key,
        )


def test_changed_data_starts_afresh(
    images: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    images.meta["sha256"] = {"train.npy": "0" * 64}
    out = tmp_path / "run"
    kill_at_step(small_config(), "usbm", out, 4, monkeypatch)
    images.meta["sha256"] = {"train.npy": "1" * 64}
    summary = train(small_config(), "usbm", out)
    assert summary["resumed_from_step"] is None
    assert "differing: data_sha256" in caplog.text


# Fine-tuning


@pytest.fixture
def usbm_checkpoint(images: Any, tmp_path: Path) -> Path:
    out = tmp_path / "usbm"
    train(small_config(), "usbm", out)
    return out / "checkpoint.pt"


def test_finetune_starts_from_checkpoint(usbm_checkpoint: Path, tmp_path: Path) -> None:
    source = load_checkpoint(usbm_checkpoint)
    unchanged = tmp_path / "zero-steps"
    summary = train(
        small_config(finetune_steps=0), "qcsbm", unchanged, init_checkpoint=usbm_checkpoint
    )
    assert summary["init_step"] == 6
    assert summary["optimizer_from_init"] is True
    start = load_checkpoint(unchanged / "checkpoint.pt")
    assert start["step"] == 6
    assert_same_tensors(start["model"], source["model"], "raw")
    assert_same_tensors(start["ema"], source["ema"], "ema")

    finetuned = tmp_path / "finetuned"
    summary = train(small_config(), "qcsbm", finetuned, init_checkpoint=usbm_checkpoint)
    assert summary["steps"] == 8
    assert stats_steps(finetuned) == [6, 7]
    rows = [json.loads(line) for line in (finetuned / "train_stats.jsonl").read_text().splitlines()]
    assert all(row["lr"] == 2e-4 for row in rows), "fine-tuning restarted the warm-up"
    assert all(row["qc"] is not None for row in rows)


def test_usbm_control_trains_without_penalty(usbm_checkpoint: Path, tmp_path: Path) -> None:
    config = small_config()
    config["train"]["finetune"] = {**config["train"]["finetune"], "usbm-ft": True}
    assert config["train"]["lambda_qc"] > 0
    out = tmp_path / "usbm-ft"
    summary = train(config, "usbm-ft", out, init_checkpoint=usbm_checkpoint)
    assert summary["steps"] == 8
    assert stats_steps(out) == [6, 7]
    rows = [json.loads(line) for line in (out / "train_stats.jsonl").read_text().splitlines()]
    assert all(row["qc"] is None for row in rows)
    assert all(row["loss"] == row["dsm"] for row in rows)


def test_finetune_rejects_mismatched_network(
    usbm_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rgb = fake_training_images(channels=3)
    monkeypatch.setattr(train_images, "load_training_images", lambda _data_dir: rgb)
    with pytest.raises(ValueError, match="channels: 1 in the checkpoint, 3 now"):
        train(small_config(), "qcsbm", tmp_path / "rgb", init_checkpoint=usbm_checkpoint)

    monkeypatch.setattr(
        train_images, "load_training_images", lambda _data_dir: fake_training_images()
    )
    changed = {**small_config(), "sde": {**small_config()["sde"], "sigma_max": 20.0}}
    with pytest.raises(ValueError, match=r"sde\.sigma_max: 50\.0 in the checkpoint, 20\.0 now"):
        train(changed, "qcsbm", tmp_path / "sigma", init_checkpoint=usbm_checkpoint)


def test_loaded_model_must_match_run(usbm_checkpoint: Path) -> None:
    model = train_images.load_image_model(
        small_config(), "usbm", usbm_checkpoint, dataset=DATASET, seed=0
    )
    assert not model.training
    cases = [
        ({"dataset": "photos", "seed": 0}, "dataset: 'fake' in the checkpoint, 'photos' expected"),
        ({"dataset": DATASET, "seed": 1}, "seed: 0 in the checkpoint, 1 expected"),
    ]
    for run, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            train_images.load_image_model(small_config(), "usbm", usbm_checkpoint, **run)
        assert str(usbm_checkpoint) in str(error.value)


def test_finetune_rejects_other_run(usbm_checkpoint: Path, tmp_path: Path) -> None:
    source = load_checkpoint(usbm_checkpoint)
    csbm_checkpoint = tmp_path / "csbm.pt"
    save_checkpoint({**source, "variant": "csbm"}, csbm_checkpoint)
    unlabelled_checkpoint = tmp_path / "unlabelled.pt"
    save_checkpoint({k: v for k, v in source.items() if k != "seed"}, unlabelled_checkpoint)
    cases = [
        (DATASET, 1, usbm_checkpoint, "seed: 0 in the checkpoint, 1 expected"),
        ("photos", 0, usbm_checkpoint, "dataset: 'fake' in the checkpoint, 'photos' expected"),
        (DATASET, 0, csbm_checkpoint, "variant: 'csbm' in the checkpoint, 'usbm' expected"),
        (DATASET, 0, unlabelled_checkpoint, "seed: no entry in the checkpoint, 0 expected"),
    ]
    for dataset, seed, init, message in cases:
        out = tmp_path / f"{dataset}-{seed}-{init.stem}"
        with pytest.raises(ValueError, match=message) as error:
            train_images.train_image_run(
                small_config(), dataset, "qcsbm", seed, out.parent, out, init_checkpoint=init
            )
        assert f"fine-tuning init checkpoint {init}" in str(error.value)
        assert not (out / "checkpoint.pt").exists()


def test_finetune_needs_flag(usbm_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train\.finetune\.csbm is not true"):
        train(small_config(), "csbm", tmp_path / "csbm", init_checkpoint=usbm_checkpoint)


# NCSN++


def test_ncsnpp_dropout_run_resumes(
    images: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ncsnpp = pytest.importorskip("qcsbm_bench.networks.ncsnpp")
    if "tiny" not in ncsnpp.NCSNPP_PRESETS:
        pytest.skip("NCSN++ has no 'tiny' preset")
    # Dropout 0.1 draws from the global torch RNG, so the resumed run must restore it.
    config = {
        **small_config(steps=4),
        "model": {"arch": "ncsnpp", "preset": "tiny", "dropout": 0.1},
    }
    reference = tmp_path / "reference"
    train(config, "qcsbm", reference)
    killed = tmp_path / "killed"
    kill_at_step(config, "qcsbm", killed, 3, monkeypatch)
    train(config, "qcsbm", killed)

    expected = load_checkpoint(reference / "checkpoint.pt")
    resumed = load_checkpoint(killed / "checkpoint.pt")
    assert_same_tensors(resumed["model"], expected["model"], "raw")
    assert math.isfinite(json.loads((reference / "run.json").read_text())["wall_seconds"])
