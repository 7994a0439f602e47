"""Training of one (dataset, variant, seed) run on the toy 2-D data.

Adam with gradient-norm clipping on the objective mean_b[L_DSM + lambda sigma^2 L_QC],
where lambda is config train.lambda_qc for the qcsbm variant and 0 otherwise. Per-step
statistics go to train_stats.jsonl; a resumable state is saved every
train.checkpoint_every steps, so a killed job continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from qcsbm_bench.artifacts import (
    DTYPES,
    JsonlWriter,
    check_checkpoint_run,
    derive_seed,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    write_json,
)
from qcsbm_bench.data.toy2d import load_toy_dataset
from qcsbm_bench.losses import training_loss
from qcsbm_bench.networks.toy import ToyScoreNet
from qcsbm_bench.regulariser import QCConfig
from qcsbm_bench.scores import ScoreModel, build_score_model
from qcsbm_bench.sde import VESDE

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
CHECKPOINT_FILE = "checkpoint.pt"
STATS_FILE = "train_stats.jsonl"
# Written during training and renamed to STATS_FILE at the end, so Snakemake keeps it.
PARTIAL_STATS_FILE = "train_stats.partial.jsonl"


def build_toy_model(config: Mapping[str, Any], variant: str) -> ScoreModel:
    """Build the score model of a variant on the toy network, in the config's dtype."""
    sde_config = config["sde"]
    sde = VESDE(sde_config["sigma_min"], sde_config["sigma_max"], t_min=sde_config["t_min"])
    net = ToyScoreNet(dim=2, hidden=config["model"]["hidden"])
    model = build_score_model(variant, net, sde, form="toy")
    return model.to(dtype=DTYPES[config["dtype"]], device=config["device"])


def load_toy_model(
    config: Mapping[str, Any],
    variant: str,
    checkpoint: Path,
    dataset: str | None = None,
    seed: int | None = None,
) -> ScoreModel:
    """Rebuild a trained model from its checkpoint, in eval mode.

    Raises ValueError when the checkpoint's variant, or the dataset and seed given here,
    differ from the run that wrote it. Checkpoints written before the seed entry existed are
    checked for variant and dataset only.
    """
    model = build_toy_model(config, variant)
    state = load_checkpoint(checkpoint, map_location=config["device"])
    expected: dict[str, Any] = {"variant": variant}
    if dataset is not None:
        expected["dataset"] = dataset
    if seed is not None and "seed" in state:
        expected["seed"] = seed
    check_checkpoint_run(state, checkpoint, expected)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit model.hidden {config['model']['hidden']}; "
            "use the config that trained it or retrain"
        ) from error
    return model.eval()


def _run_fingerprint(config: Mapping[str, Any], dataset: str, variant: str, seed: int) -> str:
    """Return the settings that a resumable state must share with the run that resumes it."""
    keys = ("data", "sde", "model", "train", "dtype")
    settings = {key: config[key] for key in keys}
    # How often the run logs and saves does not change its weights.
    settings["train"] = {
        key: value
        for key, value in config["train"].items()
        if key not in ("log_every", "checkpoint_every")
    }
    return json.dumps([settings, dataset, variant, seed], sort_keys=True)


def train_run(
    config: Mapping[str, Any],
    dataset: str,
    variant: str,
    seed: int,
    data_path: Path,
    out_dir: Path,
) -> Path:
    """Train one run and write checkpoint.pt, train_stats.jsonl and run.json to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_config = config["train"]
    if dataset not in train_config["iterations"]:
        raise ValueError(
            f"train.iterations has no entry for {dataset!r}; add one to the config or pass "
            f"one of {sorted(train_config['iterations'])}"
        )
    iterations = train_config["iterations"][dataset]
    # Only the qcsbm variant reads the regulariser's settings, so that its jobs alone depend
    # on them (see stage_settings).
    lambda_qc = train_config["lambda_qc"] if variant == "qcsbm" else 0.0
    qc_config = QCConfig(**train_config["qc"]) if variant == "qcsbm" else QCConfig()
    dtype = DTYPES[config["dtype"]]
    device = torch.device(config["device"])

    generator = seed_everything(derive_seed(seed, dataset, variant, "train"))
    model = build_toy_model(config, variant).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config["lr"])
    train_points, _ = load_toy_dataset(data_path, dataset)
    data = torch.as_tensor(train_points, dtype=dtype, device=device)

    start_step = 0
    state_path = out_dir / STATE_FILE
    partial_stats = out_dir / PARTIAL_STATS_FILE
    fingerprint = _run_fingerprint(config, dataset, variant, seed)
    if state_path.is_file():
        state = load_checkpoint(state_path, map_location=config["device"])
        if state.get("fingerprint") != fingerprint:
            logger.warning("ignoring %s: it was saved under other settings", state_path)
            state_path.unlink()
    if state_path.is_file():
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_step = int(state["step"])
        logger.info("resuming %s/%s/seed-%d at step %d", dataset, variant, seed, start_step)

    # Rows logged after the saved state would be written twice, so drop them before appending.
    if start_step > 0 and partial_stats.is_file():
        earlier_rows = [
            line
            for line in partial_stats.read_text().splitlines()
            if json.loads(line)["step"] < start_step
        ]
        partial_stats.write_text("".join(line + "\n" for line in earlier_rows))
    stats = JsonlWriter(partial_stats, append=start_step > 0)
    started = time.perf_counter()
    steps = range(start_step, iterations)
    bar = tqdm(steps, desc=f"train {dataset}/{variant}/{seed}", disable=not config["progress"])
    for step in bar:
        index = torch.randint(0, data.shape[0], (train_config["batch_size"],), generator=generator)
        parts = training_loss(
            model,
            data[index.to(device)],
            lambda_qc=lambda_qc,
            qc_config=qc_config,
            dsm_convention=train_config["dsm"],
            generator=generator,
        )
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_config["grad_clip"])
        optimizer.step()

        last = step + 1 == iterations
        if step % train_config["log_every"] == 0 or last:
            row = {"step": step, "grad_norm": float(grad_norm), **parts.as_floats()}
            row["wall_seconds"] = time.perf_counter() - started
            stats.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}")
        if (step + 1) % train_config["checkpoint_every"] == 0 and not last:
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step + 1,
                    "fingerprint": fingerprint,
                },
                state_path,
            )
    stats.close()
    partial_stats.replace(out_dir / STATS_FILE)

    checkpoint = out_dir / CHECKPOINT_FILE
    save_checkpoint(
        {
            "model": model.state_dict(),
            "step": iterations,
            "variant": variant,
            "dataset": dataset,
            "seed": seed,
        },
        checkpoint,
    )
    write_json(
        {
            "dataset": dataset,
            "variant": variant,
            "seed": seed,
            "iterations": iterations,
            "lambda_qc": lambda_qc,
            "qc": vars(qc_config) if variant == "qcsbm" else None,
            "wall_seconds": time.perf_counter() - started,
            "resumed_from_step": start_step,
            "torch": torch.__version__,
        },
        out_dir / "run.json",
    )
    state_path.unlink(missing_ok=True)
    logger.info("trained %s/%s/seed-%d for %d steps", dataset, variant, seed, iterations)
    return checkpoint
