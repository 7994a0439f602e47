"""The profiles in workflow/profiles, checked without a SLURM cluster or Apptainer.

SLURM: a dry run shows the resources that each job would request, and a run against
stand-in SLURM commands (shell scripts on PATH) shows the sbatch options that the executor
plugin builds from them. These tests skip when snakemake-executor-plugin-slurm is not
installed. Apptainer: a stand-in `apptainer` records how Snakemake calls it and runs the
job's command on the host, which checks the wiring but not a real container.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

needs_slurm_plugin = pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="snakemake-executor-plugin-slurm is not installed; pip install -e '.[cluster]'",
)

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PROFILE = "workflow/profiles/slurm"
# One distinct value per resource, so each one can be found in the output. They go in a
# config file because `--config` parses nested values as strings in Snakemake 9.27.1.
TRAIN_RESOURCES = "resources:\n  train: {threads: 3, mem_mb: 1234, runtime: 7, gpu: 2}\n"


def copy_workflow(root: Path) -> Path:
    """Copy the workflow into `root` and add train_resources.yaml, a config overlay."""
    root.mkdir(exist_ok=True)
    shutil.copy(ROOT / "Snakefile", root / "Snakefile")
    shutil.copytree(ROOT / "workflow", root / "workflow")
    shutil.copytree(ROOT / "envs", root / "envs")
    (root / "train_resources.yaml").write_text(TRAIN_RESOURCES)
    return root


def snakemake(
    workdir: Path,
    *args: str,
    overlay: bool = False,
    stand_ins: Path | None = None,
    calls: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run snakemake on the smoke config, with stand-in commands first on PATH if given."""
    config_files = ["workflow/config/smoke.yaml"] + (["train_resources.yaml"] if overlay else [])
    command = [*SNAKEMAKE, "--configfile", *config_files, *args]
    # The rules call the qcsbm-bench script, which lives beside this Python interpreter.
    path = [str(Path(sys.executable).parent), os.environ["PATH"]]
    env = dict(os.environ)
    if stand_ins is not None:
        path.insert(0, str(stand_ins))
    if calls is not None:
        env["STAND_IN_CALLS"] = str(calls)
    env["PATH"] = os.pathsep.join(path)
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, check=False
    )


def job_blocks(output: str, rule: str) -> list[str]:
    """Return the dry-run text of every job of `rule`, one string per job."""
    blocks = re.split(r"\n(?=\[[^\]]+\]\n)", output)
    return [block for block in blocks if f"\nrule {rule}:" in f"\n{block}"]


@needs_slurm_plugin
def test_dry_run_uses_slurm_profile(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "--dry-run", "--profile", PROFILE)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"Using profile {PROFILE}" in output
    assert re.search(r"^train\s+9$", output, re.MULTILINE), output[-4000:]


@needs_slurm_plugin
def test_dry_run_shows_config_resources(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "--dry-run", "--profile", PROFILE, overlay=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    train_jobs = job_blocks(output, "train")
    assert len(train_jobs) == 9, output[-4000:]
    # A dry run caps threads at --cores (1 when not given), so threads are checked in the
    # sbatch test below.
    for block in train_jobs:
        assert "runtime=7" in block
        assert "mem_mb=1234" in block
        assert "gpu=2" in block
    # Stages left out of the override keep the values of the config files.
    sample_jobs = job_blocks(output, "sample")
    assert sample_jobs, output[-4000:]
    for block in sample_jobs:
        assert "gpu=0" in block
        assert "mem_mb=1234" not in block


@needs_slurm_plugin
def test_paper_dry_run_requests_gpus(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    command = [*SNAKEMAKE, "--configfile", "workflow/config/paper.yaml", "--dry-run"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [*command, "--profile", PROFILE],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    train_jobs = job_blocks(output, "train_image_model")
    assert len(train_jobs) == 12, output[-4000:]
    for block in train_jobs:
        assert "gpu=1" in block
        assert "runtime=10080" in block
        assert "mem_mb=64000" in block
    shard_jobs = job_blocks(output, "sample_image_shard")
    assert len(shard_jobs) == 240
    assert all("gpu=1" in block for block in shard_jobs)
    merge_jobs = job_blocks(output, "merge_image_samples")
    assert len(merge_jobs) == 24
    # Merging only reads and writes arrays, so its jobs request no GPU.
    assert all("gpu=" not in block for block in merge_jobs)


SLURM_STAND_INS = {
    # Records its arguments, then fails, so that no job runs and the workflow stops.
    "sbatch": 'printf "%s\\n" "$*" >> "$STAND_IN_CALLS"\n'
    'echo "sbatch stand-in: no SLURM cluster here" >&2\nexit 1\n',
    # Prints "none", which the plugin reads as a cluster without accounts.
    "sacct": "echo none\n",
    "squeue": "exit 0\n",
    "sinfo": "exit 0\n",
    "scontrol": "exit 0\n",
}


APPTAINER_STAND_IN = """\
case "$1" in
    --version) echo "apptainer version 1.3.6"; exit 0 ;;
    exec) ;;
    *) echo "apptainer stand-in: only --version and exec are supported" >&2; exit 2 ;;
esac
printf "%s\\n" "$*" >> "$STAND_IN_CALLS"
# Snakemake ends the call with IMAGE SHELL -c COMMAND, so run SHELL -c COMMAND on the host.
while [ "$#" -gt 3 ]; do shift; done
exec "$1" "$2" "$3"
"""


def write_stand_ins(folder: Path, stand_ins: dict[str, str]) -> Path:
    folder.mkdir()
    for name, body in stand_ins.items():
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}")
        script.chmod(0o755)
    return folder


@needs_slurm_plugin
def test_sbatch_gets_config_resources(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    bin_dir = write_stand_ins(tmp_path / "bin", SLURM_STAND_INS)
    calls = tmp_path / "sbatch_calls.txt"
    data = "results/smoke/data/8gaussians.npz"
    checkpoint = "results/smoke/runs/8gaussians/qcsbm/seed-0/checkpoint.pt"

    # Make the training data locally, so that the submitted job is the training job.
    prep = snakemake(workdir, "--cores", "1", data, overlay=True)
    assert prep.returncode == 0, (prep.stdout + prep.stderr)[-4000:]

    result = snakemake(
        workdir,
        "--profile",
        PROFILE,
        "--retries",
        "0",
        # The plugin waits 40 s by default before its first job status query.
        "--slurm-init-seconds-before-status-checks",
        "1",
        checkpoint,
        overlay=True,
        stand_ins=bin_dir,
        calls=calls,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, "the sbatch stand-in always fails, so the run must fail"
    assert calls.is_file(), output[-4000:]
    call = calls.read_text()
    assert "--gpus=2" in call
    assert "--mem 1234" in call
    assert "-t 7" in call
    assert "--cpus-per-task=3" in call
    assert "rule_train" in call


def test_apptainer_profile_runs_jobs_in_image(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    bin_dir = write_stand_ins(tmp_path / "bin", {"apptainer": APPTAINER_STAND_IN})
    calls = tmp_path / "apptainer_calls.txt"
    image = tmp_path / "qcsbm-bench.sif"
    image.write_bytes(b"")
    data = "results/smoke/data/spirals.npz"

    result = snakemake(
        workdir,
        "--config",
        f"container={image}",
        "--profile",
        "workflow/profiles/apptainer",
        data,
        stand_ins=bin_dir,
        calls=calls,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert (workdir / data).stat().st_size > 0
    call = calls.read_text()
    assert call.startswith("exec "), call
    assert " --nv " in call
    assert f" {image} " in call
    assert "qcsbm-bench prep-data" in call


def test_without_container_no_apptainer_call(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    bin_dir = write_stand_ins(tmp_path / "bin", {"apptainer": APPTAINER_STAND_IN})
    calls = tmp_path / "apptainer_calls.txt"
    data = "results/smoke/data/spirals.npz"

    result = snakemake(workdir, "--cores", "1", data, stand_ins=bin_dir, calls=calls)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (workdir / data).is_file()
    assert not calls.exists()
