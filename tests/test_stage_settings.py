"""Stage settings: a config change reaches only the jobs whose stage depends on the key."""

from __future__ import annotations

import copy
import itertools
import logging
import os
from pathlib import Path

import pytest
import yaml
from workflow_helpers import set_path

from qcsbm_bench.config import validate_config
from qcsbm_bench.stage_settings import (
    EXECUTION_KEYS,
    STAGE_SCOPES,
    STRICT_ENVIRONMENT_VARIABLE,
    UntrackedKeyError,
    settings_path,
    stage_settings,
    stage_view,
    write_stage_settings,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "workflow" / "config"


def resolved(name: str) -> dict:
    return validate_config(yaml.safe_load((CONFIG_DIR / name).read_text()))


def all_settings(config: dict) -> dict[tuple[str, ...], dict]:
    """Return the settings of every job scope of a resolved config, keyed (stage, *scope)."""
    kind = config.get("kind", "toy")
    values = {
        "dataset": config["datasets"],
        "variant": config["variants"],
        "sampler": config["sample"]["samplers"],
    }
    settings = {}
    for stage, names in STAGE_SCOPES[kind].items():
        for combination in itertools.product(*(values[name] for name in names)):
            scope = dict(zip(names, combination, strict=True))
            settings[(stage, *combination)] = stage_settings(config, stage, **scope)
    return settings


def touched_jobs(before: dict, after: dict) -> set[tuple[str, ...]]:
    return {key for key, settings in after.items() if settings != before.get(key)}


@pytest.mark.parametrize("name", ["smoke.yaml", "images-cpu.yaml", "paper.yaml"])
def test_execution_keys_change_no_settings(name: str) -> None:
    config = resolved(name)
    before = all_settings(config)
    changed = copy.deepcopy(config)
    changed["progress"] = not config["progress"]
    changed["container"] = "docker://qcsbm-bench:latest"
    changed["results_dir"] = "elsewhere"
    changed["name"] = "renamed"
    changed["train"]["checkpoint_every"] = 7
    for stage in changed["resources"].values():
        stage["threads"] = 16
    if changed.get("kind") == "images":
        changed["data"]["root"] = "/somewhere/else"
        changed["data"]["download"] = True
        changed["train"]["processes"] = 2
    assert all_settings(changed) == before


def test_execution_keys_absent_from_settings() -> None:
    config = resolved("images-cpu.yaml")
    for job, settings in all_settings(config).items():
        for path in EXECUTION_KEYS:
            node = settings
            for part in path.split("."):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            assert node == {}, f"{job} settings contain execution key {path}"


@pytest.mark.parametrize(
    ("path", "value", "stages"),
    [
        ("evaluate.nll.repeats", 3, {"likelihood"}),
        ("evaluate.asymmetry.n_levels", 7, {"asymmetry"}),
        ("evaluate.precision_recall.k", 5, {"reference", "sample_quality"}),
        ("evaluate.classifier.steps", 11, {"classifier"}),
        ("sample.pc.snr", 0.2, {"sample", "sample_quality"}),
        ("sde.sigma_max", 60.0, {"train", "sample", "likelihood", "asymmetry"}),
        ("data.seed", 7, {"prep_data", "classifier", "reference", "sample_quality"}),
    ],
)
def test_image_key_reaches_only_its_stages(path: str, value: object, stages: set[str]) -> None:
    config = resolved("images-cpu.yaml")
    before = all_settings(config)
    changed = copy.deepcopy(config)
    set_path(changed, path, value)
    after = all_settings(changed)
    assert {job[0] for job in touched_jobs(before, after)} == stages


def test_toy_evaluation_key_leaves_training() -> None:
    config = resolved("smoke.yaml")
    before = all_settings(config)
    changed = copy.deepcopy(config)
    changed["evaluate"]["n_levels"] = 9
    assert {job[0] for job in touched_jobs(before, all_settings(changed))} == {"evaluate"}


@pytest.mark.parametrize(
    ("path", "value", "variants"),
    [
        ("train.lambda_qc", 1.0e-3, {"qcsbm"}),
        ("train.qc.n_probes", 4, {"qcsbm"}),
        ("train.finetune_steps.default", 50, {"qcsbm", "usbm-ft"}),
        ("train.lr", 1.0e-4, {"csbm", "usbm", "qcsbm", "usbm-ft"}),
    ],
)
def test_training_key_reaches_only_its_variants(
    path: str, value: object, variants: set[str]
) -> None:
    config = resolved("images-cpu.yaml")
    before = all_settings(config)
    changed = copy.deepcopy(config)
    set_path(changed, path, value)
    expected = {
        ("train", dataset, variant) for dataset in config["datasets"] for variant in variants
    }
    assert touched_jobs(before, all_settings(changed)) == expected


@pytest.mark.parametrize("name", ["smoke.yaml", "images-cpu.yaml"])
def test_sampler_key_reaches_only_its_sampler(name: str) -> None:
    config = resolved(name)
    before = all_settings(config)
    changed = copy.deepcopy(config)
    changed["sample"]["ode"]["rtol"] = 2.0e-3
    touched = touched_jobs(before, all_settings(changed))
    assert {job[0] for job in touched} >= {"sample"}
    for job in touched:
        assert job[0] in ("sample", "sample_quality", "evaluate"), job
        if job[0] != "evaluate":
            assert job[-1] == "ode", job


def test_new_sampler_keeps_other_sampler() -> None:
    config = resolved("images-smoke.yaml")
    assert config["sample"]["samplers"] == ["pc"]
    before = all_settings(config)
    changed = copy.deepcopy(config)
    changed["sample"]["samplers"] = ["pc", "ode"]
    after = all_settings(changed)
    for job, settings in before.items():
        assert after[job] == settings, job


def test_other_datasets_entries_dropped() -> None:
    config = resolved("paper.yaml")
    steps = config["train"]["steps"]
    assert len([name for name in steps if name != "default"]) >= 1, steps
    other = next(name for name in steps if name != "default")
    dataset = next(name for name in config["datasets"] if name != other)
    train = stage_settings(config, "train", dataset)["train"]
    assert other not in train["steps"]
    assert set(train["steps"]) <= {dataset, "default"}


def test_unused_default_entry_dropped() -> None:
    config = resolved("images-smoke.yaml")
    before = all_settings(config)
    changed = copy.deepcopy(config)
    steps = changed["train"]["steps"]["default"]
    changed["train"]["steps"] = {"default": steps, "digits": steps}
    assert touched_jobs(before, all_settings(changed)) == set()

    changed["train"]["steps"]["default"] = steps + 1
    touched = touched_jobs(before, all_settings(changed))
    assert touched
    assert {job[1] for job in touched} == {"photos"}


def test_new_dataset_or_seed_keeps_settings() -> None:
    config = resolved("smoke.yaml")
    before = all_settings(config)
    changed = copy.deepcopy(config)
    changed["seeds"] = [0, 1, 2]
    changed["datasets"] = ["8gaussians", "spirals"]
    del changed["train"]["iterations"]["checkerboard"]
    after = all_settings(changed)
    for key, settings in after.items():
        assert settings == before[key], key


def test_write_stage_settings_writes_changed_files(tmp_path: Path) -> None:
    config = resolved("smoke.yaml")
    stages = {"train": ("dataset", "variant"), "evaluate": ("dataset",), "autoencoder": ()}
    written = write_stage_settings(config, tmp_path, stages)
    assert len(written) == 3 * 3 + 3 + 1
    assert settings_path(tmp_path, "train", dataset="spirals", variant="usbm") in written
    assert settings_path(tmp_path, "autoencoder") in written
    assert write_stage_settings(config, tmp_path, stages) == []

    config["evaluate"]["n_levels"] = 9
    config["progress"] = not config["progress"]
    written = write_stage_settings(config, tmp_path, stages)
    assert sorted(written) == sorted(
        settings_path(tmp_path, "evaluate", dataset=dataset) for dataset in config["datasets"]
    )


def test_view_contains_stage_and_execution_keys() -> None:
    config = resolved("images-cpu.yaml")
    view = stage_view(config, "likelihood", "digits")
    assert view["evaluate"]["nll"] == config["evaluate"]["nll"]
    assert view["resources"] == config["resources"]
    assert view["progress"] == config["progress"]
    assert config["container"] is None
    assert view["container"] is None
    assert view.get("no such key", "fallback") == "fallback"


def test_view_untracked_read_raises_when_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENVIRONMENT_VARIABLE, "1")
    view = stage_view(resolved("images-cpu.yaml"), "likelihood", "digits")
    with pytest.raises(UntrackedKeyError, match=r"'train\.lambda_qc'"):
        view["train"]["lambda_qc"]
    with pytest.raises(UntrackedKeyError, match=r"'evaluate\.asymmetry'"):
        view["evaluate"]["asymmetry"]
    with pytest.raises(UntrackedKeyError, match="'sample'"):
        view.get("sample")


def test_view_untracked_read_warns_by_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(STRICT_ENVIRONMENT_VARIABLE, raising=False)
    config = resolved("images-cpu.yaml")
    view = stage_view(config, "likelihood", "digits")
    with caplog.at_level(logging.WARNING, logger="qcsbm_bench.stage_settings"):
        value = view["evaluate"]["asymmetry"]
    assert value == config["evaluate"]["asymmetry"]
    assert "evaluate.asymmetry" in caplog.text
    assert os.environ.get(STRICT_ENVIRONMENT_VARIABLE) is None


def test_view_rejects_unknown_stage() -> None:
    with pytest.raises(ValueError, match="unknown stage 'training'"):
        stage_view(resolved("smoke.yaml"), "training", "spirals")
