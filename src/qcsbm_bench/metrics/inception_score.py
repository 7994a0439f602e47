"""Inception Score (Salimans et al. 2016) from class logits, over disjoint splits.

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x),

computed on each of n_splits consecutive, near-equal slices of the samples. Slice i contains
rows floor(i N / n_splits) to floor((i + 1) N / n_splits). The result is the mean and population
standard deviation over slices, as in the original TensorFlow code with 10 splits.

p(y|x) is the softmax over all 1008 logits of the 2015-12-05 Inception graph, computed without
the output bias. The original TensorFlow code (improved-gan) multiplies pool_3 by the weight of
softmax/logits/MatMul and applies softmax to all 1008 columns, including 8 unused classes, and
StyleGAN2-ADA matches it with no_output_bias=True. InceptionExtractor returns exactly these
logits, so pass them unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, xlogy

DEFAULT_SPLITS = 10


def _split_score(log_probabilities: np.ndarray) -> float:
    # exp of the mean over rows of KL(p(y|x) || p(y)) in nats. xlogy gives 0 for classes that
    # no sample in the slice predicts, where p(y|x) = p(y) = 0.
    probabilities = np.exp(log_probabilities)
    marginal = probabilities.mean(axis=0, keepdims=True)
    entropy_term = (probabilities * log_probabilities).sum(axis=1)
    cross_term = xlogy(probabilities, marginal).sum(axis=1)
    return float(np.exp(np.mean(entropy_term - cross_term)))


def inception_score(logits: np.ndarray, n_splits: int = DEFAULT_SPLITS) -> tuple[float, float]:
    """Compute the Inception Score's mean and standard deviation over n_splits slices.

    Args:
        logits: class logits, shape (N, C). Softmax is taken over all C columns.
        n_splits: number of consecutive slices. It must not exceed N.

    Returns:
        (mean, std) of exp(E KL) over the slices. The score lies in [1, C] and is unitless.
    """
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, classes), got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError("logits contain NaN or infinite values; check the feature extractor.")
    count = array.shape[0]
    if not 1 <= n_splits <= count:
        raise ValueError(
            f"n_splits must be between 1 and the number of samples {count}, got {n_splits}."
        )

    log_probabilities = log_softmax(array, axis=1)
    scores = [
        _split_score(log_probabilities[i * count // n_splits : (i + 1) * count // n_splits])
        for i in range(n_splits)
    ]
    return float(np.mean(scores)), float(np.std(scores))
