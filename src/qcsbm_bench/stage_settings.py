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
import itertools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qcsbm_bench.config import (
    IMAGE_DATASETS,
    SAMPLER_NAMES,
    TOY_DATASETS,
    config_kind,
    write_config_if_changed,
)

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

# The wildcards that each stage's jobs run over, so its settings files are split by them.
# Sampling does not depend on the variant, and the toy evaluation reads every sampler.
STAGE_SCOPES: dict[str, dict[str, tuple[str, ...]]] = {
    "toy": {
        "prep_data": ("dataset",),
        "train": ("dataset", "variant"),
        "sample": ("dataset", "sampler"),
        "evaluate": ("dataset",),
        "autoencoder": (),
    },
    "images": {
        "prep_data": ("dataset",),
        "train": ("dataset", "variant"),
        "sample": ("dataset", "sampler"),
        "classifier": ("dataset",),
        "reference": ("dataset",),
        "sample_quality": ("dataset", "sampler"),
        "likelihood": ("dataset",),
        "asymmetry": ("dataset",),
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


_MISSING = object()


def _node_at(tree: Any, parts: list[str]) -> Any:
    """Return the node of a nested mapping at the given keys, or _MISSING where one is absent.

    A key whose value is None is present, so None cannot mark an absent key.
    """
    node = tree
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _copy_path(source: Mapping[str, Any], target: dict[str, Any], path: str) -> None:
    """Copy the subtree at a dotted path from source into target, if source has it."""
    parts = path.split(".")
    node = _node_at(source, parts)
    if node is _MISSING:
        return
    destination = target
    for part in parts[:-1]:
        destination = destination.setdefault(part, {})
    destination[parts[-1]] = copy.deepcopy(node)


def _drop_path(target: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = _node_at(target, parents)
    if isinstance(node, dict):
        node.pop(last, None)


def _keep_dataset(target: dict[str, Any], path: str, dataset: str, names: tuple[str, ...]) -> None:
    """Drop the entries of other datasets from the mapping at a dotted path.

    A "default" entry, which lookups fall back to for datasets without their own entry,
    becomes the dataset's entry or is dropped, so that {"default": 10} and
    {"default": 10, "digits": 10} give digits the same settings.
    """
    node = _node_at(target, path.split("."))
    if isinstance(node, dict):
        for key in [key for key in node if key in names and key != dataset]:
            del node[key]
        if "default" in node:
            default = node.pop("default")
            node.setdefault(dataset, default)


# The wildcards that a settings file can be split by, in the order of its path parts.
SCOPES = ("dataset", "variant", "sampler")


def _keep_variant(selected: dict[str, Any], variant: str) -> None:
    """Drop the training keys that do not reach the variant's run.

    Only qcsbm trains with L_QC, so the others do not depend on lambda_qc and qc. Each
    variant depends on its own train.finetune entry, and on finetune_steps only if it is
    fine-tuned.
    """
    train = selected.get("train")
    if not isinstance(train, dict):
        return
    if variant != "qcsbm":
        train.pop("lambda_qc", None)
        train.pop("qc", None)
    if "finetune" in train:
        own = train["finetune"].get(variant)
        train["finetune"] = {} if own is None else {variant: own}
        if not own:
            train.pop("finetune_steps", None)


def _keep_sampler(selected: dict[str, Any], sampler: str) -> None:
    """Drop the sample settings of the other samplers and the list of samplers."""
    sample = selected.get("sample")
    if not isinstance(sample, dict):
        return
    sample.pop("samplers", None)
    for name in SAMPLER_NAMES:
        if name != sampler:
            sample.pop(name, None)


def _select(
    config: Mapping[str, Any],
    stage: str,
    scope: Mapping[str, str | None],
    with_execution_keys: bool,
) -> dict[str, Any]:
    kind = config_kind(config)
    stages = STAGE_KEYS[kind]
    if stage not in stages:
        raise ValueError(
            f"unknown stage {stage!r} for a {kind} config; expected one of {', '.join(stages)}"
        )
    selected: dict[str, Any] = {}
    for path in stages[stage]:
        _copy_path(config, selected, path)
    if scope.get("dataset") is not None:
        for path in PER_DATASET_KEYS[kind]:
            _keep_dataset(selected, path, str(scope["dataset"]), _DATASET_NAMES[kind])
    if scope.get("variant") is not None:
        _keep_variant(selected, str(scope["variant"]))
    if scope.get("sampler") is not None:
        _keep_sampler(selected, str(scope["sampler"]))
    if with_execution_keys:
        for path in EXECUTION_KEYS:
            _copy_path(config, selected, path)
    else:
        for path in EXECUTION_KEYS:
            _drop_path(selected, path)
    return selected


def stage_settings(
    config: Mapping[str, Any],
    stage: str,
    dataset: str | None = None,
    variant: str | None = None,
    sampler: str | None = None,
) -> dict[str, Any]:
    """Return the keys of a resolved config that a stage's results depend on.

    Each scope given narrows them to one job's share: a dataset keeps only its entries of
    per-dataset mappings, a variant drops the training keys it ignores, and a sampler drops
    the other samplers' settings. Execution keys are left out.
    """
    scope = {"dataset": dataset, "variant": variant, "sampler": sampler}
    return _select(config, stage, scope, with_execution_keys=False)


def settings_path(directory: Path, stage: str, **scope: str) -> Path:
    """Return the settings file of a stage's jobs, one per value of each scope given.

    For example settings_path(d, "train", dataset="digits", variant="usbm") is
    d/train/digits/usbm.yaml, and settings_path(d, "autoencoder") is d/autoencoder.yaml.
    """
    unknown = sorted(set(scope) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown settings scope {unknown}; use {SCOPES}")
    parts = [scope[name] for name in SCOPES if name in scope]
    if not parts:
        return Path(directory) / f"{stage}.yaml"
    return Path(directory, stage, *parts[:-1], f"{parts[-1]}.yaml")


def write_stage_settings(
    config: Mapping[str, Any], directory: Path, scopes: Mapping[str, tuple[str, ...]]
) -> list[Path]:
    """Write every stage's settings files under directory, each only if its content changed.

    scopes maps each stage to the wildcards its jobs run over, a subset of SCOPES: the stage
    gets one file per combination of config["datasets"], config["variants"] and
    config["sample"]["samplers"] in them. Returns the files written.
    """
    values = {
        "dataset": config["datasets"],
        "variant": config["variants"],
        "sampler": config["sample"]["samplers"],
    }
    written = []
    for stage, names in scopes.items():
        for combination in itertools.product(*(values[name] for name in names)):
            scope = dict(zip(names, combination, strict=True))
            path = settings_path(directory, stage, **scope)
            if write_config_if_changed(stage_settings(config, stage, **scope), path):
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


def stage_view(
    config: Mapping[str, Any],
    stage: str,
    dataset: str | None = None,
    variant: str | None = None,
    sampler: str | None = None,
) -> StageConfig:
    """Return the config as one stage's job may read it: its settings plus execution keys."""
    scope = {"dataset": dataset, "variant": variant, "sampler": sampler}
    return StageConfig(_select(config, stage, scope, with_execution_keys=True), config, stage)
