"""Published results of Chao et al. (ICML 2023) as tidy data, for comparison with this benchmark.

Tables 1-3 of the paper are stored as rows of (table, dataset, variant, metric, value, unit):

- Table 1: 2-D toy data sets, mean over 3 runs of Asym, NAsym, score error and NLL in nats.
- Table 2: image data sets, NLL in bits/dim, Asym and NAsym.
- Table 3: image data sets with the predictor-corrector (PC) sampler: FID, Inception Score,
  precision and recall.

Metric names match the `metric` column of the per-run metrics CSV (asym, nasym, score_error,
nll, precision, recall), plus fid and inception_score for Table 3. A unit is empty for
dimensionless numbers and for numbers whose unit the paper does not state.

The paper computed FID with the TF-GAN Inception network, and this project uses clean-fid
(which resizes images differently), so FIDs from the two are only roughly comparable.

NOTE: the evaluate stage sets its own noise levels for Asym and NAsym and its own score error
(1/2 ||s_oracle - s||^2). Whether these match the paper's protocol is unverified, so compare
those Table 1 columns with care.
"""

from __future__ import annotations

import pandas as pd

CITATION = (
    "Chen-Hao Chao, Wei-Fang Sun, Bo-Wun Cheng and Chun-Yi Lee, "
    '"On Investigating the Conservative Property of Score-Based Generative Models", '
    "Proceedings of the 40th International Conference on Machine Learning (ICML 2023), "
    "PMLR 202:4076-4095."
)

COLUMNS: tuple[str, ...] = ("table", "dataset", "variant", "metric", "value", "unit")

# Row order of the paper's tables, used to order every table this project writes.
TOY_DATASETS: tuple[str, ...] = ("8gaussians", "spirals", "checkerboard")
IMAGE_DATASETS: tuple[str, ...] = ("cifar10", "imagenet32", "cifar100", "svhn")
VARIANTS: tuple[str, ...] = ("csbm", "usbm", "qcsbm")

TABLE1_METRICS: tuple[tuple[str, str], ...] = (
    ("asym", ""),
    ("nasym", ""),
    ("score_error", ""),
    ("nll", "nats"),
)
TABLE2_METRICS: tuple[tuple[str, str], ...] = (
    ("nll", "bits/dim"),
    ("asym", ""),
    ("nasym", ""),
)
TABLE3_METRICS: tuple[tuple[str, str], ...] = (
    ("fid", ""),
    ("inception_score", ""),
    ("precision", ""),
    ("recall", ""),
)

# Values per dataset and variant, in the metric order of the matching *_METRICS tuple.
_TABLE1: dict[str, dict[str, tuple[float, ...]]] = {
    "8gaussians": {
        "csbm": (0.0, 0.0, 0.434, 5.24),
        "usbm": (1.06e-2, 1.42e-3, 0.414, 5.02),
        "qcsbm": (9.49e-3, 1.38e-3, 0.420, 5.01),
    },
    "spirals": {
        "csbm": (0.0, 0.0, 1.59, 5.61),
        "usbm": (0.735, 8.19e-2, 1.50, 5.11),
        "qcsbm": (0.318, 5.73e-2, 1.56, 5.04),
    },
    "checkerboard": {
        "csbm": (0.0, 0.0, 0.765, 5.19),
        "usbm": (0.105, 2.51e-2, 0.679, 5.09),
        "qcsbm": (7.06e-2, 1.70e-2, 0.679, 5.08),
    },
}

_TABLE2: dict[str, dict[str, tuple[float, ...]]] = {
    "cifar10": {
        "csbm": (5.91, 0.0, 0.0),
        "usbm": (3.46, 1.88e8, 1.90e-3),
        "qcsbm": (3.38, 3.49e7, 8.41e-4),
    },
    "imagenet32": {
        "csbm": (5.10, 0.0, 0.0),
        "usbm": (3.96, 2.05e7, 7.17e-4),
        "qcsbm": (3.83, 1.13e7, 5.47e-4),
    },
    "cifar100": {
        "csbm": (5.34, 0.0, 0.0),
        "usbm": (3.50, 2.98e8, 2.25e-3),
        "qcsbm": (3.44, 9.31e7, 1.44e-3),
    },
    "svhn": {
        "csbm": (5.00, 0.0, 0.0),
        "usbm": (2.15, 3.06e7, 6.54e-4),
        "qcsbm": (2.01, 1.69e7, 4.80e-4),
    },
}

_TABLE3: dict[str, dict[str, tuple[float, ...]]] = {
    "cifar10": {
        "csbm": (10.97, 8.58, 0.61, 0.58),
        "usbm": (2.50, 9.58, 0.67, 0.60),
        "qcsbm": (2.48, 9.70, 0.67, 0.60),
    },
    "imagenet32": {
        "csbm": (28.97, 8.58, 0.61, 0.45),
        "usbm": (19.82, 9.89, 0.60, 0.52),
        "qcsbm": (19.62, 9.94, 0.61, 0.52),
    },
    "cifar100": {
        "csbm": (17.59, 8.38, 0.60, 0.54),
        "usbm": (2.54, 9.63, 0.60, 0.66),
        "qcsbm": (2.45, 9.75, 0.61, 0.67),
    },
    "svhn": {
        "csbm": (24.71, 2.66, 0.61, 0.46),
        "usbm": (14.34, 3.10, 0.60, 0.67),
        "qcsbm": (13.88, 3.12, 0.61, 0.67),
    },
}


def _tidy_rows(
    table: int,
    values: dict[str, dict[str, tuple[float, ...]]],
    metrics: tuple[tuple[str, str], ...],
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for dataset, by_variant in values.items():
        for variant, numbers in by_variant.items():
            for (metric, unit), value in zip(metrics, numbers, strict=True):
                rows.append(
                    {
                        "table": table,
                        "dataset": dataset,
                        "variant": variant,
                        "metric": metric,
                        "value": value,
                        "unit": unit,
                    }
                )
    return rows


def published_results(tables: tuple[int, ...] = (1, 2, 3)) -> pd.DataFrame:
    """Build the published values of the requested tables as one tidy DataFrame.

    Columns are table (int), dataset, variant, metric, value (float) and unit. A new frame
    is built on each call, so callers may modify it.
    """
    sources = {
        1: (_TABLE1, TABLE1_METRICS),
        2: (_TABLE2, TABLE2_METRICS),
        3: (_TABLE3, TABLE3_METRICS),
    }
    unknown = [table for table in tables if table not in sources]
    if unknown:
        raise ValueError(f"Unknown table number(s) {unknown}; the paper's tables are 1, 2 and 3.")

    rows: list[dict[str, object]] = []
    for table in tables:
        values, metrics = sources[table]
        rows.extend(_tidy_rows(table, values, metrics))

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"table": "int64", "value": "float64"})
