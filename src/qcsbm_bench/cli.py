"""Command-line interface: one subcommand per stage of the Snakemake DAG.

Every rule of the workflow calls one of these, so each stage also runs by hand, e.g.
`qcsbm-bench train --config results/toy/config.yaml --dataset spirals --variant qcsbm
--seed 0 --out-dir results/toy/runs/spirals/qcsbm/seed-0`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from qcsbm_bench.config import (
    TOY_DATASETS,
    ConfigError,
    deep_merge,
    load_config,
    validate_config,
    write_config_if_changed,
)
from qcsbm_bench.stage_settings import stage_view

logger = logging.getLogger("qcsbm_bench")


def _configure_threads(config: dict[str, Any], stage: str, threads: int | None) -> None:
    """Set torch's thread count: --threads if given, else the config's stage resources."""
    from qcsbm_bench.artifacts import set_deterministic

    set_deterministic(threads=threads or config["resources"][stage]["threads"])


def cmd_config(args: argparse.Namespace) -> None:
    """Validate a config file and write (or print) the resolved configuration."""
    config = load_config(args.config)
    for assignment in args.set or []:
        config = validate_config(deep_merge(config, parse_override(assignment)))
    if args.out is None:
        sys.stdout.write(yaml.safe_dump(config, sort_keys=True))
    else:
        write_config_if_changed(config, args.out)


def parse_override(assignment: str) -> dict[str, Any]:
    """Turn "train.lambda_qc=0.5" into {"train": {"lambda_qc": 0.5}} (values parsed as YAML)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"invalid override {assignment!r}; use KEY.PATH=VALUE")
    update: dict[str, Any] = {}
    node = update
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return update


def cmd_prep_data(args: argparse.Namespace) -> None:
    from qcsbm_bench.data.toy2d import prepare_toy_dataset

    config = stage_view(load_config(args.config), "prep_data", args.dataset)
    data = config["data"]
    prepare_toy_dataset(args.dataset, data["n_train"], data["n_test"], data["seed"], args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from qcsbm_bench.train import train_run

    config = stage_view(load_config(args.config), "train", args.dataset, variant=args.variant)
    _configure_threads(config, "train", args.threads)
    train_run(config, args.dataset, args.variant, args.seed, args.data, args.out_dir)


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from qcsbm_bench.artifacts import DTYPES, derive_seed, save_npz
    from qcsbm_bench.sampling import SAMPLERS
    from qcsbm_bench.train import load_toy_model

    config = stage_view(load_config(args.config), "sample", args.dataset, sampler=args.sampler)
    _configure_threads(config, "sample", args.threads)
    model = load_toy_model(config, args.variant, args.checkpoint, args.dataset, args.seed)
    sample_config = config["sample"]
    seed = derive_seed(args.seed, args.dataset, args.variant, "sample", args.sampler)
    result = SAMPLERS[args.sampler](
        model,
        model.sde,
        (sample_config["n_samples"], 2),
        t_min=sample_config["t_min"],
        generator=torch.Generator().manual_seed(seed),
        dtype=DTYPES[config["dtype"]],
        device=config["device"],
        progress=config["progress"],
        **sample_config[args.sampler],
    )
    logger.info("%s sampler: %d evaluations, %.1f s", args.sampler, result.nfe, result.seconds)
    save_npz(
        args.out,
        samples=result.samples.detach().cpu().numpy(),
        nfe=np.asarray(result.nfe),
        seconds=np.asarray(result.seconds),
        seed=np.asarray(seed),
        sampler=np.asarray(args.sampler),
        variant=np.asarray(args.variant),
        dataset=np.asarray(args.dataset),
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from qcsbm_bench.evaluate import evaluate_toy_run, score_field, write_field, write_metric_rows
    from qcsbm_bench.train import load_toy_model

    config = stage_view(load_config(args.config), "evaluate", args.dataset)
    _configure_threads(config, "evaluate", args.threads)
    model = load_toy_model(config, args.variant, args.checkpoint, args.dataset, args.seed)
    samplers = config["sample"]["samplers"]
    if len(args.samples) != len(samplers):
        raise ConfigError(
            f"--samples got {len(args.samples)} file(s) but sample.samplers is {samplers}; "
            "pass one samples-<sampler>.npz per sampler, in that order"
        )
    samples = dict(zip(samplers, args.samples, strict=True))
    rows = evaluate_toy_run(
        config, model, args.dataset, args.variant, args.seed, args.data, samples
    )
    write_metric_rows(rows, args.out)
    field_config = config["evaluate"]["field"]
    field = score_field(model, field_config["grid_size"], field_config["extent"], field_config["t"])
    write_field(field, args.field_out)


def cmd_autoencoder(args: argparse.Namespace) -> None:
    from qcsbm_bench.autoencoder import run_autoencoder, write_curves

    config = stage_view(load_config(args.config), "autoencoder")
    _configure_threads(config, "autoencoder", args.threads)
    settings = {k: v for k, v in config["autoencoder"].items() if k != "enabled"}
    rows = run_autoencoder(progress=config["progress"], **settings)
    write_curves(rows, args.out)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=TOY_DATASETS, help="toy dataset name")
    parser.add_argument("--variant", required=True, choices=["csbm", "usbm", "qcsbm"])
    parser.add_argument("--seed", required=True, type=int, help="run seed")


def _add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: the config's stage resources)"
    )


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the `selected` module subcommand gets its full arguments."""
    parser = argparse.ArgumentParser(
        prog="qcsbm-bench",
        description="Benchmark conservative, unconstrained and quasi-conservative score models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None], help_text: str):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    command = add("config", cmd_config, "Validate a config and print or write it resolved.")
    command.add_argument("--config", type=Path, required=True, help="YAML config file")
    command.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    command.add_argument("--out", type=Path, help="write the resolved YAML here")

    command = add("prep-data", cmd_prep_data, "Draw and write one toy dataset (train + test).")
    command.add_argument("--config", type=Path, required=True, help="resolved config")
    command.add_argument("--dataset", required=True, help="toy dataset name")
    command.add_argument("--out", type=Path, required=True, help="output .npz file")

    command = add("train", cmd_train, "Train one (dataset, variant, seed) run.")
    _add_threads_argument(command)
    command.add_argument("--config", type=Path, required=True, help="resolved config")
    _add_run_arguments(command)
    command.add_argument("--data", type=Path, required=True, help="dataset .npz file")
    command.add_argument("--out-dir", type=Path, required=True, help="run folder")

    command = add("sample", cmd_sample, "Draw samples from a trained run with one sampler.")
    _add_threads_argument(command)
    command.add_argument("--config", type=Path, required=True, help="resolved config")
    _add_run_arguments(command)
    command.add_argument("--sampler", required=True, choices=["pc", "ode"])
    command.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt")
    command.add_argument("--out", type=Path, required=True, help="output .npz file")

    command = add("evaluate", cmd_evaluate, "Compute the metrics of one trained run.")
    _add_threads_argument(command)
    command.add_argument("--config", type=Path, required=True, help="resolved config")
    _add_run_arguments(command)
    command.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt")
    command.add_argument("--data", type=Path, required=True, help="dataset .npz file")
    command.add_argument(
        "--samples", type=Path, nargs="+", required=True, help="sample files, config order"
    )
    command.add_argument("--out", type=Path, required=True, help="tidy metrics CSV")
    command.add_argument("--field-out", type=Path, required=True, help="score field .npz")

    command = add("autoencoder", cmd_autoencoder, "Run the one-layer autoencoder example.")
    _add_threads_argument(command)
    command.add_argument("--config", type=Path, required=True, help="resolved config")
    command.add_argument("--out", type=Path, required=True, help="curves JSONL file")

    _mount_module_commands(sub, selected)
    return parser


# Subcommands implemented in their own modules, imported only when selected, so that
# light stages such as prep-data start without importing matplotlib.
MODULE_COMMANDS = {
    "aggregate": ("qcsbm_bench.aggregate", "Collect run metrics into tidy CSVs and Table 1."),
    "figures": ("qcsbm_bench.figures", "Draw the paper-style figures."),
    "benchmark": ("qcsbm_bench.benchmark", "Time training steps of every estimator and network."),
    "estimator-variance": (
        "qcsbm_bench.estimator_variance",
        "Measure the single-probe variance of the Hutchinson L_QC estimators.",
    ),
}


# Modules with several subcommands: each has COMMANDS = {name: (help, add_arguments, run)}.
# Their help lines are repeated here so that `qcsbm-bench --help` imports none of them.
STAGE_MODULES = {
    "qcsbm_bench.image_stages": {
        "prep-images": "Prepare one image dataset as verified arrays.",
        "train-images": "Train one image run (torchrun-aware).",
        "sample-images": "Draw one shard of samples from a trained image run.",
        "merge-samples": "Merge sample shards into one file, checking that none is missing.",
    },
    "qcsbm_bench.image_quality": {
        "train-classifier": "Train the feature classifier of an offline image dataset.",
        "reference-features": "Compute the reference feature statistics of an image dataset.",
        "sample-quality": "Compute FID or classifier FD, IS and precision/recall of samples.",
    },
    "qcsbm_bench.image_evaluation": {
        "image-likelihood": "Compute the NLL in bits/dim of test images.",
        "image-asymmetry": "Compute Asym and NAsym of an image run at each noise level.",
    },
    "qcsbm_bench.image_report": {
        "aggregate-images": "Collect image run metrics into tidy CSVs and Tables 2 and 3.",
        "figures-images": "Draw the image figures: asymmetry by noise level and sample grids.",
    },
}


def _mount_module_commands(sub: Any, selected: str | None) -> None:
    for name, (module_name, help_text) in MODULE_COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(handler=module.run)
    for module_name, commands in STAGE_MODULES.items():
        for name, help_text in commands.items():
            command = sub.add_parser(name, help=help_text, description=help_text)
            if name == selected:
                _, add_arguments, handler = importlib.import_module(module_name).COMMANDS[name]
                add_arguments(command)
                command.set_defaults(handler=handler)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(selected).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        status = args.handler(args)
    except (ConfigError, OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        logger.debug("traceback of the failure", exc_info=True)
        logger.error("%s", error)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
