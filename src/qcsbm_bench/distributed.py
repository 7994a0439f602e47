"""Data-parallel training under torchrun: process group, rank slices and RNG states.

When torchrun starts W > 1 processes (WORLD_SIZE in the environment), each rank trains on
its own slice of every global batch, and DistributedDataParallel averages the gradients
over ranks. Each rank's loss is the mean over its B / W samples, so the averaged gradient
equals the gradient of the mean over the global batch of B. Every rank draws the whole
global batch's randomness (batch indices, flips, t, noise, probes) from an identically
seeded generator and keeps its slice. A W-process run therefore trains on the same data
and noise as a 1-process run with the same global batch.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from qcsbm_bench.jacobian import (
    draw_probes,
)
from qcsbm_bench.losses import LossParts, dsm_loss
from qcsbm_bench.regulariser import QCConfig, qc_penalty_and_score
from qcsbm_bench.scores import ScoreModel
from qcsbm_bench.sde import SDE, draw

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: rank among world_size processes, and its device."""

    world_size: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(
            f"environment variable {name}={value!r} is not an integer; launch with torchrun "
            "or unset it"
        ) from error


def init_distributed(device: str | torch.device) -> DistributedContext:
    """Join the torchrun process group if WORLD_SIZE > 1, else return a 1-process context.

    The backend is "nccl" for CUDA devices and "gloo" for the CPU. Under torchrun on CUDA,
    each rank uses the GPU cuda:LOCAL_RANK, whatever index `device` names.

    The group is created once per process and kept until the process exits; later calls
    reuse it. Destroying the default group and creating it again is unsafe under torchrun:
    the new group reuses the old one's keys on torchrun's store, so a rank can read the
    other rank's stale address (PyTorch issue 55967). In torch 2.14.1 with gloo that gave
    "Connection refused" or a hang, depending on timing. A group created by the caller
    before the first call is reused as well, and left to the caller.
    """
    device = torch.device(device)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistributedContext(world_size=1, rank=0, local_rank=0, device=device)

    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    # NOTE: only the gloo backend on the CPU has been run (tests/test_ddp.py). The NCCL path
    # on GPUs follows the same code but has not been run.
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        atexit.register(_destroy_at_exit)
    elif dist.get_backend() != backend:
        raise RuntimeError(
            f"this process already joined a {dist.get_backend()} process group, but device "
            f"{device} needs {backend}; use one device type for every run in a process"
        )
    if dist.get_world_size() != world_size:
        raise RuntimeError(
            f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE is "
            f"{world_size}; initialise the group from the torchrun environment"
        )
    logger.info("rank %d of %d on %s (backend %s)", rank, world_size, device, backend)
    return DistributedContext(world_size, rank, local_rank, device)


def _destroy_at_exit() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    """Wait until every rank reaches this point (no-op for one process)."""
    if context.is_distributed:
        dist.barrier()


def rank_slice(global_batch: int, context: DistributedContext) -> slice:
    """Return the rows of a global batch that this rank trains on.

    The global batch is split into world_size equal, contiguous slices in rank order.
    """
    if global_batch % context.world_size != 0:
        raise ValueError(
            f"train.batch_size {global_batch} is not divisible by the world size "
            f"{context.world_size}; choose a global batch size that is a multiple of the "
            "number of processes, or launch a different number of processes"
        )
    local = global_batch // context.world_size
    return slice(context.rank * local, (context.rank + 1) * local)


def wrap_network(net: nn.Module, context: DistributedContext) -> nn.Module:
    """Wrap `net` in DistributedDataParallel when distributed, else return it unchanged.

    The wrapper's forward must be the one that runs, because DDP arms its gradient
    all-reduce there. The conservative score calls torch.autograd.grad w.r.t. the input
    inside its forward. That call does not accumulate into parameter gradients, so it
    fires none of DDP's hooks, and the all-reduce happens in the later loss.backward().
    """
    if not context.is_distributed:
        return net
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # NOTE: every parameter of SmallUNet and of NCSN++ (presets tiny, small, and paper at
    # nf 16) gets a gradient in each variant's loss, checked on the CPU. A network with a
    # parameter that some step leaves unused needs find_unused_parameters=True instead.
    return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=False)


def mean_over_ranks(
    values: dict[str, float | None], context: DistributedContext
) -> dict[str, float | None]:
    """Average logged scalars over ranks. Entries that are None stay None."""
    if not context.is_distributed:
        return values
    names = [name for name, value in values.items() if value is not None]
    if not names:
        return values
    stacked = torch.tensor([values[name] for name in names], dtype=torch.float64)
    if context.device.type == "cuda":
        stacked = stacked.to(context.device)
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    averaged = (stacked / context.world_size).tolist()
    return {**values, **dict(zip(names, averaged, strict=True))}


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Return this process's global RNG states as tensors and plain values.

    The NumPy and Python states are stored as int64 tensors, not as their native types,
    so that torch.load(weights_only=True) reads them.
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    internal = tuple(int(value) for value in python_state["internal"].tolist())
    random.setstate((python_state["version"], internal, python_state["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng_states(context: DistributedContext) -> list[dict[str, Any]]:
    """Collect the global torch, CUDA, NumPy and Python RNG states of every rank, in rank order.

    Collective: every rank must call it. The torch state matters for dropout, whose masks
    come from each process's global generator.
    """
    state = _rng_state(context.device)
    if not context.is_distributed:
        return [state]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def restore_rng_states(states: list[dict[str, Any]], context: DistributedContext) -> bool:
    """Restore this rank's saved RNG states, or return False if another world size saved them.

    After a change of world size each rank keeps its fresh seeding, so only dropout masks
    differ from an uninterrupted run, because the data and noise come from the shared
    generator.
    """
    if len(states) != context.world_size:
        logger.warning(
            "the resumable state contains RNG states of %d ranks but this job has %d; dropout "
            "masks will differ from an uninterrupted run",
            len(states),
            context.world_size,
        )
        return False
    _set_rng_state(states[context.rank], context.device)
    return True


def draw_global_randomness(
    sde: SDE,
    x0: Tensor,
    lambda_qc: float,
    qc_config: QCConfig,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Draw t (B,), noise z (B, ...) and Hutchinson probes (B * K, ...) or None for a global batch.

    The calls and their order are those of `losses.training_loss`, so one process that keeps
    every row reproduces training_loss bit for bit. Probes are drawn only when the QC term is
    on and the estimator is a Hutchinson one, as there.
    """
    batch = x0.shape[0]
    t = sde.sample_time(batch, generator=generator, dtype=x0.dtype, device=x0.device)
    noise = draw("normal", x0.shape, generator, x0.dtype, x0.device)
    probes = None
    if lambda_qc > 0 and qc_config.estimator != "exact":
        like = torch.empty(
            (batch * qc_config.n_probes, *x0.shape[1:]), dtype=x0.dtype, device=x0.device
        )
        probes = draw_probes(like, qc_config.probe, generator)
    return t, noise, probes


def rank_training_loss(
    score_model: ScoreModel,
    x0: Tensor,
    lambda_qc: float,
    qc_config: QCConfig,
    dsm_convention: str,
    generator: torch.Generator,
    rows: slice,
) -> LossParts:
    """Compute this rank's mean of L_DSM + lambda_qc sigma^2 L_QC over its rows of a global batch.

    x0: the global batch of clean images (B, C, H, W), the same on every rank. The
    randomness of all B samples is drawn (`draw_global_randomness`) and only `rows` are
    evaluated. With rows = slice(0, B) the result equals `losses.training_loss` bit for
    bit. The parts are dimensionless (squared sigma-scaled score units, as in `losses`).
    """
    if lambda_qc < 0:
        raise ValueError(f"lambda_qc must be non-negative, got {lambda_qc}")
    t_all, noise_all, probes_all = draw_global_randomness(
        score_model.sde, x0, lambda_qc, qc_config, generator
    )
    x0 = x0[rows]
    t = t_all[rows]
    noise = noise_all[rows]
    x_t = score_model.sde.perturb(x0, t, noise)
    sigma = score_model.sde.marginal_std(t)

    if lambda_qc == 0:
        score = score_model(x_t, t)
        dsm = dsm_loss(score, noise, sigma, dsm_convention).mean()
        return LossParts(total=dsm, dsm=dsm, qc_weighted=None, qc=None)

    probes = None
    if probes_all is not None:
        probes = probes_all[rows.start * qc_config.n_probes : rows.stop * qc_config.n_probes]
    penalty, shared_score = qc_penalty_and_score(score_model, x_t, t, qc_config, probes=probes)
    score = score_model(x_t, t) if shared_score is None else shared_score
    dsm = dsm_loss(score, noise, sigma, dsm_convention).mean()
    qc_weighted = (sigma**2 * penalty).mean()
    total = dsm + lambda_qc * qc_weighted
    return LossParts(total=total, dsm=dsm, qc_weighted=qc_weighted, qc=penalty.mean())
