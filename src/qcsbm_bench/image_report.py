"""Tables 2 and 3 and the figures of the image benchmark.

aggregate-images pools the per-run metric files (likelihood.csv, asymmetry.csv and
quality-<sampler>.csv) over seeds with qcsbm_bench.aggregate, then writes:

- table2: NLL (bits/dim), Asym and NAsym averaged over noise levels, per dataset and variant,
  beside the published values of Chao et al. (ICML 2023, Table 2);
- table3: per sampler, the Frechet distance, Inception score, precision, recall, density,
  coverage and NFE, beside the published PC-sampler values (Table 3). The distance is FID
  for Inception features and "FD (<dataset> classifier)" for classifier features.

Each number's `detail` (clean-fid mode, resolution, sample count, reference split) is listed
under the tables and kept in all_metrics.csv.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qcsbm_bench.aggregate import (
    MISSING_CELL,
    ROW_KEY,
    _seed_counts,
    collect_metrics,
    format_estimate,
    format_number,
    summarise,
    to_markdown,
)
from qcsbm_bench.atomic import atomic_open
from qcsbm_bench.image_evaluation import check_image_metric_file
from qcsbm_bench.published import CITATION, IMAGE_DATASETS, VARIANTS, published_results

logger = logging.getLogger(__name__)

TABLE2_LABELS = {"nll": "NLL (bits/dim)", "asym": "Asym", "nasym": "NAsym"}
TABLE3_LABELS = {
    "inception_score": "IS",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
    "nfe": "NFE",
    "nonfinite_fraction": "non-finite share",
}
DISTANCE_METRICS = ("fid", "fd_classifier")
# The paper's Table 3 used the PC sampler; other samplers have no published value.
PUBLISHED_SAMPLER = "pc"


def read_details(paths: Sequence[Path]) -> pd.DataFrame:
    """Return the detail text of each metric row (ROW_KEY columns plus detail)."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "detail" not in frame.columns:
            frame["detail"] = ""
        frames.append(frame)
    details = pd.concat(frames, ignore_index=True)
    details["seed"] = details["seed"].astype("int64")
    details["t"] = pd.to_numeric(details["t"].replace("", np.nan))
    return details.loc[:, [*ROW_KEY, "detail"]]


def _order(values: Sequence[str], order: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(values))
    return [name for name in order if name in unique] + sorted(
        name for name in unique if name not in order
    )


def _cell(summary: pd.DataFrame, dataset: str, variant: str, metric: str, sampler: str) -> str:
    match = summary.loc[
        (summary["dataset"] == dataset)
        & (summary["variant"] == variant)
        & (summary["metric"] == metric)
        & (summary["sampler"] == sampler)
    ]
    if len(match) != 1:
        return MISSING_CELL
    return format_estimate(float(match["mean"].iloc[0]), float(match["ci95"].iloc[0]))


def _paper(published: pd.DataFrame, table: int, dataset: str, variant: str, metric: str) -> str:
    match = published.loc[
        (published["table"] == table)
        & (published["dataset"] == dataset)
        & (published["variant"] == variant)
        & (published["metric"] == metric)
    ]
    return format_number(float(match["value"].iloc[0])) if len(match) == 1 else MISSING_CELL


def _seeds(summary: pd.DataFrame, dataset: str, variant: str) -> str:
    rows = summary.loc[(summary["dataset"] == dataset) & (summary["variant"] == variant)]
    return _seed_counts(rows["n"]) if len(rows) else "0"


def table2(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Build Table 2 as text cells: one row per dataset and variant."""
    rows = []
    datasets = _order(summary["dataset"].tolist(), IMAGE_DATASETS)
    for dataset in datasets:
        variants = _order(summary.loc[summary["dataset"] == dataset, "variant"].tolist(), VARIANTS)
        for variant in variants:
            row = {
                "dataset": dataset,
                "variant": variant,
                "seeds": _seeds(summary, dataset, variant),
            }
            for metric, label in TABLE2_LABELS.items():
                row[label] = _cell(summary, dataset, variant, metric, "")
                row[f"{label} paper"] = _paper(published, 2, dataset, variant, metric)
            rows.append(row)
    return pd.DataFrame(rows)


def _distance(
    summary: pd.DataFrame, details: pd.DataFrame | None, dataset: str, variant: str, sampler: str
) -> tuple[str, str]:
    """Return the distance's label and cell. The label comes from the rows written, so an
    empty value (a diverged sampler) keeps its name; the summary holds only finite values."""
    for metric, label in (("fid", "FID"), ("fd_classifier", f"FD ({dataset} classifier)")):
        cell = _cell(summary, dataset, variant, metric, sampler)
        written = details is not None and bool(
            (
                (details["dataset"] == dataset)
                & (details["variant"] == variant)
                & (details["sampler"] == sampler)
                & (details["metric"] == metric)
            ).any()
        )
        if cell != MISSING_CELL or written:
            return label, cell
    return MISSING_CELL, MISSING_CELL


def table3(
    summary: pd.DataFrame, published: pd.DataFrame, details: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Build Table 3 as text cells: one row per dataset, variant and sampler."""
    quality = summary.loc[summary["sampler"] != ""]
    rows = []
    for dataset in _order(quality["dataset"].tolist(), IMAGE_DATASETS):
        in_dataset = quality.loc[quality["dataset"] == dataset]
        for variant in _order(in_dataset["variant"].tolist(), VARIANTS):
            samplers = _order(
                in_dataset.loc[in_dataset["variant"] == variant, "sampler"].tolist(),
                (PUBLISHED_SAMPLER, "ode"),
            )
            for sampler in samplers:
                label, distance = _distance(summary, details, dataset, variant, sampler)
                paper = sampler == PUBLISHED_SAMPLER and label == "FID"
                row = {
                    "dataset": dataset,
                    "variant": variant,
                    "sampler": sampler,
                    "seeds": _seeds(quality, dataset, variant),
                    "distance": label,
                    "value": distance,
                    "FID paper": _paper(published, 3, dataset, variant, "fid")
                    if paper
                    else MISSING_CELL,
                }
                for metric, metric_label in TABLE3_LABELS.items():
                    row[metric_label] = _cell(summary, dataset, variant, metric, sampler)
                    if metric in ("inception_score", "precision", "recall"):
                        row[f"{metric_label} paper"] = (
                            _paper(published, 3, dataset, variant, metric)
                            if sampler == PUBLISHED_SAMPLER
                            else MISSING_CELL
                        )
                rows.append(row)
    return pd.DataFrame(rows)


def _detail_lines(details: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    chosen = details.loc[details["metric"].isin(metrics) & details["t"].isna()]
    lines = []
    for (dataset, metric, sampler), group in chosen.groupby(
        ["dataset", "metric", "sampler"], sort=True
    ):
        texts = sorted(set(group["detail"]) - {""})
        where = f"{dataset} {metric}" + (f" ({sampler})" if sampler else "")
        for text in texts:
            lines.append(f"- {where}: {text}")
    return lines


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_image_tables(
    summary: pd.DataFrame,
    details: pd.DataFrame,
    out_dir: Path,
    published: pd.DataFrame | None = None,
) -> list[Path]:
    """Write table2.{csv,md} and table3.{csv,md} to out_dir and return their paths."""
    if published is None:
        published = published_results((2, 3))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    intro = (
        "Reproduction as mean ± 95% t-interval half-width over seeds (the mean alone for one "
        f"seed), beside the published values of {CITATION}"
    )
    paths = []

    table = table2(summary, published)
    table.to_csv(out_dir / "table2.csv", index=False)
    markdown = [
        "# Table 2: likelihood and Jacobian asymmetry on images",
        "",
        intro,
        "",
        to_markdown(table),
        "Asym and NAsym are Hutchinson estimates in the run's dtype. For an exactly "
        "conservative CSBM they are rounding noise around 0, which can be negative.",
        "",
        "Settings of each number:",
        "",
        *_detail_lines(details, ["nll", "asym", "nasym"]),
        "",
    ]
    _write_text(out_dir / "table2.md", "\n".join(markdown))
    paths += [out_dir / "table2.csv", out_dir / "table2.md"]

    table = table3(summary, published, details)
    table.to_csv(out_dir / "table3.csv", index=False)
    markdown = [
        "# Table 3: sample quality on images",
        "",
        intro + " The paper's values are for the PC sampler and TF-GAN's FID; this project "
        "computes FID with clean-fid, whose resize differs, so the two FIDs are only roughly "
        "comparable. FD (<dataset> classifier) is a Fréchet distance in the features of a "
        "classifier trained on that dataset, not an FID, and has no published value.",
        "",
        to_markdown(table),
        "Settings of each number:",
        "",
        *_detail_lines(details, [*DISTANCE_METRICS, "inception_score", "precision"]),
        "",
    ]
    _write_text(out_dir / "table3.md", "\n".join(markdown))
    paths += [out_dir / "table3.csv", out_dir / "table3.md"]
    logger.info("Wrote %s.", ", ".join(str(path) for path in paths))
    return paths


def add_aggregate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics", type=Path, nargs="+", required=True, metavar="FILE", help="per-run CSVs"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="folder for all_metrics.csv, summary.csv, table2.* and table3.*",
    )


def run_aggregate(args: argparse.Namespace) -> None:
    for path in args.metrics:
        check_image_metric_file(path)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = collect_metrics(args.metrics)
    details = read_details(args.metrics)
    metrics = metrics.merge(details, on=list(ROW_KEY), how="left")
    metrics.to_csv(out_dir / "all_metrics.csv", index=False)
    summary = summarise(metrics.drop(columns="detail"))
    summary.to_csv(out_dir / "summary.csv", index=False)
    write_image_tables(summary, details, out_dir)


def add_figures_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", type=Path, required=True, help="all_metrics.csv")
    parser.add_argument(
        "--samples", type=Path, nargs="+", required=True, help="merged samples-<sampler>.npz files"
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the figures")


def run_figures(args: argparse.Namespace) -> None:
    from qcsbm_bench.image_figures import plot_image_asymmetry, plot_sample_grids

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = pd.read_csv(args.metrics, keep_default_na=True, dtype={"sampler": str})
    metrics["sampler"] = metrics["sampler"].fillna("")
    plot_image_asymmetry(metrics, out_dir / "asymmetry_levels")
    plot_sample_grids(args.samples, out_dir)


COMMANDS = {
    "aggregate-images": (
        "Collect image run metrics into tidy CSVs and Tables 2 and 3.",
        add_aggregate_arguments,
        run_aggregate,
    ),
    "figures-images": (
        "Draw the image figures: asymmetry by noise level and sample grids.",
        add_figures_arguments,
        run_figures,
    ),
}
