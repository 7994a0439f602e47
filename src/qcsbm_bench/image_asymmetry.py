"""Jacobian asymmetry of an image score model per noise level (Chao et al., ICML 2023).

At levels t_k = (k / n_levels)(1 - t_min) + t_min, k = 0..n_levels-1, each clean image
x0 = images / 255 is perturbed with fresh noise, x_t = x0 + sigma(t_k) z, and one Rademacher
probe per image gives Hutchinson estimates of
Asym = tr(J J^T) - tr(J J) = 1/2 ||J - J^T||_F^2 (squared score units) and
NAsym = 1/2 (v^T J J^T v - v^T J J v) / (v^T J J^T v + 1e-8) (dimensionless).
The reported number is `level_average`: the mean over levels of the mean over images.
The published values used raw (non-EMA) weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from qcsbm_bench.artifacts import derive_seed
from qcsbm_bench.asymmetry import asymmetry_hutchinson
from qcsbm_bench.grids import check_uint8_images, pixel_tensor
from qcsbm_bench.jacobian import ScoreFn
from qcsbm_bench.sde import SDE, draw


def level_times(n_levels: int, t_min: float) -> list[float]:
    """Return t_k = (k / n_levels)(1 - t_min) + t_min for k = 0..n_levels-1."""
    if n_levels < 1:
        raise ValueError(f"n_levels must be at least 1, got {n_levels}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    return [k / n_levels * (1.0 - t_min) + t_min for k in range(n_levels)]


def _mean_and_se(values: np.ndarray) -> tuple[float, float]:
    se = math.nan if values.size < 2 else float(values.std(ddof=1) / math.sqrt(values.size))
    return float(values.mean()), se


def asymmetry_by_level(
    score_fn: ScoreFn,
    images: np.ndarray | torch.Tensor,
    *,
    n_levels: int = 100,
    t_min: float = 1e-5,
    batch_size: int,
    seed: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Estimate Asym and NAsym of `score_fn` (which needs `.sde`) on uint8 images (N, C, H, W).

    Level k, batch b draws its noise and then its probes from
    `torch.Generator().manual_seed(derive_seed(seed, "asymmetry", k, b))`. Returns one row
    per level: "level" k, "t", "sigma", "asym" and "nasym" (means over images), "asym_se" and
    "nasym_se" (std(ddof=1) / sqrt(n), NaN for n = 1) and "n" images. Cost per level and
    image: one score evaluation and two VJPs.
    """
    images = check_uint8_images(images)
    sde: SDE | None = getattr(score_fn, "sde", None)
    if not isinstance(sde, SDE):
        raise ValueError(
            "score_fn has no .sde attribute of type SDE, which is needed to map t to sigma; "
            "wrap the network with scores.build_score_model"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    clean = pixel_tensor(images, dtype).to(device) / 255.0
    n_images = clean.shape[0]
    rows = []
    for level, t_value in enumerate(tqdm(level_times(n_levels, t_min), disable=not progress)):
        asym = np.empty(n_images)
        nasym = np.empty(n_images)
        for batch, start in enumerate(range(0, n_images, batch_size)):
            x0 = clean[start : start + batch_size]
            generator = torch.Generator().manual_seed(derive_seed(seed, "asymmetry", level, batch))
            t = torch.full((x0.shape[0],), t_value, dtype=dtype, device=device)
            noise = draw("normal", tuple(x0.shape), generator, dtype, device)
            estimate = asymmetry_hutchinson(
                score_fn, sde.perturb(x0, t, noise), t, probe="rademacher", generator=generator
            )
            asym[start : start + x0.shape[0]] = estimate.asym.double().cpu().numpy()
            nasym[start : start + x0.shape[0]] = estimate.nasym.double().cpu().numpy()
        asym_mean, asym_se = _mean_and_se(asym)
        nasym_mean, nasym_se = _mean_and_se(nasym)
        sigma = sde.marginal_std(torch.tensor(t_value, dtype=torch.float64))
        rows.append(
            {
                "level": level,
                "t": t_value,
                "sigma": float(sigma),
                "asym": asym_mean,
                "nasym": nasym_mean,
                "asym_se": asym_se,
                "nasym_se": nasym_se,
                "n": n_images,
            }
        )
    return rows


def level_average(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Return {"asym", "nasym"}: the mean over levels of each row's mean over images."""
    if not rows:
        raise ValueError("level_average needs at least one level row, got none")
    return {
        "asym": float(np.mean([row["asym"] for row in rows])),
        "nasym": float(np.mean([row["nasym"] for row in rows])),
    }
