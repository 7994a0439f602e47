"""The state of an image training run: what a resumable state and a final checkpoint hold.

A resumable state carries the raw and EMA weights, the Adam state, the data-and-noise
generator, every rank's global RNG states, the step, and the run's settings. A state saved
under other settings is rejected, so a changed config never continues a stale run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qcsbm_bench import distributed
from qcsbm_bench.artifacts import check_checkpoint_run, load_checkpoint
from qcsbm_bench.distributed import DistributedContext
from qcsbm_bench.ema import ExponentialMovingAverage
from qcsbm_bench.image_models import check_network_settings

logger = logging.getLogger(__name__)


# Settings that do not change the data, noise or weights of a run (how often it writes,
# how many processes share the batch), so a state saved under other values still resumes.
# NOTE: a changed process count does change the dropout masks, see distributed.restore_rng_states.
CADENCE_KEYS = ("log_every", "checkpoint_every", "processes")
ORIGIN_KEYS = ("init_checkpoint", "init_step", "optimizer_from_init")


def run_settings(
    config: Mapping[str, Any],
    dataset: str,
    variant: str,
    seed: int,
    init_digest: str | None,
    data_digests: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Return the settings that a resumable state must share with the run that resumes it.

    data_digests are the sha256 digests of the prepared arrays (meta.json's "sha256"), so a
    state trained on another split of the data is not resumed.
    """
    train_config = {k: v for k, v in config["train"].items() if k not in CADENCE_KEYS}
    settings = {
        "sde": config["sde"],
        "model": config["model"],
        "dtype": config["dtype"],
        "train": train_config,
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "init_checkpoint_sha256": init_digest,
        "data_sha256": None if data_digests is None else dict(data_digests),
    }
    normalised: dict[str, Any] = json.loads(json.dumps(settings, sort_keys=True))
    return normalised


@dataclass
class TrainingState:
    """The objects that one training run updates, and the run's position in the job."""

    model: torch.nn.Module
    train_model: torch.nn.Module
    ema: ExponentialMovingAverage
    optimizer: torch.optim.Adam
    generator: torch.Generator
    context: DistributedContext
    step: int = 0
    end_step: int = 0
    seconds: float = 0.0
    # Where the weights came from: init_checkpoint, init_step, optimizer_from_init (or None).
    origin: dict[str, Any] = field(default_factory=dict)

    def resumable_state(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Collect everything a resumed run needs (collective: every rank must call it)."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": distributed.gather_rng_states(self.context),
            "step": self.step,
            "end_step": self.end_step,
            "seconds": self.seconds,
            "origin": self.origin,
            "settings": json.dumps(settings, sort_keys=True),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        distributed.restore_rng_states(state["rng"], self.context)
        self.step = int(state["step"])
        self.end_step = int(state["end_step"])
        self.seconds = float(state["seconds"])
        self.origin = dict(state["origin"])


def differing_settings(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Return the dotted keys whose values differ between two nested settings mappings."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [
            path
            for key in keys
            for path in differing_settings(saved.get(key), current.get(key), f"{prefix}{key}.")
        ]
    return [] if saved == current else [prefix.rstrip(".")]


def saved_settings_match(state: Mapping[str, Any], settings: dict[str, Any], path: Path) -> bool:
    """Return True if a resumable state was saved under `settings`, else log what differs.

    A state of other settings is from another run, so the caller starts afresh without it,
    as the toy trainer does.
    """
    saved = json.loads(state.get("settings", "{}"))
    if saved == settings:
        return True
    logger.warning(
        "ignoring resumable state %s: it was saved under other settings (differing: %s); "
        "the run starts afresh",
        path,
        ", ".join(differing_settings(saved, settings)),
    )
    return False


def start_from_checkpoint(
    run: TrainingState,
    init_checkpoint: Path,
    expected_network: Mapping[str, Any],
    device: torch.device,
    *,
    dataset: str,
    seed: int,
) -> bool:
    """Load raw weights, EMA weights, step and (if saved) Adam state from a finished run.

    The checkpoint must be the final checkpoint of the usbm run of the same dataset and seed,
    with the network settings `expected_network`, or ValueError names what differs.
    Returns True if the optimiser state came from the checkpoint. The Adam moments are
    continued because a fresh Adam at the full learning rate moves every weight by about lr
    in its first updates. A checkpoint without them starts Adam afresh.
    """
    source = load_checkpoint(init_checkpoint, map_location=str(device))
    check_checkpoint_run(
        source,
        init_checkpoint,
        {"dataset": dataset, "variant": "usbm", "seed": seed},
        role="fine-tuning init checkpoint",
    )
    check_network_settings(source.get("config", {}), expected_network, init_checkpoint)
    run.model.load_state_dict(source["model"])
    run.ema.load_state_dict(source["ema"])
    run.step = int(source["step"])
    has_optimizer = "optimizer" in source
    if has_optimizer:
        run.optimizer.load_state_dict(source["optimizer"])
    logger.info(
        "fine-tuning from %s (%s run) at step %d; Adam state %s",
        init_checkpoint,
        source.get("variant", "unknown"),
        run.step,
        "continued from the checkpoint" if has_optimizer else "starts fresh (none saved)",
    )
    return has_optimizer


def trim_stats(partial_stats: Path, start_step: int) -> None:
    """Drop rows logged after the saved state, which the resumed run writes again."""
    earlier_rows = [
        line
        for line in partial_stats.read_text().splitlines()
        if json.loads(line)["step"] < start_step
    ]
    partial_stats.write_text("".join(line + "\n" for line in earlier_rows))


def final_checkpoint(
    run: TrainingState, variant: str, dataset: str, seed: int, config_subset: dict[str, Any]
) -> dict[str, Any]:
    """Return the final checkpoint: raw and EMA weights, Adam state, step and settings."""
    return {
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "variant": variant,
        "dataset": dataset,
        "seed": seed,
        "config": config_subset,
    }
