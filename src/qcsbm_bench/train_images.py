"""Training of one (dataset, variant, seed) image run, optionally fine-tuned from a checkpoint.

The objective is mean_b[L_DSM + lambda sigma^2 L_QC] (see `losses`), where lambda is
train.lambda_qc for the qcsbm variant and 0 otherwise. Each optimiser step is Adam with a
linear learning-rate warm-up and gradient-norm clipping, followed by an update of the EMA
weights (`ema`). A resumable state is saved every train.checkpoint_every steps, so a killed
job continues where it stopped and ends with the same weights as an uninterrupted run.
Under torchrun the run is data-parallel (`distributed`), and only rank 0 writes files.

Each train_stats.jsonl row has step, loss, dsm, qc, qc_weighted (the dimensionless parts
of `losses.LossParts`, averaged over ranks), grad_norm (before clipping), lr, and seconds
(time spent in training steps so far, summed over resumed segments).

Config keys read: sde.{sigma_min, sigma_max, t_min}, model (passed to
`networks.build_image_net`), dtype, device, and train.{batch_size, lr, warmup, grad_clip,
ema_decay, steps, lambda_qc, qc, dsm, log_every, checkpoint_every, finetune,
finetune_steps}.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from qcsbm_bench import distributed
from qcsbm_bench.artifacts import (
    DTYPES,
    JsonlWriter,
    derive_seed,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    write_json,
)
from qcsbm_bench.data.images import ImageData, load_image_dataset, sample_batch
from qcsbm_bench.distributed import DistributedContext, rank_training_loss
from qcsbm_bench.ema import ExponentialMovingAverage
from qcsbm_bench.image_models import build_image_model, load_image_model, network_settings
from qcsbm_bench.losses import DSM_SCALES, LossParts
from qcsbm_bench.regulariser import QCConfig
from qcsbm_bench.scores import build_score_model
from qcsbm_bench.train import CHECKPOINT_FILE, PARTIAL_STATS_FILE, STATE_FILE, STATS_FILE
from qcsbm_bench.train_state import (
    ORIGIN_KEYS,
    TrainingState,
    final_checkpoint,
    run_settings,
    saved_settings_match,
    start_from_checkpoint,
    trim_stats,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ImageTrainSettings",
    "apply_update",
    "load_image_model",
    "train_image_run",
    "warmup_lr",
]


_REQUIRED_TRAIN_KEYS = (
    "batch_size",
    "lr",
    "warmup",
    "grad_clip",
    "ema_decay",
    "steps",
    "dsm",
    "log_every",
    "checkpoint_every",
)


@dataclass(frozen=True)
class ImageTrainSettings:
    """The train section of the config, checked once before any work starts."""

    batch_size: int
    lr: float
    warmup: int
    grad_clip: float
    ema_decay: float
    steps: int
    lambda_qc: float
    qc: QCConfig
    dsm: str
    log_every: int
    checkpoint_every: int
    finetune: Mapping[str, bool]
    finetune_steps: int

    @classmethod
    def from_config(cls, train_config: Mapping[str, Any], variant: str) -> ImageTrainSettings:
        """Read config["train"], raising ValueError on a missing key or an invalid value.

        Only the qcsbm variant reads lambda_qc and qc, so that its jobs alone depend on them
        (see stage_settings). The others get lambda_qc 0 and the default QCConfig.
        Fine-tuning settings are read only where the section contains them.
        """
        required = _REQUIRED_TRAIN_KEYS + (("lambda_qc", "qc") if variant == "qcsbm" else ())
        missing = [name for name in required if name not in train_config]
        if missing:
            raise ValueError(f"config train section is missing {missing}; add them")
        settings = cls(
            batch_size=int(train_config["batch_size"]),
            lr=float(train_config["lr"]),
            warmup=int(train_config["warmup"]),
            grad_clip=float(train_config["grad_clip"]),
            ema_decay=float(train_config["ema_decay"]),
            steps=int(train_config["steps"]),
            lambda_qc=float(train_config["lambda_qc"]) if variant == "qcsbm" else 0.0,
            qc=QCConfig(**train_config["qc"]) if variant == "qcsbm" else QCConfig(),
            dsm=str(train_config["dsm"]),
            log_every=int(train_config["log_every"]),
            checkpoint_every=int(train_config["checkpoint_every"]),
            finetune=dict(train_config["finetune"]) if "finetune" in train_config else {},
            finetune_steps=(
                int(train_config["finetune_steps"]) if "finetune_steps" in train_config else 0
            ),
        )
        positive = ("batch_size", "lr", "grad_clip", "steps", "log_every", "checkpoint_every")
        for name in positive:
            if getattr(settings, name) <= 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(settings, name)}")
        if settings.dsm not in DSM_SCALES:
            raise ValueError(
                f"train.dsm {settings.dsm!r} is not a DSM convention; use one of "
                f"{tuple(DSM_SCALES)}"
            )
        if settings.warmup < 0 or settings.finetune_steps < 0:
            raise ValueError(
                f"train.warmup ({settings.warmup}) and train.finetune_steps "
                f"({settings.finetune_steps}) must be non-negative"
            )
        return settings


def warmup_lr(base_lr: float, update: int, warmup: int) -> float:
    """Return the learning rate of the update-th optimiser step, lr * min(1, update / warmup).

    update counts from 1, so the first step already moves the weights. warmup = 0 disables
    the warm-up. Fine-tuning continues the step count, so it starts past the warm-up.
    """
    if update < 1:
        raise ValueError(f"update counts optimiser steps from 1, got {update}")
    if warmup == 0:
        return base_lr
    return base_lr * min(1.0, update / warmup)


def apply_update(
    parameters: Iterable[Tensor], optimizer: torch.optim.Optimizer, lr: float, grad_clip: float
) -> Tensor:
    """Set the learning rate, clip the gradients' global L2 norm to grad_clip and step.

    Returns the norm before clipping (a 0-dim tensor), which is what train_stats logs.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    grad_norm = torch.nn.utils.clip_grad_norm_(list(parameters), grad_clip)
    optimizer.step()
    return grad_norm


def load_training_images(data_dir: Path) -> ImageData:
    """Load the training split of a prepared folder: .images uint8 (N, C, H, W), .labels, .meta.

    .meta contains "channels", "resolution" and "hflip" (whether random horizontal flips apply).
    """
    return load_image_dataset(data_dir, "train")


def draw_image_batch(
    data: ImageData, batch_size: int, generator: torch.Generator, hflip: bool, dtype: torch.dtype
) -> Tensor:
    """Draw a batch of training images in [0, 1], shape (batch_size, C, H, W), on the CPU."""
    return sample_batch(data, batch_size, generator, hflip, dtype=dtype)


def _peak_memory(device: torch.device) -> dict[str, int | None]:
    """Return the peak GPU memory allocated by torch and the peak RSS of this process, in bytes."""
    gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    # Linux reports ru_maxrss in KiB.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_gpu_memory_bytes": gpu, "peak_rss_bytes": rss}


def train_image_run(
    config: Mapping[str, Any],
    dataset: str,
    variant: str,
    seed: int,
    data_dir: Path,
    out_dir: Path,
    *,
    init_checkpoint: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or fine-tune) one image run and return its summary, also written as run.json.

    Writes checkpoint.pt, train_stats.jsonl and run.json to out_dir (rank 0 only). Without
    init_checkpoint the run trains train.steps steps from scratch. With it, the run starts
    from that checkpoint's raw weights, EMA weights, step count and saved Adam state, and
    trains train.finetune_steps more steps. Under torchrun (WORLD_SIZE > 1) the run is
    data-parallel over the global batch train.batch_size.
    """
    settings = ImageTrainSettings.from_config(config["train"], variant)
    if init_checkpoint is not None and not settings.finetune.get(variant, False):
        raise ValueError(
            f"an init checkpoint was given for variant {variant!r}, but "
            f"train.finetune.{variant} is not true; set it to true to fine-tune, or train "
            "from scratch without init_checkpoint"
        )
    # Under torchrun the process group stays up after the run, for the process's lifetime
    # (see distributed.init_distributed).
    context = distributed.init_distributed(config["device"])
    return _train(
        config,
        settings,
        dataset,
        variant,
        seed,
        Path(data_dir),
        Path(out_dir),
        init_checkpoint,
        progress,
        context,
    )


def _train(
    config: Mapping[str, Any],
    settings: ImageTrainSettings,
    dataset: str,
    variant: str,
    seed: int,
    data_dir: Path,
    out_dir: Path,
    init_checkpoint: Path | None,
    progress: bool,
    context: DistributedContext,
) -> dict[str, Any]:
    rows = distributed.rank_slice(settings.batch_size, context)
    data = load_training_images(data_dir)
    channels, resolution = int(data.meta["channels"]), int(data.meta["resolution"])
    run = _build_training_state(config, settings, dataset, variant, seed, data, context)

    init_digest = None if init_checkpoint is None else file_sha256(init_checkpoint)
    fingerprint = run_settings(config, dataset, variant, seed, init_digest, data.meta.get("sha256"))
    state_path = out_dir / STATE_FILE
    resumed_from_step = None
    state = None
    if state_path.is_file():
        state = load_checkpoint(state_path, map_location=str(context.device))
        if not saved_settings_match(state, fingerprint, state_path):
            state = None
    if state is not None:
        run.restore(state)
        resumed_from_step = run.step
        logger.info("resuming %s/%s/seed-%d at step %d", dataset, variant, seed, run.step)
    elif init_checkpoint is not None:
        expected = network_settings(config, channels, resolution)
        from_init = start_from_checkpoint(
            run, init_checkpoint, expected, context.device, dataset=dataset, seed=seed
        )
        run.end_step = run.step + settings.finetune_steps
        run.origin = {
            "init_checkpoint": str(init_checkpoint),
            "init_step": run.step,
            "optimizer_from_init": from_init,
        }
    else:
        run.end_step = settings.steps

    partial_stats = out_dir / PARTIAL_STATS_FILE
    stats = None
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        resumed = resumed_from_step is not None
        if resumed and partial_stats.is_file():
            trim_stats(partial_stats, run.step)
        stats = JsonlWriter(partial_stats, append=resumed)
    if context.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(context.device)

    start_step = run.step
    started = time.perf_counter()
    bar = tqdm(
        range(start_step, run.end_step),
        desc=f"train {dataset}/{variant}/{seed}",
        disable=not (progress and context.is_main),
    )
    lambda_qc = settings.lambda_qc if variant == "qcsbm" else 0.0
    dtype = DTYPES[config["dtype"]]
    for step in bar:
        parts, grad_norm, lr = _train_step(run, settings, data, rows, lambda_qc, dtype)
        last = run.step == run.end_step
        if step % settings.log_every == 0 or last:
            row: dict[str, Any] = {"step": step, "grad_norm": float(grad_norm), "lr": lr}
            row.update(distributed.mean_over_ranks(parts.as_floats(), context))
            row["seconds"] = run.seconds
            if stats is not None:
                stats.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}")
        if run.step % settings.checkpoint_every == 0 and not last:
            state = run.resumable_state(fingerprint)
            if context.is_main:
                save_checkpoint(state, state_path)
    wall_seconds = time.perf_counter() - started

    trained = run.step - start_step
    summary: dict[str, Any] = {
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "steps": run.end_step,
        "steps_this_invocation": trained,
        "resumed_from_step": resumed_from_step,
        **{key: run.origin.get(key) for key in ORIGIN_KEYS},
        "global_batch_size": settings.batch_size,
        "world_size": context.world_size,
        "lambda_qc": lambda_qc,
        "qc": vars(settings.qc) if variant == "qcsbm" else None,
        "wall_seconds": wall_seconds,
        "train_seconds": run.seconds,
        "images_per_second": trained * settings.batch_size / wall_seconds if trained else None,
        **_peak_memory(context.device),
        "device": str(context.device),
        "dtype": config["dtype"],
        "torch": torch.__version__,
    }
    if stats is not None:
        stats.close()
        partial_stats.replace(out_dir / STATS_FILE)
        config_subset = {
            **network_settings(config, channels, resolution),
            "dtype": config["dtype"],
            "lambda_qc": lambda_qc,
            "ema_decay": settings.ema_decay,
        }
        final = final_checkpoint(run, variant, dataset, seed, config_subset)
        save_checkpoint(final, out_dir / CHECKPOINT_FILE)
        write_json(summary, out_dir / "run.json")
        state_path.unlink(missing_ok=True)
        logger.info("trained %s/%s/seed-%d to step %d", dataset, variant, seed, run.step)
    distributed.barrier(context)
    return summary


def _build_training_state(
    config: Mapping[str, Any],
    settings: ImageTrainSettings,
    dataset: str,
    variant: str,
    seed: int,
    data: ImageData,
    context: DistributedContext,
) -> TrainingState:
    """Build the model, its DDP-wrapped training view, EMA, Adam and the seeded generator."""
    channels, resolution = int(data.meta["channels"]), int(data.meta["resolution"])
    # Every rank seeds the same: identical initial weights and identical global-batch draws.
    generator = seed_everything(derive_seed(seed, dataset, variant, "train"))
    model_config = {**config, "device": str(context.device)}
    model = build_image_model(model_config, variant, channels, resolution).train()
    # Dropout draws from each process's global torch RNG, so every rank gets its own stream.
    torch.manual_seed(derive_seed(seed, dataset, variant, "dropout", context.rank))
    train_model = model
    if context.is_distributed:
        wrapped = distributed.wrap_network(model.net, context)
        train_model = build_score_model(variant, wrapped, model.sde, form="image").train()
    ema = ExponentialMovingAverage(model, settings.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    return TrainingState(model, train_model, ema, optimizer, generator, context)


def _train_step(
    run: TrainingState,
    settings: ImageTrainSettings,
    data: ImageData,
    rows: slice,
    lambda_qc: float,
    dtype: torch.dtype,
) -> tuple[LossParts, Tensor, float]:
    """Take one optimiser step and EMA update, and return the loss parts, pre-clip norm and lr."""
    started = time.perf_counter()
    hflip = bool(data.meta["hflip"])
    batch = draw_image_batch(data, settings.batch_size, run.generator, hflip, dtype)
    x0 = batch.to(run.context.device)
    parts = rank_training_loss(
        run.train_model, x0, lambda_qc, settings.qc, settings.dsm, run.generator, rows
    )
    run.optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    lr = warmup_lr(settings.lr, run.step + 1, settings.warmup)
    grad_norm = apply_update(run.model.parameters(), run.optimizer, lr, settings.grad_clip)
    run.ema.update(run.model)
    run.step += 1
    run.seconds += time.perf_counter() - started
    return parts, grad_norm, lr
