"""A hierarchical regression at scale, with an exact posterior at any size.

The setting stochastic VI was made for: many rows, and latent variables
local to groups of them. Think of the demand of ``num_groups`` stores: row
``i`` is one day of store ``g_i`` with features ``x_i`` (price, promotion,
season...) and demand ``y_i``,

    y_i = x_i . beta + a_{g_i} + eps_i,   eps_i ~ N(0, noise_scale^2),
    beta ~ N(0, coef_scale^2 I),   a_g ~ N(0, group_scale^2),

global coefficients ``beta`` shared by all stores and a level ``a_g`` per
store, pooled towards zero by its prior. With the three scales known the
model is linear-Gaussian, so its posterior is Gaussian with precision
``prior precision + Z^T Z / noise_scale^2`` (``Z`` the design matrix of
``[beta, a]``) and a mean that one pass over the rows gives from sufficient
statistics (:func:`sufficient_statistics`, :func:`exact_posterior`), at
``10^7`` rows as at ``10^3``. The best mean-field Gaussian (what
``AutoNormal`` aims at) has the exact means and scales
``1 / sqrt(diag(precision))`` (:func:`mean_field_optimum`), so a streamed
SVI fit can be graded exactly, parameter by parameter.

:func:`model` takes ``group_scale=None`` to learn the pooling scale too
(a half-normal prior), the realistic variant, which has no closed form.

Used in chapter 8 (a hierarchical model at scale).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float, Int

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._checks import check_positive as _check_positive
from companion.streaming import batch_plate

__all__ = [
    "Data",
    "Grade",
    "Posterior",
    "SufficientStatistics",
    "exact_posterior",
    "grade",
    "mean_field_optimum",
    "model",
    "simulate",
    "sufficient_statistics",
]


class Data(NamedTuple):
    """Host arrays of :func:`simulate` (row ``i`` of each belongs together),
    and the parameters that generated them. Used in chapter 8."""

    x: Float[np.ndarray, "num_rows num_features"]
    group: Int[np.ndarray, " num_rows"]
    y: Float[np.ndarray, " num_rows"]
    coef: Float[np.ndarray, " num_features"]
    group_effect: Float[np.ndarray, " num_groups"]


def simulate(
    rng_key: jax.Array,
    num_rows: int,
    num_groups: int,
    num_features: int = 3,
    *,
    noise_scale: float = 1.0,
    coef_scale: float = 1.0,
    group_scale: float = 0.5,
    chunk_rows: int = 1_000_000,
    out: str | None = None,
) -> Data:
    """Simulate ``num_rows`` rows of the model, on the host, in chunks.

    Coefficients and group levels are drawn from their priors; groups are
    assigned with Zipf-like frequencies (a few large stores, many small
    ones), so that some groups have plenty of rows and some very few;
    features are standard normal, float32. NumPy's PCG64 seeded from
    ``rng_key`` makes the data reproducible; memory is the data's own
    (~20 bytes a row with three features), or none with ``out``: a path
    prefix under which the arrays are written as ``np.memmap`` files
    (``out + ".x.f32"`` and so on) and returned as memmaps.

    Used in chapters 8 and 9.
    """
    _check_key(rng_key)
    for name, value in [
        ("num_rows", num_rows),
        ("num_groups", num_groups),
        ("num_features", num_features),
        ("chunk_rows", chunk_rows),
    ]:
        _check_count(name, value)
    for name, value in [
        ("noise_scale", noise_scale),
        ("coef_scale", coef_scale),
        ("group_scale", group_scale),
    ]:
        _check_positive(name, value)
    seed = np.asarray(jax.random.key_data(rng_key)).astype(np.uint64)
    rng = np.random.default_rng(seed)
    coef = (coef_scale * rng.standard_normal(num_features)).astype(np.float32)
    effect = (group_scale * rng.standard_normal(num_groups)).astype(np.float32)
    weights = 1.0 / np.arange(1, num_groups + 1) ** 0.8
    weights = rng.permutation(weights / weights.sum())
    shapes = {"x": (num_rows, num_features), "group": (num_rows,), "y": (num_rows,)}
    dtypes = {"x": np.float32, "group": np.int32, "y": np.float32}
    if out is None:
        arrays = {k: np.empty(shapes[k], dtypes[k]) for k in shapes}
    else:
        suffix = {"x": ".x.f32", "group": ".group.i32", "y": ".y.f32"}
        arrays = {
            k: np.lib.format.open_memmap(
                f"{out}{suffix[k]}.npy", mode="w+", dtype=dtypes[k], shape=shapes[k]
            )
            for k in shapes
        }
    for start in range(0, num_rows, chunk_rows):
        stop = min(start + chunk_rows, num_rows)
        rows = stop - start
        x = rng.standard_normal((rows, num_features), dtype=np.float32)
        group = rng.choice(num_groups, size=rows, p=weights).astype(np.int32)
        noise = noise_scale * rng.standard_normal(rows, dtype=np.float32)
        arrays["x"][start:stop] = x
        arrays["group"][start:stop] = group
        arrays["y"][start:stop] = x @ coef + effect[group] + noise
    if out is not None:
        for a in arrays.values():
            a.flush()
    return Data(arrays["x"], arrays["group"], arrays["y"], coef, effect)


def model(
    x: Float[Array, "batch num_features"],
    group: Int[Array, " batch"],
    y: Float[Array, " batch"] | None = None,
    *,
    num_data: int,
    num_groups: int,
    noise_scale: float = 1.0,
    coef_scale: float = 1.0,
    group_scale: float | None = 0.5,
) -> None:
    """The hierarchical regression, on one mini-batch of rows out of
    ``num_data`` (see the module docstring). Latent sites: ``coef``
    (``num_features``), ``group_effect`` (``num_groups``, in the plate
    ``groups``), and with ``group_scale=None`` also ``group_scale``
    (half-normal(1) prior); observed site ``y`` in
    :func:`companion.streaming.batch_plate` ``"data"``.

    The arguments match :func:`companion.streaming.fit`: pass the host arrays
    ``(x, group, y)`` and the other arguments by keyword.

    Used in chapters 8 and 9.
    """
    num_features = x.shape[-1]
    coef = numpyro.sample(
        "coef", dist.Normal(0.0, coef_scale).expand([num_features]).to_event(1)
    )
    if group_scale is None:
        group_scale = numpyro.sample("group_scale", dist.HalfNormal(1.0))
    with numpyro.plate("groups", num_groups):
        effect = numpyro.sample("group_effect", dist.Normal(0.0, group_scale))
    with batch_plate("data", num_data, x.shape[0]):
        mean = x @ coef + effect[group]
        numpyro.sample("y", dist.Normal(mean, noise_scale), obs=y)


class SufficientStatistics(NamedTuple):
    """What the exact posterior needs from the data, gathered in one pass:
    ``xtx`` = X^T X, ``xty`` = X^T y, and per group the row count, the sum
    of the features and the sum of y. Used in chapter 8."""

    xtx: Float[np.ndarray, "num_features num_features"]
    xty: Float[np.ndarray, " num_features"]
    count: Float[np.ndarray, " num_groups"]
    x_sum: Float[np.ndarray, "num_groups num_features"]
    y_sum: Float[np.ndarray, " num_groups"]


def sufficient_statistics(
    x: Float[np.ndarray, "num_rows num_features"],
    group: Int[np.ndarray, " num_rows"],
    y: Float[np.ndarray, " num_rows"],
    num_groups: int,
    *,
    chunk_rows: int = 1_000_000,
) -> SufficientStatistics:
    """One pass over the rows (host arrays or memmaps, ``chunk_rows`` at a
    time, accumulated in float64). Used in chapter 8."""
    _check_count("num_groups", num_groups)
    _check_count("chunk_rows", chunk_rows)
    x, group, y = _check_rows(x, group, y, num_groups)
    d = x.shape[1]
    xtx, xty = np.zeros((d, d)), np.zeros(d)
    count, y_sum = np.zeros(num_groups), np.zeros(num_groups)
    x_sum = np.zeros((num_groups, d))
    for start in range(0, x.shape[0], chunk_rows):
        xs = np.asarray(x[start : start + chunk_rows], np.float64)
        gs = np.asarray(group[start : start + chunk_rows])
        ys = np.asarray(y[start : start + chunk_rows], np.float64)
        xtx += xs.T @ xs
        xty += xs.T @ ys
        count += np.bincount(gs, minlength=num_groups)
        y_sum += np.bincount(gs, weights=ys, minlength=num_groups)
        for j in range(d):
            x_sum[:, j] += np.bincount(gs, weights=xs[:, j], minlength=num_groups)
    return SufficientStatistics(xtx, xty, count, x_sum, y_sum)


class Posterior(NamedTuple):
    """A Gaussian over ``coef`` and ``group_effect``: means, marginal standard
    deviations, and the diagonal of the precision. Used in chapter 8."""

    coef_mean: Float[np.ndarray, " num_features"]
    coef_sd: Float[np.ndarray, " num_features"]
    group_mean: Float[np.ndarray, " num_groups"]
    group_sd: Float[np.ndarray, " num_groups"]
    coef_precision: Float[np.ndarray, " num_features"]
    group_precision: Float[np.ndarray, " num_groups"]


def exact_posterior(
    stats: SufficientStatistics,
    *,
    noise_scale: float = 1.0,
    coef_scale: float = 1.0,
    group_scale: float = 0.5,
) -> Posterior:
    """The exact posterior of :func:`model` with known scales, from
    :func:`sufficient_statistics`, in float64.

    The precision of ``[coef, group_effect]`` is the block matrix
    ``[[A, B], [B^T, D]]`` with ``A = I / coef_scale^2 + X^T X / s^2``,
    ``B[:, g] = x_sum[g] / s^2`` and ``D`` diagonal, ``1 / group_scale^2 +
    count / s^2`` (``s`` the noise scale). Eliminating the groups through the
    Schur complement ``S = A - B D^{-1} B^T`` costs ``O(num_groups *
    num_features^2)``, so thousands of groups are cheap. Used in chapter 8.
    """
    if not isinstance(stats, SufficientStatistics):
        raise TypeError(
            "stats must be the SufficientStatistics of sufficient_statistics, "
            f"got {type(stats).__name__}"
        )
    for name, value in [
        ("noise_scale", noise_scale),
        ("coef_scale", coef_scale),
        ("group_scale", group_scale),
    ]:
        _check_positive(name, value)
    s2 = noise_scale**2
    d = stats.xtx.shape[0]
    a = np.eye(d) / coef_scale**2 + stats.xtx / s2
    b = stats.x_sum.T / s2  # (d, G)
    dg = 1.0 / group_scale**2 + stats.count / s2  # (G,)
    rhs_coef, rhs_group = stats.xty / s2, stats.y_sum / s2
    schur = a - (b / dg) @ b.T
    schur_inv = np.linalg.inv(schur)
    coef_mean = schur_inv @ (rhs_coef - b @ (rhs_group / dg))
    group_mean = (rhs_group - b.T @ coef_mean) / dg
    bd = b / dg  # (d, G): B D^{-1}
    group_var = 1.0 / dg + np.einsum("ig,ij,jg->g", bd, schur_inv, bd)
    return Posterior(
        coef_mean=coef_mean,
        coef_sd=np.sqrt(np.diag(schur_inv)),
        group_mean=group_mean,
        group_sd=np.sqrt(group_var),
        coef_precision=np.diag(a).copy(),
        group_precision=dg,
    )


def mean_field_optimum(posterior: Posterior) -> dict[str, np.ndarray]:
    """The best fully factorised Gaussian approximation to the exact
    posterior (minimum KL(q || p)): the exact means and standard deviations
    ``1 / sqrt(diag(precision))``, smaller than the marginal ones where the
    parameters are correlated. Keys as `AutoNormal`'s ``params``
    (``coef_auto_loc``, ``coef_auto_scale``, ``group_effect_auto_loc``,
    ``group_effect_auto_scale``). Used in chapter 8."""
    if not isinstance(posterior, Posterior):
        raise TypeError(
            f"posterior must be a Posterior (exact_posterior), got {posterior!r}"
        )
    return {
        "coef_auto_loc": posterior.coef_mean,
        "coef_auto_scale": 1.0 / np.sqrt(posterior.coef_precision),
        "group_effect_auto_loc": posterior.group_mean,
        "group_effect_auto_scale": 1.0 / np.sqrt(posterior.group_precision),
    }


class Grade(NamedTuple):
    """How far a fitted mean-field Gaussian is from the best one
    (:func:`grade`). Used in chapter 8.

    Attributes:
        coef_error: each coefficient's location error, in exact posterior
            standard deviations.
        coef_ratio: each coefficient's scale over the best mean-field scale.
        group_error: each group level's location error, in posterior sds.
        group_ratio: each group level's scale over the best mean-field scale.
        excess_kl: ``KL(q || p) - KL(q* || p)`` in nats, with ``q*`` the best
            mean-field Gaussian: zero only at ``q*``; a location ``k``
            posterior sds off costs about ``k^2 / 2``.
    """

    coef_error: Float[np.ndarray, " num_features"]
    coef_ratio: Float[np.ndarray, " num_features"]
    group_error: Float[np.ndarray, " num_groups"]
    group_ratio: Float[np.ndarray, " num_groups"]
    excess_kl: float


def grade(
    params: dict[str, Any],
    stats: SufficientStatistics,
    posterior: Posterior,
    *,
    noise_scale: float = 1.0,
    coef_scale: float = 1.0,
) -> Grade:
    """Grade a fitted ``AutoNormal`` (its ``params``: ``coef_auto_loc``,
    ``coef_auto_scale``, ``group_effect_auto_loc``,
    ``group_effect_auto_scale``) against the exact answer: errors per
    parameter, and the excess KL over the best mean-field Gaussian, exact for
    this Gaussian posterior,

        KL(q || p) - KL(q* || p) = 1/2 [sum_j (t_j - 1 - log t_j) + d^T L d],

    with ``t_j = L_jj s_j^2`` (``s`` the fitted scales), ``d`` the location
    errors and ``L`` the posterior precision, used through its blocks.
    ``posterior`` must be :func:`exact_posterior` of ``stats`` with the same
    ``noise_scale`` and ``coef_scale`` (its group scale is in it already).

    Used in chapter 8.
    """
    if not isinstance(stats, SufficientStatistics):
        raise TypeError(
            f"stats must be SufficientStatistics, got {type(stats).__name__}"
        )
    if not isinstance(posterior, Posterior):
        raise TypeError(
            f"posterior must be a Posterior, got {type(posterior).__name__}"
        )
    for name, value in [("noise_scale", noise_scale), ("coef_scale", coef_scale)]:
        _check_positive(name, value)
    keys = [
        "coef_auto_loc",
        "coef_auto_scale",
        "group_effect_auto_loc",
        "group_effect_auto_scale",
    ]
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"params must hold AutoNormal's {keys}; missing {missing}")
    optimum = mean_field_optimum(posterior)
    loc = {k: np.asarray(params[k], np.float64) for k in keys}
    delta_coef = loc["coef_auto_loc"] - optimum["coef_auto_loc"]
    delta_group = loc["group_effect_auto_loc"] - optimum["group_effect_auto_loc"]
    if delta_coef.shape != posterior.coef_mean.shape or (
        delta_group.shape != posterior.group_mean.shape
    ):
        raise ValueError(
            "params' shapes do not match the posterior: coef "
            f"{delta_coef.shape} vs {posterior.coef_mean.shape}, groups "
            f"{delta_group.shape} vs {posterior.group_mean.shape}"
        )
    coef_ratio = loc["coef_auto_scale"] / optimum["coef_auto_scale"]
    group_ratio = loc["group_effect_auto_scale"] / optimum["group_effect_auto_scale"]
    s2 = noise_scale**2
    a = np.eye(len(delta_coef)) / coef_scale**2 + stats.xtx / s2
    quadratic = (
        delta_coef @ a @ delta_coef
        + 2 * delta_coef @ (stats.x_sum.T / s2) @ delta_group
        + np.sum(posterior.group_precision * delta_group**2)
    )
    t = np.concatenate([coef_ratio, group_ratio]) ** 2
    return Grade(
        coef_error=delta_coef / posterior.coef_sd,
        coef_ratio=coef_ratio,
        group_error=delta_group / posterior.group_sd,
        group_ratio=group_ratio,
        excess_kl=float(0.5 * (np.sum(t - 1 - np.log(t)) + quadratic)),
    )


def _check_rows(x: Any, group: Any, y: Any, num_groups: int) -> tuple:
    for name, value in [("x", x), ("group", group), ("y", y)]:
        if not isinstance(value, np.ndarray | jax.Array):
            raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (num_rows, num_features), got {x.shape}")
    if group.shape != (x.shape[0],) or y.shape != (x.shape[0],):
        raise ValueError(
            f"group and y must have shape ({x.shape[0]},) like x's rows, got "
            f"{group.shape} and {y.shape}"
        )
    if not jnp.issubdtype(group.dtype, jnp.integer):
        raise TypeError(f"group must hold integers, got dtype {group.dtype}")
    if x.shape[0] and (int(group.min()) < 0 or int(group.max()) >= num_groups):
        raise ValueError(f"group must lie in [0, num_groups={num_groups})")
    return x, group, y
