"""Classification metrics for posterior draws: AUC, log loss,
reliability-diagram bins with intervals, and a calibration check.

A Bayesian classifier gives one vector of probabilities per posterior draw,
so a metric is a *distribution* over draws. Every function here accepts
scores with any leading (draw) axes, ``(..., n)``, and returns one value per
draw, computed in one vectorised call instead of a Python loop over
``sklearn.metrics``; the tests check each against scikit-learn.

Calibration is judged per bin of predicted probability, and a bin holds a
share of positives estimated from its points: :func:`reliability_curve`
gives each bin a Wilson interval, and :func:`calibration_check` asks how
far a *calibrated* model's reliability curve and expected calibration error
would stray on the same inputs (labels resampled from the predictions),
with a bootstrap interval for the observed error.

Used in chapter 6 (introduced), and in chapters 7 and 9.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import rankdata
from jaxtyping import Array, ArrayLike, Float, Int

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key

__all__ = [
    "CalibrationCheck",
    "ReliabilityBins",
    "ReliabilityCurve",
    "auc",
    "calibration_check",
    "expected_calibration_error",
    "log_loss",
    "reliability_bins",
    "reliability_curve",
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


class ReliabilityCurve(NamedTuple):
    """The bins of a reliability diagram with an interval for each bin's
    share of positives (see :func:`reliability_curve`). Used in chapter 6.

    Attributes:
        prob_pred: mean predicted probability in each bin (NaN when empty).
        prob_true: share of positive labels in each bin (NaN when empty).
        counts: number of predictions in each bin.
        edges: the ``num_bins + 1`` bin edges, evenly spaced over [0, 1].
        lower: lower end of the Wilson interval of ``prob_true`` (NaN when
            empty).
        upper: upper end of the Wilson interval of ``prob_true`` (NaN when
            empty).
        level: the intervals' nominal coverage, e.g. 0.95.
    """

    prob_pred: Float[np.ndarray, " num_bins"]
    prob_true: Float[np.ndarray, " num_bins"]
    counts: Int[np.ndarray, " num_bins"]
    edges: Float[np.ndarray, " num_bins_plus_1"]
    lower: Float[np.ndarray, " num_bins"]
    upper: Float[np.ndarray, " num_bins"]
    level: float


class CalibrationCheck(NamedTuple):
    """How far a classifier's calibration is from what sampling noise alone
    would give (see :func:`calibration_check`). Used in chapter 6.

    Attributes:
        ece: the observed expected calibration error.
        ece_low: lower end of the bootstrap percentile interval of the ECE
            (test points resampled with replacement).
        ece_high: upper end of that interval.
        ece_null: the ECE of each of ``num_resamples`` label sets drawn from
            the predictions themselves, ``y* ~ Bernoulli(p)``: what a
            perfectly calibrated model would show on the same inputs.
        p_value: ``(1 + #{ece_null >= ece}) / (1 + num_resamples)``, the
            Monte Carlo p-value of the hypothesis "calibrated".
        band_lower: per bin, the lower ``(1 - level) / 2`` quantile of the
            share of positives under ``y* ~ Bernoulli(p)`` (NaN when empty):
            the consistency band of the reliability diagram.
        band_upper: per bin, the upper ``(1 + level) / 2`` quantile.
        level: the nominal coverage of the interval and band.
    """

    ece: float
    ece_low: float
    ece_high: float
    ece_null: Float[np.ndarray, " num_resamples"]
    p_value: float
    band_lower: Float[np.ndarray, " num_bins"]
    band_upper: Float[np.ndarray, " num_bins"]
    level: float


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

    Used in chapters 6, 7, 9 and 10.

    Example:
        >>> y = jnp.array([0, 0, 1, 1])
        >>> scores = jnp.array([[0.1, 0.4, 0.35, 0.8], [0.1, 0.2, 0.3, 0.4]])
        >>> auc(y, scores).tolist()
        [0.75, 1.0]
    """
    y, s = _check(y_true, scores, need_both_classes=True)
    positive = y == 1
    # counts as floats: num_pos * num_neg overflows int32 beyond ~92,000 points
    num_pos = positive.sum(dtype=s.dtype)
    num_neg = y.shape[0] - num_pos
    ranks = rankdata(s, axis=-1)
    centred = jnp.where(positive, ranks - (num_pos + 1) / 2, 0.0)
    return centred.sum(axis=-1) / (num_pos * num_neg)


def log_loss(y_true: Int[ArrayLike, " n"], probs: Float[ArrayLike, "... n"]) -> Array:
    """Mean negative log-likelihood of binary labels under ``probs``,
    ``-mean_i [y_i log p_i + (1 - y_i) log(1 - p_i)]`` (lower is better), for
    every leading index of ``probs``; probabilities are clipped to
    ``[eps, 1 - eps]`` with ``eps`` the float32 machine epsilon, as
    `sklearn.metrics.log_loss` does for float32 input.

    Used in chapters 7, 9 and 10. Chapter 6 scores single vectors of
    probabilities with `sklearn.metrics.log_loss` itself.

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
    y, p, edges, bin_ids = _binned(y_true, probs, num_bins)
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
    [@guo2017calibration], computed as ``sum_b |sum_true_b - sum_pred_b| / n``
    (the same number). 0 for a perfectly calibrated classifier.

    Used in chapter 6 (through :func:`calibration_check`).

    Example:
        >>> expected_calibration_error(jnp.array([0, 1]), jnp.array([0.0, 1.0]))
        0.0
    """
    y, p, _, bin_ids = _binned(y_true, probs, num_bins)
    return float(
        _ece_from_sums(
            np.bincount(bin_ids, minlength=num_bins),
            np.bincount(bin_ids, weights=p, minlength=num_bins),
            np.bincount(bin_ids, weights=y, minlength=num_bins),
        )
    )


def reliability_curve(
    y_true: Int[ArrayLike, " n"],
    probs: Float[ArrayLike, " n"],
    num_bins: int = 10,
    *,
    level: float = 0.95,
) -> ReliabilityCurve:
    """The bins of :func:`reliability_bins` with a Wilson score interval for
    each bin's share of positives at coverage ``level``.

    A bin's share of positives is estimated from the ``n_b`` points that
    fall in it; with ``k`` positives among them and ``z`` the standard normal
    quantile at ``(1 + level) / 2``, the Wilson interval is the set of
    shares ``q`` with ``(k / n_b - q)² <= z² q (1 - q) / n_b``:

        centre ± z / (n_b + z²) · sqrt(k (n_b - k) / n_b + z² / 4),
        centre = (k + z² / 2) / (n_b + z²).

    Unlike the normal ("Wald") interval it stays inside [0, 1] and does not
    collapse to a point when ``k = 0`` or ``k = n_b``, which matters for the
    nearly pure bins near 0 and 1 and for bins with a handful of points.
    It describes the uncertainty of the *observed* share; compare it with
    the bin's mean prediction, or use :func:`calibration_check` for what a
    calibrated model would show.

    Args:
        y_true: labels in {0, 1}, shape ``(n,)``.
        probs: predicted probabilities of class 1, shape ``(n,)``.
        num_bins: the number of equal-width bins over [0, 1].
        level: the intervals' coverage, in (0, 1).

    Returns:
        A :class:`ReliabilityCurve` of NumPy (float64) arrays.

    Used in chapter 6.

    Example:
        >>> curve = reliability_curve(
        ...     jnp.array([0, 1, 1, 1]), jnp.array([0.1, 0.15, 0.9, 0.95]), num_bins=2
        ... )
        >>> curve.counts.tolist(), curve.prob_true.tolist()
        ([2, 2], [0.5, 1.0])
        >>> [round(v, 3) for v in curve.lower.tolist()], curve.upper.tolist()[1]
        ([0.095, 0.342], 1.0)
    """
    z = _normal_quantile(level)
    bins = reliability_bins(y_true, probs, num_bins)
    n = bins.counts.astype(np.float64)
    filled = n > 0
    k = np.where(filled, bins.prob_true * n, 0.0)
    k = np.round(k)  # an integer count, rounded back from the share
    lower = np.full(num_bins, np.nan)
    upper = np.full(num_bins, np.nan)
    nf, kf = n[filled], k[filled]
    centre = (kf + z**2 / 2) / (nf + z**2)
    half = z / (nf + z**2) * np.sqrt(kf * (nf - kf) / nf + z**2 / 4)
    # exact ends where the share is 0 or 1 (rounding may leave ±1e-17 there)
    lower[filled] = np.where(kf == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    upper[filled] = np.where(kf == nf, 1.0, np.clip(centre + half, 0.0, 1.0))
    return ReliabilityCurve(*bins, lower=lower, upper=upper, level=float(level))


def calibration_check(
    rng_key: jax.Array,
    y_true: Int[ArrayLike, " n"],
    probs: Float[ArrayLike, " n"],
    num_bins: int = 10,
    *,
    num_resamples: int = 200,
    level: float = 0.95,
) -> CalibrationCheck:
    """Test calibration against sampling noise: the expected calibration
    error (ECE, :func:`expected_calibration_error`) with a bootstrap
    interval, and what a calibrated model would show on the same inputs.

    Two resamplings, ``num_resamples`` each, with independent halves of
    ``rng_key``:

    - *Consistency* [the reliability diagram's "consistency bars"]: keep the
      predictions ``p`` and draw new labels ``y* ~ Bernoulli(p)``; by
      construction ``p`` is calibrated for ``y*``. Per bin, the quantiles
      of the resampled share of positives give a band that a calibrated
      model's reliability curve stays inside with probability ``level``,
      and the resampled ECEs give the ECE's distribution under
      calibration: its noise floor on ``n`` points (never 0: the share of a
      finite bin scatters around its mean prediction). The p-value is the
      share of resampled ECEs at least as large as the observed one.
    - *Bootstrap*: resample the ``(y, p)`` pairs with replacement and
      recompute the ECE; its ``(1 ± level) / 2`` quantiles give the
      interval. The ECE is biased upwards by about the noise floor, so read
      the interval next to ``ece_null``.

    The bins are those of :func:`reliability_bins`. Runs in JAX, one
    resample at a time (``jax.lax.map``), so memory stays at a few copies
    of the inputs; bit-for-bit reproducible for a given key.

    Args:
        rng_key: a JAX PRNG key.
        y_true: labels in {0, 1}, shape ``(n,)``.
        probs: predicted probabilities of class 1, shape ``(n,)``.
        num_bins: the number of equal-width bins over [0, 1].
        num_resamples: resamples for each of the two procedures, >= 1.
        level: coverage of the band and interval, in (0, 1).

    Returns:
        A :class:`CalibrationCheck`.

    Used in chapter 6.

    Example:
        >>> p = jax.random.uniform(jax.random.key(0), (5_000,))
        >>> y = jax.random.bernoulli(jax.random.key(1), p).astype(jnp.int32)
        >>> check = calibration_check(jax.random.key(2), y, p, num_resamples=50)
        >>> (
        ...     bool(check.p_value > 0.05),
        ...     bool(check.ece_low <= check.ece <= check.ece_high),
        ... )
        (True, True)
    """
    _check_key(rng_key)
    _check_count("num_resamples", num_resamples)
    _normal_quantile(level)  # checks level
    ece = expected_calibration_error(y_true, probs, num_bins)
    y, p, _, bin_ids = _binned(y_true, probs, num_bins)
    key_null, key_boot = jax.random.split(rng_key)
    shares, ece_null, ece_boot = _resample(
        key_null,
        key_boot,
        jnp.asarray(y, dtype=jnp.float32),
        jnp.asarray(p, dtype=jnp.float32),
        jnp.asarray(bin_ids, dtype=jnp.int32),
        num_bins=int(num_bins),
        num_resamples=int(num_resamples),
    )
    tails = [(1 - level) / 2, (1 + level) / 2]
    counts = np.bincount(bin_ids, minlength=num_bins)
    shares = np.asarray(shares, dtype=np.float64)
    band = np.full((2, num_bins), np.nan)
    band[:, counts > 0] = np.quantile(shares[:, counts > 0], tails, axis=0)
    ece_null = np.asarray(ece_null, dtype=np.float64)
    ece_low, ece_high = np.quantile(np.asarray(ece_boot, dtype=np.float64), tails)
    p_value = (1 + np.sum(ece_null >= ece)) / (1 + num_resamples)
    return CalibrationCheck(
        ece=float(ece),
        ece_low=float(ece_low),
        ece_high=float(ece_high),
        ece_null=ece_null,
        p_value=float(p_value),
        band_lower=band[0],
        band_upper=band[1],
        level=float(level),
    )


def _ece_from_sums(counts, sum_pred, sum_true):
    """ECE from per-bin counts and sums (NumPy or JAX arrays, any leading
    axes): ``sum_b |sum_true_b - sum_pred_b| / n``, which equals
    ``sum_b (n_b / n) |prob_true_b - prob_pred_b|``."""
    xp = jnp if isinstance(counts, jax.Array) else np
    return xp.sum(xp.abs(sum_true - sum_pred), axis=-1) / xp.sum(counts, axis=-1)


@functools.partial(jax.jit, static_argnames=("num_bins", "num_resamples"))
def _resample(key_null, key_boot, y, p, bin_ids, *, num_bins, num_resamples):
    """Per resample: the shares of positives per bin and the ECE under
    ``y* ~ Bernoulli(p)``, and the ECE of a bootstrap resample of ``(y, p)``."""
    n = p.shape[0]
    counts = jax.ops.segment_sum(jnp.ones_like(p), bin_ids, num_bins)
    sum_pred = jax.ops.segment_sum(p, bin_ids, num_bins)

    def one(keys):
        k_null, k_boot = keys
        y_star = jax.random.bernoulli(k_null, p).astype(p.dtype)
        sum_star = jax.ops.segment_sum(y_star, bin_ids, num_bins)
        share = sum_star / jnp.where(counts > 0, counts, 1.0)
        ece_null = _ece_from_sums(counts, sum_pred, sum_star)
        idx = jax.random.randint(k_boot, (n,), 0, n)
        b = bin_ids[idx]
        ece_boot = _ece_from_sums(
            jax.ops.segment_sum(jnp.ones_like(p), b, num_bins),
            jax.ops.segment_sum(p[idx], b, num_bins),
            jax.ops.segment_sum(y[idx], b, num_bins),
        )
        return share, ece_null, ece_boot

    keys = (
        jax.random.split(key_null, num_resamples),
        jax.random.split(key_boot, num_resamples),
    )
    return jax.lax.map(one, keys)


def _normal_quantile(level: Any) -> float:
    """The standard normal quantile at ``(1 + level) / 2``; checks ``level``."""
    if (
        not isinstance(level, float | int | np.floating)
        or isinstance(level, bool)
        or not math.isfinite(level)
        or not 0 < level < 1
    ):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return NormalDist().inv_cdf((1 + float(level)) / 2)


def _binned(
    y_true: Any, probs: Any, num_bins: Any
) -> tuple[
    Float[np.ndarray, " n"],
    Float[np.ndarray, " n"],
    Float[np.ndarray, " num_bins_plus_1"],
    Int[np.ndarray, " n"],
]:
    """Check the inputs and assign each prediction to its bin, on the host in
    float64, exactly as `sklearn.calibration.calibration_curve` bins."""
    _check_count("num_bins", num_bins)
    y, p = _check(y_true, probs, probabilities=True)
    if p.ndim != 1:
        raise ValueError(f"probs must be 1-D (n,), got shape {p.shape}")
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    return y, p, edges, np.searchsorted(edges[1:-1], p)


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
