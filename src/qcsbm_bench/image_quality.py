"""CLI stages of sample quality on images: the feature classifier and reference statistics of
a dataset, and per run and sampler the Frechet distance, Inception score and precision,
recall, density and coverage.

The Frechet distance is FID in clean-fid's Inception features, or "FD (<dataset>
classifier)" in the features of a classifier trained on the dataset's training split, for
datasets without an Inception reference here (see image_config.feature_space).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qcsbm_bench.artifacts import load_npz
from qcsbm_bench.atomic import atomic_open
from qcsbm_bench.image_config import feature_space
from qcsbm_bench.image_evaluation import limit_images, metric_row, write_image_metric_rows
from qcsbm_bench.image_stages import (
    SAMPLER_NAMES,
    add_run_arguments,
    configure_threads,
    load_image_config,
)

logger = logging.getLogger(__name__)

INCEPTION_RESOLUTION = 299


# train-classifier


def add_classifier_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, variant=False)
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="classifier checkpoint (.pt)")
    parser.add_argument("--stats-out", type=Path, required=True, help="training summary (.json)")


def run_classifier(args: argparse.Namespace) -> None:
    from qcsbm_bench.artifacts import derive_seed, write_json
    from qcsbm_bench.data.images import load_image_dataset
    from qcsbm_bench.metrics.classifier import save_classifier, train_feature_classifier

    config = load_image_config(args.config, "classifier", args.dataset)
    configure_threads(config, "classifier", args.threads)
    settings = config["evaluate"]["classifier"]
    train = load_image_dataset(args.data_dir, "train")
    # Photo patches label their source photo, and the test photos never occur in training.
    n_classes = int(train.meta["n_classes"])
    model, stats = train_feature_classifier(
        np.asarray(train.images),
        np.asarray(train.labels),
        n_classes,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        seed=derive_seed(config["data"]["seed"], args.dataset, "classifier"),
        device=config["device"],
    )
    save_classifier(model, args.out)
    write_json({"dataset": args.dataset, **stats}, args.stats_out)
    logger.info("classifier of %s: %s", args.dataset, stats)


# reference-features


class FeatureSpace:
    """Features of uint8 images in one space: clean-fid's Inception or a trained classifier."""

    def __init__(self, config: Mapping[str, Any], dataset: str, classifier: Path | None) -> None:
        self.space = feature_space(config, dataset)
        fid = config["evaluate"]["fid"]
        self.batch_size = fid["batch_size"]
        self.device = config["device"]
        self.progress = config["progress"]
        if self.space == "inception":
            from qcsbm_bench.metrics.inception import load_inception

            self.mode = fid["mode"]
            self.name = "inception-2015-12-05 pool_3"
            self.extractor = load_inception(
                Path(fid["inception_weights"]), fid["sha256"], self.device, mode=self.mode
            )
        else:
            from qcsbm_bench.metrics.classifier import load_classifier

            if classifier is None:
                raise ValueError(
                    f"dataset {dataset!r} uses classifier features; pass --classifier with the "
                    "checkpoint written by train-classifier"
                )
            self.mode = "none"
            self.name = f"{dataset} classifier"
            self.classifier = load_classifier(classifier, device=self.device)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return features (N, F) and, for Inception, logits (N, 1008) of uint8 images."""
        if self.space == "inception":
            outputs = self.extractor(images, batch_size=self.batch_size, progress=self.progress)
            return outputs.features, outputs.logits
        from qcsbm_bench.metrics.classifier import classifier_features

        return classifier_features(self.classifier, images, batch_size=self.batch_size), None

    def resolution(self, images: np.ndarray) -> int:
        """Return the side of the images the features see (299 after Inception's resize)."""
        return INCEPTION_RESOLUTION if self.space == "inception" else int(images.shape[-1])


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, variant=False)
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--classifier", type=Path, help="classifier checkpoint (offline sets)")
    parser.add_argument("--out", type=Path, required=True, help="reference statistics (.npz)")


def run_reference(args: argparse.Namespace) -> None:
    from qcsbm_bench.data.images import load_image_dataset
    from qcsbm_bench.metrics.frechet import statistics_of

    config = load_image_config(args.config, "reference", args.dataset)
    configure_threads(config, "reference", args.threads)
    fid = config["evaluate"]["fid"]
    split = fid["reference_split"]
    images = np.asarray(
        limit_images(load_image_dataset(args.data_dir, split).images, fid["n_reference"])
    )
    space = FeatureSpace(config, args.dataset, args.classifier)
    features, _ = space(images)
    statistics = statistics_of(
        features,
        features=space.name,
        mode=space.mode,
        resolution=space.resolution(images),
        dataset=args.dataset,
        split=split,
    )
    # Precision, recall, density and coverage need the features themselves, not a Gaussian.
    n_real = config["evaluate"]["precision_recall"]["n_real"]
    order = np.random.default_rng(config["data"]["seed"]).permutation(features.shape[0])
    real = features[np.sort(order[:n_real])]
    with atomic_open(args.out, "wb") as handle:
        np.savez(
            handle,
            mu=statistics.mu,
            sigma=statistics.sigma,
            metadata=json.dumps(dict(statistics.metadata), sort_keys=True),
            real_features=real,
        )
    logger.info("reference statistics of %s: %s", args.dataset, statistics.metadata)


# sample-quality


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--sampler", required=True, choices=SAMPLER_NAMES)
    parser.add_argument("--samples", type=Path, required=True, help="merged samples (.npz)")
    parser.add_argument("--reference", type=Path, required=True, help="reference statistics")
    parser.add_argument("--classifier", type=Path, help="classifier checkpoint (offline sets)")
    parser.add_argument("--out", type=Path, required=True, help="tidy metrics CSV")


def sample_quality_rows(
    config: Mapping[str, Any],
    dataset: str,
    variant: str,
    seed: int,
    sampler: str,
    samples_path: Path,
    reference_path: Path,
    classifier: Path | None,
) -> list[dict[str, Any]]:
    """Compute FID (or classifier FD), IS, PRDC and NFE rows of one run's merged samples.

    When any sample is NaN or inf the sampler has diverged, and the sample-quality rows are
    written empty, with the reason in their detail.
    """
    samples = load_npz(
        samples_path, ("images", "finite", "nfe", "seconds"), producer="the merge-samples job"
    )
    images = samples["images"]
    finite = samples["finite"]
    nfe = float(np.mean(samples["nfe"]))
    seconds = float(np.sum(samples["seconds"]))

    rows: list[dict[str, Any]] = []

    def add(metric: str, value: float, row_detail: str = "") -> None:
        rows.append(
            metric_row(dataset, variant, seed, metric, value, sampler=sampler, detail=row_detail)
        )

    n_failed = int(np.sum(~finite))
    if n_failed:
        # A diverged sampler has no sample set to score: the black stand-in images would give
        # a distance and a precision that look valid, so these rows stay empty (n/a).
        logger.warning(
            "%s/%s seed %d, %s sampler: %d of %d samples are NaN or inf; sample quality is "
            "not computed",
            dataset,
            variant,
            seed,
            sampler,
            n_failed,
            images.shape[0],
        )
        failed = f"not computed: {n_failed} of {images.shape[0]} samples are NaN or inf"
        distance_metric = (
            "fid" if feature_space(config, dataset) == "inception" else "fd_classifier"
        )
        for metric in (distance_metric, "precision", "recall", "density", "coverage"):
            add(metric, float("nan"), failed)
    else:
        _add_quality_rows(config, dataset, images, reference_path, classifier, add)
    add("nonfinite_fraction", n_failed / images.shape[0], f"samples={images.shape[0]}")
    add("nfe", nfe, "mean model evaluations per sampling batch")
    add("sample_seconds", seconds, "sum over batches")
    return rows


def _add_quality_rows(
    config: Mapping[str, Any],
    dataset: str,
    images: np.ndarray,
    reference_path: Path,
    classifier: Path | None,
    add: Callable[[str, float, str], None],
) -> None:
    """Add the Frechet distance, Inception score and PRDC rows of a finite sample set."""
    from qcsbm_bench.metrics.frechet import (
        FeatureStatistics,
        frechet_distance_between,
        statistics_of,
    )
    from qcsbm_bench.metrics.inception_score import inception_score
    from qcsbm_bench.metrics.precision_recall import prdc

    stored = load_npz(
        reference_path,
        ("mu", "sigma", "metadata", "real_features"),
        producer="the reference-features job",
    )
    reference = FeatureStatistics(
        stored["mu"], stored["sigma"], json.loads(str(stored["metadata"]))
    )
    real_features = stored["real_features"]

    space = FeatureSpace(config, dataset, classifier)
    features, logits = space(images)
    generated = statistics_of(
        features,
        features=space.name,
        mode=space.mode,
        resolution=space.resolution(images),
        dataset=dataset,
        split="samples",
    )
    distance = frechet_distance_between(generated, reference)
    meta = reference.metadata
    detail = (
        f"features={space.name}; mode={space.mode}; resolution={meta['resolution']}; "
        f"samples={images.shape[0]}; reference={meta['split']} ({meta['n']} images)"
    )
    add("fid" if space.space == "inception" else "fd_classifier", distance, detail)
    if logits is not None:
        n_splits = min(10, images.shape[0])
        mean, std = inception_score(logits, n_splits=n_splits)
        add("inception_score", mean, f"{n_splits} splits; samples={images.shape[0]}")
        add("inception_score_std", std, f"{n_splits} splits")
    k = config["evaluate"]["precision_recall"]["k"]
    fake = features[: real_features.shape[0]]
    prdc_detail = f"k={k}; real={real_features.shape[0]}; fake={fake.shape[0]}; {space.name}"
    for metric, value in prdc(real_features, fake, k=k).items():
        add(metric, float(value), prdc_detail)


def run_quality(args: argparse.Namespace) -> None:
    config = load_image_config(args.config, "sample_quality", args.dataset, sampler=args.sampler)
    configure_threads(config, "sample_quality", args.threads)
    rows = sample_quality_rows(
        config,
        args.dataset,
        args.variant,
        args.seed,
        args.sampler,
        args.samples,
        args.reference,
        args.classifier,
    )
    write_image_metric_rows(rows, args.out)


COMMANDS = {
    "train-classifier": (
        "Train the feature classifier of an offline image dataset.",
        add_classifier_arguments,
        run_classifier,
    ),
    "reference-features": (
        "Compute the reference feature statistics of an image dataset.",
        add_reference_arguments,
        run_reference,
    ),
    "sample-quality": (
        "Compute FID or classifier FD, IS and precision/recall of samples.",
        add_quality_arguments,
        run_quality,
    ),
}
