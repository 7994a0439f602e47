"""Config validation: every invalid value is rejected before any job, naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qcsbm_bench.config import (
    ConfigError,
    load_config,
    validate_config,
    write_config_if_changed,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "workflow" / "config"


def smoke() -> dict:
    return yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())


@pytest.mark.parametrize("name", ["toy.yaml", "toy-paper.yaml", "smoke.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_config(CONFIG_DIR / name)
    assert config["train"]["qc"]["estimator"] == "exact"
    assert set(config["train"]["iterations"]) >= set(config["datasets"])


def test_paper_config_uses_paper_settings() -> None:
    config = load_config(CONFIG_DIR / "toy-paper.yaml")
    assert config["train"]["batch_size"] == 5000
    assert config["train"]["iterations"] == {
        "8gaussians": 2000,
        "checkerboard": 4000,
        "spirals": 2000,
    }
    assert len(config["seeds"]) == 3
    assert config["train"]["lambda_qc"] == 0.1


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["trian"], {}, "trian"),
        (["train", "batchsize"], 10, "batchsize"),
        (["datasets"], ["moons"], "datasets.0"),
        (["variants"], ["ncsn"], "variants.0"),
        (["train", "lambda_qc"], -0.1, "train.lambda_qc"),
        (["sde", "sigma_min"], 5.0, "sigma_min"),
        (["train", "qc", "estimator"], "hutch", "train.qc.estimator"),
        (["seeds"], [], "seeds"),
        (["evaluate", "n_points"], 10**6, "evaluate.n_points"),
        (["seeds"], [1.0], "seeds.0"),
        (["train", "batch_size"], 64.0, "train.batch_size"),
        (["sde", "sigma_min"], float("nan"), "sde.sigma_min"),
        (["train", "lambda_qc"], float("inf"), "train.lambda_qc"),
        (["sample", "t_min"], 2.0, "sample.t_min"),
    ],
)
def test_invalid_value_names_key(path: list[str], value: object, message: str) -> None:
    config = smoke()
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_missing_iterations_entry_rejected() -> None:
    config = smoke()
    del config["train"]["iterations"]["spirals"]
    with pytest.raises(ConfigError, match="spirals"):
        validate_config(config)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resolved_config_rewritten_only_on_change(tmp_path: Path) -> None:
    config = validate_config(smoke())
    path = tmp_path / "config.yaml"
    assert write_config_if_changed(config, path)
    assert not write_config_if_changed(config, path)
    config["seeds"] = [0, 1]
    assert write_config_if_changed(config, path)
    assert yaml.safe_load(path.read_text())["seeds"] == [0, 1]
