"""The config keys each DAG stage depends on, so a config change reruns only the jobs it affects.

Every job reads the whole resolved config, but Snakemake tracks, as the job's input, a
settings file with only the keys that its stage depends on (`stage_settings`), written only
when its content changes. A changed evaluation setting therefore reruns the evaluation jobs
and not training, and a new dataset or seed reruns nothing that exists.

The stage code reads its config through `stage_view`, which contains the same keys plus the
execution keys. Reading any other key logs a warning, because changing that key would not
rerun the job. With QCSBM_STRICT_STAGE_KEYS=1 in the environment (the tests set it) such a
read raises UntrackedKeyError, so a stage that starts to read a new key fails its tests until
the key is added to STAGE_KEYS.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qcsbm_bench.config import IMAGE_DATASETS, TOY_DATASETS, config_kind, write_config_if_changed

logger = logging.getLogger(__name__)

STRICT_ENVIRONMENT_VARIABLE = "QCSBM_STRICT_STAGE_KEYS"

# Keys that change where or how a job runs but not its results, so no job reruns when they
# change. Two of them need a reason. A resumed run ends bit for bit like an uninterrupted
# one, whatever train.checkpoint_every is. Any train.processes trains on the same global
# batches, so without dropout the result agrees within float tolerance. With dropout each
# rank draws its own masks, so the weights differ like those of another dropout seed.
EXECUTION_KEYS = (
    "resources",
    "container",
    "progress",
    "results_dir",
    "name",
    "data.root",
    "data.download",
    "train.checkpoint_every",
    "train.processes",
)

_MODEL = ("kind", "device", "dtype", "sde", "model", "model_by_dataset")

# Dotted key paths per stage. A path names a whole subtree: "evaluate.nll" is
# config["evaluate"]["nll"] with everything under it.
STAGE_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "toy": {
        "prep_data": ("kind", "data"),
        "train": (*_MODEL, "data", "train"),
        "sample": (*_MODEL, "sample"),
        "evaluate": (*_MODEL, "data", "sample", "evaluate"),
        "autoencoder": ("kind", "device", "dtype", "autoencoder"),
    },
    "images": {
        "prep_data": ("kind", "data"),
        "train": (*_MODEL, "train"),
        "sample": (*_MODEL, "sample"),
        "classifier": ("kind", "device", "data", "evaluate.features", "evaluate.classifier"),
        "reference": (
            "kind",
            "device",
            "data",
            "evaluate.features",
            "evaluate.fid",
            "evaluate.precision_recall",
        ),
        "sample_quality": (
            "kind",
            "device",
            "data",
            "sample",
            "evaluate.features",
            "evaluate.fid",
            "evaluate.precision_recall",
        ),
        "likelihood": (*_MODEL, "evaluate.nll"),
        "asymmetry": (*_MODEL, "evaluate.asymmetry"),
    },
}

# Mappings with one entry per dataset (and maybe other keys, such as "default"). In the
# settings and view of one dataset's job, the entries of the other datasets are dropped.
PER_DATASET_KEYS: dict[str, tuple[str, ...]] = {
    "toy": ("train.iterations",),
    "images": (
        "data",
        "train.steps",
        "train.finetune_steps",
        "model_by_dataset",
        "sample.n_samples_by_dataset",
    ),
}
_DATASET_NAMES = {"toy": TOY_DATASETS, "images": IMAGE_DATASETS}


class UntrackedKeyError(RuntimeError):
    """A stage read a config key that its settings file does not contain."""


def _split(path: str) -> list[str]:
    return path.split(".")


def _copy_path(source: Mapping[str, Any], target: dict[str, Any], path: str) -> None:
    """Copy the subtree at a dotted path from source into target, if source has it."""
    parts = _split(path)
    node: Any = source
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return
        node = node[part]
    destination = target
    for part in parts[:-1]:
        destination = destination.setdefault(part, {})
    destination[parts[-1]] = copy.deepcopy(node)


def _drop_path(target: dict[str, Any], path: str) -> None:
    parts = _split(path)
    node: Any = target
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _keep_dataset(target: dict[str, Any], path: str, dataset: str, names: tuple[str, ...]) -> None:
    """Drop the entries of other datasets from the mapping at a dotted path."""
    parts = _split(path)
    node: Any = target
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        for key in [key for key in node if key in names and key != dataset]:
            del node[key]


def _select(
    config: Mapping[str, Any], stage: str, dataset: str | None, with_execution_keys: bool
) -> tuple[str, dict[str, Any]]:
    kind = config_kind(config)
    stages = STAGE_KEYS[kind]
    if stage not in stages:
        raise ValueError(
            f"unknown stage {stage!r} for a {kind} config; expected one of {', '.join(stages)}"
        )
    selected: dict[str, Any] = {}
    for path in stages[stage]:
        _copy_path(config, selected, path)
    if dataset is not None:
        for path in PER_DATASET_KEYS[kind]:
            _keep_dataset(selected, path, dataset, _DATASET_NAMES[kind])
    if with_execution_keys:
        for path in EXECUTION_KEYS:
            _copy_path(config, selected, path)
    else:
        for path in EXECUTION_KEYS:
            _drop_path(selected, path)
    return kind, selected


def stage_settings(
    config: Mapping[str, Any], stage: str, dataset: str | None = None
) -> dict[str, Any]:
    """Return the keys of a resolved config that a stage's results depend on.

    With a dataset, per-dataset mappings keep only that dataset's entries. Execution keys
    are left out.
    """
    return _select(config, stage, dataset, with_execution_keys=False)[1]


def settings_path(directory: Path, stage: str, dataset: str | None = None) -> Path:
    """Return the settings file of a stage, or of one dataset's jobs of that stage."""
    directory = Path(directory)
    if dataset is None:
        return directory / f"{stage}.yaml"
    return directory / stage / f"{dataset}.yaml"


def write_stage_settings(
    config: Mapping[str, Any], directory: Path, per_dataset: Mapping[str, bool]
) -> list[Path]:
    """Write every stage's settings file under directory, each only if its content changed.

    per_dataset maps each stage to True when its jobs run per dataset: those stages get one
    file per dataset in config["datasets"]. Returns the files written.
    """
    written = []
    for stage, split in per_dataset.items():
        for dataset in config["datasets"] if split else [None]:
            path = settings_path(directory, stage, dataset)
            if write_config_if_changed(stage_settings(config, stage, dataset), path):
                written.append(path)
    return written


class StageConfig(dict):
    """A resolved config restricted to one stage's keys, which reports reads of other keys."""

    def __init__(
        self, selected: Mapping[str, Any], full: Mapping[str, Any], stage: str, prefix: str = ""
    ) -> None:
        super().__init__()
        for key, value in selected.items():
            full_value = full.get(key)
            if isinstance(value, dict) and isinstance(full_value, Mapping) and value != full_value:
                value = StageConfig(value, full_value, stage, f"{prefix}{key}.")
            self[key] = value
        self._full = full
        self._stage = stage
        self._prefix = prefix

    def __missing__(self, key: str) -> Any:
        if key not in self._full:
            raise KeyError(key)
        path = f"{self._prefix}{key}"
        message = (
            f"stage {self._stage!r} read config key {path!r}, which is not among the keys its "
            "jobs are rerun for; add it to qcsbm_bench.stage_settings.STAGE_KEYS"
        )
        if os.environ.get(STRICT_ENVIRONMENT_VARIABLE) == "1":
            raise UntrackedKeyError(message)
        logger.warning("%s (a change to it will not rerun this job)", message)
        return self._full[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def stage_view(config: Mapping[str, Any], stage: str, dataset: str | None = None) -> StageConfig:
    """Return the config as one stage's job may read it: its settings plus execution keys."""
    selected = _select(config, stage, dataset, with_execution_keys=True)[1]
    return StageConfig(selected, config, stage)
