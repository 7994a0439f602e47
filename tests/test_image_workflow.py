"""The image DAG through the snakemake command line: the paper config as a dry run (its
datasets cannot be read here), and the images-smoke config end to end on real images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import write_changed_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
IMAGES_SMOKE = "workflow/config/images-smoke.yaml"
PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "imagenet32")


def copy_workflow(root: Path) -> Path:
    shutil.copy(ROOT / "Snakefile", root / "Snakefile")
    shutil.copytree(ROOT / "workflow", root / "workflow", symlinks=False)
    shutil.copytree(ROOT / "envs", root / "envs")
    return root


def snakemake(workdir: Path, configfile: str, *args: str) -> subprocess.CompletedProcess[str]:
    # Targets go first: --configfile takes every following word up to the next option.
    command = [*SNAKEMAKE, *args, "--cores", "2", "--configfile", configfile]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, check=False
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1]
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    }


@pytest.fixture
def paper_dir(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


def test_paper_dry_run_plans_every_job(paper_dir: Path) -> None:
    result = snakemake(paper_dir, "workflow/config/paper.yaml", "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    counts = job_counts(output)
    assert counts["prep_image_data"] == 4
    assert counts["train_image_model"] == 12
    # 4 datasets x 3 variants x 2 samplers x 10 shards, merged once per run and sampler.
    assert counts["sample_image_shard"] == 240
    assert counts["merge_image_samples"] == 24
    assert counts["sample_quality"] == 24
    assert counts["image_likelihood"] == 12
    assert counts["image_asymmetry"] == 12
    assert counts["reference_features"] == 4
    assert "train_classifier" not in counts
    assert "Inception weights not found" in output


def test_paper_qcsbm_fine_tunes_from_usbm(paper_dir: Path) -> None:
    result = snakemake(paper_dir, "workflow/config/paper.yaml", "--dry-run", "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    commands = [line for line in output.splitlines() if "train-images" in line]
    qcsbm = [line for line in commands if "--variant qcsbm" in line]
    csbm = [line for line in commands if "--variant csbm" in line]
    assert len(qcsbm) == 4
    for line in qcsbm:
        dataset = re.search(r"--dataset (\w+)", line).group(1)
        assert f"--init-checkpoint results/paper/runs/{dataset}/usbm/seed-0/checkpoint.pt" in line
    assert all("--init-checkpoint" not in line for line in csbm)


def test_usbm_control_fine_tunes_without_penalty(paper_dir: Path) -> None:
    result = snakemake(
        paper_dir, "workflow/config/images-cpu.yaml", "--dry-run", "--printshellcmds"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    control = [line for line in output.splitlines() if "--variant usbm-ft" in line]
    control_training = [line for line in control if "train-images" in line]
    assert len(control_training) == 2
    for line in control_training:
        dataset = re.search(r"--dataset (\w+)", line).group(1)
        expected = f"--init-checkpoint results/images-cpu/runs/{dataset}/usbm/seed-0/checkpoint.pt"
        assert expected in line
    assert any("sample-quality" in line for line in control)


def test_multi_process_training_requests_gpus(paper_dir: Path) -> None:
    override = paper_dir / "two-gpus.yaml"
    config = yaml.safe_load((ROOT / "workflow" / "config" / "paper.yaml").read_text())
    config["train"]["processes"] = 2
    config["resources"]["train"]["gpu"] = 2
    override.write_text(yaml.safe_dump(config))
    result = snakemake(paper_dir, str(override), "--dry-run", "--printshellcmds")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # train-images starts torchrun itself from train.processes (tests/test_ddp.py).
    assert "qcsbm-bench train-images --config" in output
    assert re.search(r"rule train_image_model:.*?gpu=2", output, flags=re.DOTALL)


def test_paper_dry_run_skips_present_datasets(paper_dir: Path) -> None:
    first = snakemake(paper_dir, "workflow/config/paper.yaml", "--dry-run")
    assert first.returncode == 0, first.stderr[-4000:]
    # Fake the prepared arrays as present and newer than the resolved config.
    for dataset in PAPER_DATASETS:
        folder = paper_dir / "results" / "paper" / "data" / dataset
        folder.mkdir(parents=True)
        for name in ("train.npy", "test.npy", "train_labels.npy", "test_labels.npy", "meta.json"):
            (folder / name).write_text("")
    result = snakemake(paper_dir, "workflow/config/paper.yaml", "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    counts = job_counts(output)
    assert "prep_image_data" not in counts
    assert counts["train_image_model"] == 12


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the images-smoke DAG once in a fresh copy of the workflow."""
    root = copy_workflow(tmp_path_factory.mktemp("image-dag"))
    result = snakemake(root, "workflow/config/images-smoke.yaml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return root


@pytest.mark.slow
def test_image_smoke_dag_writes_tables(smoke_dir: Path) -> None:
    tables = smoke_dir / "results" / "images-smoke" / "tables"
    table2 = pd.read_csv(tables / "table2.csv")
    assert len(table2) == 6
    assert set(table2["variant"]) == {"csbm", "usbm", "qcsbm"}
    table3 = pd.read_csv(tables / "table3.csv")
    assert len(table3) == 6
    assert set(table3["distance"]) == {"FD (digits classifier)", "FD (photos classifier)"}
    assert "FID" not in set(table3["distance"])
    tidy = pd.read_csv(tables / "all_metrics.csv")
    assert tidy["detail"].notna().any()
    levels = tidy[(tidy["metric"] == "asym") & tidy["t"].notna()]
    assert len(levels) == 2 * 3 * 3


@pytest.mark.slow
def test_image_smoke_dag_writes_figures_and_pngs(smoke_dir: Path) -> None:
    results = smoke_dir / "results" / "images-smoke"
    for name in ("asymmetry_levels", "samples-pc"):
        for suffix in (".png", ".pdf"):
            assert (results / "figures" / f"{name}{suffix}").stat().st_size > 0
    pngs = list(
        (results / "runs" / "photos" / "qcsbm" / "seed-0" / "samples" / "pc").rglob("*.png")
    )
    assert len(pngs) == 16


@pytest.mark.slow
def test_image_smoke_csbm_is_conservative(smoke_dir: Path) -> None:
    tidy = pd.read_csv(smoke_dir / "results" / "images-smoke" / "tables" / "all_metrics.csv")
    averages = tidy[(tidy["metric"] == "nasym") & tidy["t"].isna()]
    csbm = averages[averages["variant"] == "csbm"]["value"].abs()
    usbm = averages[averages["variant"] == "usbm"]["value"].abs()
    assert (csbm < 1e-4).all()
    assert csbm.max() < usbm.min()


@pytest.mark.slow
def test_image_smoke_rerun_does_nothing(smoke_dir: Path) -> None:
    result = snakemake(smoke_dir, "workflow/config/images-smoke.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_image_smoke_execution_keys_rerun_nothing(smoke_dir: Path) -> None:
    changes = {
        "train.processes": 2,
        "train.checkpoint_every": 3,
        "data.root": "elsewhere",
        "progress": True,
    }
    configfile = write_changed_config(smoke_dir, IMAGES_SMOKE, "execution.yaml", changes)
    result = snakemake(smoke_dir, configfile, "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_image_smoke_likelihood_key_reruns_likelihood(smoke_dir: Path) -> None:
    # The dry run rewrites the likelihood settings files, so it runs after the tests above.
    changes = {"evaluate.nll.repeats": 2}
    configfile = write_changed_config(smoke_dir, IMAGES_SMOKE, "likelihood.yaml", changes)
    result = snakemake(smoke_dir, configfile, "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    counts = job_counts(output)
    assert counts["image_likelihood"] == 6
    assert set(counts) == {"image_likelihood", "image_aggregate", "image_figures", "all", "total"}
