"""Bits per dimension of 8-bit images by the probability-flow ODE.

Each 8-bit value k in 0..255 is dequantised uniformly, x = (k + u) / 256 with u ~ U[0, 1),
so x lies in the bin [k / 256, (k + 1) / 256) of width 1/256 in [0, 1). `ode_nll` gives
-log p(x) in nats of that continuous density, and the discrete NLL in bits per dimension is
bits/dim = nll / (D ln 2) + log2(256), i.e. `bits_per_dim(nll, D, n_bins=256,
data_range=1.0)`, which adds 8.

The models are trained on k / 255, so the dequantised points are scaled by 255/256 of the
training scale. That is the convention of score_sde_pytorch and of the published bits/dim.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from qcsbm_bench.artifacts import derive_seed
from qcsbm_bench.grids import check_uint8_images, pixel_tensor
from qcsbm_bench.jacobian import ScoreFn
from qcsbm_bench.likelihood import bits_per_dim, ode_nll
from qcsbm_bench.sde import SDE, draw

logger = logging.getLogger(__name__)

N_BINS = 256
DATA_RANGE = 1.0


def dequantisation_generator(seed: int, repeat: int, batch: int) -> torch.Generator:
    """Return the CPU generator of one (repeat, batch): its dequantisation noise, then probes."""
    return torch.Generator().manual_seed(derive_seed(seed, "dequantise", repeat, batch))


def dequantise(
    images: torch.Tensor | np.ndarray,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Return x = (k + u) / 256, u ~ U[0, 1), for uint8 images k (B, C, H, W); x in [0, 1)."""
    pixels = pixel_tensor(check_uint8_images(images), torch.float64)
    noise = draw("uniform", tuple(pixels.shape), generator, torch.float64, "cpu")
    return ((pixels + noise) / N_BINS).to(device=device, dtype=dtype)


def _standard_error(values: np.ndarray) -> float:
    """Return std(values, ddof=1) / sqrt(n), or NaN for a single value."""
    if values.size < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.size))


def image_bits_per_dim(
    score_fn: ScoreFn,
    sde: SDE,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int,
    repeats: int,
    seed: int,
    rtol: float = 1e-3,
    atol: float = 1e-5,
    t_min: float = 1e-5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> dict[str, Any]:
    """Estimate bits/dim of uint8 images (N, C, H, W) with `repeats` dequantisations each.

    For each repeat r and batch b, the generator `dequantisation_generator(seed, r, b)` draws
    the uniform noise and then the one Rademacher probe per image that `ode_nll` keeps fixed
    for the whole RK45 solve from t_min to 1 (Hutchinson divergence). Per image, bits/dim is
    the mean over repeats of nll / (D ln 2) + 8.

    Returns a dict with "bits_per_dim" (N,) and "nll_nats" (N,) (means over repeats),
    "bits_per_dim_by_repeat" and "nll_nats_by_repeat" (repeats, N), "mean" (bits/dim over
    images), "se" (its standard error over images: std(ddof=1) / sqrt(N), NaN for N = 1),
    "nfe_mean" (mean solver evaluations per batch solve, each evaluation one score call plus
    one VJP), "n_images", "dim" and "settings".
    """
    images = check_uint8_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    n_images = images.shape[0]
    dim = int(np.prod(images.shape[1:]))
    n_batches = math.ceil(n_images / batch_size)
    nll = np.empty((repeats, n_images))
    nfe: list[int] = []

    jobs = [(r, b) for r in range(repeats) for b in range(n_batches)]
    for repeat, batch in tqdm(jobs, desc="bits/dim", disable=not progress):
        start, stop = batch * batch_size, min((batch + 1) * batch_size, n_images)
        generator = dequantisation_generator(seed, repeat, batch)
        x = dequantise(images[start:stop], generator, dtype=dtype, device=device)
        result = ode_nll(
            score_fn,
            sde,
            x,
            divergence="hutchinson",
            probe="rademacher",
            rtol=rtol,
            atol=atol,
            t_min=t_min,
            generator=generator,
        )
        nll[repeat, start:stop] = result.nll.double().cpu().numpy()
        nfe.append(result.nfe)
        logger.info(
            "bits/dim repeat %d batch %d: %d evaluations in %.1f s",
            repeat,
            batch,
            result.nfe,
            result.seconds,
        )

    bpd = bits_per_dim(torch.from_numpy(nll), dim, n_bins=N_BINS, data_range=DATA_RANGE).numpy()
    per_image = bpd.mean(axis=0)
    return {
        "bits_per_dim": per_image,
        "nll_nats": nll.mean(axis=0),
        "bits_per_dim_by_repeat": bpd,
        "nll_nats_by_repeat": nll,
        "mean": float(per_image.mean()),
        "se": _standard_error(per_image),
        "nfe_mean": float(np.mean(nfe)),
        "n_images": n_images,
        "dim": dim,
        "settings": {
            "repeats": repeats,
            "batch_size": batch_size,
            "seed": seed,
            "rtol": rtol,
            "atol": atol,
            "t_min": t_min,
            "dtype": str(dtype),
            "divergence": "hutchinson",
            "probe": "rademacher",
            "dequantisation": "x = (k + u) / 256, u ~ U[0, 1)",
        },
    }
