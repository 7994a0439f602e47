"""Wall-clock and memory benchmark of one training step per score variant and L_QC estimator.

A step is zero_grad, `training_loss` (DSM, plus lambda_qc * sigma^2 L_QC for the QC modes),
backward and one Adam update, in float32. Modes:
- "dsm": USBM, `UnconstrainedScore` trained with DSM only.
- "qc-exact", "qc-hutchinson-vjp", "qc-hutchinson-jvp": QCSBM, DSM plus L_QC with that
  estimator. "qc-exact" runs only on the 2-D toy network because it needs one reverse pass
  per input dimension, and image configurations get a "skipped" row instead.
- "csbm": `ConservativeScore` (score = -grad_x E, so every step differentiates twice).

Networks: "toy" (ToyScoreNet on (B, 2) inputs), "convnet" (ConvScoreNet) and "unet"
(SmallUNet), both on (B, C, H, W) images. On CPU each configuration runs in a fresh
subprocess, and its peak resident set size comes from os.wait4. On CUDA all configurations
run in this process and the peak is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qcsbm_bench.losses import training_loss
from qcsbm_bench.networks import ConvScoreNet, SmallUNet
from qcsbm_bench.networks.toy import ToyScoreNet
from qcsbm_bench.regulariser import QCConfig
from qcsbm_bench.scores import ConservativeScore, ScoreModel, UnconstrainedScore
from qcsbm_bench.sde import VESDE

logger = logging.getLogger(__name__)

NETWORKS = ("toy", "convnet", "unet")
MODES = ("dsm", "qc-exact", "qc-hutchinson-vjp", "qc-hutchinson-jvp", "csbm")
TOY_DIM = 2

COLUMNS = (
    "network",
    "mode",
    "variant",
    "estimator",
    "status",
    "note",
    "batch_size",
    "input_shape",
    "n_params",
    "steps",
    "warmup",
    "step_ms_median",
    "step_ms_iqr",
    "step_ms_q25",
    "step_ms_q75",
    "peak_memory_mib",
    "baseline_memory_mib",
    "memory_kind",
    "device",
    "device_name",
    "cpu_model",
    "cpu_count",
    "torch_threads",
    "load_avg_1min",
    "torch_version",
    "python_version",
    "timestamp_utc",
)

BenchmarkRow = dict[str, str | int | float | None]

# The noise range changes the loss values but not the cost of a step, so one SDE serves
# every configuration. sigma_min and sigma_max are the NCSN++ CIFAR-10 values.
_SIGMA_MIN = 0.01
_SIGMA_MAX = 50.0
# lambda_qc only has to be positive so that the penalty is computed and backpropagated.
_LAMBDA_QC = 1.0


@dataclass(frozen=True)
class StepCase:
    """One (network, mode) configuration of the step benchmark."""

    network: str
    mode: str
    batch_size: int
    input_shape: tuple[int, ...]
    steps: int
    warmup: int
    device: str
    threads: int | None = None
    seed: int = 0


def _variant_and_estimator(mode: str) -> tuple[str, str]:
    if mode == "dsm":
        return "usbm", ""
    if mode == "csbm":
        return "csbm", ""
    return "qcsbm", mode.removeprefix("qc-")


def _build_network(network: str, input_shape: tuple[int, ...]) -> nn.Module:
    if network == "toy":
        return ToyScoreNet(dim=input_shape[0])
    if network == "convnet":
        return ConvScoreNet(channels=input_shape[0])
    if network == "unet":
        return SmallUNet(channels=input_shape[0])
    raise ValueError(f"unknown network {network!r}; valid networks are {NETWORKS}")


def _build_score_model(case: StepCase) -> ScoreModel:
    """Wrap the network of `case` as a USBM or CSBM in the toy or image parameterisation."""
    net = _build_network(case.network, case.input_shape)
    sde = VESDE(sigma_min=_SIGMA_MIN, sigma_max=_SIGMA_MAX)
    is_toy = case.network == "toy"
    if case.mode == "csbm":
        return ConservativeScore(net, sde, form="residual" if is_toy else "norm")
    return UnconstrainedScore(net, sde, form="residual" if is_toy else "direct")


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count inside the block and restore it afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _time_training_steps(case: StepCase) -> dict[str, float | int]:
    """Run `warmup` untimed and `steps` timed training steps of `case` in this process.

    Returns the step-time quantiles in ms, the parameter count, the number of threads and
    the 1-minute load average read after the timed steps, which includes this process.
    The caller sets the thread count with `_torch_threads`.
    """
    device = torch.device(case.device)
    is_cuda = device.type == "cuda"
    torch.manual_seed(case.seed)
    model = _build_score_model(case).to(device=device, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(case.seed)
    x0 = torch.randn(
        (case.batch_size, *case.input_shape),
        generator=generator,
        device=device,
        dtype=torch.float32,
    )
    _, estimator = _variant_and_estimator(case.mode)
    lambda_qc = _LAMBDA_QC if estimator else 0.0
    qc_config = QCConfig(estimator=estimator) if estimator else None
    dsm_convention = "sum" if case.network == "toy" else "half-sum"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        parts = training_loss(
            model,
            x0,
            lambda_qc=lambda_qc,
            qc_config=qc_config,
            dsm_convention=dsm_convention,
            generator=generator,
        )
        parts.total.backward()
        optimizer.step()

    for _ in range(case.warmup):
        step()

    times_ms: list[float] = []
    for _ in range(case.steps):
        if is_cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if is_cuda:
            torch.cuda.synchronize(device)
        times_ms.append(1000.0 * (time.perf_counter() - start))

    q25, median, q75 = np.percentile(times_ms, [25, 50, 75])
    return {
        "step_ms_median": float(median),
        "step_ms_iqr": float(q75 - q25),
        "step_ms_q25": float(q25),
        "step_ms_q75": float(q75),
        "n_params": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
    }


def _max_rss_mib(max_rss: int) -> float:
    """Convert ru_maxrss to MiB. Linux reports KiB and macOS reports bytes."""
    if sys.platform == "darwin":
        return max_rss / 2**20
    return max_rss / 2**10


def _run_case_in_process(case: StepCase) -> dict[str, float | int | str | None]:
    """Time `case` here. On CUDA also record the peak of allocated device memory."""
    device = torch.device(case.device)
    if device.type != "cuda":
        with _torch_threads(case.threads):
            result: dict[str, float | int | str | None] = dict(_time_training_steps(case))
        result["memory_kind"] = "not measured (in-process CPU run)"
        return result

    # NOTE: this CUDA path has never been run. Check one configuration by hand before
    # trusting its times and memory peaks.
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    with _torch_threads(case.threads):
        result = dict(_time_training_steps(case))
    result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    result["baseline_memory_mib"] = baseline / 2**20
    result["memory_kind"] = "cuda max_memory_allocated"
    return result


def _run_case_in_subprocess(case: StepCase) -> dict[str, float | int | str | None]:
    """Time `case` in a fresh Python process and read its peak RSS with os.wait4.

    The peak includes the interpreter, torch and the data. `baseline_memory_mib` is the
    child's peak RSS after its imports and before it builds the model.
    """
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))

    with tempfile.TemporaryDirectory(prefix="qcsbm-step-") as tmp:
        result_path = Path(tmp) / "result.json"
        log_path = Path(tmp) / "worker.log"
        command = [
            sys.executable,
            "-m",
            "qcsbm_bench.benchmark",
            "--worker-case",
            json.dumps(asdict(case)),
            "--worker-result",
            str(result_path),
        ]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            # os.wait4 reaps the child and returns its own rusage, unlike
            # RUSAGE_CHILDREN, which is the maximum over every child reaped so far.
            _, wait_status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(wait_status)

        if process.returncode != 0:
            log_tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"benchmark worker for network={case.network!r}, mode={case.mode!r} failed "
                f"with exit code {process.returncode}. Its output ends with:\n{log_tail}"
            )
        result: dict[str, float | int | str | None] = json.loads(result_path.read_text())

    result["peak_memory_mib"] = _max_rss_mib(usage.ru_maxrss)
    result["memory_kind"] = "cpu peak RSS of a fresh subprocess (os.wait4)"
    return result


def _run_worker(case_json: str, result_path: Path) -> None:
    """Run one case in this (child) process and write its timings as JSON."""
    baseline_mib = _max_rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    fields = json.loads(case_json)
    fields["input_shape"] = tuple(fields["input_shape"])
    case = StepCase(**fields)
    with _torch_threads(case.threads):
        result: dict[str, float | int | str | None] = dict(_time_training_steps(case))
    result["baseline_memory_mib"] = baseline_mib
    result_path.write_text(json.dumps(result))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _environment(device: str) -> BenchmarkRow:
    torch_device = torch.device(device)
    device_name = ""
    if torch_device.type == "cuda":
        device_name = torch.cuda.get_device_name(torch_device)
    return {
        "device": device,
        "device_name": device_name,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _validate_choices(networks: Sequence[str], modes: Sequence[str]) -> None:
    for network in networks:
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; valid networks are {NETWORKS}")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes are {MODES}")


def write_rows_csv(rows: Sequence[BenchmarkRow], path: Path) -> None:
    """Write benchmark rows to a CSV file with the columns of COLUMNS, in that order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column) for column in COLUMNS})


def run_step_benchmark(
    out_dir: Path,
    device: str = "cpu",
    batch_size: int = 32,
    image_shape: tuple[int, int, int] = (3, 32, 32),
    steps: int = 20,
    warmup: int = 5,
    networks: Sequence[str] = NETWORKS,
    modes: Sequence[str] = MODES,
    toy_batch_size: int = 5000,
    isolate: bool | None = None,
    threads: int | None = None,
) -> list[BenchmarkRow]:
    """Time one training step per (network, mode), write out_dir/steps.csv, return the rows.

    `batch_size` and `image_shape` apply to the image networks, and the toy network uses
    `toy_batch_size` samples of dimension 2. `isolate` runs each configuration in a fresh
    subprocess so that its peak RSS can be measured. It defaults to True on CPU and False
    on CUDA. Without isolation on CPU, memory is not measured. `threads` sets torch's
    intra-op thread count per configuration (None keeps torch's default).
    """
    _validate_choices(networks, modes)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads}.")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}.")
    is_cuda = torch.device(device).type == "cuda"
    if isolate is None:
        isolate = not is_cuda
    if isolate and is_cuda:
        raise ValueError("isolate=True is only supported on CPU; pass isolate=None or False.")

    environment = _environment(device)
    rows: list[BenchmarkRow] = []
    for network in networks:
        is_toy = network == "toy"
        input_shape = (TOY_DIM,) if is_toy else tuple(image_shape)
        case_batch = toy_batch_size if is_toy else batch_size
        for mode in modes:
            variant, estimator = _variant_and_estimator(mode)
            row: BenchmarkRow = {
                "network": network,
                "mode": mode,
                "variant": variant,
                "estimator": estimator,
                "batch_size": case_batch,
                "input_shape": "x".join(str(size) for size in input_shape),
                "steps": steps,
                "warmup": warmup,
                **environment,
            }
            if mode == "qc-exact" and not is_toy:
                dim = int(np.prod(input_shape))
                row["status"] = "skipped"
                row["note"] = (
                    f"exact L_QC needs one reverse pass per input dimension (D = {dim}), "
                    "so it runs only on the toy network"
                )
                logger.info(
                    "skipping network=%s mode=%s: exact L_QC runs only on toy", network, mode
                )
                rows.append(row)
                continue

            case = StepCase(network, mode, case_batch, input_shape, steps, warmup, device, threads)
            logger.info("timing network=%s mode=%s batch=%d", network, mode, case_batch)
            result = _run_case_in_subprocess(case) if isolate else _run_case_in_process(case)
            row.update(result)
            row["status"] = "ok"
            row["note"] = ""
            logger.info(
                "network=%s mode=%s: median step %.1f ms (IQR %.1f ms)",
                network,
                mode,
                row["step_ms_median"],
                row["step_ms_iqr"],
            )
            rows.append(row)

    write_rows_csv(rows, Path(out_dir) / "steps.csv")
    return rows


_INT_COLUMNS = {"batch_size", "n_params", "steps", "warmup", "cpu_count", "torch_threads"}
_FLOAT_COLUMNS = {
    "step_ms_median",
    "step_ms_iqr",
    "step_ms_q25",
    "step_ms_q75",
    "peak_memory_mib",
    "baseline_memory_mib",
    "load_avg_1min",
}


def read_rows_csv(path: Path) -> list[BenchmarkRow]:
    """Read rows written by `write_rows_csv`, with numbers parsed and empty cells as None."""
    rows: list[BenchmarkRow] = []
    with path.open(newline="") as csv_file:
        for record in csv.DictReader(csv_file):
            row: BenchmarkRow = {}
            for column, text in record.items():
                if text == "" and column != "note":
                    row[column] = None
                elif column in _INT_COLUMNS:
                    row[column] = int(text)
                elif column in _FLOAT_COLUMNS:
                    row[column] = float(text)
                else:
                    row[column] = text
            rows.append(row)
    return rows


def _format_number(value: str | int | float | None, digits: int = 1) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _timing(row: BenchmarkRow, column: str) -> float:
    """Return a timing column of a timed row as a float."""
    value = row[column]
    if not isinstance(value, int | float):
        raise ValueError(
            f"row {row['network']}/{row['mode']} has no numeric value in column {column!r}; "
            "only rows with status 'ok' have timings."
        )
    return float(value)


def _estimator_comparison(rows: Sequence[BenchmarkRow]) -> list[str]:
    """Return one Markdown bullet per network that has both Hutchinson estimators."""
    lines = []
    by_key = {(row["network"], row["mode"]): row for row in rows if row.get("status") == "ok"}
    networks = list(dict.fromkeys(str(row["network"]) for row in rows))
    for network in networks:
        vjp = by_key.get((network, "qc-hutchinson-vjp"))
        jvp = by_key.get((network, "qc-hutchinson-jvp"))
        dsm = by_key.get((network, "dsm"))
        if vjp is None or jvp is None:
            continue
        vjp_ms = _timing(vjp, "step_ms_median")
        jvp_ms = _timing(jvp, "step_ms_median")
        ratio = jvp_ms / vjp_ms
        # Overlapping interquartile ranges mean that this run cannot order the two.
        jvp_low, jvp_high = _timing(jvp, "step_ms_q25"), _timing(jvp, "step_ms_q75")
        vjp_low, vjp_high = _timing(vjp, "step_ms_q25"), _timing(vjp, "step_ms_q75")
        overlap = jvp_low <= vjp_high and vjp_low <= jvp_high
        if overlap:
            verdict = "their interquartile ranges overlap, so this run cannot order them"
        elif ratio < 1.0:
            verdict = "the JVP estimator was faster"
        else:
            verdict = "the JVP estimator was slower"
        line = (
            f"- `{network}`: the JVP step took {jvp_ms:,.1f} ms against {vjp_ms:,.1f} ms "
            f"for the VJP step (ratio {ratio:.2f}), and {verdict}."
        )
        if dsm is not None:
            dsm_ms = _timing(dsm, "step_ms_median")
            line += (
                f" Relative to a DSM-only step ({dsm_ms:,.1f} ms), the VJP step costs "
                f"{vjp_ms / dsm_ms:.1f}x and the JVP step {jvp_ms / dsm_ms:.1f}x."
            )
        lines.append(line)
    return lines


def write_benchmark_page(rows: Sequence[BenchmarkRow], path: Path) -> None:
    """Write a Markdown page that describes the step benchmark and tabulates `rows`."""
    if not rows:
        raise ValueError("write_benchmark_page needs at least one row, got none.")
    first = next((row for row in rows if row.get("status") == "ok"), rows[0])
    memory_kinds = sorted({str(row["memory_kind"]) for row in rows if row.get("memory_kind")})
    steps = first["steps"]
    warmup = first["warmup"]
    image_rows = [row for row in rows if row["network"] != "toy"]
    toy_rows = [row for row in rows if row["network"] == "toy"]
    rerun_args = f"--out-dir results/benchmark --device {first['device']} --steps {steps} "
    rerun_args += f"--warmup {warmup} --threads {first['torch_threads']}"
    if image_rows:
        image_shape = str(image_rows[0]["input_shape"]).replace("x", " ")
        rerun_args += f" --batch-size {image_rows[0]['batch_size']}"
        rerun_args += f" --image-shape {image_shape}"
    if toy_rows:
        rerun_args += f" --toy-batch-size {toy_rows[0]['batch_size']}"

    lines = [
        "# Training-step benchmark",
        "",
        "Generated by `qcsbm_bench.benchmark.write_benchmark_page` from "
        "`results/benchmark/steps.csv`.",
        "",
        "## What is measured",
        "",
        "Each row times one training step: `zero_grad`, `training_loss`, `backward` and one "
        "Adam update, in float32. The modes are:",
        "",
        "- `dsm`: USBM, an unconstrained score trained with denoising score matching only.",
        "- `qc-exact`, `qc-hutchinson-vjp`, `qc-hutchinson-jvp`: QCSBM, DSM plus "
        "lambda_qc * sigma^2 * L_QC with L_QC = 1/2 ||J - J^T||_F^2 from that estimator "
        "(one Rademacher probe per sample). `qc-exact` builds the full D x D Jacobian, so it "
        "runs only on the 2-D toy network.",
        "- `csbm`: a conservative score s = -grad_x E, so each step differentiates through "
        "a gradient (double backward).",
        "",
        f"Times are the median and interquartile range (IQR) over {steps} timed steps after "
        f"{warmup} warm-up steps. Memory is {'; '.join(memory_kinds) or 'not measured'}. "
        "On CPU, the baseline column is the worker's RSS after importing torch and before "
        "building the model, so peak minus baseline approximates the memory of the model, "
        "the optimizer and one step. CPU timings are sensitive to other load on the machine. "
        "The IQR column shows the spread, and the load column is the 1-minute load average "
        "read after the timed steps, which includes the benchmark's own threads.",
        "",
        "## Machine",
        "",
        f"- Device: `{first['device']}` {first['device_name'] or ''}".rstrip(),
        f"- CPU: {first['cpu_model']}, {first['cpu_count']} logical cores, "
        f"torch intra-op threads: {first.get('torch_threads', '')}",
        f"- torch {first['torch_version']}, Python {first['python_version']}",
        f"- Run at {first['timestamp_utc']} (UTC)",
        "",
        "## How to rerun",
        "",
        "```",
        f"qcsbm-bench benchmark {rerun_args}",
        "```",
        "",
        "`python -m qcsbm_bench.benchmark` accepts the same options. The command rewrites "
        "`steps.csv` in the output directory and this page (`--page`).",
        "",
        "## Results",
        "",
        "| network | mode | batch | input | params | median ms | IQR ms | peak MiB "
        "| peak - baseline MiB | load 1 min | note |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        peak = row.get("peak_memory_mib")
        baseline = row.get("baseline_memory_mib")
        difference = None
        if isinstance(peak, float) and isinstance(baseline, float):
            difference = peak - baseline
        cells = [
            str(row["network"]),
            str(row["mode"]),
            _format_number(row["batch_size"]),
            str(row["input_shape"]),
            _format_number(row.get("n_params")),
            _format_number(row.get("step_ms_median")),
            _format_number(row.get("step_ms_iqr")),
            _format_number(peak, 0),
            _format_number(difference, 0),
            _format_number(row.get("load_avg_1min"), 2),
            str(row.get("note") or ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        "## VJP against JVP estimator (speed only)",
        "",
        "Both Hutchinson estimators are unbiased for L_QC. The VJP estimator computes "
        "v^T J J^T v - v^T J J v from two reverse-mode products, J^T v and J^T (J^T v), each "
        "with create_graph=True. The JVP estimator computes 1/2 ||J v - J^T v||^2 from one "
        "forward-mode product J v (dual tensors, evaluated with the forward pass) and one "
        "reverse-mode product J^T v. Their variances are measured elsewhere. Here:",
        "",
        *(_estimator_comparison(rows) or ["- No network has rows for both estimators."]),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the step-benchmark options to `parser`. The `benchmark` subcommand calls `run`."""
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("results/benchmark"),
        help="directory for steps.csv (default: results/benchmark)",
    )
    parser.add_argument(
        "--page",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="Markdown page to write the results to (default: docs/benchmarks.md)",
    )

    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size of the image networks"
    )
    parser.add_argument(
        "--toy-batch-size", type=int, default=5000, help="batch size of the 2-D toy network"
    )
    parser.add_argument(
        "--image-shape",
        type=int,
        nargs=3,
        default=[3, 32, 32],
        metavar=("C", "H", "W"),
        help="image shape for the image networks (default: 3 32 32)",
    )

    parser.add_argument("--steps", type=int, default=20, help="number of timed steps")
    parser.add_argument(
        "--warmup", type=int, default=5, help="number of untimed steps before timing"
    )
    parser.add_argument(
        "--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS), help="networks to time"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to time"
    )

    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads per configuration (default: torch's default)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="on CPU, run every configuration in this process (faster, memory not measured)",
    )


def run(args: argparse.Namespace) -> None:
    """Run the benchmark with options from `add_arguments`, then write the CSV and the page."""
    rows = run_step_benchmark(
        out_dir=args.out_dir,
        device=args.device,
        batch_size=args.batch_size,
        image_shape=(args.image_shape[0], args.image_shape[1], args.image_shape[2]),
        steps=args.steps,
        warmup=args.warmup,
        networks=args.networks,
        modes=args.modes,
        toy_batch_size=args.toy_batch_size,
        isolate=False if args.in_process else None,
        threads=args.threads,
    )
    write_benchmark_page(rows, args.page)
    logger.info("wrote %s and %s", args.out_dir / "steps.csv", args.page)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the step benchmark as a standalone command, or as a worker for one case."""
    parser = argparse.ArgumentParser(
        prog="python -m qcsbm_bench.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--worker-case", help=argparse.SUPPRESS)
    parser.add_argument("--worker-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_case is not None:
        if args.worker_result is None:
            parser.error("--worker-case needs --worker-result, the path for the JSON result.")
        _run_worker(args.worker_case, args.worker_result)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
