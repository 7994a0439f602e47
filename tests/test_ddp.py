"""Data-parallel training under torchrun matches a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ddp_worker import DATASET, DDP_VARIANTS, fake_training_images, small_config

import qcsbm_bench.train_images as train_images
from qcsbm_bench.artifacts import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = WORKER.parents[1]
# Two processes sum the same per-sample gradients in another order. In float64, 6 steps of
# these runs agreed to 2e-14 absolute (6e-13 relative to a tensor's largest entry), and the
# tolerance leaves a wide margin above that.
RTOL = 1e-9
ATOL = 1e-12


# Launching torchrun and importing torch in two workers takes 10-60 s on a shared 2-core CPU.
@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(WORKER.parent), os.environ.get("PYTHONPATH")])
        ),
    }
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        str(tmp_path / "ddp"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for rank in (0, 1):
        group_ids = json.loads((tmp_path / "ddp" / f"groups-rank{rank}.json").read_text())
        assert len(group_ids) == len(DDP_VARIANTS)
        assert group_ids[0] is not None, f"rank {rank} left no process group after a run"
        assert len(set(group_ids)) == 1, f"rank {rank} created its process group again: {group_ids}"

    data = fake_training_images()
    monkeypatch.setattr(train_images, "load_training_images", lambda _data_dir: data)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for variant in DDP_VARIANTS:
        single = tmp_path / "single" / variant
        summary = train_images.train_image_run(
            small_config(), DATASET, variant, 0, tmp_path, single, progress=False
        )
        assert summary["world_size"] == 1

        expected = load_checkpoint(single / "checkpoint.pt")
        actual = load_checkpoint(tmp_path / "ddp" / variant / "checkpoint.pt")
        assert actual["step"] == expected["step"] == 6
        for weights in ("model", "ema"):
            for name, tensor in expected[weights].items():
                torch.testing.assert_close(
                    actual[weights][name], tensor, rtol=RTOL, atol=ATOL, msg=f"{variant} {name}"
                )
        ddp_summary = (tmp_path / "ddp" / variant / "run.json").read_text()
        assert '"world_size": 2' in ddp_summary


@pytest.mark.slow
def test_train_cli_starts_torchrun(tmp_path: Path) -> None:
    from qcsbm_bench.cli import main
    from qcsbm_bench.data.images import prepare_image_dataset

    data_dir = tmp_path / "data"
    prepare_image_dataset("digits", data_dir, root=None, download=False, seed=1, options={})
    config = yaml.safe_load((ROOT / "workflow/config/images-smoke.yaml").read_text())
    config["train"].update(processes=2, batch_size=4, steps={"default": 2})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    status = main(
        [
            "train-images", "--config", str(config_path), "--threads", "1",
            "--dataset", "digits", "--variant", "usbm", "--seed", "0",
            "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "run"),
        ]
    )  # fmt: skip
    assert status == 0
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["world_size"] == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
