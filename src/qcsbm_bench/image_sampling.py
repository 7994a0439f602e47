"""Sharded image sampling: per-batch seeds, uint8 npz shards, PNG files and merging.

Sample i belongs to batch b = i // batch_size, and batch b draws all of its random numbers
from `torch.Generator().manual_seed(derive_seed(seed, sampler, b))`. A sample therefore
depends on (seed, sampler, batch_size, b), the model and, through the size of the last
batch, n_samples, but never on how batches are split into shards. Shard k of n takes a
contiguous, balanced range of whole batches.

Samples are clipped to [0, 1] and quantised as round(255 x) to uint8 (`quantise`). Each
finished batch is saved at once under `<shard file>.parts/`, so a killed shard job resumes
from its last saved batch when rerun with the same settings.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from qcsbm_bench.artifacts import derive_seed, load_npz
from qcsbm_bench.atomic import atomic_open
from qcsbm_bench.grids import PIL_MODES, write_png
from qcsbm_bench.jacobian import ScoreFn
from qcsbm_bench.sampling import SAMPLERS
from qcsbm_bench.sde import SDE

logger = logging.getLogger(__name__)

SAMPLER_OPTIONS = {
    "pc": ("n_levels", "snr", "corrector_steps", "denoise", "t_min"),
    "ode": ("rtol", "atol", "denoise", "t_min"),
}
QUANTISATION = "uint8 = round(255 * clip(x, 0, 1))"
# The arrays of one saved batch under "<shard file>.parts/", as _sample_batch returns them.
BATCH_ARRAYS = ("images", "finite", "indices", "batch_id", "nfe", "seconds", "settings")


@dataclass(frozen=True)
class ShardResult:
    """One written shard: file, sample indices (M,), and per-batch NFE and seconds."""

    path: Path
    indices: np.ndarray
    batch_ids: np.ndarray
    nfe: np.ndarray
    seconds: np.ndarray
    resumed_batches: int
    png_dir: Path | None

    @property
    def mean_nfe(self) -> float:
        """Mean counted score-model evaluations per batch."""
        return float(self.nfe.mean())


def batch_count(n_samples: int, batch_size: int) -> int:
    """Return the number of batches, ceil(n_samples / batch_size); the last may be short."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return math.ceil(n_samples / batch_size)


def batch_bounds(batch: int, n_samples: int, batch_size: int) -> tuple[int, int]:
    """Return the sample index range [start, stop) of batch `batch`."""
    start = batch * batch_size
    return start, min(start + batch_size, n_samples)


def shard_batches(n_batches: int, shard: int, n_shards: int) -> range:
    """Return the contiguous batch range of shard `shard` of `n_shards`.

    The first n_batches % n_shards shards get one batch more than the others, so shard
    sizes differ by at most one batch.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    if not 0 <= shard < n_shards:
        raise ValueError(
            f"shard must lie in 0..{n_shards - 1} for n_shards={n_shards}, got {shard}"
        )
    if n_shards > n_batches:
        raise ValueError(
            f"n_shards={n_shards} exceeds the number of batches ({n_batches}), so some shards "
            "would be empty; use fewer shards or a smaller batch_size"
        )
    base, extra = divmod(n_batches, n_shards)
    start = shard * base + min(shard, extra)
    return range(start, start + base + (1 if shard < extra else 0))


def shard_path(out_dir: Path, shard: int, n_shards: int) -> Path:
    """Return out_dir / "shard-{shard:04d}-of-{n_shards:04d}.npz"."""
    return Path(out_dir) / f"shard-{shard:04d}-of-{n_shards:04d}.npz"


def png_name(sampler: str, seed: int, index: int) -> str:
    """Return the PNG file name of one sample, "{sampler}-seed{seed}-{index:06d}.png"."""
    return f"{sampler}-seed{seed}-{index:06d}.png"


def remove_stale_pngs(png_dir: Path, sampler: str, seed: int, n_samples: int) -> list[Path]:
    """Delete the sampler's PNG files in png_dir that a run of n_samples does not write.

    These are the files named "{sampler}-seed<seed>-<index>.png" (png_name) with another
    seed or an index of n_samples or more, left by an earlier run. Files of other samplers
    and files with other names are kept. Every shard job of a run writes into one folder,
    so PNGs of indices below n_samples are kept for the shard that covers them to overwrite.
    Returns the deleted paths.
    """
    pattern = re.compile(rf"{re.escape(sampler)}-seed\d+-\d{{6,}}\.png")
    current = {png_name(sampler, seed, index) for index in range(n_samples)}
    removed = []
    for path in sorted(Path(png_dir).glob(f"{sampler}-seed*.png")):
        if pattern.fullmatch(path.name) and path.name not in current:
            # Another shard job of the same run may delete the same file at the same time.
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.info("removed %d PNG files of an earlier run from %s", len(removed), png_dir)
    return removed


def resolve_sampler_options(sampler: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the sampler's settings: `options` over the defaults of its function in sampling.py.

    pc takes n_levels, snr, corrector_steps, denoise and t_min; ode takes rtol, atol, denoise
    and t_min. Any other key raises ValueError.
    """
    if sampler not in SAMPLER_OPTIONS:
        raise ValueError(
            f"unknown sampler {sampler!r}; valid samplers are {tuple(SAMPLER_OPTIONS)}"
        )
    valid = SAMPLER_OPTIONS[sampler]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for the {sampler} sampler; valid options are {valid}"
        )
    parameters = inspect.signature(SAMPLERS[sampler]).parameters
    return {name: options.get(name, parameters[name].default) for name in valid}


def quantise(x: Tensor) -> np.ndarray:
    """Map samples in [0, 1] (any shape) to uint8 as round(255 * clip(x, 0, 1)).

    torch.round rounds exact halves to even: 255 x = 0.5 gives 0 and 255 x = 1.5 gives 2.
    """
    scaled = torch.round(x.detach().double().clamp(0.0, 1.0) * 255.0)
    return scaled.to(torch.uint8).cpu().numpy()


def model_fingerprint(score_fn: ScoreFn) -> str:
    """Return a SHA-256 hex digest of an nn.Module's class and state_dict, else "unhashed".

    Resuming and merging compare fingerprints, so batches of two different checkpoints are
    never mixed when the score model is an nn.Module.
    """
    if not isinstance(score_fn, nn.Module):
        return "unhashed"
    # The class name separates a CSBM and a USBM that wrap the same network.
    digest = hashlib.sha256(type(score_fn).__qualname__.encode())
    for name, tensor in sorted(score_fn.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _sde_settings(sde: SDE) -> dict[str, Any]:
    public = {k: v for k, v in vars(sde).items() if not k.startswith("_")}
    return {"kind": type(sde).__name__, **public}


def _check_shape(shape: Sequence[int], png: bool) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(size) < 1 for size in shape):
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {tuple(shape)}")
    channels, height, width = (int(size) for size in shape)
    if png and channels not in PIL_MODES:
        raise ValueError(f"png=True needs 1 or 3 channels, got shape {tuple(shape)}; set png=False")
    return channels, height, width


def json_array(data: Mapping[str, Any]) -> np.ndarray:
    """Encode a mapping as a 0-d string array, the npz form of the settings."""
    return np.array(json.dumps(data, sort_keys=True))


def read_json_array(archive: Mapping[str, np.ndarray], key: str) -> dict[str, Any]:
    """Decode the mapping that json_array stored under `key`."""
    return json.loads(str(archive[key][()]))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed npz file atomically."""
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _load_saved_batch(path: Path, settings: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """Return a saved batch's arrays if the file exists, is readable and has `settings`."""
    if not path.is_file():
        return None
    try:
        saved = load_npz(path, BATCH_ARRAYS, producer="the shard's sample-images job")
        saved_settings = read_json_array(saved, "settings")
    except (OSError, ValueError) as error:
        # The cause is the zip or format error. load_npz's own advice to rerun the job does
        # not apply here, because the batch is sampled again at once.
        reason = error.__cause__ or error
        logger.warning("ignoring unreadable saved batch %s (%s); sampling it again", path, reason)
        return None
    if saved_settings != settings:
        logger.warning("ignoring saved batch %s: its settings differ; sampling it again", path)
        return None
    return saved


def _sample_batch(
    score_fn: ScoreFn,
    sde: SDE,
    batch: int,
    settings: Mapping[str, Any],
    device: str | torch.device,
    dtype: torch.dtype,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Sample one batch with its own seeded generator and return the arrays to save."""
    sampler, seed = settings["sampler"], settings["seed"]
    start, stop = batch_bounds(batch, settings["n_samples"], settings["batch_size"])
    # A CPU generator: draws happen on the CPU and move to `device`, so a GPU gives the same
    # starting noise as the CPU.
    generator = torch.Generator().manual_seed(derive_seed(seed, sampler, batch))
    result = SAMPLERS[sampler](
        score_fn,
        sde,
        (stop - start, *settings["shape"]),
        generator=generator,
        dtype=dtype,
        device=device,
        progress=progress,
        **settings["sampler_options"],
    )
    logger.info(
        "batch %d (samples %d..%d): %d evaluations in %.1f s",
        batch,
        start,
        stop - 1,
        result.nfe,
        result.seconds,
    )
    # A diverged sampler gives NaN or inf, which no uint8 value can show: keep a flag per
    # sample, so that the metrics report the share of failed samples.
    finite = torch.isfinite(result.samples.reshape(stop - start, -1)).all(dim=1).cpu().numpy()
    if not finite.all():
        logger.warning(
            "batch %d: %d of %d samples contain NaN or inf values; they are saved as 0",
            batch,
            int((~finite).sum()),
            stop - start,
        )
    samples = torch.nan_to_num(result.samples, nan=0.0, posinf=0.0, neginf=0.0)
    return {
        "images": quantise(samples),
        "finite": finite,
        "indices": np.arange(start, stop, dtype=np.int64),
        "batch_id": np.array(batch, dtype=np.int64),
        "nfe": np.array(result.nfe, dtype=np.int64),
        "seconds": np.array(result.seconds, dtype=np.float64),
        "settings": json_array(settings),
    }


def sample_shard(
    score_fn: ScoreFn,
    sde: SDE,
    *,
    sampler: str,
    n_samples: int,
    batch_size: int,
    shard: int,
    n_shards: int,
    seed: int,
    shape: Sequence[int],
    sampler_options: Mapping[str, Any],
    out_dir: Path,
    png: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> ShardResult:
    """Sample the batches of one shard and write them as one npz file (and PNGs).

    Writes out_dir/shard-{shard:04d}-of-{n_shards:04d}.npz with images uint8 (M, C, H, W),
    indices (M,), batch_ids, nfe and seconds per batch, and the settings as JSON. With
    png=True it also writes out_dir/png/{sampler}-seed{seed}-{index:06d}.png per sample and
    deletes the sampler's PNGs there that no shard of this run writes (remove_stale_pngs).
    With png=False, out_dir/png is left as it is, with any PNGs of an earlier run.
    Batches saved under the shard file's ".parts" folder by an earlier, interrupted call
    with equal settings are loaded instead of sampled again. The folder is removed at the end.

    NFE is the count of score-model calls on the whole batch that sampling.py's
    CountingScore records. For pc that is n_levels (1 + corrector_steps), plus 1 with
    denoise, i.e. 2001 at N = 1000, where Chao et al. (ICML 2023) quote 1000. For ode it is
    the RK45 solver's evaluations, plus 1 with denoise. Switch an nn.Module score model to eval()
    (EMA weights, no dropout) before calling.
    """
    options = resolve_sampler_options(sampler, sampler_options)
    channels, height, width = _check_shape(shape, png)
    batches = shard_batches(batch_count(n_samples, batch_size), shard, n_shards)
    settings = {
        "sampler": sampler,
        "sampler_options": options,
        "seed": int(seed),
        "n_samples": int(n_samples),
        "batch_size": int(batch_size),
        "shape": [channels, height, width],
        "dtype": str(dtype),
        "sde": _sde_settings(sde),
        "model": model_fingerprint(score_fn),
        "quantisation": QUANTISATION,
    }
    # The JSON round trip makes the settings compare equal to those read back from files.
    settings = json.loads(json.dumps(settings, sort_keys=True))
    path = shard_path(out_dir, shard, n_shards)
    parts_dir = path.with_suffix(".parts")
    saved_batches: list[dict[str, np.ndarray]] = []
    resumed = 0
    for batch in batches:
        part_path = parts_dir / f"batch-{batch:06d}.npz"
        saved = _load_saved_batch(part_path, settings)
        if saved is None:
            saved = _sample_batch(score_fn, sde, batch, settings, device, dtype, progress)
            write_npz(part_path, **saved)
        else:
            resumed += 1
        saved_batches.append(saved)

    result = ShardResult(
        path=path,
        indices=np.concatenate([saved["indices"] for saved in saved_batches]),
        batch_ids=np.array([int(saved["batch_id"]) for saved in saved_batches], dtype=np.int64),
        nfe=np.array([int(saved["nfe"]) for saved in saved_batches], dtype=np.int64),
        seconds=np.array([float(saved["seconds"]) for saved in saved_batches]),
        resumed_batches=resumed,
        png_dir=Path(out_dir) / "png" if png else None,
    )
    images = np.concatenate([saved["images"] for saved in saved_batches])
    write_npz(
        path,
        images=images,
        finite=np.concatenate([saved["finite"] for saved in saved_batches]),
        indices=result.indices,
        batch_ids=result.batch_ids,
        nfe=result.nfe,
        seconds=result.seconds,
        settings=json_array(settings),
        shard_info=json_array({"shard": shard, "n_shards": n_shards, "device": str(device)}),
    )
    if result.png_dir is not None:
        # NOTE: until every shard job of this run has finished, the folder still contains an
        # earlier run's PNGs of the indices that the other shards cover.
        remove_stale_pngs(result.png_dir, sampler, seed, n_samples)
        for image, index in zip(images, result.indices, strict=True):
            write_png(image, result.png_dir / png_name(sampler, seed, int(index)))
    shutil.rmtree(parts_dir, ignore_errors=True)
    logger.info(
        "shard %d/%d: wrote %d samples to %s (%d of %d batches resumed, mean NFE %.1f)",
        shard,
        n_shards,
        len(result.indices),
        path,
        resumed,
        len(batches),
        result.mean_nfe,
    )
    return result
