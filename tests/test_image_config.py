"""Image benchmark configs: the shipped files validate, bad values fail with the key named,
and per-dataset settings resolve as the rules and stages read them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from qcsbm_bench.config import ConfigError, load_config, validate_config
from qcsbm_bench.image_config import (
    feature_space,
    finetune_steps,
    finetuned_from_usbm,
    model_settings,
    n_samples_for,
    training_steps,
)
from qcsbm_bench.image_stages import run_config

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CONFIGS = ("paper", "images-cpu", "images-smoke")


def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "workflow" / "config" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", IMAGE_CONFIGS)
def test_shipped_image_config_validates(name: str) -> None:
    config = load_config(ROOT / "workflow" / "config" / f"{name}.yaml")
    assert config["kind"] == "images"
    assert set(config["resources"]) >= {"train", "sample", "sample_quality", "likelihood"}


def test_paper_settings_match_published_protocol() -> None:
    config = load_config(ROOT / "workflow" / "config" / "paper.yaml")
    assert config["sde"]["sigma_min"] == 0.01
    assert config["sde"]["sigma_max"] == 50.0
    assert config["train"]["batch_size"] == 128
    assert config["train"]["lr"] == 2.0e-4
    assert config["train"]["warmup"] == 5000
    assert config["train"]["ema_decay"] == 0.999
    assert config["train"]["lambda_qc"] == 1.0e-4
    assert training_steps(config, "cifar10") == 600000
    assert training_steps(config, "svhn") == 300000
    assert training_steps(config, "svhn") + finetune_steps(config, "svhn") == 450000
    assert training_steps(config, "cifar100") + finetune_steps(config, "cifar100") == 750000
    assert finetuned_from_usbm(config, "qcsbm")
    assert not finetuned_from_usbm(config, "usbm")
    assert n_samples_for(config, "svhn") == 26032
    assert n_samples_for(config, "cifar10") == 50000
    assert model_settings(config, "imagenet32")["dropout"] == 0.0
    assert "dropout" not in model_settings(config, "cifar10")
    assert config["sample"]["pc"]["n_levels"] == 1000


def test_feature_space_by_dataset() -> None:
    config = load_config(ROOT / "workflow" / "config" / "images-cpu.yaml")
    assert feature_space(config, "digits") == "classifier"
    assert feature_space(config, "photos") == "classifier"
    assert feature_space(config, "cifar10") == "inception"
    config["evaluate"]["features"] = "classifier"
    assert feature_space(config, "cifar10") == "classifier"


def test_run_config_resolves_dataset_settings() -> None:
    config = load_config(ROOT / "workflow" / "config" / "paper.yaml")
    resolved = run_config(config, "svhn", "qcsbm")
    assert resolved["train"]["steps"] == 300000
    assert resolved["train"]["finetune_steps"] == 150000
    assert run_config(config, "svhn", "usbm")["train"]["finetune_steps"] == 0
    assert run_config(config, "imagenet32", "usbm")["model"]["dropout"] == 0.0
    assert isinstance(config["train"]["steps"], dict)


def invalid(name: str, change: dict[str, Any]) -> str:
    config = raw(name)
    node = config
    *parents, last = change["key"].split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = change["value"]
    with pytest.raises(ConfigError) as error:
        validate_config(copy.deepcopy(config))
    return str(error.value)


def test_unknown_key_names_it() -> None:
    message = invalid("images-smoke", {"key": "train.lerning_rate", "value": 0.1})
    assert "lerning_rate" in message


def test_unknown_dataset_rejected() -> None:
    message = invalid("images-smoke", {"key": "datasets", "value": ["mnist"]})
    assert "datasets.0" in message


def test_unknown_kind_rejected() -> None:
    message = invalid("images-smoke", {"key": "kind", "value": "video"})
    assert "kind" in message
    assert "video" in message


def test_toy_keys_rejected_in_image_config() -> None:
    message = invalid("images-smoke", {"key": "autoencoder", "value": {"enabled": True}})
    assert "autoencoder" in message


def test_shards_above_batches_rejected() -> None:
    message = invalid("images-smoke", {"key": "sample.shards", "value": 3})
    assert "sample.shards (3)" in message


def test_batch_not_divisible_by_processes() -> None:
    message = invalid("images-smoke", {"key": "train.processes", "value": 3})
    assert "train.batch_size (8)" in message
    assert "train.processes (3)" in message


def test_missing_steps_for_dataset() -> None:
    message = invalid("images-smoke", {"key": "train.steps", "value": {"photos": 10}})
    assert "train.steps" in message
    assert "digits" in message


def test_sigma_order_checked() -> None:
    message = invalid("images-smoke", {"key": "sde.sigma_min", "value": 60.0})
    assert "sde.sigma_min" in message


def test_prdc_reference_larger_than_k() -> None:
    message = invalid(
        "images-smoke", {"key": "evaluate.precision_recall", "value": {"k": 5, "n_real": 5}}
    )
    assert "n_real (5)" in message


def test_too_few_samples_for_k() -> None:
    config = raw("images-smoke")
    config["sample"].update({"n_samples": 3, "shards": 1})
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert "draws 3 samples" in str(error.value)
    assert "k is 3" in str(error.value)


def test_cuda_without_gpu_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from qcsbm_bench.image_stages import load_image_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = raw("images-smoke")
    config["device"] = "cuda"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="set device: cpu"):
        load_image_config(path, "train", "digits")
