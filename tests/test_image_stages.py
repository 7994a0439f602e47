"""The image stages through the command-line tool: FID with a stand-in Inception file, the
error when the Inception file is missing, and Tables 2 and 3 from per-run metric files."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_inception import StandInInception

from qcsbm_bench.cli import main
from qcsbm_bench.data.images import load_image_dataset, prepare_image_dataset
from qcsbm_bench.image_evaluation import IMAGE_METRIC_COLUMNS, metric_row, write_image_metric_rows
from qcsbm_bench.metrics.inception import INCEPTION_FILENAME, INCEPTION_URL

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]


@pytest.fixture(scope="module")
def inception_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photo patches (the CIFAR shape), a stand-in Inception file and a config using both."""
    root = tmp_path_factory.mktemp("stages")
    torch.manual_seed(0)
    weights = root / "inception" / INCEPTION_FILENAME
    weights.parent.mkdir()
    torch.jit.save(torch.jit.script(StandInInception().float().eval()), str(weights))

    data_dir = root / "data" / "photos"
    prepare_image_dataset(
        "photos",
        data_dir,
        root=None,
        download=False,
        seed=1,
        options={"n_train": 40, "n_test": 24},
    )
    config = yaml.safe_load((ROOT / "workflow" / "config" / "images-smoke.yaml").read_text())
    config["evaluate"]["features"] = "inception"
    config["evaluate"]["fid"]["inception_weights"] = str(weights)
    config["evaluate"]["precision_recall"]["n_real"] = 20
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return {"root": root, "config": config_path, "data": data_dir, "weights": weights}


def run_cli(*args: str | Path) -> int:
    return main([str(arg) for arg in args])


def score_samples(config: Path, variant: str, samples: Path, reference: Path, out: Path) -> int:
    """Run sample-quality on photo samples of seed 0 with the PC sampler."""
    return run_cli(
        "sample-quality",
        "--config", config,
        "--dataset", "photos", "--variant", variant, "--seed", "0", "--sampler", "pc",
        "--samples", samples,
        "--reference", reference,
        "--out", out,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference_file(inception_setup: dict[str, Path]) -> Path:
    """Run reference-features once on the photo patches with the stand-in Inception file."""
    reference = inception_setup["root"] / "reference.npz"
    status = run_cli(
        "reference-features",
        "--config", inception_setup["config"],
        "--dataset", "photos",
        "--data-dir", inception_setup["data"],
        "--out", reference,
    )  # fmt: skip
    assert status == 0
    return reference


def test_fid_rows_carry_settings(inception_setup: dict[str, Path], reference_file: Path) -> None:
    root = inception_setup["root"]
    reference = reference_file
    with np.load(reference) as archive:
        metadata = json.loads(str(archive["metadata"]))
        assert archive["real_features"].shape == (20, 2048)
    assert metadata["split"] == "train"
    assert metadata["n"] == 40
    assert metadata["mode"] == "clean"
    assert metadata["resolution"] == 299

    # Test images as "samples": a real set, so the FID against training images is finite.
    test = load_image_dataset(inception_setup["data"], "test")
    samples = root / "samples-pc.npz"
    np.savez(
        samples,
        images=np.asarray(test.images),
        finite=np.ones(len(test), dtype=bool),
        nfe=np.array([11, 11]),
        seconds=np.array([1.0, 2.0]),
    )
    out = root / "quality-pc.csv"
    status = score_samples(inception_setup["config"], "usbm", samples, reference, out)
    assert status == 0
    rows = pd.read_csv(out, keep_default_na=False).set_index("metric")
    assert tuple(pd.read_csv(out).columns) == IMAGE_METRIC_COLUMNS
    assert float(rows.loc["fid", "value"]) > 0
    assert "mode=clean" in rows.loc["fid", "detail"]
    assert "resolution=299" in rows.loc["fid", "detail"]
    assert "samples=24" in rows.loc["fid", "detail"]
    assert "reference=train (40 images)" in rows.loc["fid", "detail"]
    assert 1.0 <= float(rows.loc["inception_score", "value"]) <= 1008
    assert float(rows.loc["nonfinite_fraction", "value"]) == 0.0
    assert float(rows.loc["nfe", "value"]) == 11.0
    assert float(rows.loc["sample_seconds", "value"]) == 3.0
    for metric in ("precision", "recall", "density", "coverage"):
        assert metric in rows.index
    assert "fd_classifier" not in rows.index


def test_missing_inception_file_fails_with_url(
    inception_setup: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = yaml.safe_load(inception_setup["config"].read_text())
    missing = tmp_path / "nowhere" / INCEPTION_FILENAME
    config["evaluate"]["fid"]["inception_weights"] = str(missing)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    status = run_cli(
        "reference-features",
        "--config", config_path,
        "--dataset", "photos",
        "--data-dir", inception_setup["data"],
        "--out", tmp_path / "reference.npz",
    )  # fmt: skip
    assert status == 2
    assert str(missing) in caplog.text
    assert INCEPTION_URL in caplog.text
    assert not (tmp_path / "reference.npz").exists()


def test_classifier_space_needs_classifier(
    inception_setup: dict[str, Path], tmp_path: Path
) -> None:
    config = yaml.safe_load(inception_setup["config"].read_text())
    config["evaluate"]["features"] = "classifier"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    status = run_cli(
        "reference-features",
        "--config", config_path,
        "--dataset", "photos",
        "--data-dir", inception_setup["data"],
        "--out", tmp_path / "reference.npz",
    )  # fmt: skip
    assert status == 2


def write_run(
    folder: Path, dataset: str, variant: str, seed: int, values: dict[str, float]
) -> list[Path]:
    """Write one run's likelihood, asymmetry and quality files with the given values."""
    run = folder / dataset / variant / f"seed-{seed}"
    run.mkdir(parents=True)
    distance = "fid" if dataset == "cifar10" else "fd_classifier"
    likelihood = [metric_row(dataset, variant, seed, "nll", values["nll"], detail="nll d")]
    asymmetry = [
        metric_row(dataset, variant, seed, "asym", values["asym"] * 2, t=0.5),
        metric_row(dataset, variant, seed, "asym", values["asym"], detail="asym d"),
        metric_row(dataset, variant, seed, "nasym", values["nasym"], detail="nasym d"),
    ]
    paths = [run / "likelihood.csv", run / "asymmetry.csv"]
    write_image_metric_rows(likelihood, paths[0])
    write_image_metric_rows(asymmetry, paths[1])
    for sampler in ("pc", "ode"):
        rows = [
            metric_row(
                dataset, variant, seed, distance, values["fid"], sampler=sampler, detail="fd d"
            ),
            metric_row(dataset, variant, seed, "precision", 0.5, sampler=sampler),
            metric_row(dataset, variant, seed, "nfe", 100.0, sampler=sampler),
        ]
        path = run / f"quality-{sampler}.csv"
        write_image_metric_rows(rows, path)
        paths.append(path)
    return paths


def test_tables_beside_published_values(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    paths: list[Path] = []
    for seed, shift in ((0, 0.0), (1, 0.2)):
        for variant in ("usbm", "qcsbm"):
            values = {"nll": 3.4 + shift, "asym": 1e7, "nasym": 1e-3, "fid": 3.0 + shift}
            paths += write_run(runs, "cifar10", variant, seed, values)
        paths += write_run(runs, "digits", "usbm", seed, {**values, "fid": 0.5})
        # A diverged sampler writes an empty distance, which must keep its name.
        paths += write_run(runs, "digits", "csbm", seed, {**values, "fid": float("nan")})
    out_dir = tmp_path / "tables"
    assert run_cli("aggregate-images", "--metrics", *paths, "--out-dir", out_dir) == 0

    table2 = pd.read_csv(out_dir / "table2.csv", keep_default_na=False, dtype=str)
    cifar = table2[(table2["dataset"] == "cifar10") & (table2["variant"] == "usbm")].iloc[0]
    assert cifar["seeds"] == "2"
    assert cifar["NLL (bits/dim) paper"] == "3.46"
    assert cifar["NLL (bits/dim)"].startswith("3.50 ± ")
    assert cifar["Asym paper"] == "1.88e8"
    digits = table2[table2["dataset"] == "digits"].iloc[0]
    assert digits["NLL (bits/dim) paper"] == "n/a"

    table3 = pd.read_csv(out_dir / "table3.csv", keep_default_na=False)
    cifar_pc = table3[
        (table3["dataset"] == "cifar10")
        & (table3["variant"] == "qcsbm")
        & (table3["sampler"] == "pc")
    ].iloc[0]
    assert cifar_pc["distance"] == "FID"
    assert cifar_pc["FID paper"] == "2.48"
    cifar_ode = table3[
        (table3["dataset"] == "cifar10")
        & (table3["variant"] == "qcsbm")
        & (table3["sampler"] == "ode")
    ].iloc[0]
    assert cifar_ode["FID paper"] == "n/a"
    digits_rows = table3[table3["dataset"] == "digits"]
    assert set(digits_rows["distance"]) == {"FD (digits classifier)"}
    assert set(digits_rows["FID paper"]) == {"n/a"}
    diverged = digits_rows[digits_rows["variant"] == "csbm"]
    assert len(diverged) == 2
    assert set(diverged["value"]) == {"n/a"}

    markdown = (out_dir / "table3.md").read_text()
    assert "- cifar10 fid (pc): fd d" in markdown
    tidy = pd.read_csv(out_dir / "all_metrics.csv")
    assert "detail" in tidy.columns
    # One per-level row per run: 2 seeds x (2 cifar10 variants + 2 digits variants).
    assert len(tidy[(tidy["metric"] == "asym") & tidy["t"].notna()]) == 8


def keep_header(text: str) -> str:
    return text.splitlines(keepends=True)[0]


def cut_last_line(text: str) -> str:
    return text[:-8]


def drop_detail_column(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return lines[0].replace(",detail", "") + "".join(lines[1:])


def shorten_third_line(text: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[2] = ",".join(lines[2].split(",")[:5]) + "\n"
    return "".join(lines)


def garble_value(text: str) -> str:
    return text.replace(",3.0,", ",3.0x,", 1)


def garble_seed(text: str) -> str:
    return text.replace(",0,fid,", ",zero,fid,", 1)


def empty_file(text: str) -> str:
    return ""


def other_dataset(text: str) -> str:
    return text.replace("cifar10,usbm,0,fid", "svhn,usbm,0,fid", 1)


def unknown_variant(text: str) -> str:
    return text.replace("cifar10,usbm,0,fid", "cifar10,usbmX,0,fid", 1)


def other_seed(text: str) -> str:
    return text.replace("cifar10,usbm,0,fid", "cifar10,usbm,4,fid", 1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (keep_header, "has a header but no data rows"),
        (cut_last_line, "ends inside line 4, which is cut off"),
        (drop_detail_column, r"lacks the column\(s\) \['detail'\]"),
        (shorten_third_line, "line 3 has 5 fields, but the header has 9"),
        (garble_value, "line 2, column 'value': '3.0x' is not a number"),
        (garble_seed, "line 2, column 'seed': 'zero' is not an integer"),
        (empty_file, "is empty"),
        (other_dataset, "line 2, column 'dataset': 'svhn' differs from the run folder's"),
        (unknown_variant, "line 2, column 'variant': 'usbmX' is not one of"),
        (other_seed, "line 2, column 'seed': '4' differs from the run folder's '0'"),
    ],
)
def test_aggregate_rejects_damaged_metrics(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[str], str],
    message: str,
) -> None:
    values = {"nll": 3.4, "asym": 1e7, "nasym": 1e-3, "fid": 3.0}
    paths = write_run(tmp_path / "runs", "cifar10", "usbm", 0, values)
    damaged = next(path for path in paths if path.name == "quality-pc.csv")
    damaged.write_text(damage(damaged.read_text()))
    out_dir = tmp_path / "tables"

    status = run_cli("aggregate-images", "--metrics", *paths, "--out-dir", out_dir)

    assert status == 2
    assert re.search(message, caplog.text), caplog.text
    assert f"metrics file {damaged}" in caplog.text
    assert "delete it and rerun the stage that wrote it" in caplog.text
    assert not out_dir.exists()


def test_diverged_samples_not_scored(
    inception_setup: dict[str, Path], reference_file: Path
) -> None:
    root = inception_setup["root"]
    reference = reference_file
    samples = root / "diverged.npz"
    np.savez(
        samples,
        images=np.zeros((24, 3, 32, 32), dtype=np.uint8),
        finite=np.zeros(24, dtype=bool),
        nfe=np.array([11]),
        seconds=np.array([1.0]),
    )
    out = root / "quality-diverged.csv"
    status = score_samples(inception_setup["config"], "csbm", samples, reference, out)
    assert status == 0
    rows = pd.read_csv(out, keep_default_na=False).set_index("metric")
    for metric in ("fid", "precision", "recall", "density", "coverage"):
        assert rows.loc[metric, "value"] == ""
        assert "24 of 24 samples are NaN or inf" in rows.loc[metric, "detail"]
    assert float(rows.loc["nonfinite_fraction", "value"]) == 1.0
    assert float(rows.loc["nfe", "value"]) == 11.0


@pytest.mark.parametrize("stage", ["sample-images", "image-likelihood", "image-asymmetry"])
def test_stage_rejects_checkpoint_of_other_run(
    inception_setup: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    from qcsbm_bench.artifacts import save_checkpoint

    # Only the run entries matter: they are checked before any weight is read.
    checkpoint = tmp_path / "digits-checkpoint.pt"
    save_checkpoint({"dataset": "digits", "variant": "usbm", "seed": 1}, checkpoint)
    outputs = {
        "sample-images": ["--sampler", "pc", "--out-dir", tmp_path / "samples"],
        "image-likelihood": ["--out", tmp_path / "likelihood.csv"],
        "image-asymmetry": ["--out", tmp_path / "asymmetry.csv"],
    }
    status = run_cli(
        stage,
        "--config", inception_setup["config"],
        "--dataset", "photos", "--variant", "usbm", "--seed", "0",
        "--checkpoint", checkpoint,
        "--data-dir", inception_setup["data"],
        *outputs[stage],
    )  # fmt: skip
    assert status == 2
    assert f"checkpoint {checkpoint} is not from the expected run" in caplog.text
    assert "dataset: 'digits' in the checkpoint, 'photos' expected" in caplog.text
    assert "seed: 1 in the checkpoint, 0 expected" in caplog.text
    assert not any(tmp_path.glob("*.csv"))
    assert not (tmp_path / "samples").exists()


def test_train_rejects_init_of_other_run(
    inception_setup: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from qcsbm_bench.artifacts import save_checkpoint

    checkpoint = tmp_path / "csbm-checkpoint.pt"
    save_checkpoint({"dataset": "photos", "variant": "csbm", "seed": 0}, checkpoint)
    status = run_cli(
        "train-images",
        "--config", inception_setup["config"],
        "--dataset", "photos", "--variant", "qcsbm", "--seed", "0",
        "--data-dir", inception_setup["data"],
        "--init-checkpoint", checkpoint,
        "--out-dir", tmp_path / "run",
    )  # fmt: skip
    assert status == 2
    assert f"fine-tuning init checkpoint {checkpoint} is not from the expected run" in caplog.text
    assert "variant: 'csbm' in the checkpoint, 'usbm' expected" in caplog.text
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_truncated_checkpoint_names_path(tmp_path: Path) -> None:
    from qcsbm_bench.artifacts import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"weights": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"checkpoint\.pt is not a readable torch checkpoint"):
        load_checkpoint(path)


def damage_npz(path: Path, damage: str) -> None:
    """Damage an npz file the way a killed copy, a full disk or a bad sector would."""
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flipped byte":
        # Flip one byte inside the stored array data, which only the CRC-32 check catches.
        position = data.index(bytes([7]) * 64) + 32
        path.write_bytes(data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :])
    elif damage == "npy":
        np.save(path.with_suffix(".tmp.npy"), np.zeros(3))
        path.write_bytes(path.with_suffix(".tmp.npy").read_bytes())
    else:
        raise AssertionError(f"unknown damage {damage!r}")


def write_samples(path: Path, n_images: int = 4) -> None:
    """Write a merged-samples file whose images are all 7, so their bytes can be found."""
    np.savez(
        path,
        images=np.full((n_images, 1, 32, 32), 7, dtype=np.uint8),
        finite=np.ones(n_images, dtype=bool),
        nfe=np.array([11]),
        seconds=np.array([1.0]),
    )


def test_load_npz_reads_requested_keys(tmp_path: Path) -> None:
    from qcsbm_bench.artifacts import load_npz

    path = tmp_path / "samples-pc.npz"
    write_samples(path)
    arrays = load_npz(path, ["images", "nfe"])
    assert sorted(arrays) == ["images", "nfe"]
    assert arrays["images"].shape == (4, 1, 32, 32)
    assert (arrays["images"] == 7).all()
    assert arrays["nfe"].tolist() == [11]
    assert sorted(load_npz(path)) == ["finite", "images", "nfe", "seconds"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped byte", "npy"])
def test_load_npz_names_damaged_file(tmp_path: Path, damage: str) -> None:
    from qcsbm_bench.artifacts import load_npz

    path = tmp_path / "samples-pc.npz"
    write_samples(path)
    damage_npz(path, damage)
    with pytest.raises(ValueError, match="corrupt or incomplete") as error:
        load_npz(path, ["images"], producer="the merge-samples job")
    assert str(path) in str(error.value)
    assert "delete it and rerun the merge-samples job" in str(error.value)


def test_load_npz_names_missing_key(tmp_path: Path) -> None:
    from qcsbm_bench.artifacts import load_npz

    path = tmp_path / "samples-pc.npz"
    np.savez(path, images=np.zeros((2, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"lacks the arrays \['finite', 'nfe'\]") as error:
        load_npz(path, ["images", "finite", "nfe"], producer="the merge-samples job")
    assert str(path) in str(error.value)
    assert "rerun the merge-samples job" in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"absent\.npz not found; run the merge-samples"):
        load_npz(tmp_path / "absent.npz", producer="the merge-samples job")


def test_quality_names_damaged_inputs(tmp_path: Path) -> None:
    from qcsbm_bench.image_quality import sample_quality_rows

    samples = tmp_path / "samples-pc.npz"
    write_samples(samples)
    reference = tmp_path / "reference.npz"
    np.savez(
        reference,
        mu=np.zeros(2),
        sigma=np.eye(2),
        metadata=json.dumps({"resolution": 32}),
        real_features=np.full((64, 2), 7.0),
    )
    damage_npz(reference, "truncated")
    # The config is never read: both files are loaded before any feature is computed.
    with pytest.raises(ValueError, match=r"reference\.npz is corrupt or incomplete") as error:
        sample_quality_rows({}, "photos", "usbm", 0, "pc", samples, reference, None)
    assert "rerun the reference-features job" in str(error.value)

    damage_npz(samples, "flipped byte")
    with pytest.raises(ValueError, match=r"samples-pc\.npz is corrupt or incomplete") as error:
        sample_quality_rows({}, "photos", "usbm", 0, "pc", samples, reference, None)
    assert "rerun the merge-samples job" in str(error.value)


def test_sample_grids_name_damaged_file(tmp_path: Path) -> None:
    from qcsbm_bench.image_figures import plot_sample_grids

    samples = tmp_path / "runs" / "digits" / "usbm" / "seed-0" / "samples-pc.npz"
    samples.parent.mkdir(parents=True)
    write_samples(samples)
    damage_npz(samples, "truncated")
    with pytest.raises(ValueError, match=r"samples-pc\.npz is corrupt or incomplete") as error:
        plot_sample_grids([samples], tmp_path / "figures")
    assert "rerun the merge-samples job" in str(error.value)
