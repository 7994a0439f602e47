# qcsbm-bench: the benchmark DAG in one image. It runs as a non-root user and needs no
# network at run time.
#
#   docker build -t qcsbm-bench .
#   mkdir -p results && docker run --rm -v "$PWD/results:/opt/qcsbm-bench/results" qcsbm-bench
#
# Arguments after the image name go to snakemake, e.g. `--configfile
# workflow/config/smoke.yaml` or a target file. On x86_64 the torch wheel from PyPI is a
# CUDA build, so `docker run --gpus all ... --config device=cuda` uses NVIDIA GPUs where
# the NVIDIA Container Toolkit is installed.

# Any Debian bookworm image with python3 (3.11), python3-venv and pip works as the base,
# for example one made with debootstrap where no registry is reachable
# (tests/container/check.sh does that).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Package index settings for this build only, e.g. a local mirror. Unset by default, so pip
# uses PyPI. ARG values reach the RUN steps as environment variables but are not kept in
# the image's environment.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL

# The default uid matches the first user of most Linux desktops, so files written to a
# mounted folder belong to that user on the host.
ARG USER_UID=1000
ARG USER_GID=1000

# PATH is spelled out because an imported base image (docker import) sets no PATH.
# Matplotlib and the XDG cache need a writable folder, and /tmp is writable for any --user.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

RUN python3 -m venv /opt/venv \
    && pip install pip==26.3 setuptools==84.2.1 \
    && groupadd --gid "${USER_GID}" qcsbm \
    && useradd --uid "${USER_UID}" --gid "${USER_GID}" --create-home --shell /bin/bash qcsbm

WORKDIR /opt/qcsbm-bench

# Dependencies get their own layer: pyproject.toml with an empty stand-in package lets pip
# install every pinned dependency, so a change to the source does not reinstall torch.
COPY pyproject.toml ./
COPY envs/constraints.txt envs/
RUN mkdir -p src/qcsbm_bench \
    && touch src/qcsbm_bench/__init__.py README.md \
    && pip install --no-build-isolation --constraint envs/constraints.txt . \
    && pip uninstall --yes qcsbm-bench \
    && rm -rf build src README.md

COPY README.md Snakefile ./
COPY src/ src/
COPY workflow/ workflow/
COPY envs/ envs/
RUN pip install --no-build-isolation --no-deps . \
    && pip check \
    && rm -rf build src/*.egg-info

# Snakemake keeps its metadata (.snakemake/: incomplete-job markers, locks, logs) in the
# working directory. The link moves it into the results folder, so a mounted folder keeps
# it across containers, and a killed run resumes like a local one.
RUN mkdir -p results \
    && chown "${USER_UID}:${USER_GID}" results \
    && ln -s results/.snakemake .snakemake \
    && printf '%s\n' \
        '#!/bin/sh' \
        '# Run the benchmark DAG with snakemake, passing on all arguments.' \
        'set -e' \
        '# Snakemake reads the user name, which a --user uid without a passwd entry lacks.' \
        'export USER="${USER:-$(id -un 2>/dev/null || id -u)}"' \
        'if ! mkdir -p results/.snakemake 2>/dev/null || [ ! -w results ]; then' \
        '  echo "qcsbm-bench: $(pwd)/results is not writable by uid $(id -u)." >&2' \
        '  echo "Create the host folder first and run as its owner, e.g.:" >&2' \
        '  echo "  mkdir -p results && docker run --rm --user \"\$(id -u):\$(id -g)\" -v \"\$PWD/results:$(pwd)/results\" qcsbm-bench" >&2' \
        '  exit 1' \
        'fi' \
        'exec snakemake --cores all "$@"' \
        > /usr/local/bin/qcsbm-bench-run \
    && chmod 0755 /usr/local/bin/qcsbm-bench-run

USER ${USER_UID}:${USER_GID}
ENTRYPOINT ["/usr/local/bin/qcsbm-bench-run"]
