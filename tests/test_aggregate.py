"""Tests of the metrics aggregation, Table 1, its findings and the published values."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qcsbm_bench.aggregate import (
    METRIC_COLUMNS,
    collect_metrics,
    compare_table1,
    format_estimate,
    format_number,
    sampler_table,
    summarise,
    table1,
    table1_findings,
)
from qcsbm_bench.cli import main as cli_main
from qcsbm_bench.published import CITATION, published_results

DATASETS = ("8gaussians", "spirals", "checkerboard")
VARIANTS = ("csbm", "usbm", "qcsbm")
T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2), the factor for n = 3.

# Seed-mean values per (dataset, variant) for asym, nasym, score_error and nll.
BASE_VALUES: dict[tuple[str, str], tuple[float, float, float, float]] = {
    ("8gaussians", "csbm"): (0.0, 0.0, 0.43, 5.3),
    ("8gaussians", "usbm"): (2e-2, 2e-3, 0.41, 5.1),
    ("8gaussians", "qcsbm"): (1e-2, 1e-3, 0.42, 5.0),
    ("spirals", "csbm"): (0.0, 0.0, 1.6, 5.6),
    ("spirals", "usbm"): (0.7, 8e-2, 1.5, 5.2),
    ("spirals", "qcsbm"): (0.3, 5e-2, 1.5, 5.1),
    ("checkerboard", "csbm"): (0.0, 0.0, 0.77, 5.2),
    ("checkerboard", "usbm"): (0.1, 2e-2, 0.68, 5.1),
    ("checkerboard", "qcsbm"): (7e-2, 1e-2, 0.68, 5.0),
}


def write_metrics_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows in the per-run metrics format; None becomes an empty cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(METRIC_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return path


def run_rows(
    dataset: str, variant: str, seed: int, values: tuple[float, float, float, float]
) -> list[dict[str, object]]:
    """Rows of one run: Table 1 averages, two per-level rows and PC sampler metrics."""
    asym, nasym, score_error, nll = values
    base = {"dataset": dataset, "variant": variant, "seed": seed}
    rows: list[dict[str, object]] = [
        {**base, "metric": "asym", "value": asym, "unit": "", "sampler": None, "t": None},
        {**base, "metric": "nasym", "value": nasym, "unit": "", "sampler": None, "t": None},
        {
            **base,
            "metric": "score_error",
            "value": score_error,
            "unit": "",
            "sampler": None,
            "t": None,
        },
        {**base, "metric": "nll", "value": nll, "unit": "nats", "sampler": None, "t": None},
    ]
    for t in (0.01, 0.5):
        rows.append(
            {**base, "metric": "asym", "value": 10 * asym, "unit": "", "sampler": None, "t": t}
        )
    for metric, value, unit in (
        ("precision", 0.8, ""),
        ("recall", 0.7, ""),
        ("density", 1.0, ""),
        ("coverage", 0.9, ""),
        ("nfe", 1000.0, ""),
        ("sample_seconds", 2.0 + seed, "s"),
    ):
        rows.append(
            {**base, "metric": metric, "value": value, "unit": unit, "sampler": "pc", "t": None}
        )
    return rows


def write_benchmark(
    tmp_path: Path,
    values: dict[tuple[str, str], tuple[float, float, float, float]],
    seeds: tuple[int, ...] = (0, 1, 2),
) -> list[Path]:
    """Write one metrics CSV per run; seed k adds (k - 1) * 1% of each value."""
    paths = []
    for (dataset, variant), base in values.items():
        for seed in seeds:
            scaled = tuple(value * (1 + 0.01 * (seed - 1)) for value in base)
            rows = run_rows(dataset, variant, seed, scaled)  # type: ignore[arg-type]
            path = tmp_path / "runs" / dataset / variant / f"seed-{seed}" / "metrics.csv"
            paths.append(write_metrics_csv(path, rows))
    return paths


def summary_of(tmp_path: Path, values: dict[tuple[str, str], tuple[float, ...]]) -> pd.DataFrame:
    return summarise(collect_metrics(write_benchmark(tmp_path, values)))  # type: ignore[arg-type]


def test_ci95_three_seeds_hand_computed(tmp_path: Path) -> None:
    paths = []
    for seed, value in enumerate((1.0, 2.0, 3.0)):
        row = {
            "dataset": "spirals",
            "variant": "usbm",
            "seed": seed,
            "metric": "asym",
            "value": value,
            "unit": "",
            "sampler": None,
            "t": None,
        }
        paths.append(write_metrics_csv(tmp_path / f"run{seed}.csv", [row]))

    summary = summarise(collect_metrics(paths))

    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(2.0)
    assert row["std"] == pytest.approx(1.0)
    assert row["ci95"] == pytest.approx(T_975_2 / math.sqrt(3))
    assert row["ci95"] == pytest.approx(2.484138, abs=1e-6)
    assert row["min"] == 1.0
    assert row["max"] == 3.0


def test_single_seed_gives_nan_ci(tmp_path: Path) -> None:
    row = {
        "dataset": "8gaussians",
        "variant": "csbm",
        "seed": 4,
        "metric": "nll",
        "value": 5.25,
        "unit": "nats",
        "sampler": None,
        "t": None,
    }
    summary = summarise(collect_metrics([write_metrics_csv(tmp_path / "run.csv", [row])]))

    assert summary["n"].tolist() == [1]
    assert summary["mean"].iloc[0] == 5.25
    assert math.isnan(summary["std"].iloc[0])
    assert math.isnan(summary["ci95"].iloc[0])
    assert format_estimate(summary["mean"].iloc[0], summary["ci95"].iloc[0]) == "5.25"


def test_summary_skips_per_level_rows(tmp_path: Path) -> None:
    paths = write_benchmark(tmp_path, {("spirals", "usbm"): (0.7, 8e-2, 1.5, 5.2)})
    metrics = collect_metrics(paths)
    summary = summarise(metrics)

    asym = summary.loc[summary["metric"] == "asym"]
    assert len(asym) == 1
    # Seeds 0, 1, 2 scale 0.7 by 0.99, 1.00, 1.01; the per-level rows (10x) must not count.
    assert asym["mean"].iloc[0] == pytest.approx(0.7)
    assert asym["n"].iloc[0] == 3
    assert metrics["t"].notna().sum() == 6
    seconds = summary.loc[summary["metric"] == "sample_seconds"]
    assert seconds["sampler"].tolist() == ["pc"]
    assert seconds["unit"].tolist() == ["s"]
    assert seconds["mean"].iloc[0] == pytest.approx(3.0)


def test_collect_parses_empty_cells(tmp_path: Path) -> None:
    paths = write_benchmark(tmp_path, {("spirals", "qcsbm"): (0.3, 5e-2, 1.5, 5.1)}, seeds=(2,))
    metrics = collect_metrics(paths)

    assert list(metrics.columns) == list(METRIC_COLUMNS)
    averages = metrics.loc[metrics["metric"] == "nasym"]
    assert averages["sampler"].tolist() == [""]
    assert averages["unit"].tolist() == [""]
    assert averages["t"].isna().all()
    assert metrics["seed"].dtype == np.int64
    assert metrics["value"].dtype == np.float64


def test_collect_sorts_in_paper_order(tmp_path: Path) -> None:
    paths = write_benchmark(tmp_path, BASE_VALUES, seeds=(1, 0))
    metrics = collect_metrics(list(reversed(paths)))

    pairs = list(dict.fromkeys(zip(metrics["dataset"], metrics["variant"], strict=True)))
    assert pairs == [(dataset, variant) for dataset in DATASETS for variant in VARIANTS]
    first_run = metrics.loc[(metrics["dataset"] == "8gaussians") & (metrics["variant"] == "csbm")]
    assert first_run["seed"].is_monotonic_increasing


def test_missing_column_names_file(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "broken.csv"
    path.parent.mkdir(parents=True)
    path.write_text("dataset,variant,seed,metric,value,unit,t\nspirals,usbm,0,asym,0.5,,\n")
    good = write_benchmark(tmp_path, {("spirals", "usbm"): (0.7, 8e-2, 1.5, 5.2)}, seeds=(0,))

    with pytest.raises(ValueError, match=r"broken\.csv") as info:
        collect_metrics([*good, path])
    assert "sampler" in str(info.value)
    assert "missing column" in str(info.value)


def test_non_numeric_value_names_file(tmp_path: Path) -> None:
    row = {
        "dataset": "spirals",
        "variant": "usbm",
        "seed": 0,
        "metric": "asym",
        "value": "oops",
        "unit": "",
        "sampler": None,
        "t": None,
    }
    path = write_metrics_csv(tmp_path / "bad-value.csv", [row])

    with pytest.raises(ValueError, match=r"bad-value\.csv.*'oops'"):
        collect_metrics([path])


def test_repeated_run_is_rejected(tmp_path: Path) -> None:
    paths = write_benchmark(tmp_path, {("spirals", "usbm"): (0.7, 8e-2, 1.5, 5.2)}, seeds=(0,))

    with pytest.raises(ValueError, match="appears 2 times"):
        collect_metrics([paths[0], paths[0]])


def test_no_metrics_files_rejected() -> None:
    with pytest.raises(ValueError, match="No metrics files"):
        collect_metrics([])


def test_format_number_cases() -> None:
    assert format_number(0.0) == "0"
    assert format_number(0.434) == "0.434"
    assert format_number(5.0) == "5.00"
    assert format_number(123.0) == "123"
    assert format_number(1.06e-2) == "1.06e-2"
    assert format_number(-7.06e-2) == "-7.06e-2"
    assert format_number(1.88e8) == "1.88e8"
    assert format_number(float("nan")) == "n/a"
    assert format_estimate(0.5, 0.0123) == "0.500 ± 1.23e-2"


def test_published_values_in_place() -> None:
    published = published_results()
    assert len(published.loc[published["table"] == 1]) == 3 * 3 * 4
    assert len(published.loc[published["table"] == 2]) == 4 * 3 * 3
    assert len(published.loc[published["table"] == 3]) == 4 * 3 * 4

    def value(table: int, dataset: str, variant: str, metric: str) -> float:
        match = published.loc[
            (published["table"] == table)
            & (published["dataset"] == dataset)
            & (published["variant"] == variant)
            & (published["metric"] == metric)
        ]
        assert len(match) == 1
        return float(match["value"].iloc[0])

    assert value(1, "spirals", "usbm", "asym") == 0.735
    assert value(1, "checkerboard", "qcsbm", "nasym") == 1.70e-2
    assert value(2, "cifar10", "usbm", "asym") == 1.88e8
    assert value(2, "svhn", "qcsbm", "nll") == 2.01
    assert value(3, "imagenet32", "csbm", "fid") == 28.97
    assert value(3, "cifar100", "qcsbm", "recall") == 0.67
    units = published.loc[published["metric"] == "nll"].groupby("table")["unit"].unique()
    assert list(units.loc[1]) == ["nats"]
    assert list(units.loc[2]) == ["bits/dim"]
    assert "ICML 2023" in CITATION
    with pytest.raises(ValueError, match="Unknown table"):
        published_results((4,))


def test_table1_rows_and_paper_values(tmp_path: Path) -> None:
    table = table1(summary_of(tmp_path, BASE_VALUES), published_results())

    assert len(table) == 9
    assert list(zip(table["dataset"], table["variant"], strict=True)) == [
        (dataset, variant) for dataset in DATASETS for variant in VARIANTS
    ]
    row = table.set_index(["dataset", "variant"])
    assert row.loc[("8gaussians", "usbm"), "Asym paper"] == "1.06e-2"
    assert row.loc[("spirals", "usbm"), "Asym paper"] == "0.735"
    assert row.loc[("checkerboard", "csbm"), "NLL (nats) paper"] == "5.19"
    assert row.loc[("spirals", "qcsbm"), "score error paper"] == "1.56"
    assert row.loc[("8gaussians", "csbm"), "NAsym paper"] == "0"
    assert (table["seeds"] == "3").all()
    # Seeds are 0.99, 1.00 and 1.01 times the base value, so std = 0.01 * base.
    half_width = T_975_2 * 0.01 * 5.2 / math.sqrt(3)
    assert row.loc[("spirals", "usbm"), "NLL (nats)"] == f"5.20 ± {format_number(half_width)}"


def test_table1_checks_paper_in_ci(tmp_path: Path) -> None:
    values = dict(BASE_VALUES)
    # The interval 5.02 +- 0.13 contains the paper's 5.02, and 5.5 +- 0.14 misses its 5.01.
    values[("8gaussians", "usbm")] = (2e-2, 2e-3, 0.41, 5.02)
    values[("8gaussians", "qcsbm")] = (1e-2, 1e-3, 0.42, 5.5)
    summary = summary_of(tmp_path, values)

    cells = compare_table1(summary, published_results()).set_index(["dataset", "variant", "metric"])
    assert bool(cells.loc[("8gaussians", "usbm", "nll"), "paper_in_ci"]) is True
    assert bool(cells.loc[("8gaussians", "qcsbm", "nll"), "paper_in_ci"]) is False
    # All-zero CSBM Asym has a zero-width interval that contains the paper's 0.
    assert bool(cells.loc[("spirals", "csbm", "asym"), "paper_in_ci"]) is True

    table = table1(summary, published_results()).set_index(["dataset", "variant"])
    assert table.loc[("8gaussians", "usbm"), "NLL (nats) paper in CI"] == "yes"
    assert table.loc[("8gaussians", "qcsbm"), "NLL (nats) paper in CI"] == "no"


def test_table1_single_seed_has_no_check(tmp_path: Path) -> None:
    paths = write_benchmark(tmp_path, BASE_VALUES, seeds=(0,))
    table = table1(summarise(collect_metrics(paths)), published_results())

    assert (table["seeds"] == "1").all()
    assert (table["Asym paper in CI"] == "n/a").all()
    assert "±" not in table.loc[4, "NLL (nats)"]


def test_table1_missing_variant_shows_na(tmp_path: Path) -> None:
    values = {key: value for key, value in BASE_VALUES.items() if key[0] != "spirals"}
    table = table1(summary_of(tmp_path, values), published_results())

    assert len(table) == 9
    spirals = table.loc[table["dataset"] == "spirals"]
    assert (spirals["Asym"] == "n/a").all()
    assert (spirals["seeds"] == "0").all()
    assert spirals["Asym paper"].tolist() == ["0", "0.735", "0.318"]


def findings_line(lines: list[str], header_start: str, dataset: str) -> str:
    """Return the findings line for `dataset` below the header that starts with header_start."""
    start = next(index for index, line in enumerate(lines) if line.startswith(header_start))
    for line in lines[start + 1 :]:
        if not line.startswith("  - "):
            break
        if line.startswith(f"  - {dataset}:"):
            return line
    raise AssertionError(f"No findings line for {dataset} under {header_start!r}.")


def test_findings_follow_the_data(tmp_path: Path) -> None:
    lines = table1_findings(summary_of(tmp_path / "base", BASE_VALUES), published_results())

    asym = findings_line(lines, "- Asym(QCSBM) < Asym(USBM)", "spirals")
    assert asym.startswith("  - spirals: reproduction yes (0.300 vs 0.700")
    assert "paper yes (0.318 vs 0.735)" in asym
    assert "agrees with the paper" in asym
    zero = findings_line(lines, "- CSBM Asym at 0", "checkerboard")
    assert "reproduction yes (max |NAsym| 0)" in zero
    nll = findings_line(lines, "- NLL order", "8gaussians")
    assert "reproduction qcsbm 5.00 < usbm 5.10 < csbm 5.30" in nll
    assert "paper qcsbm 5.01 < usbm 5.02 < csbm 5.24" in nll


def test_findings_flip_with_data(tmp_path: Path) -> None:
    flipped = dict(BASE_VALUES)
    flipped[("spirals", "qcsbm")] = (0.9, 5e-2, 1.5, 5.1)
    flipped[("checkerboard", "csbm")] = (1e-3, 1e-4, 0.77, 5.2)
    flipped[("8gaussians", "csbm")] = (0.0, 0.0, 0.43, 4.9)
    lines = table1_findings(summary_of(tmp_path, flipped), published_results())

    asym = findings_line(lines, "- Asym(QCSBM) < Asym(USBM)", "spirals")
    assert asym.startswith("  - spirals: reproduction no (0.900 vs 0.700")
    assert "differs from the paper" in asym
    zero = findings_line(lines, "- CSBM Asym at 0", "checkerboard")
    assert zero.startswith("  - checkerboard: reproduction no (max |NAsym| 1.01e-4)")
    nll = findings_line(lines, "- NLL order", "8gaussians")
    assert "reproduction csbm 4.90 < qcsbm 5.00 < usbm 5.10" in nll
    assert "differs from the paper" in nll


def test_findings_tolerance_is_a_parameter(tmp_path: Path) -> None:
    values = dict(BASE_VALUES)
    values[("spirals", "csbm")] = (1e-9, 1e-8, 1.6, 5.6)
    summary = summary_of(tmp_path, values)

    loose = table1_findings(summary, published_results())
    strict = table1_findings(summary, published_results(), zero_tolerance=1e-12)
    assert "reproduction yes" in findings_line(loose, "- CSBM Asym at 0", "spirals")
    assert "reproduction no" in findings_line(strict, "- CSBM Asym at 0", "spirals")


def test_sampler_table_cells(tmp_path: Path) -> None:
    table = sampler_table(summary_of(tmp_path, BASE_VALUES))

    assert len(table) == 9
    assert (table["sampler"] == "pc").all()
    assert list(table.columns[4:]) == [
        "precision",
        "recall",
        "density",
        "coverage",
        "NFE",
        "seconds",
    ]
    # Seconds are 2, 3, 4 over the seeds: mean 3, std 1.
    assert table["seconds"].iloc[0] == f"3.00 ± {format_number(T_975_2 / math.sqrt(3))}"
    assert table["precision"].iloc[0] == "0.800 ± 0"


def test_cli_writes_all_outputs(tmp_path: Path) -> None:
    paths = write_benchmark(tmp_path, BASE_VALUES)
    out_dir = tmp_path / "out"

    assert cli_main(["aggregate", "--metrics", *map(str, paths), "--out-dir", str(out_dir)]) == 0

    for name in ("all_metrics.csv", "summary.csv", "table1.csv", "table1.md", "samplers.csv"):
        assert (out_dir / name).stat().st_size > 0, name
    reread = collect_metrics([out_dir / "all_metrics.csv"])
    assert len(reread) == 9 * 3 * 12
    summary = pd.read_csv(out_dir / "summary.csv")
    assert {"n", "mean", "std", "ci95"} <= set(summary.columns)
    markdown = (out_dir / "table1.md").read_text(encoding="utf-8")
    assert "| dataset | variant | seeds | Asym | Asym paper |" in markdown
    assert "## Findings" in markdown
    assert markdown.count("\n| ") == 10


def test_findings_incomplete_nll_order(tmp_path: Path) -> None:
    values = {key: value for key, value in BASE_VALUES.items() if key != ("spirals", "csbm")}
    lines = table1_findings(summary_of(tmp_path, values), published_results())

    nll = findings_line(lines, "- NLL order", "spirals")
    assert "reproduction qcsbm 5.10 < usbm 5.20;" in nll
    assert "paper qcsbm 5.04 < usbm 5.11 < csbm 5.61." in nll
    assert "the paper" not in nll
    zero = findings_line(lines, "- CSBM Asym at 0", "spirals")
    assert "reproduction unknown (no NAsym for csbm)" in zero


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_table1_from_empty_summary() -> None:
    empty = summarise(pd.DataFrame(columns=list(METRIC_COLUMNS)).astype({"t": float}))
    table = table1(empty, published_results())

    assert len(table) == 9
    assert (table["Asym"] == "n/a").all()
    assert (table["NLL (nats) paper in CI"] == "n/a").all()
    assert table["NLL (nats) paper"].tolist()[:3] == ["5.24", "5.02", "5.01"]
