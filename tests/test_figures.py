"""Tests of the figure functions and the figures command on tiny fake run directories."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qcsbm_bench.aggregate import METRIC_COLUMNS
from qcsbm_bench.cli import main as cli_main
from qcsbm_bench.figures import (
    _log_floor,
    find_run_files,
    load_score_field,
    plot_asymmetry_levels,
    plot_autoencoder_curves,
    plot_samples,
    plot_score_fields,
    read_curves,
    save_figure,
)

DATASETS = ("8gaussians", "checkerboard")
VARIANTS = ("csbm", "usbm", "qcsbm")
LEVELS = np.array([0.5, 0.01, 0.1])
GRID_SIZE = 6


def assert_figure_files(paths: list[Path], stem: Path) -> None:
    assert paths == [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        assert path.stat().st_size > 1000, path
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    assert paths[1].read_bytes().startswith(b"%PDF")


def write_field(path: Path, rotation: float) -> Path:
    """Write a field.npz whose score is -x plus `rotation` times a 90-degree turn of x."""
    axis = np.linspace(-2.0, 2.0, GRID_SIZE)
    first, second = np.meshgrid(axis, axis, indexing="ij")
    grid = np.stack([first.ravel(), second.ravel()], axis=1)
    turned = np.stack([-grid[:, 1], grid[:, 0]], axis=1)
    score = np.stack([(-grid + rotation * turned) / (1.0 + level) for level in LEVELS])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, grid=grid, t=LEVELS, score=score, grid_size=np.array(GRID_SIZE))
    return path


def write_points(path: Path, name: str, points: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if name == "test":
        np.savez(path, train=points, test=points)
    else:
        np.savez(path, samples=points)
    return path


def level_metrics(csbm_value: float = 0.0, datasets: tuple[str, ...] = DATASETS) -> pd.DataFrame:
    """Per-level Asym and NAsym rows for the datasets, 3 variants and 3 seeds."""
    rows = []
    for dataset in datasets:
        for index, variant in enumerate(VARIANTS):
            for seed in range(3):
                for t in (0.01, 0.1, 1.0):
                    scale = 0.0 if variant == "csbm" else index * (1.0 + 0.1 * seed) / t
                    for metric, factor in (("asym", 1.0), ("nasym", 1e-2)):
                        value = csbm_value if variant == "csbm" else scale * factor
                        rows.append(
                            {
                                "dataset": dataset,
                                "variant": variant,
                                "seed": seed,
                                "metric": metric,
                                "value": value,
                                "unit": "",
                                "sampler": "",
                                "t": t,
                            }
                        )
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def write_curves(path: Path, constant_asym: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for step in range(0, 101, 10):
            asym = constant_asym if constant_asym is not None else 1.0 / (1 + step)
            row = {"step": step, "L_QC": asym, "asym_rw": asym, "weight_gap": 2.0 - step / 100}
            handle.write(json.dumps({**row, "beta": 1.0}) + "\n")
    return path


def test_save_figure_replaces_suffix(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    paths = save_figure(figure, tmp_path / "nested" / "line.png")
    assert_figure_files(paths, tmp_path / "nested" / "line")


def test_score_fields_writes_files(tmp_path: Path) -> None:
    files = {
        (dataset, variant): write_field(tmp_path / dataset / variant / "field.npz", rotation)
        for dataset in DATASETS
        for variant, rotation in zip(VARIANTS, (0.0, 1.0, 0.2), strict=True)
    }
    paths = plot_score_fields(files, tmp_path / "score_fields", max_arrows_per_axis=3)
    assert_figure_files(paths, tmp_path / "score_fields")


def test_score_fields_logs_nearest_level(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = {("spirals", "csbm"): write_field(tmp_path / "field.npz", 0.0)}
    with caplog.at_level(logging.WARNING):
        plot_score_fields(files, tmp_path / "near", t=0.09)
    assert "t=0.1 is drawn" in caplog.text


def test_score_field_shape_error(tmp_path: Path) -> None:
    path = tmp_path / "bad-field.npz"
    np.savez(
        path,
        grid=np.zeros((9, 2)),
        t=np.array([0.1]),
        score=np.zeros((2, 9, 2)),
        grid_size=np.array(3),
    )
    with pytest.raises(ValueError, match=r"bad-field\.npz.*\(1, 9, 2\)"):
        load_score_field(path)


def test_score_field_missing_array(tmp_path: Path) -> None:
    path = tmp_path / "no-grid.npz"
    np.savez(path, t=np.array([0.1]), score=np.zeros((1, 4, 2)), grid_size=np.array(2))
    with pytest.raises(
        ValueError, match=r"no-grid\.npz is incomplete: it lacks the arrays \['grid'\]"
    ):
        load_score_field(path)


def test_score_field_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "field.npz"
    np.savez(path, grid=np.zeros((4, 2)), t=np.array([0.1]), score=np.zeros((1, 4, 2)))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"field\.npz is corrupt or incomplete"):
        load_score_field(path)


def test_samples_writes_pc_and_ode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data_files = {
        dataset: write_points(tmp_path / f"{dataset}.npz", "test", rng.normal(size=(300, 2)))
        for dataset in DATASETS
    }
    sample_files = {}
    for dataset in DATASETS:
        for variant in VARIANTS:
            for sampler in ("pc", "ode"):
                points = rng.normal(size=(200, 2))
                points[0] = [50.0, 50.0]
                points[1] = [np.nan, 0.0]
                path = tmp_path / dataset / variant / f"samples-{sampler}.npz"
                sample_files[(dataset, variant, sampler)] = write_points(path, "samples", points)

    paths = plot_samples(data_files, sample_files, tmp_path / "samples.png", max_points=100)

    assert_figure_files(paths[:2], tmp_path / "samples")
    assert_figure_files(paths[2:], tmp_path / "samples-ode")


def test_samples_need_data_file(tmp_path: Path) -> None:
    sample = write_points(tmp_path / "s.npz", "samples", np.zeros((5, 2)))
    with pytest.raises(ValueError, match="No data file for dataset"):
        plot_samples({}, {("spirals", "usbm", "pc"): sample}, tmp_path / "samples")


def test_asymmetry_levels_writes_files(tmp_path: Path) -> None:
    paths = plot_asymmetry_levels(level_metrics(), tmp_path / "asymmetry_levels")
    assert_figure_files(paths, tmp_path / "asymmetry_levels")


def test_asymmetry_all_zero_csbm(tmp_path: Path) -> None:
    metrics = level_metrics(datasets=("spirals",))
    only_csbm = metrics.loc[metrics["variant"] == "csbm"]
    assert (only_csbm["value"] == 0).all()

    paths = plot_asymmetry_levels(only_csbm, tmp_path / "zero")
    assert_figure_files(paths, tmp_path / "zero")


def test_asymmetry_negative_estimates(tmp_path: Path) -> None:
    paths = plot_asymmetry_levels(
        level_metrics(csbm_value=-1e-9, datasets=("spirals",)), tmp_path / "negative"
    )
    assert_figure_files(paths, tmp_path / "negative")


def test_log_floor_cases() -> None:
    # One decade below the smallest positive value: 2e-3 -> 1e-4.
    assert _log_floor(np.array([0.0, 2e-3, 0.5])) == pytest.approx(1e-4)
    # A float64 CSBM at 1e-31 is cut off 8 decades below the decade of 0.05 (1e-1): 1e-9.
    assert _log_floor(np.array([0.0, 1e-31, 0.05])) == pytest.approx(1e-9)
    assert _log_floor(np.array([0.0, -1e-9, np.nan])) == pytest.approx(1e-12)


def test_asymmetry_needs_level_rows(tmp_path: Path) -> None:
    metrics = level_metrics(datasets=("spirals",))
    metrics["t"] = np.nan
    with pytest.raises(ValueError, match="no per-level asym or nasym rows"):
        plot_asymmetry_levels(metrics, tmp_path / "none")


def test_autoencoder_curves_write_files(tmp_path: Path) -> None:
    paths = plot_autoencoder_curves(write_curves(tmp_path / "ae.jsonl"), tmp_path / "autoencoder")
    assert_figure_files(paths, tmp_path / "autoencoder")


def test_autoencoder_zero_asymmetry(tmp_path: Path) -> None:
    curve_file = write_curves(tmp_path / "tied.jsonl", constant_asym=0.0)
    paths = plot_autoencoder_curves(curve_file, tmp_path / "tied")
    assert_figure_files(paths, tmp_path / "tied")


def test_curves_missing_key_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"step": 0, "asym_rw": 1.0, "weight_gap": 1.0}\n{"step": 10}\n')
    with pytest.raises(ValueError, match=r"Line 2 of .*broken\.jsonl.*asym_rw, weight_gap"):
        read_curves(path)


def test_find_run_files_lowest_seed(tmp_path: Path) -> None:
    for seed in (10, 2, 7):
        write_field(tmp_path / "spirals" / "usbm" / f"seed-{seed}" / "field.npz", 0.0)
    (tmp_path / "spirals" / "qcsbm" / "seed-0").mkdir(parents=True)
    write_field(tmp_path / "spirals" / "qcsbm" / "seed-3" / "field.npz", 0.0)

    found = find_run_files(tmp_path, "field.npz")

    assert found == {
        ("spirals", "usbm"): tmp_path / "spirals" / "usbm" / "seed-2" / "field.npz",
        ("spirals", "qcsbm"): tmp_path / "spirals" / "qcsbm" / "seed-3" / "field.npz",
    }


def test_find_run_files_only_given_runs(tmp_path: Path) -> None:
    for dataset in ("spirals", "checkerboard"):
        for seed in (0, 1):
            write_field(tmp_path / dataset / "usbm" / f"seed-{seed}" / "field.npz", 0.0)

    runs = [tmp_path / "spirals" / "usbm" / "seed-1"]
    found = find_run_files(tmp_path, "field.npz", runs)

    assert found == {("spirals", "usbm"): runs[0] / "field.npz"}


def test_cli_writes_all_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    runs, data = tmp_path / "runs", tmp_path / "data"
    for dataset in ("spirals",):
        write_points(data / f"{dataset}.npz", "test", rng.normal(size=(200, 2)))
        for variant in VARIANTS:
            run_dir = runs / dataset / variant / "seed-0"
            write_field(run_dir / "field.npz", 0.5)
            write_points(run_dir / "samples-pc.npz", "samples", rng.normal(size=(100, 2)))
    metrics_file = tmp_path / "all_metrics.csv"
    level_metrics(datasets=("spirals",)).to_csv(metrics_file, index=False)
    curves = write_curves(tmp_path / "ae.jsonl")
    out = tmp_path / "figures"

    argv = ["--metrics", str(metrics_file), "--runs-dir", str(runs), "--data-dir", str(data)]
    assert cli_main(["figures", *argv, "--autoencoder", str(curves), "--out-dir", str(out)]) == 0

    for stem in ("score_fields", "samples", "asymmetry_levels", "autoencoder"):
        for suffix in (".png", ".pdf"):
            assert (out / f"{stem}{suffix}").stat().st_size > 1000, stem
    assert not (out / "samples-ode.png").exists()
