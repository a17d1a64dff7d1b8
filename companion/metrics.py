"""Classification metrics for posterior draws: AUC, Brier score, log loss and
reliability-diagram bins, in JAX.

A Bayesian classifier gives one vector of probabilities per posterior draw,
so a metric is a *distribution* over draws. Every function here accepts
scores with any leading (draw) axes, ``(..., n)``, and returns one value per
draw, computed in one vectorised call instead of a Python loop over
``sklearn.metrics``; the tests check each against scikit-learn.

Used in chapter 6 (introduced), and in chapters 7 and 8.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import rankdata
from jaxtyping import Array, ArrayLike, Float, Int

__all__ = [
    "ReliabilityBins",
    "auc",
    "brier_score",
    "expected_calibration_error",
    "log_loss",
    "reliability_bins",
]


class ReliabilityBins(NamedTuple):
    """The bins of a reliability diagram (see :func:`reliability_bins`).
    Used in chapter 6.

    Attributes:
        prob_pred: mean predicted probability in each bin (NaN when empty).
        prob_true: share of positive labels in each bin (NaN when empty).
        counts: number of predictions in each bin.
        edges: the ``num_bins + 1`` bin edges, evenly spaced over [0, 1].
    """

    prob_pred: Float[np.ndarray, " num_bins"]
    prob_true: Float[np.ndarray, " num_bins"]
    counts: Int[np.ndarray, " num_bins"]
    edges: Float[np.ndarray, " num_bins_plus_1"]


def auc(y_true: Int[ArrayLike, " n"], scores: Float[ArrayLike, "... n"]) -> Array:
    """Area under the ROC curve of ``scores`` against binary labels, for every
    leading index of ``scores`` at once (one AUC per posterior draw).

    Computed from ranks (the Mann–Whitney U statistic): with ``R_i`` the rank
    of positive ``i`` among all ``n`` scores (ties get their average rank),
    ``AUC = mean_i(R_i - (n_pos + 1) / 2) / n_neg``, which counts a tie
    between a positive and a negative as half a correct pair, as
    `sklearn.metrics.roc_auc_score` does.

    Args:
        y_true: labels in {0, 1}, shape ``(n,)``, both classes present.
        scores: scores or probabilities, shape ``(..., n)``.

    Returns:
        The AUCs, shape ``scores.shape[:-1]`` (a scalar for 1-D scores).

    Used in chapter 6.

    Example:
        >>> y = jnp.array([0, 0, 1, 1])
        >>> scores = jnp.array([[0.1, 0.4, 0.35, 0.8], [0.1, 0.2, 0.3, 0.4]])
        >>> auc(y, scores).tolist()
        [0.75, 1.0]
    """
    y, s = _check(y_true, scores, need_both_classes=True)
    positive = y == 1
    num_pos = positive.sum()
    num_neg = y.shape[0] - num_pos
    ranks = rankdata(s, axis=-1)
    centred = jnp.where(positive, ranks - (num_pos + 1) / 2, 0.0)
    return centred.sum(axis=-1) / (num_pos * num_neg)


def brier_score(
    y_true: Int[ArrayLike, " n"], probs: Float[ArrayLike, "... n"]
) -> Array:
    """Brier score ``mean_i (p_i - y_i)²`` (lower is better) for every leading
    index of ``probs``; as `sklearn.metrics.brier_score_loss`.

    Used in chapter 6.

    Example:
        >>> round(float(brier_score(jnp.array([0, 1]), jnp.array([0.2, 0.6]))), 6)
        0.1
    """
    y, p = _check(y_true, probs, probabilities=True)
    return jnp.mean((p - y) ** 2, axis=-1)


def log_loss(y_true: Int[ArrayLike, " n"], probs: Float[ArrayLike, "... n"]) -> Array:
    """Mean negative log-likelihood of binary labels under ``probs``,
    ``-mean_i [y_i log p_i + (1 - y_i) log(1 - p_i)]`` (lower is better), for
    every leading index of ``probs``; probabilities are clipped to
    ``[eps, 1 - eps]`` with ``eps`` the float32 machine epsilon, as
    `sklearn.metrics.log_loss` does for float32 input.

    Used in chapter 6.

    Example:
        >>> round(float(log_loss(jnp.array([0, 1]), jnp.array([0.5, 0.5]))), 4)
        0.6931
    """
    y, p = _check(y_true, probs, probabilities=True)
    eps = jnp.finfo(jnp.float32).eps
    p = jnp.clip(p, eps, 1 - eps)
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p), axis=-1)


def reliability_bins(
    y_true: Int[ArrayLike, " n"], probs: Float[ArrayLike, " n"], num_bins: int = 10
) -> ReliabilityBins:
    """Bin predicted probabilities into ``num_bins`` equal-width bins over
    [0, 1] and return, per bin, the mean prediction, the share of positives
    and the count: the points of a reliability diagram. A calibrated
    classifier has ``prob_true ≈ prob_pred`` in every bin [@guo2017calibration].
    Returns NumPy arrays (float64), ready to plot.

    The bins are those of `sklearn.calibration.calibration_curve` with
    ``strategy="uniform"`` (a probability on an inner edge falls in the lower
    bin); scikit-learn drops empty bins, here they stay, with NaN means and
    count 0.

    Used in chapter 6.

    Example:
        >>> bins = reliability_bins(
        ...     jnp.array([0, 1, 1, 1]), jnp.array([0.1, 0.15, 0.9, 0.95]), num_bins=2
        ... )
        >>> bins.prob_true.tolist(), bins.counts.tolist()
        ([0.5, 1.0], [2, 2])
    """
    if not isinstance(num_bins, int | np.integer) or isinstance(num_bins, bool):
        raise ValueError(f"num_bins must be an int >= 1, got {num_bins!r}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be an int >= 1, got {num_bins!r}")
    y, p = _check(y_true, probs, probabilities=True)
    if p.ndim != 1:
        raise ValueError(f"probs must be 1-D (n,), got shape {p.shape}")
    # binned on the host in float64, exactly as scikit-learn bins
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bin_ids = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(bin_ids, minlength=num_bins)
    sum_pred = np.bincount(bin_ids, weights=p, minlength=num_bins)
    sum_true = np.bincount(bin_ids, weights=y, minlength=num_bins)
    filled = counts > 0
    prob_pred = np.full(num_bins, np.nan)
    prob_true = np.full(num_bins, np.nan)
    prob_pred[filled] = sum_pred[filled] / counts[filled]
    prob_true[filled] = sum_true[filled] / counts[filled]
    return ReliabilityBins(prob_pred, prob_true, counts, edges)


def expected_calibration_error(
    y_true: Int[ArrayLike, " n"], probs: Float[ArrayLike, " n"], num_bins: int = 10
) -> float:
    """Expected calibration error: the count-weighted mean gap
    ``|prob_true - prob_pred|`` over the bins of :func:`reliability_bins`
    [@guo2017calibration]. 0 for a perfectly calibrated classifier.

    Used in chapter 6.

    Example:
        >>> expected_calibration_error(jnp.array([0, 1]), jnp.array([0.0, 1.0]))
        0.0
    """
    bins = reliability_bins(y_true, probs, num_bins)
    filled = bins.counts > 0
    gaps = np.abs(bins.prob_true[filled] - bins.prob_pred[filled])
    return float(np.sum(bins.counts[filled] * gaps) / np.sum(bins.counts))


def _check(
    y_true: Any,
    scores: Any,
    *,
    probabilities: bool = False,
    need_both_classes: bool = False,
) -> tuple[Float[Array, " n"], Float[Array, "... n"]]:
    """Validate labels and scores on the host, before any tracing."""
    y = np.asarray(y_true)
    if y.ndim != 1 or y.shape[0] < 1:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"y_true must hold labels in {{0, 1}}, got values {bad}")
    if need_both_classes and np.unique(y).size < 2:
        raise ValueError("y_true must hold both classes 0 and 1 for an AUC")
    s = jnp.asarray(scores)
    if s.ndim < 1 or s.shape[-1] != y.shape[0]:
        raise ValueError(
            f"scores/probs must have shape (..., {y.shape[0]}) to match y_true, "
            f"got {s.shape}"
        )
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.float32)
    if probabilities and not bool(jnp.all((s >= 0) & (s <= 1))):
        raise ValueError("probs must lie in [0, 1]")
    return jnp.asarray(y, dtype=s.dtype), s
