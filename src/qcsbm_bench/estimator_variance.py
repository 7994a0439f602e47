"""Variance of the single-probe L_QC estimates: two-VJP vs JVP+VJP, Rademacher vs Gaussian.

For each network and noise level, every sample is replicated K times with independent
probes, and the K single-probe values give the estimate's mean and its single-probe
standard deviation. The relative std is the single-probe std over the mean estimate, both
averaged over the samples, so that a sample with L_QC near 0 cannot blow it up. It sets
how many probes a training step needs, because a K-probe mean has std / sqrt(K).
The networks are randomly initialised (no trained image weights exist offline), so the
numbers describe the estimators on untrained fields, not on converged models.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from qcsbm_bench.atomic import atomic_open
from qcsbm_bench.jacobian import (
    draw_probes,
    exact_jacobian,
    jvp_antisymmetric_sq_norm,
    replicate,
    vjp_quadratic_forms,
)
from qcsbm_bench.networks import ConvScoreNet, SmallUNet
from qcsbm_bench.networks.toy import ToyScoreNet
from qcsbm_bench.regulariser import antisymmetric_sq_norm
from qcsbm_bench.scores import UnconstrainedScore
from qcsbm_bench.sde import VESDE

logger = logging.getLogger(__name__)

NETWORKS = ("toy", "convnet", "unet")
ESTIMATORS = ("hutchinson-vjp", "hutchinson-jvp")
PROBES = ("rademacher", "gaussian")
COLUMNS = (
    "network",
    "t",
    "estimator",
    "probe",
    "n_probes",
    "batch_size",
    "mean_estimate",
    "exact",
    "single_probe_std",
    "relative_std",
    "seconds_per_probe",
)


def _model_and_data(
    network: str, batch_size: int, generator: torch.Generator
) -> tuple[UnconstrainedScore, torch.Tensor]:
    """Build a random-init USBM and clean data: 8-Gaussians-like points or uniform images."""
    if network == "toy":
        sde = VESDE(0.1, 3.0, t_min=0.0)
        model = UnconstrainedScore(ToyScoreNet(), sde, form="residual")
        x0 = torch.randn(batch_size, 2, generator=generator) * 4.0
    elif network in ("convnet", "unet"):
        sde = VESDE(0.01, 50.0)
        net = ConvScoreNet() if network == "convnet" else SmallUNet()
        model = UnconstrainedScore(net, sde, form="direct")
        x0 = torch.rand(batch_size, 3, 32, 32, generator=generator)
    else:
        raise ValueError(f"unknown network {network!r}; valid networks are {NETWORKS}")
    return model.eval(), x0


def single_probe_values(
    model: UnconstrainedScore,
    x: torch.Tensor,
    t: torch.Tensor,
    estimator: str,
    probe: str,
    n_probes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Return the K single-probe estimates of L_QC per sample, shape (B, K)."""
    x_rep, t_rep = replicate(x, t, n_probes)
    probes = draw_probes(x_rep, probe, generator)
    if estimator == "hutchinson-vjp":
        _, first, second = vjp_quadratic_forms(model, x_rep, t_rep, probes, create_graph=False)
        values = first - second
    else:
        _, antisym_sq, _ = jvp_antisymmetric_sq_norm(model, x_rep, t_rep, probes, False)
        values = 0.5 * antisym_sq
    return values.detach().reshape(x.shape[0], n_probes)


def measure_estimator_variance(
    networks: Sequence[str] = NETWORKS,
    t_values: Sequence[float] = (0.05, 0.5),
    batch_size: int = 4,
    n_probes: int = 64,
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """Measure mean, single-probe std and cost of each estimator and probe distribution."""
    rows: list[dict[str, float | int | str]] = []
    for network in networks:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model, x0 = _model_and_data(network, batch_size, generator)
        for t_value in t_values:
            t = torch.full((batch_size,), t_value)
            x = model.sde.perturb(x0, t, torch.randn(x0.shape, generator=generator))
            exact = float("nan")
            if network == "toy":
                _, jacobian = exact_jacobian(model, x, t)
                exact = float((0.5 * antisymmetric_sq_norm(jacobian)).mean())
            for estimator in ESTIMATORS:
                for probe in PROBES:
                    # One untimed call first, so one-off set-up costs stay out of the timing.
                    single_probe_values(model, x, t, estimator, probe, 1, generator)
                    started = time.perf_counter()
                    values = single_probe_values(model, x, t, estimator, probe, n_probes, generator)
                    seconds = (time.perf_counter() - started) / n_probes
                    mean = values.mean(dim=1)
                    std = values.std(dim=1)
                    rows.append(
                        {
                            "network": network,
                            "t": t_value,
                            "estimator": estimator,
                            "probe": probe,
                            "n_probes": n_probes,
                            "batch_size": batch_size,
                            "mean_estimate": float(mean.mean()),
                            "exact": exact,
                            "single_probe_std": float(std.mean()),
                            "relative_std": float(std.mean() / mean.abs().mean()),
                            "seconds_per_probe": seconds,
                        }
                    )
                    logger.info("%s t=%.2f %s %s done", network, t_value, estimator, probe)
    return rows


def write_rows(rows: Sequence[dict[str, float | int | str]], path: Path) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: Sequence[dict[str, float | int | str]]) -> str:
    """Format the rows as a Markdown table (3 significant digits)."""
    header = "| network | t | estimator | probe | relative std (1 probe) | ms per probe |"
    lines = [header, "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['network']} | {row['t']} | {row['estimator']} | {row['probe']} | "
            f"{float(row['relative_std']):.3g} | {1e3 * float(row['seconds_per_probe']):.3g} |"
        )
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the CSV and table")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--t", type=float, nargs="+", default=[0.05, 0.5], help="SDE times")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per network and t")
    parser.add_argument("--n-probes", type=int, default=64, help="probes per sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data and probes")


def run(args: argparse.Namespace) -> int:
    rows = measure_estimator_variance(
        args.networks, args.t, args.batch_size, args.n_probes, args.seed
    )
    write_rows(rows, args.out_dir / "estimator_variance.csv")
    with atomic_open(args.out_dir / "estimator_variance.md") as handle:
        handle.write(markdown_table(rows))
    return 0
