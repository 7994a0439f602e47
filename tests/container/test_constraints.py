"""envs/constraints.txt, the pins of the Docker image and the conda environment."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def read_constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "envs" / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    return pins


def test_constraints_cover_pyproject_dependencies() -> None:
    pins = read_constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} has no pin; regenerate envs/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} does not satisfy {requirement.specifier} from "
            "pyproject.toml; regenerate envs/constraints.txt"
        )


def test_constraints_are_exact_pins() -> None:
    text = (ROOT / "envs" / "constraints.txt").read_text()
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.count("==") == 1, line
