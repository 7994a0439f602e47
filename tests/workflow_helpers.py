"""Helpers shared by the tests that run Snakemake on a copy of the workflow."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_changed_config(workdir: Path, base: str, name: str, changes: dict[str, object]) -> str:
    """Write workdir/name: the config file base with dotted keys set to new values."""
    config = yaml.safe_load((workdir / base).read_text())
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    (workdir / name).write_text(yaml.safe_dump(config))
    return name
