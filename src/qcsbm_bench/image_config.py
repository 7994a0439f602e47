"""Cross-key checks and per-dataset lookups of the image benchmark configuration.

The schema (images.schema.yaml) checks each value alone. The checks here relate two values,
and the lookups resolve per-dataset settings (step counts, network settings, sample counts,
feature space), so that the Snakefile and the CLI read them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qcsbm_bench.config import OFFLINE_IMAGE_DATASETS, ConfigError, deep_merge


def steps_for(steps: Mapping[str, int], dataset: str) -> int | None:
    """Return the step count for a dataset from a mapping with an optional "default"."""
    if dataset in steps:
        return steps[dataset]
    return steps.get("default")


def training_steps(config: Mapping[str, Any], dataset: str) -> int:
    """Return the steps of a run trained from scratch on the dataset."""
    steps = steps_for(config["train"]["steps"], dataset)
    if steps is None:
        raise ConfigError(
            f"train.steps has no entry for dataset {dataset!r} and no 'default'; add one"
        )
    return steps


def finetune_steps(config: Mapping[str, Any], dataset: str) -> int:
    """Return the steps that fine-tuning adds to the usbm checkpoint on the dataset."""
    steps = steps_for(config["train"]["finetune_steps"], dataset)
    if steps is None:
        raise ConfigError(
            f"train.finetune_steps has no entry for dataset {dataset!r} and no 'default'; add one"
        )
    return steps


def finetuned_from_usbm(config: Mapping[str, Any], variant: str) -> bool:
    """Return True when the variant starts from the usbm run's final checkpoint."""
    return bool(config["train"]["finetune"].get(variant, False))


def model_settings(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Return config.model with the dataset's entry of config.model_by_dataset applied."""
    return deep_merge(config["model"], config["model_by_dataset"].get(dataset, {}))


def n_samples_for(config: Mapping[str, Any], dataset: str) -> int:
    """Return the number of samples drawn per run and sampler on the dataset."""
    sample = config["sample"]
    return sample["n_samples_by_dataset"].get(dataset, sample["n_samples"])


def feature_space(config: Mapping[str, Any], dataset: str) -> str:
    """Return "inception" or "classifier", the feature space of the dataset's Frechet distance."""
    features = config["evaluate"]["features"]
    if features != "auto":
        return features
    return "classifier" if dataset in OFFLINE_IMAGE_DATASETS else "inception"


def check_image_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError where two settings of a resolved image config contradict each other."""
    sde = config["sde"]
    if sde["sigma_min"] >= sde["sigma_max"]:
        raise ConfigError(
            f"sde.sigma_min ({sde['sigma_min']}) must be smaller than sde.sigma_max "
            f"({sde['sigma_max']})"
        )
    for dataset in config["datasets"]:
        training_steps(config, dataset)
        if any(finetuned_from_usbm(config, variant) for variant in config["variants"]):
            finetune_steps(config, dataset)

    train = config["train"]
    if train["batch_size"] % train["processes"] != 0:
        raise ConfigError(
            f"train.batch_size ({train['batch_size']}) must be divisible by train.processes "
            f"({train['processes']}), because each process draws an equal share of the batch"
        )

    sample = config["sample"]
    for dataset in config["datasets"]:
        n_batches = math.ceil(n_samples_for(config, dataset) / sample["batch_size"])
        if sample["shards"] > n_batches:
            raise ConfigError(
                f"sample.shards ({sample['shards']}) exceeds the {n_batches} sampling batches "
                f"of dataset {dataset!r}; lower sample.shards or raise the sample count"
            )

    k = config["evaluate"]["precision_recall"]["k"]
    for dataset in config["datasets"]:
        if n_samples_for(config, dataset) <= k:
            raise ConfigError(
                f"dataset {dataset!r} draws {n_samples_for(config, dataset)} samples, but "
                f"evaluate.precision_recall.k is {k}; draw more than k samples"
            )
    n_real = config["evaluate"]["precision_recall"]["n_real"]
    if n_real <= k:
        raise ConfigError(
            f"evaluate.precision_recall.n_real ({n_real}) must exceed k ({k}) so that every "
            "reference image has k neighbours"
        )
