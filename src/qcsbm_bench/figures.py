"""Figures of the benchmark: score fields, samples, asymmetry per noise level, autoencoder curves.

Every plot function writes a PNG and a PDF with the same stem and returns both paths. Figures
are built on matplotlib.figure.Figure with an Agg canvas and never through pyplot, so they need
no display and leave pyplot's global state alone.

The figures command finds its inputs by this layout:

    runs-dir/<dataset>/<variant>/seed-<seed>/{field.npz, samples-pc.npz, samples-ode.npz}
    data-dir/<dataset>.npz

and uses the lowest seed that has the file for the score-field and sample plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qcsbm_bench.aggregate import collect_metrics
from qcsbm_bench.artifacts import load_npz
from qcsbm_bench.published import TOY_DATASETS, VARIANTS

logger = logging.getLogger(__name__)

VARIANT_LABELS: dict[str, str] = {
    "csbm": "CSBM",
    "usbm": "USBM",
    "qcsbm": "QCSBM",
    "usbm-ft": "USBM fine-tuned",
}
SAMPLER_ORDER: tuple[str, ...] = ("pc", "ode")
PNG_DPI = 150
# Floor for log axes when a panel has no positive value at all, e.g. only an exact CSBM.
DEFAULT_LOG_FLOOR = 1e-12
# Decades a log axis shows below the decade of its largest value. A float64 CSBM has Asym near
# 1e-31, which would otherwise squeeze the USBM and QCSBM curves into a sliver of the axis.
MAX_LOG_DECADES = 8


# Shared helpers.


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    """Put names in `order` first, in that order, then any others alphabetically."""
    unique = set(names)
    return [name for name in order if name in unique] + sorted(unique - set(order))


def _variant_label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def _variant_palette(variants: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Give each variant a fixed colour, so CSBM, USBM and QCSBM match across figures."""
    names = _ordered(variants, VARIANTS)
    known = [*VARIANTS, *[name for name in names if name not in VARIANTS]]
    palette = sns.color_palette("colorblind", len(known))
    return {name: palette[known.index(name)] for name in names}


def save_figure(figure: Figure, out_path: Path) -> list[Path]:
    """Save `figure` as <stem>.png and <stem>.pdf next to each other and return both paths.

    A .png or .pdf suffix on out_path is replaced, and any other name gets both suffixes added.
    """
    out_path = Path(out_path)
    base = out_path.with_suffix("") if out_path.suffix.lower() in (".png", ".pdf") else out_path
    base.parent.mkdir(parents=True, exist_ok=True)
    png = base.with_name(base.name + ".png")
    pdf = base.with_name(base.name + ".pdf")

    FigureCanvasAgg(figure)
    figure.savefig(png, dpi=PNG_DPI)
    figure.savefig(pdf)
    logger.info("Wrote %s and %s.", png, pdf)
    return [png, pdf]


def _log_floor(values: np.ndarray, max_decades: int = MAX_LOG_DECADES) -> float:
    """Return the lower limit of a log axis for `values`, at a power of ten.

    That is one decade below the smallest positive value, but at most max_decades below
    the decade of the largest one, and DEFAULT_LOG_FLOOR when no value is positive.
    """
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        return DEFAULT_LOG_FLOOR
    below_smallest = math.floor(math.log10(float(positive.min()))) - 1
    range_limit = math.ceil(math.log10(float(positive.max()))) - max_decades
    return float(10.0 ** max(below_smallest, range_limit))


def _load_points(path: Path, name: str) -> np.ndarray:
    points = load_npz(path, [name])[name]
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(
            f"Array {name!r} in {path} has shape {points.shape}; expected (N, 2) points."
        )
    return points.astype(np.float64)


# Score fields.


@dataclass(frozen=True)
class ScoreField:
    """A score field on a G x G grid: points (G*G, 2), levels t (L,), scores (L, G*G, 2)."""

    grid: np.ndarray
    t: np.ndarray
    score: np.ndarray
    grid_size: int


def load_score_field(path: Path) -> ScoreField:
    """Load and validate a field.npz file with arrays grid, t, score and grid_size."""
    arrays = load_npz(path, ["grid", "t", "score", "grid_size"])
    grid_size = int(arrays["grid_size"])
    points = grid_size * grid_size
    grid, levels, score = arrays["grid"], arrays["t"].reshape(-1), arrays["score"]
    if grid.shape != (points, 2):
        raise ValueError(
            f"Array 'grid' in {path} has shape {grid.shape}; expected ({points}, 2) for "
            f"grid_size {grid_size}."
        )
    if score.shape != (levels.size, points, 2):
        raise ValueError(
            f"Array 'score' in {path} has shape {score.shape}; expected ({levels.size}, "
            f"{points}, 2) for {levels.size} levels of t and grid_size {grid_size}."
        )
    if levels.size == 0:
        raise ValueError(f"Array 't' in {path} is empty; the field needs at least one level.")
    return ScoreField(
        grid=grid.astype(np.float64),
        t=levels.astype(np.float64),
        score=score.astype(np.float64),
        grid_size=grid_size,
    )


def _thinning_mask(grid: np.ndarray, max_per_axis: int) -> tuple[np.ndarray, float]:
    """Keep every k-th grid line in x and y so at most max_per_axis arrows span an axis.

    Returns the mask over grid points and the spacing between kept arrows in data units.
    """
    keep = np.ones(len(grid), dtype=bool)
    spacing = math.inf
    for axis in range(2):
        lines, index = np.unique(grid[:, axis], return_inverse=True)
        stride = max(1, math.ceil(len(lines) / max_per_axis))
        keep &= index % stride == 0
        if len(lines) > 1:
            spacing = min(spacing, stride * float(np.min(np.diff(lines))))
    return keep, spacing if math.isfinite(spacing) else 1.0


def plot_score_fields(
    field_files: Mapping[tuple[str, str], Path],
    out_path: Path,
    t: float | None = None,
    max_arrows_per_axis: int = 25,
) -> list[Path]:
    """Draw quiver plots of the score fields, rows = datasets and columns = variants.

    field_files maps (dataset, variant) to a field.npz. Each panel uses the level nearest to
    `t`, or the smallest t in its file when t is None. Arrows have unit length (direction
    only), and their colour is log10 of the score magnitude on one scale for all panels.
    """
    if not field_files:
        raise ValueError("No score-field files given; pass at least one (dataset, variant).")

    datasets = _ordered((key[0] for key in field_files), TOY_DATASETS)
    variants = _ordered((key[1] for key in field_files), VARIANTS)
    panels: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, float, float]] = {}
    for key, path in field_files.items():
        field = load_score_field(Path(path))
        level = int(np.argmin(field.t) if t is None else np.argmin(np.abs(field.t - t)))
        if t is not None and not math.isclose(field.t[level], t, rel_tol=1e-6):
            logger.warning("File %s has no level t=%g, so t=%g is drawn.", path, t, field.t[level])
        keep, spacing = _thinning_mask(field.grid, max_arrows_per_axis)
        panels[key] = (field.grid[keep], field.score[level, keep], float(field.t[level]), spacing)

    log_magnitudes = [
        np.log10(np.linalg.norm(score, axis=1) + 1e-30) for _, score, _, _ in panels.values()
    ]
    finite = np.concatenate([values[np.isfinite(values)] for values in log_magnitudes])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = colors.Normalize(vmin=low, vmax=high if high > low else low + 1.0)

    figure = Figure(figsize=(3.0 * len(variants) + 1.2, 3.0 * len(datasets)), layout="constrained")
    axes = figure.subplots(len(datasets), len(variants), squeeze=False)
    mappable = None
    for row, dataset in enumerate(datasets):
        for column, variant in enumerate(variants):
            ax: Axes = axes[row, column]
            if (dataset, variant) not in panels:
                ax.set_axis_off()
                ax.set_title(f"{dataset} / {_variant_label(variant)}: no field", fontsize=9)
                continue
            points, score, level_t, spacing = panels[(dataset, variant)]
            magnitude = np.linalg.norm(score, axis=1)
            direction = np.divide(
                score, magnitude[:, None], out=np.zeros_like(score), where=magnitude[:, None] > 0
            )
            mappable = ax.quiver(
                points[:, 0],
                points[:, 1],
                direction[:, 0],
                direction[:, 1],
                np.log10(magnitude + 1e-30),
                cmap="viridis",
                norm=norm,
                pivot="mid",
                angles="xy",
                scale_units="xy",
                scale=1.0 / (0.8 * spacing),
                width=0.006,
            )
            ax.set_aspect("equal")
            ax.set_title(f"{dataset} / {_variant_label(variant)}, t = {level_t:.3g}", fontsize=9)
            ax.tick_params(labelsize=7)
    if mappable is not None:
        figure.colorbar(mappable, ax=axes, label="log10 |score| (arrows show direction only)")
    return save_figure(figure, out_path)


# Samples.


def _square_limits(points: np.ndarray, pad: float = 0.1) -> tuple[float, float, float, float]:
    """Return (x_min, x_max, y_min, y_max) of one square box around the 0.1-99.9% quantiles."""
    finite = points[np.all(np.isfinite(points), axis=1)]
    low = np.quantile(finite, 0.001, axis=0)
    high = np.quantile(finite, 0.999, axis=0)
    centre = (low + high) / 2
    half = float(np.max(high - low)) / 2 * (1 + pad) or 1.0
    return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def _scatter_panel(
    ax: Axes,
    points: np.ndarray,
    limits: tuple[float, float, float, float],
    title: str,
    colour: object,
    max_points: int,
    rng: np.random.Generator,
) -> None:
    x_min, x_max, y_min, y_max = limits
    finite = np.all(np.isfinite(points), axis=1)
    inside = (
        finite
        & (points[:, 0] >= x_min)
        & (points[:, 0] <= x_max)
        & (points[:, 1] >= y_min)
        & (points[:, 1] <= y_max)
    )
    outside = int((~inside).sum())
    drawn_points = points[finite]
    if len(drawn_points) > max_points:
        chosen = rng.choice(len(drawn_points), size=max_points, replace=False)
        drawn_points = drawn_points[chosen]

    ax.scatter(drawn_points[:, 0], drawn_points[:, 1], s=1.0, alpha=0.5, color=colour, linewidths=0)
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_min, y_max)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    if outside:
        title += f"\n{outside} of {len(points)} outside the axes"
    ax.set_title(title, fontsize=9)


def _samples_figure(
    datasets: Sequence[str],
    variants: Sequence[str],
    test_sets: Mapping[str, np.ndarray],
    samples: Mapping[tuple[str, str], np.ndarray],
    sampler: str,
    max_points: int,
    rng: np.random.Generator,
) -> Figure:
    figure = Figure(figsize=(2.6 * (len(variants) + 1), 2.8 * len(datasets)), layout="constrained")
    axes = figure.subplots(len(datasets), len(variants) + 1, squeeze=False)
    palette = _variant_palette(variants)
    for row, dataset in enumerate(datasets):
        limits = _square_limits(test_sets[dataset])
        _scatter_panel(
            axes[row, 0],
            test_sets[dataset],
            limits,
            f"{dataset}: test data",
            "0.3",
            max_points,
            rng,
        )
        for column, variant in enumerate(variants, start=1):
            ax: Axes = axes[row, column]
            if (dataset, variant) not in samples:
                ax.set_axis_off()
                ax.set_title(f"{_variant_label(variant)}: no samples", fontsize=9)
                continue
            title = f"{_variant_label(variant)}, {sampler.upper()} sampler"
            _scatter_panel(
                ax, samples[(dataset, variant)], limits, title, palette[variant], max_points, rng
            )
    return figure


def plot_samples(
    data_files: Mapping[str, Path],
    sample_files: Mapping[tuple[str, str, str], Path],
    out_path: Path,
    max_points: int = 5000,
) -> list[Path]:
    """Scatter the test data and each variant's samples, one row per dataset.

    sample_files maps (dataset, variant, sampler) to a samples-<sampler>.npz. Each sampler gets
    its own figure: "pc" is written to out_path, any other sampler to <stem>-<sampler>. All
    panels of a row share the axis limits of the test data (0.1-99.9% quantiles plus 10%), and
    a panel title counts the samples outside them. At most max_points points are drawn per
    panel, chosen at random with a fixed seed.
    """
    if not sample_files:
        raise ValueError("No sample files given; pass at least one (dataset, variant, sampler).")
    datasets = _ordered((key[0] for key in sample_files), TOY_DATASETS)
    missing = [dataset for dataset in datasets if dataset not in data_files]
    if missing:
        raise ValueError(
            f"No data file for dataset(s) {', '.join(missing)}; pass <dataset>.npz for each "
            "dataset that has samples."
        )
    test_sets = {dataset: _load_points(Path(data_files[dataset]), "test") for dataset in datasets}
    variants = _ordered((key[1] for key in sample_files), VARIANTS)
    out_path = Path(out_path)
    base = out_path.with_suffix("") if out_path.suffix.lower() in (".png", ".pdf") else out_path

    written: list[Path] = []
    for sampler in _ordered((key[2] for key in sample_files), SAMPLER_ORDER):
        samples = {
            (dataset, variant): _load_points(Path(path), "samples")
            for (dataset, variant, name), path in sample_files.items()
            if name == sampler
        }
        rng = np.random.default_rng(0)
        figure = _samples_figure(datasets, variants, test_sets, samples, sampler, max_points, rng)
        target = base if sampler == "pc" else base.with_name(f"{base.name}-{sampler}")
        written.extend(save_figure(figure, target))
    return written


# Asymmetry per noise level.


def plot_asymmetry_levels(
    metrics: pd.DataFrame,
    out_path: Path,
    log_t: bool | None = None,
    max_decades: int = MAX_LOG_DECADES,
) -> list[Path]:
    """Plot Asym (top row) and NAsym (bottom row) against t, one column per dataset.

    Uses the per-level rows (t set) of the tidy metrics table. Lines are seed means per
    variant with 95% bootstrap bands across seeds (seaborn errorbar=("ci", 95), seed 0). Both
    rows use a log y axis with a floor from _log_floor. Values at or below it, such as the
    zeros or 1e-31 of an exact CSBM, are drawn at the floor, and the axis label names it.
    """
    # NOTE: a bootstrap band over 3 to 5 seeds is narrower than a t-interval would be, so
    # read the bands as a rough spread, and Table 1 for the confidence intervals.
    levels = metrics.loc[metrics["metric"].isin(["asym", "nasym"]) & metrics["t"].notna()].copy()
    if levels.empty:
        raise ValueError(
            "The metrics table has no per-level asym or nasym rows (rows with t set); the "
            "evaluate stage must write one row per noise level."
        )
    datasets = _ordered(levels["dataset"], TOY_DATASETS)
    variants = _ordered(levels["variant"], VARIANTS)
    palette = _variant_palette(variants)
    if log_t is None:
        # Levels spanning two decades or more (e.g. a geometric schedule) get a log t axis.
        log_t = bool((levels["t"] > 0).all()) and levels["t"].max() >= 100 * levels["t"].min()

    figure = Figure(figsize=(3.4 * len(datasets), 6.0), layout="constrained")
    axes = figure.subplots(2, len(datasets), squeeze=False, sharey="row")
    for row, (metric, label) in enumerate((("asym", "Asym"), ("nasym", "NAsym"))):
        rows = levels.loc[levels["metric"] == metric].copy()
        floor = _log_floor(rows["value"].to_numpy(dtype=float), max_decades)
        clipped = bool((rows["value"] <= floor).any())
        rows["plotted"] = rows["value"].clip(lower=floor)
        for column, dataset in enumerate(datasets):
            ax: Axes = axes[row, column]
            panel = rows.loc[rows["dataset"] == dataset]
            if panel.empty:
                ax.set_title(f"{dataset}: no {label} rows", fontsize=9)
                continue
            sns.lineplot(
                data=panel,
                x="t",
                y="plotted",
                hue="variant",
                hue_order=variants,
                palette=palette,
                errorbar=("ci", 95),
                seed=0,
                marker="o",
                markersize=3,
                ax=ax,
            )
            ax.set_yscale("log")
            low, high = panel["plotted"].min(), panel["plotted"].max()
            if low == high:
                # A flat panel (e.g. only an exact CSBM) would give a zero-height log axis.
                ax.set_ylim(low / 10, high * 10)
            if log_t:
                ax.set_xscale("log")
            ax.set_title(dataset, fontsize=10)
            ax.set_ylabel(
                f"{label} (values <= {floor:.0e} drawn at {floor:.0e})" if clipped else label,
                fontsize=8,
            )
            legend = ax.get_legend()
            if legend is not None and (row, column) != (0, 0):
                legend.remove()
    return save_figure(figure, out_path)


# Autoencoder curves.


def read_curves(curve_file: Path) -> pd.DataFrame:
    """Read an autoencoder JSONL file (one object per logged step) into a DataFrame.

    Every line needs step, asym_rw and weight_gap. Other keys (the L_QC loss, beta) are kept.
    """
    required = ("step", "asym_rw", "weight_gap")
    records: list[dict[str, float]] = []
    with Path(curve_file).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"Line {number} of {curve_file} is not valid JSON ({error.msg}); rerun the "
                    "autoencoder stage."
                ) from error
            missing = [key for key in required if key not in record]
            if missing:
                raise ValueError(
                    f"Line {number} of {curve_file} is missing key(s) {', '.join(missing)}; "
                    f"every line needs {', '.join(required)}."
                )
            records.append(record)
    if not records:
        raise ValueError(f"Autoencoder curve file {curve_file} has no records.")
    return pd.DataFrame.from_records(records).sort_values("step", kind="stable")


def plot_autoencoder_curves(curve_file: Path, out_path: Path) -> list[Path]:
    """Plot the asymmetry of R W^T (log y) and ||R - W||_F against the training step."""
    curves = read_curves(curve_file)
    asym = curves["asym_rw"].to_numpy(dtype=float)
    floor = _log_floor(asym)
    clipped = bool((asym <= floor).any())

    figure = Figure(figsize=(8.0, 3.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.plot(curves["step"], np.clip(asym, floor, None), color="C0")
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel(
        r"$\frac{1}{2}\Vert RW^{T} - WR^{T}\Vert_F^2$"
        + (f"\n(values <= {floor:.0e} drawn at {floor:.0e})" if clipped else "")
    )
    left.set_title("Asymmetry of R W^T", fontsize=10)
    right.plot(curves["step"], curves["weight_gap"], color="C1")
    right.set_xlabel("step")
    right.set_ylabel(r"$\Vert R - W\Vert_F$")
    right.set_title("Distance between R and W", fontsize=10)
    return save_figure(figure, out_path)


# Command line.

_SEED_DIRECTORY = re.compile(r"seed-(-?\d+)")


def find_run_files(
    runs_dir: Path, name: str, runs: Iterable[Path] | None = None
) -> dict[tuple[str, str], Path]:
    """Map (dataset, variant) to runs_dir/<dataset>/<variant>/seed-<seed>/<name>.

    For each pair the file of the lowest seed that contains it is used. With `runs`, only
    those run folders count, so folders left from another config are not plotted.
    """
    allowed = None if runs is None else {Path(run).resolve() for run in runs}
    found: dict[tuple[str, str], Path] = {}
    for variant_dir in sorted(path for path in Path(runs_dir).glob("*/*") if path.is_dir()):
        seeds = []
        for seed_dir in variant_dir.iterdir():
            match = _SEED_DIRECTORY.fullmatch(seed_dir.name)
            if allowed is not None and seed_dir.resolve() not in allowed:
                continue
            if match and (seed_dir / name).is_file():
                seeds.append((int(match.group(1)), seed_dir / name))
        if seeds:
            seed, path = min(seeds)
            found[(variant_dir.parent.name, variant_dir.name)] = path
            logger.debug("Using seed %d for %s.", seed, path)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the figures options to `parser` (used by the `figures` subcommand)."""
    parser.add_argument(
        "--metrics", type=Path, required=True, help="tidy all_metrics.csv from the aggregate step"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        required=True,
        help="directory with <dataset>/<variant>/seed-<seed>/ run directories",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        help="run directories to plot (default: every run directory under --runs-dir)",
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="directory with the <dataset>.npz files"
    )
    parser.add_argument(
        "--autoencoder", type=Path, help="autoencoder curves JSONL (the figure is skipped without)"
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="directory for the figures")
    parser.add_argument(
        "--t",
        type=float,
        help="noise level t of the score-field figure (default: the smallest t in each file)",
    )


def run(args: argparse.Namespace) -> int:
    """Write all figures for parsed options and return 0."""
    out_dir: Path = args.out_dir
    fields = find_run_files(args.runs_dir, "field.npz", args.runs)
    if not fields:
        raise FileNotFoundError(
            f"No field.npz under {args.runs_dir}/<dataset>/<variant>/seed-<seed>/; run the "
            "evaluate stage first or pass the right --runs-dir."
        )
    plot_score_fields(fields, out_dir / "score_fields", t=args.t)

    sample_files: dict[tuple[str, str, str], Path] = {}
    for sampler in SAMPLER_ORDER:
        for (dataset, variant), path in find_run_files(
            args.runs_dir, f"samples-{sampler}.npz", args.runs
        ).items():
            sample_files[(dataset, variant, sampler)] = path
    if not sample_files:
        raise FileNotFoundError(
            f"No samples-pc.npz or samples-ode.npz under {args.runs_dir}; run the sample stage "
            "first or pass the right --runs-dir."
        )
    datasets = {key[0] for key in sample_files}
    data_files = {dataset: Path(args.data_dir) / f"{dataset}.npz" for dataset in datasets}
    plot_samples(data_files, sample_files, out_dir / "samples")

    plot_asymmetry_levels(collect_metrics([args.metrics]), out_dir / "asymmetry_levels")
    if args.autoencoder is not None:
        plot_autoencoder_curves(args.autoencoder, out_dir / "autoencoder")
    else:
        logger.info("No --autoencoder file given, so the autoencoder figure is skipped.")
    return 0
