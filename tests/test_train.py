"""Training runs: outputs, statistics and resuming a killed run from its last state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import qcsbm_bench.train as train_module
from qcsbm_bench.artifacts import load_checkpoint
from qcsbm_bench.config import validate_config
from qcsbm_bench.data.toy2d import prepare_toy_dataset

CONFIG = Path(__file__).resolve().parents[1] / "workflow" / "config" / "smoke.yaml"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[dict, Path]:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["train"].update(batch_size=64, iterations={"8gaussians": 40}, checkpoint_every=20)
    raw["train"]["log_every"] = 10
    raw["datasets"] = ["8gaussians"]
    raw["model"]["hidden"] = [8, 16]
    config = validate_config(raw)
    data = tmp_path / "8gaussians.npz"
    prepare_toy_dataset("8gaussians", 500, 100, 0, data)
    return config, data


def test_train_writes_outputs(setup: tuple[dict, Path], tmp_path: Path) -> None:
    config, data = setup
    out = tmp_path / "run"
    train_module.train_run(config, "8gaussians", "qcsbm", 0, data, out)
    rows = [json.loads(line) for line in (out / "train_stats.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 10, 20, 30, 39]
    assert all(row["qc"] is not None and row["qc"] >= 0 for row in rows)
    assert all(row["wall_seconds"] >= 0 for row in rows)
    assert json.loads((out / "run.json").read_text())["lambda_qc"] == 0.1
    assert not (out / train_module.STATE_FILE).exists()
    state = load_checkpoint(out / train_module.CHECKPOINT_FILE)
    assert state["step"] == 40


def test_loader_rejects_checkpoint_of_other_run(setup: tuple[dict, Path], tmp_path: Path) -> None:
    config, data = setup
    checkpoint = tmp_path / "run" / train_module.CHECKPOINT_FILE
    train_module.train_run(config, "8gaussians", "usbm", 0, data, checkpoint.parent)
    assert load_checkpoint(checkpoint)["seed"] == 0
    model = train_module.load_toy_model(config, "usbm", checkpoint, "8gaussians", 0)
    assert not model.training

    cases = [
        (("usbm", "spirals", 0), "dataset: '8gaussians' in the checkpoint, 'spirals' expected"),
        (("usbm", "8gaussians", 3), "seed: 0 in the checkpoint, 3 expected"),
        (("qcsbm", "8gaussians", 0), "variant: 'usbm' in the checkpoint, 'qcsbm' expected"),
    ]
    for (variant, dataset, seed), message in cases:
        with pytest.raises(ValueError, match=message):
            train_module.load_toy_model(config, variant, checkpoint, dataset, seed)


def test_usbm_has_no_penalty(setup: tuple[dict, Path], tmp_path: Path) -> None:
    config, data = setup
    out = tmp_path / "run"
    train_module.train_run(config, "8gaussians", "usbm", 0, data, out)
    rows = [json.loads(line) for line in (out / "train_stats.jsonl").read_text().splitlines()]
    assert all(row["qc"] is None for row in rows)


def kill_training_at_step_30(
    config: dict, data: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run qcsbm training into `out` and interrupt it at step 30, as a killed job would be."""
    original_loss = train_module.training_loss
    calls = {"count": 0}

    def failing_loss(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["count"] += 1
        if calls["count"] == 31:
            raise KeyboardInterrupt("simulated kill at step 30")
        return original_loss(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "training_loss", failing_loss)
        with pytest.raises(KeyboardInterrupt):
            train_module.train_run(config, "8gaussians", "qcsbm", 0, data, out)


def test_killed_run_resumes_identically(
    setup: tuple[dict, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data = setup
    reference = tmp_path / "reference"
    train_module.train_run(config, "8gaussians", "qcsbm", 0, data, reference)

    killed = tmp_path / "killed"
    kill_training_at_step_30(config, data, killed, monkeypatch)
    assert load_checkpoint(killed / train_module.STATE_FILE)["step"] == 20
    assert not (killed / train_module.CHECKPOINT_FILE).exists()

    train_module.train_run(config, "8gaussians", "qcsbm", 0, data, killed)
    expected = load_checkpoint(reference / train_module.CHECKPOINT_FILE)["model"]
    resumed = load_checkpoint(killed / train_module.CHECKPOINT_FILE)["model"]
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    assert json.loads((killed / "run.json").read_text())["resumed_from_step"] == 20

    def steps(run: Path) -> list[int]:
        lines = (run / "train_stats.jsonl").read_text().splitlines()
        return [json.loads(line)["step"] for line in lines]

    assert steps(killed) == steps(reference)


def test_state_from_other_settings_is_ignored(
    setup: tuple[dict, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data = setup
    out = tmp_path / "run"
    kill_training_at_step_30(config, data, out, monkeypatch)

    changed = {**config, "train": {**config["train"], "lr": config["train"]["lr"] / 2}}
    train_module.train_run(changed, "8gaussians", "qcsbm", 0, data, out)
    assert json.loads((out / "run.json").read_text())["resumed_from_step"] == 0


def test_state_resumes_after_cadence_change(
    setup: tuple[dict, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data = setup
    out = tmp_path / "run"
    kill_training_at_step_30(config, data, out, monkeypatch)

    cadence = {"log_every": 5, "checkpoint_every": 10}
    changed = {**config, "train": {**config["train"], **cadence}}
    train_module.train_run(changed, "8gaussians", "qcsbm", 0, data, out)
    assert json.loads((out / "run.json").read_text())["resumed_from_step"] == 20
