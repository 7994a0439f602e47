"""Tests for the training-step benchmark on a tiny configuration (no timing assertions)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from qcsbm_bench.benchmark import (
    COLUMNS,
    MODES,
    NETWORKS,
    BenchmarkRow,
    read_rows_csv,
    run_step_benchmark,
    write_benchmark_page,
)


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[BenchmarkRow], Path]:
    out_dir = tmp_path_factory.mktemp("benchmark")
    rows = run_step_benchmark(
        out_dir,
        batch_size=2,
        image_shape=(1, 4, 4),
        steps=2,
        warmup=1,
        toy_batch_size=2,
        isolate=False,
        threads=1,
    )
    return rows, out_dir / "steps.csv"


def test_csv_has_expected_columns(tiny_rows: tuple[list[BenchmarkRow], Path]) -> None:
    rows, csv_path = tiny_rows
    with csv_path.open(newline="") as csv_file:
        reader = csv.DictReader(csv_file)
        records = list(reader)
    assert tuple(reader.fieldnames or ()) == COLUMNS
    assert len(records) == len(NETWORKS) * len(MODES)
    assert len(rows) == len(records)


def test_csv_round_trip_keeps_values(tiny_rows: tuple[list[BenchmarkRow], Path]) -> None:
    rows, csv_path = tiny_rows
    read_back = read_rows_csv(csv_path)
    assert len(read_back) == len(rows)
    for original, parsed in zip(rows, read_back, strict=True):
        for column in ("network", "mode", "status", "n_params", "step_ms_median", "note"):
            assert parsed.get(column) == original.get(column), column


def test_every_mode_has_positive_time(tiny_rows: tuple[list[BenchmarkRow], Path]) -> None:
    _, csv_path = tiny_rows
    with csv_path.open(newline="") as csv_file:
        records = list(csv.DictReader(csv_file))
    for mode in MODES:
        timed = [r for r in records if r["mode"] == mode and r["status"] == "ok"]
        assert timed, f"mode {mode} has no timed row"
        for record in timed:
            assert float(record["step_ms_median"]) > 0.0
            assert float(record["step_ms_q75"]) >= float(record["step_ms_q25"])
            assert int(record["n_params"]) > 0


def test_exact_skipped_on_images(tiny_rows: tuple[list[BenchmarkRow], Path]) -> None:
    rows, _ = tiny_rows
    statuses = {(row["network"], row["mode"]): row["status"] for row in rows}
    assert statuses[("toy", "qc-exact")] == "ok"
    assert statuses[("convnet", "qc-exact")] == "skipped"
    assert statuses[("unet", "qc-exact")] == "skipped"
    skipped = [row for row in rows if row["status"] == "skipped"]
    for row in skipped:
        assert "D = 16" in str(row["note"])
        assert "only on the toy network" in str(row["note"])
        assert row.get("step_ms_median") is None


def test_subprocess_run_measures_rss(tmp_path: Path) -> None:
    rows = run_step_benchmark(
        tmp_path,
        steps=2,
        warmup=1,
        networks=("toy",),
        modes=("dsm",),
        toy_batch_size=2,
        threads=1,
    )
    (row,) = rows
    assert row["status"] == "ok"
    assert "RSS" in str(row["memory_kind"])
    peak = row["peak_memory_mib"]
    baseline = row["baseline_memory_mib"]
    assert isinstance(peak, float)
    assert isinstance(baseline, float)
    assert baseline > 0.0
    assert peak >= baseline
    assert isinstance(row["step_ms_median"], float)
    assert row["step_ms_median"] > 0.0
    assert row["torch_threads"] == 1


def test_page_lists_every_row(tiny_rows: tuple[list[BenchmarkRow], Path], tmp_path: Path) -> None:
    rows, _ = tiny_rows
    page_path = tmp_path / "docs" / "benchmarks.md"
    write_benchmark_page(rows, page_path)
    text = page_path.read_text()
    table_lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + len(rows)
    assert "qcsbm-bench benchmark --out-dir results/benchmark" in text
    for network in NETWORKS:
        assert f"- `{network}`: the JVP step took" in text


def _synthetic_row(network: str, mode: str, q25: float, median: float, q75: float) -> BenchmarkRow:
    return {
        "network": network,
        "mode": mode,
        "status": "ok",
        "batch_size": 4,
        "input_shape": "2" if network == "toy" else "1x4x4",
        "steps": 5,
        "warmup": 1,
        "step_ms_q25": q25,
        "step_ms_median": median,
        "step_ms_q75": q75,
        "step_ms_iqr": q75 - q25,
        "memory_kind": "not measured (in-process CPU run)",
        "device": "cpu",
        "device_name": "",
        "cpu_model": "test CPU",
        "cpu_count": 2,
        "torch_threads": 1,
        "torch_version": "test",
        "python_version": "3.11",
        "timestamp_utc": "2000-01-01T00:00:00+00:00",
    }


def test_page_verdict_respects_iqr(tmp_path: Path) -> None:
    rows = [
        _synthetic_row("toy", "dsm", 9.0, 10.0, 11.0),
        _synthetic_row("toy", "qc-hutchinson-vjp", 30.0, 31.0, 32.0),
        _synthetic_row("toy", "qc-hutchinson-jvp", 19.0, 20.0, 21.0),
        _synthetic_row("unet", "qc-hutchinson-vjp", 30.0, 31.0, 40.0),
        _synthetic_row("unet", "qc-hutchinson-jvp", 25.0, 33.0, 35.0),
    ]
    page_path = tmp_path / "page.md"
    write_benchmark_page(rows, page_path)
    bullets = [line for line in page_path.read_text().splitlines() if "the JVP step took" in line]
    assert len(bullets) == 2
    assert "the JVP estimator was faster" in bullets[0]
    assert "VJP step costs 3.1x and the JVP step 2.0x" in bullets[0]
    assert "cannot order them" in bullets[1]
    assert "--image-shape 1 4 4 --toy-batch-size 4" in page_path.read_text()


def test_unknown_mode_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown mode 'qc-magic'"):
        run_step_benchmark(tmp_path, modes=("qc-magic",))
    assert not (tmp_path / "steps.csv").exists()
