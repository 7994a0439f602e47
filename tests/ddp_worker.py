"""Worker that tests/test_ddp.py launches under torchrun, and the small image runs it trains.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT
trains the csbm and qcsbm variants for a few float64 steps on in-memory images into
OUT/<variant>, and writes OUT/groups-rank<r>.json: the identity of the process group
after each run. test_train_images.py imports `fake_training_images` and `small_config`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

import qcsbm_bench.train_images as train_images
from qcsbm_bench.data.images import ImageData

DATASET = "fake"
DDP_VARIANTS = ("csbm", "qcsbm")


def fake_training_images(
    count: int = 32, channels: int = 1, resolution: int = 8, hflip: bool = True
) -> ImageData:
    """Return a seeded in-memory training split of random uint8 images (count, C, H, W)."""
    rng = np.random.default_rng(1234)
    images = rng.integers(0, 256, (count, channels, resolution, resolution), dtype=np.uint8)
    meta = {"dataset": DATASET, "channels": channels, "resolution": resolution, "hflip": hflip}
    return ImageData(
        images=images, labels=np.zeros(count, dtype=np.int64), meta=meta, split="train"
    )


def small_config(**train_overrides: Any) -> dict[str, Any]:
    """Return an image-run config for a few float64 steps of the small U-Net on the CPU."""
    train = {
        "batch_size": 4,
        "lr": 2e-4,
        "warmup": 3,
        "grad_clip": 1.0,
        "ema_decay": 0.9,
        "steps": 6,
        "lambda_qc": 1e-4,
        "qc": {"estimator": "hutchinson-vjp", "probe": "rademacher", "n_probes": 1},
        "dsm": "half-sum",
        "log_every": 2,
        "checkpoint_every": 3,
        "finetune": {"qcsbm": True, "csbm": False},
        "finetune_steps": 2,
    }
    train.update(train_overrides)
    return {
        "sde": {"kind": "ve", "sigma_min": 0.01, "sigma_max": 50.0, "t_min": 1e-5},
        "model": {"arch": "unet"},
        "dtype": "float64",
        "device": "cpu",
        "train": train,
    }


def main(out_dir: Path) -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    data = fake_training_images()
    train_images.load_training_images = lambda _data_dir: data  # type: ignore[assignment]
    group_ids = []
    for variant in DDP_VARIANTS:
        train_images.train_image_run(
            small_config(), DATASET, variant, 0, out_dir / "data", out_dir / variant, progress=False
        )
        # The first run creates the process group and the second must reuse it: creating it
        # again under torchrun can hang (see distributed.init_distributed).
        group_ids.append(id(dist.group.WORLD) if dist.is_initialized() else None)
    (out_dir / f"groups-rank{dist.get_rank()}.json").write_text(json.dumps(group_ids))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
