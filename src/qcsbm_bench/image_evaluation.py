"""Metric rows of the image DAG, and the CLI stages that measure a trained image run: the NLL
in bits/dim and the Jacobian asymmetry by noise level (sample quality is in image_quality).

Every stage writes tidy rows with the columns of IMAGE_METRIC_COLUMNS, which are the toy
metrics columns plus `detail`. The detail is what a number depends on (for FID: clean-fid
mode, resolution, sample count and reference split), so it travels into the tables.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcsbm_bench.aggregate import METRIC_COLUMNS
from qcsbm_bench.atomic import atomic_open
from qcsbm_bench.config import IMAGE_DATASETS
from qcsbm_bench.image_stages import (
    VARIANT_NAMES,
    add_run_arguments,
    configure_threads,
    load_image_config,
    run_config,
)

logger = logging.getLogger(__name__)

IMAGE_METRIC_COLUMNS = (*METRIC_COLUMNS, "detail")
IMAGE_UNITS = {
    "nll": "bits/dim",
    "nll_se": "bits/dim",
    "asym": "squared score",
    "nasym": "fraction",
    "fid": "",
    "fd_classifier": "",
    "inception_score": "",
    "inception_score_std": "",
    "precision": "fraction",
    "recall": "fraction",
    "density": "ratio",
    "coverage": "fraction",
    "nonfinite_fraction": "fraction",
    "nfe": "evaluations",
    "sample_seconds": "s",
}


def metric_row(
    dataset: str,
    variant: str,
    seed: int,
    metric: str,
    value: float,
    *,
    sampler: str = "",
    t: float | None = None,
    detail: str = "",
) -> dict[str, Any]:
    """Build one tidy metrics row; t=None marks an average over noise levels."""
    return {
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "metric": metric,
        "value": value,
        "unit": IMAGE_UNITS[metric],
        "sampler": sampler,
        "t": "" if t is None else t,
        "detail": detail,
    }


def write_image_metric_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write rows as CSV atomically; NaN values become empty cells."""
    with atomic_open(Path(path), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=IMAGE_METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            cells = dict(row)
            value = cells["value"]
            if isinstance(value, float) and not math.isfinite(value):
                cells["value"] = ""
            writer.writerow(cells)


def _run_of_path(path: Path) -> dict[str, str] | None:
    """Return the dataset, variant and seed of a file in runs/<dataset>/<variant>/seed-<n>/."""
    match = re.fullmatch(r"seed-(-?\d+)", path.parent.name)
    if match is None or len(path.parents) < 3:
        return None
    return {
        "dataset": path.parents[2].name,
        "variant": path.parents[1].name,
        "seed": match.group(1),
    }


def _metric_cell_problem(cells: Mapping[str, str], run: Mapping[str, str] | None) -> str | None:
    """Return what is wrong with the cells of one metrics row, or None if nothing is.

    run contains the dataset, variant and seed that the file's run folder names, if it is in
    one; the row must match them.
    """
    for column in ("dataset", "variant", "metric"):
        if not cells[column].strip():
            return f"column {column!r} is empty"
    if cells["dataset"] not in IMAGE_DATASETS:
        return f"column 'dataset': {cells['dataset']!r} is not one of {list(IMAGE_DATASETS)}"
    if cells["variant"] not in VARIANT_NAMES:
        return f"column 'variant': {cells['variant']!r} is not one of {list(VARIANT_NAMES)}"
    try:
        seed = int(cells["seed"])
    except ValueError:
        return f"column 'seed': {cells['seed']!r} is not an integer"
    if run is not None:
        row_run = {"dataset": cells["dataset"], "variant": cells["variant"], "seed": str(seed)}
        for column, value in row_run.items():
            if value != run[column]:
                return f"column {column!r}: {value!r} differs from the run folder's {run[column]!r}"
    # An empty value is a NaN (a diverged sampler) and an empty t an average over levels.
    for column in ("value", "t"):
        text = cells[column].strip()
        try:
            float(text or "nan")
        except ValueError:
            return f"column {column!r}: {text!r} is not a number"
    return None


def check_image_metric_file(path: Path) -> None:
    """Raise ValueError unless `path` is a complete metrics CSV as write_image_metric_rows writes.

    A complete file is UTF-8 text that ends with a line break. Its header has all of
    IMAGE_METRIC_COLUMNS, and at least one data row follows. Every row has the header's
    number of fields, a known dataset and variant, an integer seed, and a number or an empty
    cell as value and t. In a run folder runs/<dataset>/<variant>/seed-<n>/, every row names
    that run. The message names the file, the line and the column.

    NOTE: a file cut exactly at a line break passes, because the rows carry no count.
    """
    path = Path(path)
    redo = (
        "delete it and rerun the stage that wrote it (image-likelihood, image-asymmetry or "
        "sample-quality); Snakemake reruns the job of a missing file"
    )
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} not found; run the stage that writes it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"metrics file {path} is not UTF-8 text ({error}); {redo}") from error
    if not text:
        raise ValueError(f"metrics file {path} is empty; {redo}")
    # csv.writer ends every row with a line break, so a file without one was cut off.
    if not text.endswith(("\n", "\r")):
        line = text.count("\n") + 1
        raise ValueError(f"metrics file {path} ends inside line {line}, which is cut off; {redo}")

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as error:
        raise ValueError(
            f"metrics file {path} is not valid CSV at line {reader.line_num} ({error}); {redo}"
        ) from error
    header = rows[0][1]
    missing = [column for column in IMAGE_METRIC_COLUMNS if column not in header]
    if missing:
        raise ValueError(
            f"metrics file {path} lacks the column(s) {missing} in its header {header}, "
            f"expected {list(IMAGE_METRIC_COLUMNS)}; {redo}"
        )
    if len(rows) == 1:
        raise ValueError(f"metrics file {path} has a header but no data rows; {redo}")
    run = _run_of_path(path)
    for line, row in rows[1:]:
        where = f"metrics file {path}, line {line}"
        if len(row) != len(header):
            raise ValueError(
                f"{where} has {len(row)} fields, but the header has {len(header)}; {redo}"
            )
        problem = _metric_cell_problem(dict(zip(header, row, strict=True)), run)
        if problem is not None:
            raise ValueError(f"{where}, {problem}; {redo}")


def limit_images(images: np.ndarray, count: int | None) -> np.ndarray:
    return images if count is None else images[:count]


# image-likelihood and image-asymmetry


def add_model_metric_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt")
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="tidy metrics CSV")


def _load_run(args: argparse.Namespace, stage: str, section: str) -> tuple[Any, Any, dict, str]:
    """Load a stage's config view, the test split, the model and the name of its weights.

    The weights ("raw" or "ema") are those that config["evaluate"][section]["weights"] names.
    """
    from qcsbm_bench.data.images import load_image_dataset
    from qcsbm_bench.train_images import load_image_model

    config = load_image_config(args.config, stage, args.dataset)
    weights = config["evaluate"][section]["weights"]
    configure_threads(config, stage, args.threads)
    test = load_image_dataset(args.data_dir, "test")
    meta = test.meta
    model = load_image_model(
        run_config(config, args.dataset, args.variant),
        args.variant,
        args.checkpoint,
        weights=weights,
        channels=meta["channels"],
        resolution=meta["resolution"],
        dataset=args.dataset,
        seed=args.seed,
    )
    return model, test, config, weights


def run_likelihood(args: argparse.Namespace) -> None:
    from qcsbm_bench.artifacts import DTYPES, derive_seed
    from qcsbm_bench.image_likelihood import image_bits_per_dim

    model, test, config, weights = _load_run(args, "likelihood", "nll")
    settings = config["evaluate"]["nll"]
    images = np.asarray(limit_images(test.images, settings["n_images"]))
    result = image_bits_per_dim(
        model,
        model.sde,
        images,
        batch_size=settings["batch_size"],
        repeats=settings["repeats"],
        seed=derive_seed(args.seed, args.dataset, args.variant, "likelihood"),
        rtol=settings["rtol"],
        atol=settings["atol"],
        t_min=settings["t_min"],
        device=config["device"],
        dtype=DTYPES[config["dtype"]],
        progress=config["progress"],
    )
    detail = (
        f"weights={weights}; images={images.shape[0]}; repeats={settings['repeats']}; "
        f"uniform dequantisation; Hutchinson divergence; rtol={settings['rtol']}"
    )
    rows = [
        metric_row(args.dataset, args.variant, args.seed, "nll", result["mean"], detail=detail),
        metric_row(args.dataset, args.variant, args.seed, "nll_se", result["se"], detail=detail),
    ]
    write_image_metric_rows(rows, args.out)


def run_asymmetry(args: argparse.Namespace) -> None:
    from qcsbm_bench.artifacts import DTYPES, derive_seed
    from qcsbm_bench.image_asymmetry import asymmetry_by_level, level_average

    model, test, config, weights = _load_run(args, "asymmetry", "asymmetry")
    settings = config["evaluate"]["asymmetry"]
    images = np.asarray(limit_images(test.images, settings["n_images"]))
    levels = asymmetry_by_level(
        model,
        images,
        n_levels=settings["n_levels"],
        t_min=config["sde"]["t_min"],
        batch_size=settings["batch_size"],
        seed=derive_seed(args.seed, args.dataset, args.variant, "asymmetry"),
        device=config["device"],
        dtype=DTYPES[config["dtype"]],
        progress=config["progress"],
    )
    detail = f"weights={weights}; images={images.shape[0]}; one Rademacher probe per image"
    rows = []
    for level in levels:
        for metric in ("asym", "nasym"):
            rows.append(
                metric_row(
                    args.dataset, args.variant, args.seed, metric, level[metric], t=level["t"]
                )
            )
    for metric, value in level_average(levels).items():
        rows.append(
            metric_row(
                args.dataset,
                args.variant,
                args.seed,
                metric,
                value,
                detail=f"{detail}; mean over {len(levels)} levels",
            )
        )
    write_image_metric_rows(rows, args.out)


COMMANDS = {
    "image-likelihood": (
        "Compute the NLL in bits/dim of test images.",
        add_model_metric_arguments,
        run_likelihood,
    ),
    "image-asymmetry": (
        "Compute Asym and NAsym of an image run at each noise level.",
        add_model_metric_arguments,
        run_asymmetry,
    ),
}
