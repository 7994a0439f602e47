"""Metrics of one toy run, written as tidy rows (one per metric, noise level and sampler).

- Asym and NAsym from the exact 2-D Jacobian at `n_levels` noise levels t_k = k / n_levels,
  k = 1..n_levels, on `n_points` test points perturbed and queried at the same t_k (the
  reference code perturbed at t = k/11 and queried at (k+1)/10; we do not copy that).
- Score error 1/2 ||s_oracle - s||^2 at the same points, the oracle being the exact score of
  the clean training set convolved with N(0, sigma(t)^2 I).
- NLL in nats per point by the probability-flow ODE with the exact 2-D divergence.
- Precision, recall, density, coverage (k nearest neighbours) of each sampler's samples
  against test points, and each sampler's NFE and wall time.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from qcsbm_bench.artifacts import DTYPES, derive_seed, load_npz, save_npz
from qcsbm_bench.asymmetry import asymmetry_exact
from qcsbm_bench.atomic import atomic_open
from qcsbm_bench.data.toy2d import load_toy_dataset
from qcsbm_bench.likelihood import ode_nll
from qcsbm_bench.metrics.precision_recall import precision_recall
from qcsbm_bench.metrics.score_oracle import oracle_score, score_error
from qcsbm_bench.scores import ScoreModel

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("dataset", "variant", "seed", "metric", "value", "unit", "sampler", "t")
UNITS = {
    "asym": "squared score",
    "nasym": "fraction",
    "score_error": "squared score",
    "nll": "nats",
    "precision": "fraction",
    "recall": "fraction",
    "density": "ratio",
    "coverage": "fraction",
    "nfe": "evaluations",
    "sample_seconds": "s",
}
CHUNK = 1000


def noise_levels(n_levels: int) -> list[float]:
    """Return t_k = k / n_levels for k = 1..n_levels."""
    return [(k + 1) / n_levels for k in range(n_levels)]


def level_metrics(
    model: ScoreModel,
    test_points: torch.Tensor,
    centres: torch.Tensor,
    t_value: float,
    generator: torch.Generator,
) -> dict[str, float]:
    """Return mean Asym, NAsym and score error over test points perturbed at t."""
    sums = {"asym": 0.0, "nasym": 0.0, "score_error": 0.0}
    for start in range(0, test_points.shape[0], CHUNK):
        x0 = test_points[start : start + CHUNK]
        t = torch.full((x0.shape[0],), t_value, dtype=x0.dtype, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x_t = model.sde.perturb(x0, t, noise)
        asymmetry = asymmetry_exact(model, x_t, t)
        with torch.no_grad():
            score = model(x_t, t)
        oracle = oracle_score(
            x_t, centres, model.sde.marginal_std(t), mean_coeff=model.sde.mean_coeff(t)
        )
        sums["asym"] += float(asymmetry.asym.sum())
        sums["nasym"] += float(asymmetry.nasym.sum())
        sums["score_error"] += float(score_error(score, oracle).sum())
    return {name: total / test_points.shape[0] for name, total in sums.items()}


def evaluate_toy_run(
    config: Mapping[str, Any],
    model: ScoreModel,
    dataset: str,
    variant: str,
    seed: int,
    data_path: Path,
    sample_paths: Mapping[str, Path],
) -> list[dict[str, Any]]:
    """Compute every metric of one run and return tidy rows (see METRIC_COLUMNS)."""
    eval_config = config["evaluate"]
    dtype = DTYPES[config["dtype"]]
    device = torch.device(config["device"])
    train_points, test_points = load_toy_dataset(data_path, dataset)
    centres = torch.as_tensor(train_points, dtype=dtype, device=device)
    test = torch.as_tensor(test_points, dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(derive_seed(seed, dataset, variant, "evaluate"))
    rows: list[dict[str, Any]] = []

    def add(metric: str, value: float, sampler: str = "", t: float = math.nan) -> None:
        rows.append(
            {
                "dataset": dataset,
                "variant": variant,
                "seed": seed,
                "metric": metric,
                "value": value,
                "unit": UNITS[metric],
                "sampler": sampler,
                "t": t,
            }
        )

    per_level: dict[str, list[float]] = {"asym": [], "nasym": [], "score_error": []}
    levels = noise_levels(eval_config["n_levels"])
    points = test[: eval_config["n_points"]]
    for t_value in tqdm(levels, desc="asymmetry levels", disable=not config["progress"]):
        values = level_metrics(model, points, centres, t_value, generator)
        for metric, value in values.items():
            add(metric, value, t=t_value)
            per_level[metric].append(value)
    for metric, values in per_level.items():
        add(metric, float(np.mean(values)))

    nll_config = eval_config["nll"]
    likelihood = ode_nll(
        model,
        model.sde,
        test[: nll_config["n_points"]],
        divergence="exact",
        rtol=nll_config["rtol"],
        atol=nll_config["atol"],
        t_min=nll_config["t_min"],
    )
    add("nll", float(likelihood.nll.mean()))
    logger.info("NLL %.4f nats (%d ODE evaluations)", float(likelihood.nll.mean()), likelihood.nfe)

    k = eval_config["precision_recall"]["k"]
    for sampler, path in sample_paths.items():
        archive = load_npz(path, producer="the sample job")
        for key, expected in (("sampler", sampler), ("variant", variant), ("dataset", dataset)):
            if key in archive and str(archive[key]) != expected:
                raise ValueError(
                    f"{path} contains {key} {str(archive[key])!r}, expected {expected!r}; pass "
                    "the run's samples-<sampler>.npz files in sample.samplers order"
                )
        missing = sorted({"samples", "nfe", "seconds"} - set(archive))
        if missing:
            raise ValueError(
                f"{path} is incomplete: it lacks the arrays {missing}; delete it and rerun the "
                "sample job"
            )
        samples = torch.as_tensor(archive["samples"], dtype=dtype)
        nfe = int(archive["nfe"])
        seconds = float(archive["seconds"])
        real = test[: samples.shape[0]].cpu()
        for metric, value in precision_recall(real, samples, k=k).items():
            add(metric, value, sampler=sampler)
        add("nfe", nfe, sampler=sampler)
        add("sample_seconds", seconds, sampler=sampler)
    return rows


def score_field(
    model: ScoreModel, grid_size: int, extent: float, times: Sequence[float]
) -> dict[str, np.ndarray]:
    """Evaluate the learned score on a grid over [-extent, extent]^2 at the given times."""
    axis = torch.linspace(-extent, extent, grid_size, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    parameter = next(model.parameters())
    scores = []
    for t_value in times:
        x = grid.to(device=parameter.device, dtype=parameter.dtype)
        t = torch.full((x.shape[0],), t_value, dtype=parameter.dtype, device=parameter.device)
        with torch.no_grad():
            scores.append(model(x, t).double().cpu().numpy())
    return {
        "grid": grid.numpy(),
        "t": np.asarray(times, dtype=np.float64),
        "score": np.stack(scores),
        "grid_size": np.asarray(grid_size),
    }


def write_metric_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: ("" if _is_nan(row[key]) else row[key]) for key in METRIC_COLUMNS}
            )


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def write_field(field: Mapping[str, np.ndarray], path: Path) -> None:
    save_npz(path, **field)
