"""Helpers shared by the tests that edit configs and run Snakemake on a copy of the workflow."""

from __future__ import annotations

from pathlib import Path

import yaml


def set_path(config: dict, path: str, value: object) -> None:
    """Set the value at a dotted key path, e.g. "train.qc.n_probes", of a nested config."""
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


def write_changed_config(workdir: Path, base: str, name: str, changes: dict[str, object]) -> str:
    """Write workdir/name: the config file base with dotted keys set to new values."""
    config = yaml.safe_load((workdir / base).read_text())
    for path, value in changes.items():
        set_path(config, path, value)
    (workdir / name).write_text(yaml.safe_dump(config))
    return name
