"""Aggregate per-run metrics CSVs into seed summaries, Table 1 and a sampler table.

Each run's evaluate stage writes a tidy CSV with the columns of METRIC_COLUMNS. A row with an
empty t is an average (for asym, nasym and score_error the mean over noise levels, which is the
Table 1 number). A row with t set belongs to one noise level, and only the figures use it.

summarise() pools the averages over seeds: mean, sample standard deviation (ddof=1) and the
half-width of the 95% Student-t interval, t_{0.975, n-1} * std / sqrt(n), which is NaN for
n = 1. Table 1 sets the reproduction beside the published values of Chao et al. (ICML 2023),
which live in qcsbm_bench.published.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from qcsbm_bench.published import (
    CITATION,
    TOY_DATASETS,
    VARIANTS,
    published_results,
)

logger = logging.getLogger(__name__)

METRIC_COLUMNS: tuple[str, ...] = (
    "dataset",
    "variant",
    "seed",
    "metric",
    "value",
    "unit",
    "sampler",
    "t",
)
# Key of one row. Two rows with the same key mean that a run's file was passed twice.
ROW_KEY: tuple[str, ...] = ("dataset", "variant", "seed", "metric", "sampler", "t")
SUMMARY_KEY: tuple[str, ...] = ("dataset", "variant", "metric", "sampler", "unit")
SUMMARY_COLUMNS: tuple[str, ...] = (*SUMMARY_KEY, "n", "mean", "std", "ci95", "min", "max")

TABLE1_LABELS: dict[str, str] = {
    "asym": "Asym",
    "nasym": "NAsym",
    "score_error": "score error",
    "nll": "NLL (nats)",
}
SAMPLER_LABELS: dict[str, str] = {
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
    "nfe": "NFE",
    "sample_seconds": "seconds",
}

# A CSBM counts as exactly conservative when |NAsym| (Asym relative to ||J||_F^2) stays at or
# below this on every seed. Float32 rounding in an exact Jacobian of -grad E leaves about 1e-14
# (an estimate from the squared float32 epsilon). A float32 Hutchinson estimate leaves up to
# about 1e-7, because it subtracts two similar quadratic forms. Paper USBMs have 1e-3 to 1e-1.
CSBM_ZERO_TOLERANCE = 1e-6

MISSING_CELL = "n/a"


# Reading and validating the per-run files.


def _parse_numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Convert a text column to float. Empty cells and "nan" become NaN."""
    text = frame[column].str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    blank = text.eq("") | text.str.lower().eq("nan")
    invalid = numbers.isna() & ~blank
    if invalid.any():
        row = int(np.flatnonzero(invalid.to_numpy())[0])
        raise ValueError(
            f"Metrics file {path} has a non-numeric {column} {text.iloc[row]!r} in data row "
            f"{row + 1}; fix the evaluate stage that wrote it."
        )
    return numbers.astype("float64").where(~blank)


def _read_metrics_file(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise ValueError(
            f"Metrics file {path} is empty; expected a header with the columns "
            f"{', '.join(METRIC_COLUMNS)}."
        ) from error

    missing = [column for column in METRIC_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"Metrics file {path} is missing column(s) {', '.join(missing)}; expected the "
            f"columns {', '.join(METRIC_COLUMNS)}. Rerun the evaluate stage that wrote it."
        )

    frame = frame.loc[:, list(METRIC_COLUMNS)].copy()
    for column in ("dataset", "variant", "metric"):
        frame[column] = frame[column].str.strip()
        if frame[column].eq("").any():
            row = int(np.flatnonzero(frame[column].eq("").to_numpy())[0])
            raise ValueError(
                f"Metrics file {path} has an empty {column} in data row {row + 1}; every row "
                f"needs a dataset, variant and metric."
            )
    for column in ("unit", "sampler"):
        frame[column] = frame[column].str.strip()

    seeds = _parse_numbers(frame, "seed", path)
    bad_seed = seeds.isna() | (seeds != seeds.round())
    if bad_seed.any():
        row = int(np.flatnonzero(bad_seed.to_numpy())[0])
        raise ValueError(
            f"Metrics file {path} has an invalid seed {frame['seed'].iloc[row]!r} in data row "
            f"{row + 1}; seeds must be integers."
        )
    frame["seed"] = seeds.astype("int64")
    frame["value"] = _parse_numbers(frame, "value", path)
    frame["t"] = _parse_numbers(frame, "t", path)
    return frame


def _rank_values(values: pd.Series, order: Sequence[str]) -> pd.Series:
    """Rank known names in `order` first, then unknown names alphabetically."""
    unknown = sorted(set(values) - set(order))
    rank = {name: index for index, name in enumerate([*order, *unknown])}
    return values.map(rank)


def _sort_rows(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    orders = {"dataset": TOY_DATASETS, "variant": VARIANTS}

    def sort_key(values: pd.Series) -> pd.Series:
        if values.name in orders:
            return _rank_values(values, orders[str(values.name)])
        return values

    return frame.sort_values(list(columns), key=sort_key, kind="stable").reset_index(drop=True)


def _check_unique_rows(frame: pd.DataFrame, sources: pd.Series | None = None) -> None:
    keys = list(ROW_KEY)
    repeated = frame.duplicated(keys, keep=False)
    if not repeated.any():
        return

    first = frame.loc[repeated.idxmax()]
    same_t = frame["t"].eq(first["t"]) | (frame["t"].isna() & pd.isna(first["t"]))
    same = repeated & frame[keys[:-1]].eq(first[keys[:-1]]).all(axis=1) & same_t
    where = ""
    if sources is not None:
        where = f" in {', '.join(sorted(set(sources[same])))}"
    raise ValueError(
        f"Metric {first['metric']!r} of {first['dataset']}/{first['variant']} seed "
        f"{first['seed']} (sampler {first['sampler']!r}, t {first['t']}) appears "
        f"{int(same.sum())} times{where}; pass each run's metrics file once."
    )


def collect_metrics(paths: Sequence[Path]) -> pd.DataFrame:
    """Concatenate per-run metrics CSVs into one tidy, validated and sorted DataFrame.

    Only the columns of METRIC_COLUMNS are kept. Empty unit and sampler cells become "", empty
    t and value cells become NaN. Raises ValueError naming the file for a missing column, a
    non-numeric number or a non-integer seed, and for a row that appears twice.
    """
    if not paths:
        raise ValueError("No metrics files given; pass at least one per-run metrics CSV.")

    frames: list[pd.DataFrame] = []
    sources: list[str] = []
    for path in paths:
        frame = _read_metrics_file(Path(path))
        frames.append(frame)
        sources.extend([str(path)] * len(frame))

    combined = pd.concat(frames, ignore_index=True)
    _check_unique_rows(combined, pd.Series(sources))
    logger.info("Read %d metric rows from %d files.", len(combined), len(paths))
    return _sort_rows(combined, ["dataset", "variant", "seed", "metric", "sampler", "t"])


# Pooling over seeds.


def ci95_half_width(std: float, n: int) -> float:
    """Return t_{0.975, n-1} * std / sqrt(n), the half-width of the 95% t-interval (NaN if n<2)."""
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Pool the average rows (empty t) over seeds per dataset, variant, metric, sampler and unit.

    Returns the SUMMARY_COLUMNS: n (seeds with a finite value), mean, std (ddof=1), ci95 (the
    95% t-interval half-width, NaN for n = 1), and min and max over seeds. Rows whose value is
    NaN or infinite are left out with a warning.
    """
    missing = [column for column in METRIC_COLUMNS if column not in df.columns]
    if missing:
        raise ValueError(
            f"Metrics table is missing column(s) {', '.join(missing)}; build it with "
            f"collect_metrics()."
        )
    _check_unique_rows(df)

    averages = df.loc[df["t"].isna()]
    finite = averages.loc[np.isfinite(averages["value"].to_numpy(dtype=float))]
    if len(finite) < len(averages):
        dropped = averages.loc[~averages.index.isin(finite.index)]
        logger.warning(
            "Left %d non-finite average values out of the summary, first %s/%s seed %s %s.",
            len(dropped),
            dropped["dataset"].iloc[0],
            dropped["variant"].iloc[0],
            dropped["seed"].iloc[0],
            dropped["metric"].iloc[0],
        )
    if finite.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))

    grouped = finite.groupby(list(SUMMARY_KEY), sort=False)["value"]
    summary = grouped.agg(n="count", mean="mean", std="std", min="min", max="max").reset_index()
    summary["n"] = summary["n"].astype("int64")
    summary["ci95"] = [
        ci95_half_width(std, n) for std, n in zip(summary["std"], summary["n"], strict=True)
    ]
    summary = summary.loc[:, list(SUMMARY_COLUMNS)]
    return _sort_rows(summary, ["dataset", "variant", "metric", "sampler", "unit"])


# Number formatting and Markdown.


def format_number(value: float) -> str:
    """Format with 3 significant digits, in scientific notation below 0.1 and from 1000 on."""
    if not math.isfinite(value):
        return MISSING_CELL
    if value == 0:
        return "0"
    if 0.1 <= abs(value) < 1000:
        text = f"{value:#.3g}"
        if "e" not in text:
            return text.rstrip(".")
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_estimate(mean: float, ci95: float) -> str:
    """Format "mean ± ci95", or the mean alone when the half-width is NaN (n = 1)."""
    if not math.isfinite(mean):
        return MISSING_CELL
    if not math.isfinite(ci95):
        return format_number(mean)
    return f"{format_number(mean)} ± {format_number(ci95)}"


def to_markdown(frame: pd.DataFrame) -> str:
    """Render a DataFrame of text cells as a GitHub Markdown table."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(cell(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = [
        "| " + " | ".join(cell(value) for value in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows]) + "\n"


# Table 1: reproduction beside the paper.


def _table1_reproduction(summary: pd.DataFrame) -> pd.DataFrame:
    """Pick one summary row per dataset, variant and Table 1 metric."""
    rows = summary.loc[summary["metric"].isin(list(TABLE1_LABELS))]
    picked: list[pd.Series] = []
    for (dataset, variant, metric), group in rows.groupby(
        ["dataset", "variant", "metric"], sort=False
    ):
        chosen = group
        if len(group) > 1:
            chosen = group.loc[group["sampler"] == ""]
        if len(chosen) != 1:
            raise ValueError(
                f"Summary has {len(group)} rows for {metric} of {dataset}/{variant} (samplers "
                f"{sorted(group['sampler'])}, units {sorted(group['unit'])}) and Table 1 needs "
                f"one; give exactly one of them an empty sampler."
            )
        row = chosen.iloc[0]
        if metric == "nll" and row["unit"] != "nats":
            raise ValueError(
                f"NLL of {dataset}/{variant} is in unit {row['unit']!r}, but Table 1 compares "
                f"NLL in nats; write the toy NLL in nats."
            )
        picked.append(row)
    columns = ["dataset", "variant", "metric", "n", "mean", "ci95", "min", "max"]
    if not picked:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(picked).loc[:, columns].reset_index(drop=True)


def compare_table1(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Join the reproduction's Table 1 metrics with the paper's values, one row per cell.

    Rows cover every (dataset, variant) of the published Table 1 and any further one in the
    summary, times the four Table 1 metrics. Columns: dataset, variant, metric, n, mean, ci95,
    min, max, paper, and paper_in_ci (nullable boolean, NA when n < 2 or a value is missing).
    """
    paper = published.loc[published["table"] == 1, ["dataset", "variant", "metric", "value"]]
    paper = paper.rename(columns={"value": "paper"})
    reproduction = _table1_reproduction(summary)

    pairs = pd.concat(
        [paper[["dataset", "variant"]], reproduction[["dataset", "variant"]]], ignore_index=True
    ).drop_duplicates()
    metrics = pd.DataFrame({"metric": list(TABLE1_LABELS)})
    cells = pairs.merge(metrics, how="cross")
    cells = cells.merge(reproduction, on=["dataset", "variant", "metric"], how="left")
    cells = cells.merge(paper, on=["dataset", "variant", "metric"], how="left")
    cells["n"] = cells["n"].fillna(0).astype("int64")
    numeric = ["mean", "ci95", "min", "max", "paper"]
    cells[numeric] = cells[numeric].astype("float64")

    # NOTE: the paper gives no spread for its mean over 3 runs, so this checks only whether
    # that mean lies inside the reproduction's interval, not whether the two means differ.
    lower = cells["mean"] - cells["ci95"]
    upper = cells["mean"] + cells["ci95"]
    inside = (lower <= cells["paper"]) & (cells["paper"] <= upper)
    known = (cells["n"] >= 2) & cells["ci95"].notna() & cells["paper"].notna()
    cells["paper_in_ci"] = pd.array(
        [bool(value) if ok else pd.NA for value, ok in zip(inside, known, strict=True)],
        dtype="boolean",
    )

    metric_rank = {metric: index for index, metric in enumerate(TABLE1_LABELS)}
    cells["metric_rank"] = cells["metric"].map(metric_rank)
    cells = _sort_rows(cells, ["dataset", "variant", "metric_rank"]).drop(columns="metric_rank")
    return cells


def _seed_counts(counts: Iterable[int]) -> str:
    values = sorted({int(count) for count in counts})
    if len(values) == 1:
        return str(values[0])
    return f"{values[0]}-{values[-1]}"


def table1(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Build Table 1 as text cells: reproduction, paper value and CI check per metric.

    One row per dataset and variant. For each metric label L (Asym, NAsym, score error,
    NLL (nats)) there are three columns: L ("mean ± ci95", or the mean when n = 1), "L paper"
    and "L paper in CI" (yes, no, or n/a when n < 2 or a value is missing).
    """
    cells = compare_table1(summary, published)
    rows: list[dict[str, str]] = []
    for (dataset, variant), group in cells.groupby(["dataset", "variant"], sort=False):
        row = {"dataset": dataset, "variant": variant, "seeds": _seed_counts(group["n"])}
        for cell in group.itertuples(index=False):
            label = TABLE1_LABELS[str(cell.metric)]
            row[label] = format_estimate(float(cell.mean), float(cell.ci95))
            row[f"{label} paper"] = format_number(float(cell.paper))
            in_ci = cell.paper_in_ci
            if pd.isna(in_ci):
                row[f"{label} paper in CI"] = MISSING_CELL
            else:
                row[f"{label} paper in CI"] = "yes" if in_ci else "no"
        rows.append(row)
    return pd.DataFrame(rows)


# Findings below Table 1, each computed for the reproduction and for the paper.


def _metric_values(cells: pd.DataFrame, dataset: str, metric: str, column: str) -> dict[str, float]:
    rows = cells.loc[(cells["dataset"] == dataset) & (cells["metric"] == metric)]
    return {
        str(variant): float(value)
        for variant, value in zip(rows["variant"], rows[column], strict=True)
        if math.isfinite(float(value))
    }


def _qcsbm_below_usbm(values: dict[str, float]) -> tuple[bool | None, str]:
    if "qcsbm" not in values or "usbm" not in values:
        return None, "missing"
    below = values["qcsbm"] < values["usbm"]
    detail = f"{format_number(values['qcsbm'])} vs {format_number(values['usbm'])}"
    return below, f"{'yes' if below else 'no'} ({detail})"


def _intervals_overlap(cells: pd.DataFrame, dataset: str) -> bool | None:
    rows = cells.loc[(cells["dataset"] == dataset) & (cells["metric"] == "asym")]
    rows = rows.set_index("variant")
    if not {"qcsbm", "usbm"} <= set(rows.index) or rows.loc[["qcsbm", "usbm"], "ci95"].isna().any():
        return None
    qcsbm, usbm = rows.loc["qcsbm"], rows.loc["usbm"]
    return bool(
        qcsbm["mean"] - qcsbm["ci95"] <= usbm["mean"] + usbm["ci95"]
        and usbm["mean"] - usbm["ci95"] <= qcsbm["mean"] + qcsbm["ci95"]
    )


def _csbm_at_zero(
    max_abs_nasym: float | None, tolerance: float, label: str
) -> tuple[bool | None, str]:
    if max_abs_nasym is None or not math.isfinite(max_abs_nasym):
        return None, "unknown (no NAsym for csbm)"
    at_zero = max_abs_nasym <= tolerance
    return at_zero, f"{'yes' if at_zero else 'no'} ({label} {format_number(max_abs_nasym)})"


def _nll_order(values: dict[str, float]) -> tuple[list[str], str]:
    if not values:
        return [], "missing"
    ranked = sorted(values, key=lambda variant: values[variant])
    text = f"{ranked[0]} {format_number(values[ranked[0]])}"
    for previous, variant in itertools.pairwise(ranked):
        relation = "=" if values[variant] == values[previous] else "<"
        text += f" {relation} {variant} {format_number(values[variant])}"
    return ranked, text


def _agreement(reproduced: object, paper: object) -> str:
    """Compare two findings, staying silent when either is missing or covers other variants."""
    if reproduced is None or paper is None or reproduced == [] or paper == []:
        return ""
    if isinstance(reproduced, list) and isinstance(paper, list) and set(reproduced) != set(paper):
        return ""
    return "; agrees with the paper" if reproduced == paper else "; differs from the paper"


def table1_findings(
    summary: pd.DataFrame,
    published: pd.DataFrame,
    zero_tolerance: float = CSBM_ZERO_TOLERANCE,
) -> list[str]:
    """Write the Table 1 findings as Markdown lines, for the reproduction and for the paper.

    Per dataset: whether Asym(QCSBM) < Asym(USBM) (by means, noting overlapping CIs), whether
    the CSBM is conservative to float precision (|NAsym| <= zero_tolerance on every seed), and
    the NLL order of the variants. Nothing is hard-coded, so other data gives other text.
    """
    cells = compare_table1(summary, published)
    datasets = list(dict.fromkeys(cells["dataset"]))
    lines = [
        "## Findings",
        "",
        "Computed from the seed means above and from the published Table 1 "
        f"({CITATION.rstrip('.')}).",
        "",
        "- Asym(QCSBM) < Asym(USBM):",
    ]
    for dataset in datasets:
        reproduced, text = _qcsbm_below_usbm(_metric_values(cells, dataset, "asym", "mean"))
        overlap = _intervals_overlap(cells, dataset)
        if overlap is not None:
            text += ", 95% CIs overlap" if overlap else ", 95% CIs disjoint"
        paper, paper_text = _qcsbm_below_usbm(_metric_values(cells, dataset, "asym", "paper"))
        lines.append(
            f"  - {dataset}: reproduction {text}; paper {paper_text}"
            f"{_agreement(reproduced, paper)}."
        )

    lines.append(
        f"- CSBM Asym at 0, i.e. |NAsym| <= {format_number(zero_tolerance)} on every seed "
        "(NAsym is Asym relative to ||J||_F^2):"
    )
    for dataset in datasets:
        csbm = cells.loc[
            (cells["dataset"] == dataset)
            & (cells["variant"] == "csbm")
            & (cells["metric"] == "nasym")
        ]
        max_abs: float | None = None
        paper_value: float | None = None
        if not csbm.empty:
            extremes = [abs(float(csbm["min"].iloc[0])), abs(float(csbm["max"].iloc[0]))]
            max_abs = max(extremes) if all(map(math.isfinite, extremes)) else None
            paper_value = abs(float(csbm["paper"].iloc[0]))
        reproduced, text = _csbm_at_zero(max_abs, zero_tolerance, "max |NAsym|")
        paper, paper_text = _csbm_at_zero(paper_value, zero_tolerance, "NAsym")
        lines.append(
            f"  - {dataset}: reproduction {text}; paper {paper_text}"
            f"{_agreement(reproduced, paper)}."
        )

    lines.append("- NLL order of the variants, lowest (best) first:")
    for dataset in datasets:
        reproduced, text = _nll_order(_metric_values(cells, dataset, "nll", "mean"))
        paper, paper_text = _nll_order(_metric_values(cells, dataset, "nll", "paper"))
        agreement = _agreement(reproduced, paper)
        lines.append(f"  - {dataset}: reproduction {text}; paper {paper_text}{agreement}.")
    return lines


def write_table1(
    summary: pd.DataFrame, out_dir: Path, published: pd.DataFrame | None = None
) -> list[Path]:
    """Write table1.csv and table1.md (table plus findings) to out_dir and return both paths.

    `published` defaults to published_results().
    """
    if published is None:
        published = published_results()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    table = table1(summary, published)
    csv_path = out_dir / "table1.csv"
    table.to_csv(csv_path, index=False)

    markdown = [
        "# Table 1: 2-D toy data sets",
        "",
        "Reproduction as mean ± 95% t-interval half-width over seeds (the mean alone for one "
        "seed), beside the paper's mean over 3 runs. \"paper in CI\" shows whether the paper's "
        "value lies inside the reproduction's interval.",
        "",
        to_markdown(table),
        *table1_findings(summary, published),
        "",
    ]
    md_path = out_dir / "table1.md"
    md_path.write_text("\n".join(markdown), encoding="utf-8")
    logger.info("Wrote %s and %s.", csv_path, md_path)
    return [csv_path, md_path]


# Sampler table.


def sampler_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Build the sampler table as text cells: one row per dataset, variant and sampler.

    Columns are dataset, variant, sampler, seeds, then precision, recall, density, coverage,
    NFE and seconds, each "mean ± ci95" (the mean alone for one seed, n/a when missing).
    """
    rows = summary.loc[summary["metric"].isin(list(SAMPLER_LABELS))]
    columns = ["dataset", "variant", "sampler", "seeds", *SAMPLER_LABELS.values()]
    table: list[dict[str, str]] = []
    for (dataset, variant, sampler), group in rows.groupby(
        ["dataset", "variant", "sampler"], sort=False
    ):
        row = {
            "dataset": dataset,
            "variant": variant,
            "sampler": sampler or MISSING_CELL,
            "seeds": _seed_counts(group["n"]),
        }
        for metric, label in SAMPLER_LABELS.items():
            match = group.loc[group["metric"] == metric]
            row[label] = (
                format_estimate(float(match["mean"].iloc[0]), float(match["ci95"].iloc[0]))
                if len(match) == 1
                else MISSING_CELL
            )
        table.append(row)
    return pd.DataFrame(table, columns=columns)


def write_sampler_table(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write samplers.csv and samplers.md to out_dir and return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = sampler_table(summary)
    if table.empty:
        logger.warning("The summary has no sampler metrics, so the sampler table is empty.")

    csv_path = out_dir / "samplers.csv"
    table.to_csv(csv_path, index=False)
    md_path = out_dir / "samplers.md"
    md_path.write_text(
        "# Samplers\n\nSample quality and cost per sampler, as mean ± 95% t-interval "
        "half-width over seeds (the mean alone for one seed). Seconds are wall-clock seconds "
        "to draw the sample set.\n\n" + to_markdown(table),
        encoding="utf-8",
    )
    logger.info("Wrote %s and %s.", csv_path, md_path)
    return [csv_path, md_path]


# Command line.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the aggregate options to `parser` (used by the `aggregate` subcommand)."""
    parser.add_argument(
        "--metrics",
        type=Path,
        nargs="+",
        required=True,
        metavar="FILE",
        help="per-run metrics CSV files written by the evaluate stage",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="directory for all_metrics.csv, summary.csv, table1.* and samplers.*",
    )


def run(args: argparse.Namespace) -> int:
    """Collect, summarise and write all tables for parsed options, and return 0."""
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    metrics = collect_metrics(args.metrics)
    metrics.to_csv(out_dir / "all_metrics.csv", index=False)
    summary = summarise(metrics)
    summary.to_csv(out_dir / "summary.csv", index=False)
    write_table1(summary, out_dir)
    write_sampler_table(summary, out_dir)
    logger.info("Aggregated %d metrics files into %s.", len(args.metrics), out_dir)
    return 0
