"""The talk's toy example: recovering the concentration of a Gamma distribution.

Model: ``concentration ~ HalfNormal(1)``, ``z_i ~ Gamma(concentration, rate=1)``.
Guide: ``Normal(concentration_loc, concentration_scale)`` pushed through
``ExpTransform``, i.e. a log-normal approximation of the posterior of the
concentration. With a single parameter the exact posterior is a 1-D integral
away, so every claim about the approximation can be checked.

Used in chapter 3 (introduced) and chapter 7 (SVI vs MCMC).
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pandas as pd
from jaxtyping import Array, ArrayLike, Float
from numpyro.infer import SVI, Trace_ELBO
from scipy import stats
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from companion import training
from companion._checks import check_key as _check_key
from companion._checks import is_int as _is_int

with warnings.catch_warnings():
    # arviz 0.23 announces its 1.0 refactor at import; the book pins arviz < 1.0.
    warnings.filterwarnings("ignore", r"\s*ArviZ is undergoing", FutureWarning)
    import arviz as az

__all__ = [
    "PRIOR_SCALE",
    "approximation",
    "approximation_moments",
    "best_approximation",
    "default_grid",
    "exact_posterior",
    "fit",
    "guide",
    "log_importance_weights",
    "make_svi",
    "model",
    "pareto_k",
    "posterior_moments",
    "recovery_study",
    "simulate",
]


PRIOR_SCALE = 1.0
"""The scale of the talk's half-normal prior on the concentration."""


def model(
    z: Float[Array, " n"] | None = None,
    num_obs: int | None = None,
    prior_scale: float = PRIOR_SCALE,
) -> None:
    """The talk's model: ``concentration ~ HalfNormal(1)`` and
    ``z ~ Gamma(concentration, rate=1)``, observed.

    The observations sit in a ``plate`` (the talk's model leaves it implicit):
    the log-likelihood is the same, and the model can also *simulate* a data
    set of ``num_obs`` points when ``z`` is ``None`` (prior predictive checks,
    simulation-based calibration).

    ``prior_scale`` is the half-normal's scale (1 in the talk).

    Sites: ``concentration`` (latent), ``z`` (observed). Used in chapters 3 and 7.
    """
    concentration = numpyro.sample("concentration", dist.HalfNormal(scale=prior_scale))
    size = num_obs if z is None else z.shape[0]
    with numpyro.plate("data", 1 if size is None else size):
        numpyro.sample("z", dist.Gamma(concentration=concentration, rate=1.0), obs=z)


def guide(
    z: Float[Array, " n"] | None = None,
    num_obs: int | None = None,
    prior_scale: float = PRIOR_SCALE,
) -> None:
    """The talk's guide: ``Normal(concentration_loc, concentration_scale)``
    through ``ExpTransform``, params initialised at 0.5 and 0.1, the scale
    constrained positive. Used in chapters 3 and 7.
    """
    concentration_loc = numpyro.param("concentration_loc", init_value=0.5)
    concentration_scale = numpyro.param(
        "concentration_scale", init_value=0.1, constraint=dist.constraints.positive
    )
    base_distribution = dist.Normal(loc=concentration_loc, scale=concentration_scale)
    numpyro.sample(
        "concentration",
        dist.TransformedDistribution(base_distribution, dist.transforms.ExpTransform()),
    )


def simulate(
    rng_key: jax.Array, concentration: float, num_samples: int
) -> Float[Array, " num_samples"]:
    """Draw ``num_samples`` observations from ``Gamma(concentration, rate=1)``.

    Used in chapters 3 and 7.
    """
    _check_key(rng_key)
    if not _is_positive(concentration):
        raise ValueError(f"concentration must be a number > 0, got {concentration!r}")
    if not _is_int(num_samples) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return dist.Gamma(concentration, 1.0).sample(rng_key, (num_samples,))


def make_svi(num_particles: int = 10, learning_rate: float = 0.005) -> SVI:
    """The talk's SVI set-up: `Trace_ELBO(num_particles)` and
    `optax.adam(learning_rate)` on :func:`model` and :func:`guide`.

    The same settings give the same `SVI` object: it holds no state (that
    lives in `SVIState`), and sharing it lets :func:`companion.training.fit`
    reuse the steps it compiled.

    Used in chapters 3 and 7.
    """
    if not _is_int(num_particles) or num_particles < 1:
        raise ValueError(f"num_particles must be an int >= 1, got {num_particles!r}")
    if not _is_positive(learning_rate):
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
    return _cached_svi(int(num_particles), float(learning_rate))


@functools.cache
def _cached_svi(num_particles: int, learning_rate: float) -> SVI:
    return SVI(
        model,
        guide,
        optax.adam(learning_rate=learning_rate),
        loss=Trace_ELBO(num_particles=num_particles),
    )


def fit(
    rng_key: jax.Array,
    z: Float[ArrayLike, " n"],
    num_steps: int = 1_000,
    *,
    num_particles: int = 10,
    learning_rate: float = 0.005,
    progress_bar: bool = False,
    prior_scale: float = PRIOR_SCALE,
    svi: SVI | None = None,
) -> training.FitResult:
    """Fit the talk's guide to data ``z`` with SVI (the talk's settings by
    default: 10 particles, Adam at 0.005, 1,000 steps).

    Returns a :class:`companion.training.FitResult`: ``.params`` holds
    ``concentration_loc`` and ``concentration_scale``, ``.losses`` the
    negative ELBO of each step. Fits with the same settings share one `SVI`
    object, and with it the steps :func:`companion.training.fit` compiled;
    pass ``svi`` (from :func:`make_svi`) to use another. ``prior_scale`` is
    passed to :func:`model`.

    Used in chapter 3.
    """
    _check_key(rng_key)
    z = _check_observations(z)
    if not _is_int(num_steps) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if not _is_positive(prior_scale):
        raise ValueError(f"prior_scale must be a number > 0, got {prior_scale!r}")
    if svi is None:
        svi = make_svi(num_particles, learning_rate)
    chunk_size = _CHUNK if num_steps % _CHUNK == 0 else None
    return training.fit(
        svi,
        rng_key,
        num_steps,
        z=z,
        prior_scale=float(prior_scale),
        progress_bar=progress_bar,
        chunk_size=chunk_size,
    )


_CHUNK = 250  # divides the step counts chapter 3 uses: one compiled chunk


def default_grid(
    z: Float[ArrayLike, " n"],
    num_points: int = 4_001,
    prior_scale: float = PRIOR_SCALE,
) -> np.ndarray:
    """A grid of concentrations that holds the posterior's mass for data ``z``.

    Two passes: a coarse grid from near zero to well beyond the sample mean
    (the mean of ``Gamma(c, 1)`` is ``c``) finds where the posterior lives,
    then ``num_points`` points span that region with a margin, so narrow
    posteriors (many observations) get as fine a grid as wide ones.
    Used in chapters 3 and 7.
    """
    z = _check_observations(z)
    if not _is_int(num_points) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}")
    upper = 2.0 * float(np.mean(z)) + 5.0
    coarse = np.linspace(upper / 20_000, upper, 20_000)
    log_density = _log_joint(z.astype(np.float64), coarse, prior_scale)
    inside = np.flatnonzero(log_density > log_density.max() - 40.0)  # e^-40 ~ 4e-18
    lo, hi = coarse[max(inside[0] - 1, 0)], coarse[min(inside[-1] + 1, coarse.size - 1)]
    margin = 0.1 * (hi - lo)
    return np.linspace(max(lo - margin, coarse[0] / 10), hi + margin, num_points)


def exact_posterior(
    z: Float[ArrayLike, " n"],
    grid: Float[ArrayLike, " g"],
    prior_scale: float = PRIOR_SCALE,
) -> Float[np.ndarray, " g"]:
    """The exact posterior density of the concentration on ``grid``,
    normalised by the trapezoidal rule (in float64, with NumPy/SciPy).

    ``grid`` must be increasing, positive and finite, and should cover the
    posterior's mass (see :func:`default_grid`); a `RuntimeWarning` says when
    the density at either end is not negligible (mass cut off).
    Used in chapters 3 and 7.
    """
    z = _check_observations(z).astype(np.float64)
    grid = _check_grid(grid)
    if not _is_positive(prior_scale):
        raise ValueError(f"prior_scale must be a number > 0, got {prior_scale!r}")
    log_joint = _log_joint(z, grid, float(prior_scale))
    density = np.exp(log_joint - log_joint.max())
    if max(density[0], density[-1]) > 1e-8:
        warnings.warn(
            "the posterior density is not negligible at the end of grid: "
            "widen it (see default_grid)",
            RuntimeWarning,
            stacklevel=2,
        )
    return density / np.trapezoid(density, grid)


def posterior_moments(
    z: Float[ArrayLike, " n"],
    grid: Float[ArrayLike, " g"] | None = None,
    prior_scale: float = PRIOR_SCALE,
) -> tuple[float, float]:
    """Mean and standard deviation of the exact posterior, by quadrature on
    ``grid`` (default :func:`default_grid`). Used in chapters 3 and 7."""
    grid = (
        default_grid(z, prior_scale=prior_scale) if grid is None else _check_grid(grid)
    )
    density = exact_posterior(z, grid, prior_scale)
    mean = np.trapezoid(grid * density, grid)
    var = np.trapezoid((grid - mean) ** 2 * density, grid)
    return float(mean), float(np.sqrt(var))


def _log_joint(z: np.ndarray, grid: np.ndarray, prior_scale: float) -> np.ndarray:
    """log HalfNormal(c; prior_scale) + sum_i log Gamma(z_i; c, 1), on a grid."""
    log_prior = (
        np.log(2.0)
        - 0.5 * np.log(2.0 * np.pi)
        - np.log(prior_scale)
        - 0.5 * (grid / prior_scale) ** 2
    )
    log_lik = (grid - 1.0) * np.log(z).sum() - z.sum() - z.shape[0] * gammaln(grid)
    return log_prior + log_lik


def approximation(params: dict[str, ArrayLike]) -> dist.Distribution:
    """The fitted variational posterior of the concentration, a log-normal.
    Used in chapter 3."""
    loc, scale = _check_params(params)
    return dist.LogNormal(loc, scale)


def approximation_moments(params: dict[str, ArrayLike]) -> tuple[float, float]:
    """Mean and standard deviation of the log-normal approximation, in closed
    form: ``exp(μ + σ²/2)`` and ``mean · sqrt(exp(σ²) − 1)``. Used in chapters 3 and 7."""
    loc, scale = _check_params(params)
    mean = np.exp(loc + scale**2 / 2)
    return float(mean), float(mean * np.sqrt(np.expm1(scale**2)))


def best_approximation(
    z: Float[ArrayLike, " n"],
    prior_scale: float = PRIOR_SCALE,
    num_nodes: int = 64,
) -> dict[str, float]:
    """The member of the guide's log-normal family closest to the exact
    posterior, in the sense SVI optimises: the ``concentration_loc`` and
    ``concentration_scale`` that maximise the ELBO (minimise KL(q ‖ p)).

    The ELBO of ``LogNormal(μ, σ)`` is computed deterministically, in float64:
    ``E_q[log p(α, z)]`` by Gauss–Hermite quadrature with ``num_nodes`` nodes
    on ``log α = μ + σ ε``, plus the entropy of ``q``, ``μ + log σ +
    ½ log(2πe)`` (the ``μ`` is the Jacobian of ``α = exp(log α)``). SciPy's
    L-BFGS-B maximises it over ``(μ, log σ)`` with exact gradients, starting
    from the log-normal that matches the exact posterior's mean and standard
    deviation (:func:`posterior_moments`). The result is what SVI would reach
    with exact gradients and enough steps, so :func:`approximation_moments`
    of it against :func:`posterior_moments` is the gap of the family alone,
    and a fitted guide's distance from it is the optimiser's. Raises
    ``RuntimeError`` if the optimiser does not converge. Used in chapters 3 and 7.
    """
    z = _check_observations(z).astype(np.float64)
    if not _is_positive(prior_scale):
        raise ValueError(f"prior_scale must be a number > 0, got {prior_scale!r}")
    if not _is_int(num_nodes) or num_nodes < 2:
        raise ValueError(f"num_nodes must be an int >= 2, got {num_nodes!r}")
    nodes, weights = np.polynomial.hermite_e.hermegauss(int(num_nodes))
    weights = weights / weights.sum()  # expectations under N(0, 1)
    scale_prior = float(prior_scale)
    n, sum_log_z = z.shape[0], float(np.log(z).sum())

    def negative_elbo_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loc, log_scale = theta
        scale = np.exp(log_scale)
        alpha = np.exp(loc + scale * nodes)
        # d log p(alpha, z) / d alpha, times alpha (the chain rule through exp)
        slope = (-alpha / scale_prior**2 + sum_log_z - n * digamma(alpha)) * alpha
        elbo = weights @ _log_joint(z, alpha, scale_prior) + loc + log_scale
        grad = np.array(
            [weights @ slope + 1.0, scale * (weights @ (slope * nodes)) + 1.0]
        )
        if not (np.isfinite(elbo) and np.all(np.isfinite(grad))):
            return np.inf, np.zeros(2)
        return -elbo / n, -grad / n  # per observation, for a well-scaled problem

    with warnings.catch_warnings():  # a rough start is enough: ignore cut-off mass
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, sd = posterior_moments(z, prior_scale=scale_prior)
    log_var = np.log1p((sd / mean) ** 2)  # the moment-matched log-normal
    start = np.array([np.log(mean) - log_var / 2, np.log(log_var) / 2])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        result = minimize(
            negative_elbo_and_grad,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=[(None, None), (-20.0, 3.0)],
            options={"gtol": 1e-9, "ftol": 1e-15, "maxiter": 1_000},
        )
    if not (result.success and np.all(np.isfinite(result.x))):
        raise RuntimeError(f"best_approximation did not converge: {result.message}")
    return {
        "concentration_loc": float(result.x[0]),
        "concentration_scale": float(np.exp(result.x[1])),
    }


def log_importance_weights(
    rng_key: jax.Array,
    params: dict[str, ArrayLike],
    z: Float[ArrayLike, " n"],
    num_draws: int = 100_000,
    prior_scale: float = PRIOR_SCALE,
    *,
    df: float | None = None,
) -> tuple[Float[np.ndarray, " num_draws"], Float[np.ndarray, " num_draws"]]:
    """Draws of the concentration from the guide and their log importance
    weights ``log w = log p(α, z) − log q(α)``, in float64.

    ``α = exp(concentration_loc + concentration_scale · ε)`` with ``ε``
    standard normal (the talk's guide, :func:`approximation`), or, with
    ``df``, Student-t with ``df`` degrees of freedom: a guide with the same
    location and scale on ``log α`` but polynomial tails. The ``ε`` come from
    ``jax.random`` under ``rng_key``; everything after is NumPy/SciPy in
    float64: the log joint in closed form (half-normal prior plus the Gamma
    log-likelihood through its sufficient statistics) and ``log q(α) =
    log f(ε) − log σ − log α``. Float64 keeps the rounding of a log joint of
    hundreds of nats far below the spread of ``log w`` even when ``q`` is
    nearly exact, and the closed form makes a million draws cheap.

    Returns ``(concentrations, log_weights)``, two arrays of ``num_draws``.
    ``log-mean-exp(log_weights)`` estimates the log evidence. Used in
    chapter 3.
    """
    _check_key(rng_key)
    loc, scale = _check_params(params)
    z = _check_observations(z).astype(np.float64)
    if not _is_int(num_draws) or num_draws < 10:
        raise ValueError(f"num_draws must be an int >= 10, got {num_draws!r}")
    if not _is_positive(prior_scale):
        raise ValueError(f"prior_scale must be a number > 0, got {prior_scale!r}")
    if df is not None and not _is_positive(df):
        raise ValueError(f"df must be None or a number > 0, got {df!r}")
    shape = (int(num_draws),)
    if df is None:
        eps = np.asarray(jax.random.normal(rng_key, shape), dtype=np.float64)
        log_base = stats.norm.logpdf(eps)
    else:
        eps = np.asarray(jax.random.t(rng_key, float(df), shape), dtype=np.float64)
        log_base = stats.t.logpdf(eps, float(df))
    log_alpha = loc + scale * eps
    alpha = np.exp(log_alpha)
    if not np.all((alpha > 0) & np.isfinite(alpha)):
        raise ValueError(
            "the guide's draws of the concentration under- or overflow float64: "
            f"params or df are extreme (loc {loc}, scale {scale}, df {df})"
        )
    log_q = log_base - np.log(scale) - log_alpha
    log_weights = _log_joint(z, alpha, float(prior_scale)) - log_q
    return alpha, log_weights


def pareto_k(
    rng_key: jax.Array,
    params: dict[str, ArrayLike],
    z: Float[ArrayLike, " n"],
    num_draws: int = 100_000,
    prior_scale: float = PRIOR_SCALE,
    *,
    df: float | None = None,
) -> float:
    """Pareto k̂ of the importance weights of the guide at ``params``.

    The log weights of :func:`log_importance_weights` (float64, ``num_draws``
    draws), smoothed by ArviZ's ``psislw``, which fits a generalised Pareto
    distribution to the largest ``3 √num_draws`` weights and returns its
    shape k̂ (the same estimator as NumPyro's ``psis_diagnostic``). With a
    few thousand draws the estimate can depend on which draws reach the
    tail: chapter 3 shows k̂ against the number of draws and the default of
    100,000 where it has settled for the Gamma model. Used in chapter 3.
    """
    _, log_weights = log_importance_weights(
        rng_key, params, z, num_draws, prior_scale, df=df
    )
    return _psis(log_weights)[0]


def _psis(log_weights: np.ndarray) -> tuple[float, float]:
    """ArviZ's PSIS: k̂ and the relative effective sample size of the
    smoothed, normalised weights, ``1 / (S Σ w̃²)``."""
    # ArviZ's GPD fit lets exp overflow for candidate fits of negligible
    # weight (they get weight 0), as NumPyro's does under np.errstate.
    with np.errstate(over="ignore"):
        smoothed, k_hat = az.psislw(log_weights.copy())
    ess = 1.0 / np.sum(np.exp(2.0 * smoothed)) / log_weights.shape[0]
    return float(k_hat), float(ess)


def recovery_study(
    rng_key: jax.Array,
    concentrations: Sequence[float],
    sizes: Sequence[int],
    num_steps: int = 1_000,
    *,
    num_particles: int = 10,
    learning_rate: float = 0.005,
    interval: float = 0.94,
    num_psis_particles: int | None = 100_000,
    prior_scale: float = PRIOR_SCALE,
) -> pd.DataFrame:
    """Simulate data for every true concentration and data size, fit the
    guide, and compare it with the exact posterior.

    One row per (concentration, size): the exact and approximate posterior
    mean and standard deviation, the central ``interval`` of each and whether
    it covers the truth, the error of the mean in exact posterior
    standard deviations, the ratio of standard deviations, and the Pareto k̂
    of the importance weights with the relative effective sample size of the
    smoothed weights (``psis_ess``, 1 when all weights are equal), from
    :func:`log_importance_weights` with ``num_psis_particles`` draws in
    float64 (``None`` skips both, leaving NaN).

    Used in chapter 3.
    """
    _check_key(rng_key)
    if len(concentrations) == 0 or len(sizes) == 0:
        raise ValueError("concentrations and sizes must be non-empty sequences")
    if not 0.0 < interval < 1.0:
        raise ValueError(f"interval must lie in (0, 1), got {interval!r}")
    for concentration in concentrations:
        if not _is_positive(concentration):
            raise ValueError(
                f"concentrations must be numbers > 0, got {concentration!r}"
            )
    for size in sizes:
        if not _is_int(size) or size < 1:
            raise ValueError(f"sizes must be ints >= 1, got {size!r}")
    if num_psis_particles is not None and (
        not _is_int(num_psis_particles) or num_psis_particles < 10
    ):
        raise ValueError(
            "num_psis_particles must be None or an int >= 10, "
            f"got {num_psis_particles!r}"
        )
    svi = make_svi(num_particles, learning_rate)
    rows = []
    keys = jax.random.split(rng_key, len(concentrations) * len(sizes))
    cells = [(c, n) for c in concentrations for n in sizes]
    for key, (concentration, size) in zip(keys, cells, strict=True):
        key_data, key_fit, key_psis = jax.random.split(key, 3)
        z = simulate(key_data, float(concentration), int(size))
        result = fit(key_fit, z, num_steps, svi=svi, prior_scale=prior_scale)
        grid = default_grid(z, prior_scale=prior_scale)
        exact_mean, exact_sd = posterior_moments(z, grid, prior_scale)
        density = exact_posterior(z, grid, prior_scale)
        exact_lower, exact_upper = _quantiles(grid, density, interval)
        q_mean, q_sd = approximation_moments(result.params)
        q = approximation(result.params)
        tail = (1.0 - interval) / 2.0
        lower, upper = (float(q.icdf(jnp.asarray(p))) for p in (tail, 1.0 - tail))
        k_hat, ess = (
            (np.nan, np.nan)
            if num_psis_particles is None
            else _psis(
                log_importance_weights(
                    key_psis, result.params, z, num_psis_particles, prior_scale
                )[1]
            )
        )
        rows.append(
            {
                "true_concentration": float(concentration),
                "num_obs": int(size),
                "exact_mean": exact_mean,
                "exact_sd": exact_sd,
                "exact_lower": exact_lower,
                "exact_upper": exact_upper,
                "exact_covers_truth": exact_lower <= concentration <= exact_upper,
                "q_mean": q_mean,
                "q_sd": q_sd,
                "q_lower": lower,
                "q_upper": upper,
                "q_covers_truth": lower <= concentration <= upper,
                "mean_error_in_sd": (q_mean - exact_mean) / exact_sd,
                "sd_ratio": q_sd / exact_sd,
                "pareto_k": k_hat,
                "psis_ess": ess,
            }
        )
    return pd.DataFrame(rows)


def _quantiles(
    grid: np.ndarray, density: np.ndarray, interval: float
) -> tuple[float, float]:
    """Central interval of a density on a grid, from its trapezoidal CDF."""
    steps = np.diff(grid) * (density[1:] + density[:-1]) / 2.0
    cdf = np.concatenate([[0.0], np.cumsum(steps)])
    tail = (1.0 - interval) / 2.0
    lower, upper = np.interp([tail, 1.0 - tail], cdf / cdf[-1], grid)
    return float(lower), float(upper)


# --------------------------------------------------------------------------
# Input checks, before any tracing.


def _is_positive(value: object) -> bool:
    """A real number (NumPy and JAX scalars included, bools excluded) > 0."""
    if isinstance(value, bool) or not isinstance(
        value, numbers.Real | np.generic | jax.Array
    ):
        return False
    try:
        return float(value) > 0 and np.isfinite(float(value))
    except TypeError:
        return False


def _check_observations(z: object) -> np.ndarray:
    try:
        values = np.asarray(z)
    except Exception as error:  # a tracer or an object that is no array
        raise TypeError(
            f"z must be a concrete 1-D array, got {type(z).__name__}"
        ) from error
    if values.ndim != 1:
        raise ValueError(
            f"z must be a 1-D array of observations, got shape {values.shape}"
        )
    if values.shape[0] == 0:
        raise ValueError("z must hold at least one observation, got an empty array")
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
        values.dtype, np.complexfloating
    ):
        raise TypeError(f"z must hold real numbers, got dtype {values.dtype}")
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "z must be finite: Gamma observations cannot be NaN or infinite"
        )
    if not np.all(values > 0):
        raise ValueError(
            f"z must be strictly positive (Gamma observations), got min {values.min()}"
        )
    return values


def _check_grid(grid: object) -> np.ndarray:
    values = np.asarray(grid, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(
            f"grid must be a 1-D array of at least 2 points, got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("grid must be finite")
    if not np.all(values > 0):
        raise ValueError(
            f"grid must be strictly positive (concentrations), got min {values.min()}"
        )
    if not np.all(np.diff(values) > 0):
        raise ValueError("grid must be strictly increasing")
    return values


def _check_params(params: dict[str, ArrayLike]) -> tuple[float, float]:
    try:
        loc = float(params["concentration_loc"])
        scale = float(params["concentration_scale"])
    except (KeyError, TypeError) as error:
        raise ValueError(
            "params must map 'concentration_loc' and 'concentration_scale' to scalars "
            f"(FitResult.params), got {params!r}"
        ) from error
    if not scale > 0:
        raise ValueError(f"params['concentration_scale'] must be > 0, got {scale}")
    return loc, scale
