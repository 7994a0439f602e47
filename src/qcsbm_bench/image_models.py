"""Image score models: building them from the config, and loading trained checkpoints.

A checkpoint's "config" entry records the network settings (model, sde, channels,
resolution) it was trained with. Loading or fine-tuning rejects a checkpoint whose settings
differ from the current config, naming each differing setting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qcsbm_bench.artifacts import DTYPES, check_checkpoint_run, load_checkpoint
from qcsbm_bench.networks import build_image_net
from qcsbm_bench.scores import ScoreModel, build_score_model
from qcsbm_bench.sde import VESDE


def build_image_model(
    config: Mapping[str, Any], variant: str, channels: int, resolution: int
) -> ScoreModel:
    """Build the score model of a variant on the configured image network, in the config dtype."""
    sde_config = config["sde"]
    if sde_config.get("kind", "ve") != "ve":
        raise ValueError(f"sde.kind {sde_config['kind']!r} is not supported; use 've'")
    sde = VESDE(sde_config["sigma_min"], sde_config["sigma_max"], t_min=sde_config["t_min"])
    net = build_image_net(config["model"], channels, resolution)
    model = build_score_model(variant, net, sde, form="image")
    return model.to(dtype=DTYPES[config["dtype"]], device=config["device"])


def network_settings(config: Mapping[str, Any], channels: int, resolution: int) -> dict[str, Any]:
    """Return the settings that decide a checkpoint's architecture and the meaning of its output."""
    settings = {
        "model": config["model"],
        "sde": config["sde"],
        "channels": channels,
        "resolution": resolution,
    }
    normalised: dict[str, Any] = json.loads(json.dumps(settings, sort_keys=True))
    return normalised


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def check_network_settings(
    saved: Mapping[str, Any], expected: Mapping[str, Any], checkpoint: Path
) -> None:
    """Raise ValueError naming each network setting where a checkpoint differs from the config."""
    saved_flat = _flatten({key: saved.get(key) for key in expected})
    expected_flat = _flatten(expected)
    differing = [
        f"{name}: {saved_flat.get(name)!r} in the checkpoint, {expected_flat.get(name)!r} now"
        for name in sorted(set(saved_flat) | set(expected_flat))
        if saved_flat.get(name) != expected_flat.get(name)
    ]
    if differing:
        raise ValueError(
            f"checkpoint {checkpoint} was trained with other network settings ("
            + "; ".join(differing)
            + "); use the config that trained it or pick a matching checkpoint"
        )


def load_image_model(
    config: Mapping[str, Any],
    variant: str,
    checkpoint: Path,
    weights: str = "ema",
    channels: int | None = None,
    resolution: int | None = None,
    *,
    dataset: str | None = None,
    seed: int | None = None,
) -> ScoreModel:
    """Rebuild a trained image model from its final checkpoint, in eval mode.

    weights: "ema" (the averaged weights that sampling uses) or "raw" (the optimiser's).
    channels and resolution default to the values stored in the checkpoint. The checkpoint's
    variant, and its dataset and seed unless they are None, must match the arguments, or
    ValueError names the differing entries.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    state = load_checkpoint(checkpoint, map_location=config["device"])
    expected_run = {"dataset": dataset, "variant": variant, "seed": seed}
    check_checkpoint_run(
        state, checkpoint, {key: value for key, value in expected_run.items() if value is not None}
    )
    saved_config = state.get("config", {})
    channels = int(saved_config["channels"]) if channels is None else channels
    resolution = int(saved_config["resolution"]) if resolution is None else resolution
    check_network_settings(saved_config, network_settings(config, channels, resolution), checkpoint)
    model = build_image_model(config, variant, channels, resolution)
    model.load_state_dict(state["ema" if weights == "ema" else "model"])
    return model.eval()
