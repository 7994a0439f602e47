#!/usr/bin/env bash
# Install qcsbm-bench into the new conda environment of qcsbm-bench.yaml with the same pins
# as the Docker image. Snakemake runs this once after creating the environment, with the
# environment active and Snakemake's working directory (the repository root) as the
# current directory. The install is editable, so later source changes need no new env.
# NOTE: not exercised here, because no conda is available on the development machines.
set -euo pipefail

if [ ! -f pyproject.toml ] || [ ! -f envs/constraints.txt ]; then
    echo "qcsbm-bench post-deploy: pyproject.toml or envs/constraints.txt not found in $PWD;" \
        "run snakemake from the repository root." >&2
    exit 1
fi
python -m pip install pip==26.3 setuptools==84.2.1
python -m pip install --no-build-isolation --constraint envs/constraints.txt --editable .
python -m pip check
