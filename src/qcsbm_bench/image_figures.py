"""Figures of the image benchmark: Asym and NAsym against t (as Figure 3 of Chao et al.,
ICML 2023) and uncurated sample grids per dataset and variant."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from qcsbm_bench.artifacts import load_npz
from qcsbm_bench.figures import plot_asymmetry_levels, save_figure
from qcsbm_bench.grids import tile_grid
from qcsbm_bench.published import IMAGE_DATASETS, VARIANTS

logger = logging.getLogger(__name__)

# Merged sample files sit at runs/<dataset>/<variant>/seed-<seed>/samples-<sampler>.npz.
SAMPLES_PATH = re.compile(
    r"(?P<dataset>[^/]+)/(?P<variant>[^/]+)/seed-(?P<seed>\d+)/samples-(?P<sampler>\w+)\.npz$"
)
GRID_SIDE = 6
# Asym scales like sigma^-4, so from sigma = 0.01 to 50 it spans about 15 decades.
IMAGE_LOG_DECADES = 16


def plot_image_asymmetry(metrics: pd.DataFrame, out_path: Path) -> list[Path]:
    """Plot Asym and NAsym per noise level for every dataset and variant, on a linear t axis.

    The image levels are evenly spaced in t, from t_min = 1e-5 up, as in Figure 3 of Chao et
    al. (ICML 2023), so a log axis would leave the first level far from the others. Asym
    falls by many decades as sigma grows, so the y axis spans up to IMAGE_LOG_DECADES.
    """
    return plot_asymmetry_levels(metrics, out_path, log_t=False, max_decades=IMAGE_LOG_DECADES)


def parse_samples_path(path: Path) -> dict[str, str]:
    """Return dataset, variant, seed and sampler named by a merged samples file's path."""
    match = SAMPLES_PATH.search(Path(path).as_posix())
    if match is None:
        raise ValueError(
            f"{path} is not a merged samples file of the form "
            "runs/<dataset>/<variant>/seed-<seed>/samples-<sampler>.npz"
        )
    return match.groupdict()


def _ordered(names: Sequence[str], order: Sequence[str]) -> list[str]:
    unique = set(names)
    return [name for name in order if name in unique] + sorted(unique - set(order))


def plot_sample_grids(paths: Sequence[Path], out_dir: Path) -> list[Path]:
    """Draw one figure per sampler: rows are datasets, columns variants, lowest seed each.

    Writes samples-<sampler>.png and .pdf to out_dir and returns their paths.
    """
    runs = pd.DataFrame([{**parse_samples_path(path), "path": Path(path)} for path in paths])
    runs["seed"] = runs["seed"].astype(int)
    written: list[Path] = []
    for sampler in sorted(set(runs["sampler"])):
        chosen = runs.loc[runs["sampler"] == sampler]
        datasets = _ordered(chosen["dataset"].tolist(), IMAGE_DATASETS)
        variants = _ordered(chosen["variant"].tolist(), VARIANTS)
        figure = Figure(figsize=(2.6 * len(variants), 2.8 * len(datasets)), layout="constrained")
        axes = figure.subplots(len(datasets), len(variants), squeeze=False)
        for row, dataset in enumerate(datasets):
            for column, variant in enumerate(variants):
                ax = axes[row, column]
                ax.set_axis_off()
                match = chosen.loc[
                    (chosen["dataset"] == dataset) & (chosen["variant"] == variant)
                ].sort_values("seed")
                if match.empty:
                    ax.set_title(f"{dataset} {variant}: no samples", fontsize=8)
                    continue
                samples = match["path"].iloc[0]
                images = load_npz(samples, ["images"], producer="the merge-samples job")["images"]
                grid = tile_grid(images, GRID_SIDE).transpose(1, 2, 0)
                if grid.shape[2] == 1:
                    ax.imshow(grid[:, :, 0], cmap="gray", vmin=0, vmax=255)
                else:
                    ax.imshow(grid)
                ax.set_title(f"{dataset} {variant} (seed {match['seed'].iloc[0]})", fontsize=8)
        written += save_figure(figure, Path(out_dir) / f"samples-{sampler}")
    return written
