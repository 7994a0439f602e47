"""The estimator-variance measurement on the toy network, where the exact value is known."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from qcsbm_bench.estimator_variance import COLUMNS, add_arguments, run


def test_variance_rows_and_two_d_facts(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--out-dir", str(tmp_path), "--networks", "toy", "--t", "0.5", "--n-probes", "400"]
    )
    assert run(args) == 0
    with open(tmp_path / "estimator_variance.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 4
    by_key = {(row["estimator"], row["probe"]): row for row in rows}

    # In 2-D, (J - J^T) v has norm |J_12 - J_21| ||v|| and ||v||^2 = 2 for every sign vector,
    # so the JVP form with Rademacher probes has no variance at all.
    exact_rademacher = by_key[("hutchinson-jvp", "rademacher")]
    assert float(exact_rademacher["relative_std"]) < 1e-4
    assert float(exact_rademacher["mean_estimate"]) > 0

    exact = float(rows[0]["exact"])
    for row in rows:
        assert float(row["seconds_per_probe"]) > 0
        # Means of 400 probes lie within 6 standard errors of the exact value.
        band = 6 * float(row["single_probe_std"]) / 400**0.5 + 1e-6 * exact
        assert abs(float(row["mean_estimate"]) - exact) <= band
    assert (tmp_path / "estimator_variance.md").read_text().startswith("| network |")
