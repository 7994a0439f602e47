"""Print the pip constraints that pin every runtime dependency of the installed qcsbm-bench.

The output is the dependency closure of the installed package, extras of dependencies
included, as `name==version` lines. Test-only extras are left out. Run it in an
environment made by `pip install -e .` and write the result to envs/constraints.txt:

    python tests/container/freeze_constraints.py > envs/constraints.txt
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# Exact versions of every runtime dependency of qcsbm-bench. The Dockerfile and
# envs/qcsbm-bench.post-deploy.sh pass this file to pip as constraints, so the image and
# the conda environment install the same releases as the tested development install.
# Generated from an install of pyproject.toml on Linux x86_64 with Python 3.11. Regenerate
# it after changing the dependencies in pyproject.toml:
#   python tests/container/freeze_constraints.py > envs/constraints.txt"""


def dependency_closure(root: str) -> dict[str, str]:
    """Return {name: installed version} for every distribution that `root` requires."""
    versions: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [(canonicalize_name(root), frozenset[str]())]
    while pending:
        name, extras = pending.pop()
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} is required but not installed; run `pip install -e .` first")
        versions[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            # A marker such as `extra == "cublas"` is true only for the extras requested.
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            marker = requirement.marker
            if marker and not any(marker.evaluate(env) for env in environments):
                continue
            pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    versions.pop(canonicalize_name(root))
    return versions


def main() -> None:
    print(HEADER)
    for name, version in sorted(dependency_closure("qcsbm-bench").items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
