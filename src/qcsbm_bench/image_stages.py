"""CLI stages of the image DAG up to the samples: prep-images, train-images, sample-images and
merge-samples. Each Snakemake rule of workflow/rules/image_*.smk calls one of them.

Every stage reads the resolved config (results/<name>/config.yaml) and resolves the
per-dataset settings through qcsbm_bench.image_config, so a stage run by hand with the same
arguments does exactly what the rule does.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qcsbm_bench.config import IMAGE_DATASETS, SAMPLER_NAMES, ConfigError, load_config
from qcsbm_bench.image_config import (
    finetune_steps,
    finetuned_from_usbm,
    model_settings,
    n_samples_for,
    training_steps,
)
from qcsbm_bench.stage_settings import stage_view

logger = logging.getLogger(__name__)

VARIANT_NAMES = ("csbm", "usbm", "qcsbm", "usbm-ft")


def load_image_config(
    path: Path,
    stage: str,
    dataset: str | None = None,
    *,
    variant: str | None = None,
    sampler: str | None = None,
) -> dict[str, Any]:
    """Load a resolved config, check that it drives the image DAG, and return a stage's view.

    The view contains the keys that the stage's jobs are rerun for (see stage_settings), with
    per-dataset settings reduced to the dataset's entries.
    """
    config = load_config(path)
    if config.get("kind") != "images":
        raise ConfigError(
            f"{path} is a {config.get('kind', 'toy')} config; the image stages need one with "
            "`kind: images` (e.g. workflow/config/images-cpu.yaml)"
        )
    if str(config["device"]).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"{path} sets device: {config['device']}, but torch finds no CUDA GPU here; "
                "run on a GPU machine or set device: cpu (e.g. --config device=cpu)"
            )
    return stage_view(config, stage, dataset, variant, sampler)


def configure_threads(config: Mapping[str, Any], stage: str, threads: int | None) -> None:
    """Set torch's thread count from --threads or the stage's resources, and fix TF32 off."""
    from qcsbm_bench.artifacts import set_deterministic

    set_deterministic(threads=threads or config["resources"][stage]["threads"])


def run_config(config: dict[str, Any], dataset: str, variant: str) -> dict[str, Any]:
    """Return the config of one training run with the per-dataset settings resolved.

    train.steps and train.finetune_steps become plain integers and model gets the dataset's
    entry of model_by_dataset, so the trainer never looks a dataset up.
    """
    resolved = copy.deepcopy(config)
    resolved["model"] = model_settings(config, dataset)
    # Stages that only load a trained checkpoint do not depend on the training settings, so
    # their stage view has no train.steps.
    if "steps" in config["train"]:
        resolved["train"]["steps"] = training_steps(config, dataset)
        resolved["train"]["finetune_steps"] = (
            finetune_steps(config, dataset) if finetuned_from_usbm(config, variant) else 0
        )
    return resolved


def add_run_arguments(parser: argparse.ArgumentParser, *, variant: bool = True) -> None:
    """Add --config, --threads, --dataset and (unless variant=False) --variant and --seed."""
    parser.add_argument("--config", type=Path, required=True, help="resolved config")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: the config's stage resources)"
    )
    parser.add_argument("--dataset", required=True, choices=IMAGE_DATASETS, help="image dataset")
    if variant:
        parser.add_argument("--variant", required=True, choices=VARIANT_NAMES)
        parser.add_argument("--seed", required=True, type=int, help="run seed")


# prep-images


def add_prep_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, variant=False)
    parser.add_argument("--out-dir", type=Path, required=True, help="prepared dataset folder")


def run_prep(args: argparse.Namespace) -> None:
    from qcsbm_bench.data.images import prepare_image_dataset

    config = load_image_config(args.config, "prep_data", args.dataset)
    data = config["data"]
    prepare_image_dataset(
        args.dataset,
        args.out_dir,
        root=Path(data["root"]),
        download=data["download"],
        seed=data["seed"],
        options=data.get(args.dataset),
    )


# train-images


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--init-checkpoint", type=Path, help="usbm checkpoint.pt to fine-tune from")
    parser.add_argument("--out-dir", type=Path, required=True, help="run folder")


def torchrun_command(args: argparse.Namespace, processes: int) -> list[str]:
    """Return the torchrun command that runs this train-images call in `processes` processes."""
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", "--nproc-per-node", str(processes),
        "-m", "qcsbm_bench.cli", "train-images",
        "--config", str(args.config),
        "--dataset", args.dataset, "--variant", args.variant, "--seed", str(args.seed),
        "--data-dir", str(args.data_dir), "--out-dir", str(args.out_dir),
    ]  # fmt: skip
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if args.init_checkpoint is not None:
        command += ["--init-checkpoint", str(args.init_checkpoint)]
    return command


def run_train(args: argparse.Namespace) -> int:
    from qcsbm_bench.train_images import train_image_run

    config = load_image_config(args.config, "train", args.dataset, variant=args.variant)
    if finetuned_from_usbm(config, args.variant) and args.init_checkpoint is None:
        raise ConfigError(
            f"train.finetune.{args.variant} is true, so --init-checkpoint must name the usbm "
            "run's checkpoint.pt"
        )
    processes = config["train"]["processes"]
    if processes > 1 and "WORLD_SIZE" not in os.environ:
        # The job reads train.processes from the config at run time rather than from its
        # command line, so changing it does not make Snakemake rerun finished training.
        command = torchrun_command(args, processes)
        logger.info("starting %d training processes: %s", processes, " ".join(command))
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            logger.error("torchrun with %d processes failed with exit code %d", processes, status)
        return status

    configure_threads(config, "train", args.threads)
    train_image_run(
        run_config(config, args.dataset, args.variant),
        args.dataset,
        args.variant,
        args.seed,
        args.data_dir,
        args.out_dir,
        init_checkpoint=args.init_checkpoint,
        progress=config["progress"],
    )
    return 0


# sample-images


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--sampler", required=True, choices=SAMPLER_NAMES)
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt")
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--shard", type=int, default=0, help="index of this shard, from 0")
    parser.add_argument("--shards", type=int, default=1, help="number of shards")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder of the shard files")


def run_sample(args: argparse.Namespace) -> None:
    from qcsbm_bench.artifacts import DTYPES, derive_seed
    from qcsbm_bench.data.images import load_image_dataset
    from qcsbm_bench.image_sampling import sample_shard
    from qcsbm_bench.train_images import load_image_model

    config = load_image_config(args.config, "sample", args.dataset, sampler=args.sampler)
    configure_threads(config, "sample", args.threads)
    meta = load_image_dataset(args.data_dir, "test", verify=False).meta
    shape = (meta["channels"], meta["resolution"], meta["resolution"])
    model = load_image_model(
        run_config(config, args.dataset, args.variant),
        args.variant,
        args.checkpoint,
        weights="ema",
        channels=shape[0],
        resolution=shape[1],
        dataset=args.dataset,
        seed=args.seed,
    )
    sample = config["sample"]
    options = dict(sample[args.sampler])
    options["t_min"] = sample["t_min"]
    sample_shard(
        model,
        model.sde,
        sampler=args.sampler,
        n_samples=n_samples_for(config, args.dataset),
        batch_size=sample["batch_size"],
        shard=args.shard,
        n_shards=args.shards,
        seed=derive_seed(args.seed, args.dataset, args.variant, "sample"),
        shape=shape,
        sampler_options=options,
        out_dir=args.out_dir,
        png=sample["png"],
        device=config["device"],
        dtype=DTYPES[config["dtype"]],
        progress=config["progress"],
    )


# merge-samples


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=Path, nargs="+", required=True, help="shard .npz files")
    parser.add_argument("--n-samples", type=int, required=True, help="expected sample count")
    parser.add_argument("--out", type=Path, required=True, help="merged samples .npz")


def run_merge(args: argparse.Namespace) -> None:
    from qcsbm_bench.image_merge import merge_shards

    merge_shards(args.shards, args.out, n_samples=args.n_samples)


COMMANDS = {
    "prep-images": ("Prepare one image dataset as verified arrays.", add_prep_arguments, run_prep),
    "train-images": (
        "Train one image run (torchrun-aware).",
        add_train_arguments,
        run_train,
    ),
    "sample-images": (
        "Draw one shard of samples from a trained image run.",
        add_sample_arguments,
        run_sample,
    ),
    "merge-samples": (
        "Merge sample shards into one file, checking that none is missing.",
        add_merge_arguments,
        run_merge,
    ),
}
