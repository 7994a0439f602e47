"""The real Snakemake DAG on the smoke config, run through the snakemake command line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import write_changed_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SMOKE = "workflow/config/smoke.yaml"


def snakemake(
    workdir: Path, *args: str, configfile: str = SMOKE
) -> subprocess.CompletedProcess[str]:
    # Targets go first: --configfile takes every following word up to the next option.
    command = [*SNAKEMAKE, *args, "--cores", "2", "--configfile", configfile]
    # The rules call the qcsbm-bench script, which lives beside this Python interpreter.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copy the workflow into a fresh folder and run the smoke DAG there once."""
    root = tmp_path_factory.mktemp("dag")
    shutil.copy(ROOT / "Snakefile", root / "Snakefile")
    shutil.copytree(ROOT / "workflow", root / "workflow", symlinks=False)
    shutil.copytree(ROOT / "envs", root / "envs")
    result = snakemake(root)
    assert result.returncode == 0, result.stderr[-4000:]
    return root


@pytest.mark.slow
def test_smoke_dag_writes_tables_and_figures(workdir: Path) -> None:
    results = workdir / "results" / "smoke"
    table = pd.read_csv(results / "tables" / "table1.csv")
    assert len(table) == 9
    assert set(table["variant"]) == {"csbm", "usbm", "qcsbm"}
    assert (results / "tables" / "table1.md").read_text().count("| 8gaussians |") == 3
    for name in ("score_fields", "samples", "asymmetry_levels", "autoencoder"):
        for suffix in (".png", ".pdf"):
            assert (results / "figures" / f"{name}{suffix}").stat().st_size > 0
    tidy = pd.read_csv(results / "tables" / "all_metrics.csv")
    csbm = tidy[(tidy["variant"] == "csbm") & (tidy["metric"] == "nasym")]
    assert (csbm["value"].abs() < 1e-10).all()
    assert (results / "config.yaml").is_file()


@pytest.mark.slow
def test_complete_dag_reruns_nothing(workdir: Path) -> None:
    result = snakemake(workdir, "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_missing_output_reruns_only_its_jobs(workdir: Path) -> None:
    metrics = "results/smoke/runs/spirals/usbm/seed-0/metrics.csv"
    (workdir / metrics).unlink()
    # Snakemake 9 redoes a missing intermediate file only when something requests it, so the
    # test names it as a target beside the default one.
    result = snakemake(workdir, "all", metrics, "--dry-run", "--quiet", "rules")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "evaluate" in output
    assert "train" not in output.replace("train_", "")
    assert "sample " not in output


@pytest.mark.slow
def test_execution_key_change_reruns_nothing(workdir: Path) -> None:
    changes = {
        "progress": True,
        "train.checkpoint_every": 50,
        "resources": {"train": {"threads": 2, "mem_mb": 100, "runtime": 5, "gpu": 0}},
    }
    configfile = write_changed_config(workdir, SMOKE, "execution.yaml", changes)
    result = snakemake(workdir, "--dry-run", configfile=configfile)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_evaluation_key_change_reruns_evaluation(workdir: Path) -> None:
    # The dry run rewrites the evaluate settings files, so it runs after the tests above.
    configfile = write_changed_config(workdir, SMOKE, "evaluation.yaml", {"evaluate.n_levels": 5})
    result = snakemake(workdir, "--dry-run", "--quiet", "rules", configfile=configfile)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "evaluate" in output
    assert "aggregate" in output
    assert "train" not in output.replace("train_", "")
    assert "sample " not in output
    assert "prep_data" not in output


@pytest.mark.slow
def test_sampler_key_change_reruns_that_sampler(workdir: Path) -> None:
    # The dry run rewrites the ode sampling settings files, so it runs after the tests above.
    configfile = write_changed_config(workdir, SMOKE, "ode.yaml", {"sample.ode.rtol": 2.0e-4})
    result = snakemake(workdir, "--dry-run", "--quiet", "rules", configfile=configfile)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    counts = {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE)
    }
    # 3 datasets x 3 variants, each sampled again by the ode sampler only.
    assert counts["sample"] == 9
    assert counts["evaluate"] == 9
    assert "train" not in counts


@pytest.mark.slow
def test_invalid_config_fails_before_jobs(workdir: Path) -> None:
    result = snakemake(workdir, "--dry-run", "--config", "trian={}")
    assert result.returncode != 0
    assert "trian" in result.stdout + result.stderr
