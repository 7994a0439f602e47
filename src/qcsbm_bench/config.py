"""Benchmark configuration: YAML files merged onto defaults and validated before any job.

The JSON schema (config.schema.yaml beside this module, linked from workflow/schemas)
rejects unknown keys and out-of-range values; `validate_config` adds the checks that
relate two values, such as sigma_min < sigma_max. Every error names the offending key.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from qcsbm_bench.atomic import atomic_open

STAGES = ("prep_data", "train", "sample", "evaluate", "autoencoder", "aggregate", "figures")

DEFAULTS: dict[str, Any] = {
    "results_dir": "results",
    "device": "cpu",
    "dtype": "float64",
    "progress": True,
    "container": None,
    "sde": {"t_min": 0.0},
    "train": {
        "dsm": "sum",
        "log_every": 10,
        "checkpoint_every": 500,
        "qc": {"probe": "rademacher", "n_probes": 1},
    },
    "sample": {
        "t_min": 1.0e-5,
        "pc": {"n_levels": 1000, "snr": 0.16, "corrector_steps": 1, "denoise": True},
        "ode": {"rtol": 1.0e-5, "atol": 1.0e-6, "denoise": True},
    },
    "evaluate": {
        "nll": {"n_points": 5000, "rtol": 1.0e-3, "atol": 1.0e-5, "t_min": 1.0e-5},
        "precision_recall": {"k": 3},
        "field": {"grid_size": 21, "extent": 6.0, "t": [0.05, 0.3]},
    },
    "autoencoder": {
        "enabled": True,
        "steps": 10001,
        "lr": 1.0e-4,
        "grid_size": 40,
        "extent": 10.0,
        "seed": 0,
        "log_every": 10,
    },
    "resources": {
        stage: {"threads": 1, "mem_mb": 4000, "runtime": 120, "gpu": 0} for stage in STAGES
    },
}


IMAGE_STAGES = (
    "prep_data",
    "train",
    "sample",
    "merge_samples",
    "classifier",
    "reference",
    "sample_quality",
    "likelihood",
    "asymmetry",
    "aggregate",
    "figures",
)
# The toy data set names, as in qcsbm_bench.data.toy2d (not imported here to keep startup light).
TOY_DATASETS = ("8gaussians", "checkerboard", "spirals")
# The samplers that sample.samplers may name (qcsbm_bench.sampling.SAMPLERS implements them).
SAMPLER_NAMES = ("pc", "ode")
IMAGE_DATASETS = ("cifar10", "cifar100", "svhn", "imagenet32", "digits", "photos")
# Datasets with no Inception reference in this project: their Frechet distance uses the
# features of a classifier trained on their own training split, and is never called FID.
OFFLINE_IMAGE_DATASETS = ("digits", "photos")

# Defaults of the image DAG at the settings of Chao et al. (2023) for NCSN++ on 32x32 data.
IMAGE_DEFAULTS: dict[str, Any] = {
    "results_dir": "results",
    "device": "cuda",
    "dtype": "float32",
    "progress": True,
    "container": None,
    "data": {"download": False, "digits": {"test_fraction": 0.2}, "photos": {}},
    "sde": {"t_min": 1.0e-5},
    "model": {"arch": "ncsnpp", "preset": "paper"},
    "model_by_dataset": {},
    "train": {
        "warmup": 5000,
        "grad_clip": 1.0,
        "ema_decay": 0.999,
        "finetune": {"qcsbm": True, "csbm": False, "usbm-ft": True},
        "finetune_steps": {"default": 150000},
        "qc": {"estimator": "hutchinson-vjp", "probe": "rademacher", "n_probes": 1},
        "dsm": "half-sum",
        "log_every": 100,
        "checkpoint_every": 5000,
        "processes": 1,
    },
    "sample": {
        "n_samples_by_dataset": {},
        "batch_size": 500,
        "shards": 1,
        "png": True,
        "t_min": 1.0e-5,
        "pc": {"n_levels": 1000, "snr": 0.16, "corrector_steps": 1, "denoise": True},
        "ode": {"rtol": 1.0e-5, "atol": 1.0e-5, "denoise": True},
    },
    "evaluate": {
        "asymmetry": {"n_levels": 100, "n_images": None, "batch_size": 100, "weights": "raw"},
        "nll": {
            "n_images": None,
            "repeats": 1,
            "batch_size": 500,
            "rtol": 1.0e-3,
            "atol": 1.0e-5,
            "t_min": 1.0e-5,
            "weights": "ema",
        },
        "features": "auto",
        "fid": {
            "mode": "clean",
            "inception_weights": "data/inception/inception-2015-12-05.pt",
            "sha256": None,
            "batch_size": 100,
            "reference_split": "train",
            "n_reference": None,
        },
        "classifier": {"steps": 2000, "batch_size": 128, "lr": 1.0e-3},
        "precision_recall": {"k": 3, "n_real": 10000},
    },
    "resources": {
        stage: {"threads": 1, "mem_mb": 8000, "runtime": 240, "gpu": 0} for stage in IMAGE_STAGES
    },
}


class ConfigError(ValueError):
    """An invalid benchmark configuration; the message names the key and the fix."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return base updated recursively by override (override wins; neither is modified)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


SCHEMA_FILES = {"toy": "config.schema.yaml", "images": "images.schema.yaml"}


def load_schema(kind: str = "toy") -> dict[str, Any]:
    text = resources.files("qcsbm_bench").joinpath(SCHEMA_FILES[kind]).read_text()
    return yaml.safe_load(text)


def config_kind(raw: Mapping[str, Any]) -> str:
    """Return the benchmark kind of a raw config ("toy" when the key is absent)."""
    kind = raw.get("kind", "toy")
    if kind not in SCHEMA_FILES:
        raise ConfigError(
            f"invalid configuration:\n  kind: {kind!r} is not one of {list(SCHEMA_FILES)}"
        )
    return kind


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<top level>"


def _is_integer(checker: Any, instance: object) -> bool:
    # JSON Schema counts 64.0 as an integer, but range() and torch sizes reject floats.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_finite_number(checker: Any, instance: object) -> bool:
    # YAML reads .nan and .inf as floats, and the schema's minimum checks let NaN through.
    return (
        isinstance(instance, int | float)
        and not isinstance(instance, bool)
        and math.isfinite(instance)
    )


StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_finite_number}
    ),
)


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `raw` onto the defaults of its kind, validate it and return the resolved config."""
    kind = config_kind(raw)
    config = deep_merge(DEFAULTS if kind == "toy" else IMAGE_DEFAULTS, raw)
    validator = StrictValidator(load_schema(kind))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_key_path(error)}: {error.message}" for error in errors]
        raise ConfigError(
            "invalid configuration (fix these keys in the config file or --config overrides):\n"
            + "\n".join(lines)
        )
    if kind == "images":
        from qcsbm_bench.image_config import check_image_config

        check_image_config(config)
        return config

    sde = config["sde"]
    if sde["sigma_min"] >= sde["sigma_max"]:
        raise ConfigError(
            f"sde.sigma_min ({sde['sigma_min']}) must be smaller than sde.sigma_max "
            f"({sde['sigma_max']})"
        )
    missing = [name for name in config["datasets"] if name not in config["train"]["iterations"]]
    if missing:
        raise ConfigError(
            f"train.iterations has no entry for dataset(s) {missing}; add one step count each"
        )
    n_test = config["data"]["n_test"]
    point_counts = {
        "evaluate.n_points": config["evaluate"]["n_points"],
        "evaluate.nll.n_points": config["evaluate"]["nll"]["n_points"],
    }
    for key, count in point_counts.items():
        if count > n_test:
            raise ConfigError(
                f"{key} ({count}) exceeds data.n_test ({n_test}); lower it or draw more test points"
            )
    return config


def load_config(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file and return it resolved and validated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}; pass an existing YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must contain a mapping at the top level")
    return validate_config(raw)


def write_config_if_changed(config: Mapping[str, Any], path: Path) -> bool:
    """Write the resolved config unless the file already contains the same text.

    Keeping the file untouched keeps its modification time, so Snakemake does not rerun
    the jobs that depend on it. Returns True if the file was written.
    """
    path = Path(path)
    text = yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=True)
    if path.is_file() and path.read_text() == text:
        return False
    with atomic_open(path) as handle:
        handle.write(text)
    return True
