"""Closed forms for chapters 1 and 2: Bayes' rule and the ELBO, exactly.

The conjugate Gaussian model, with everything about it in closed form::

    θ ~ N(prior_loc, prior_scale²),   y_i | θ ~ N(θ, noise_scale²),  i = 1..n.

``y`` of shape ``(n,)`` is this model with a scalar θ. ``y`` of shape
``(n, d)`` is ``d`` independent copies of it sharing the prior and the noise:
θ ∈ ℝᵈ, coordinate ``j`` observed in column ``y[:, j]``. Posteriors then come
back per coordinate and log densities (evidence, ELBO) are summed over them,
so the dimension of θ can grow while the truth stays known (chapter 1).

Beyond the posterior, the evidence and the ELBO, the module has the naive
Monte Carlo evidence estimator and its exact relative error, and NumPyro
versions of the model and of a Gaussian guide. The KL divergences and the
mean-field optimum are in `companion.gaussians`, the ELBO's gradient
estimators in `companion.gradients`.

ELBO means the evidence lower bound itself (to maximise); NumPyro's losses
are its negative.

Used in chapter 1 (Bayes' rule) and chapter 2 (the ELBO).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from jaxtyping import Array, ArrayLike, Float

from companion import gaussians
from companion._checks import check_count as _check_count
from companion._checks import check_guide_params as _check_guide_params
from companion._checks import check_observations as _check_observations
from companion._checks import check_real as _check_real
from companion.gaussians import Gaussian

__all__ = [
    "naive_evidence_relative_error",
    "naive_log_evidence",
    "normal_elbo",
    "normal_expected_log_likelihood",
    "normal_guide",
    "normal_log_evidence",
    "normal_log_joint",
    "normal_model",
    "normal_posterior",
]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------
# The conjugate model in closed form.


def normal_posterior(
    y: Float[ArrayLike, " n *d"],
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
) -> Gaussian:
    """The exact posterior ``p(θ | y) = N(loc, scale²)`` of the conjugate model.

    Precisions add: ``1/scale² = 1/prior_scale² + n/noise_scale²``, and
    ``loc`` is the precision-weighted mean of ``prior_loc`` and the data.
    ``y`` of shape ``(n,)`` gives scalars; ``(n, d)`` gives arrays of shape
    ``(d,)``, one posterior per coordinate.

    Used in chapters 1 and 2.
    """
    y = _check_observations(y)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    n = y.shape[0]
    precision = 1.0 / prior_scale**2 + n / noise_scale**2
    loc = (prior_loc / prior_scale**2 + jnp.sum(y, axis=0) / noise_scale**2) / precision
    return Gaussian(loc, jnp.broadcast_to(1.0 / jnp.sqrt(precision), jnp.shape(loc)))


def normal_log_evidence(
    y: Float[ArrayLike, " n *d"],
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
) -> Float[Array, ""]:
    """The log evidence ``log p(D) = log ∫ p(y | θ) p(θ) dθ``, in closed form.

    ``y`` is jointly normal with mean ``prior_loc`` and covariance
    ``prior_scale² 11ᵀ + noise_scale² I`` (θ is shared by all observations);
    this is that multivariate normal log density, of all of ``y`` (not just
    of its mean), written with the sufficient statistics. For ``y`` of shape
    ``(n, d)`` the ``d`` independent coordinates' log evidences are summed.

    Used in chapters 1 and 2.
    """
    y = _check_observations(y)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    return jnp.sum(_log_evidence_per_coordinate(y, prior_loc, prior_scale, noise_scale))


def normal_expected_log_likelihood(
    y: Float[ArrayLike, " n *d"],
    q_loc: Float[ArrayLike, "*d"],
    q_scale: Float[ArrayLike, "*d"],
    noise_scale: float,
) -> Float[Array, ""]:
    """``E_q[log p(y | θ)]`` for ``q(θ) = N(q_loc, q_scale²)``, in closed form.

    The first term of the ELBO, "how well we explain the data":
    ``Σ_i -½ log(2π noise_scale²) - ((y_i - q_loc)² + q_scale²) / (2 noise_scale²)``.

    Used in chapter 2.
    """
    y = _check_observations(y)
    q_loc, q_scale = _check_guide_params(y, q_loc, q_scale)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    n = y.shape[0]
    squares = jnp.sum((y - q_loc) ** 2, axis=0) + n * q_scale**2
    per_coordinate = -0.5 * n * (_LOG_2PI + 2.0 * jnp.log(noise_scale))
    return jnp.sum(per_coordinate - squares / (2.0 * noise_scale**2))


def normal_elbo(
    y: Float[ArrayLike, " n *d"],
    q_loc: Float[ArrayLike, "*d"],
    q_scale: Float[ArrayLike, "*d"],
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
) -> Float[Array, ""]:
    """The ELBO of ``q(θ) = N(q_loc, q_scale²)`` on the conjugate model, exactly.

    ``ELBO(φ) = E_q[log p(y | θ)] - KL(q ‖ p(θ))`` with ``φ = (q_loc, q_scale)``.
    It equals ``log p(D) - KL(q ‖ p(θ | D))``: it is at most the log evidence,
    with equality at the exact posterior. Differentiable in ``q_loc`` and
    ``q_scale`` (validation is skipped for traced values, so ``jax.grad`` and
    ``jax.vmap`` work).

    Used in chapter 2.
    """
    y = _check_observations(y)
    q_loc, q_scale = _check_guide_params(y, q_loc, q_scale)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    expected = normal_expected_log_likelihood(y, q_loc, q_scale, noise_scale)
    return expected - jnp.sum(
        gaussians.kl_normal(q_loc, q_scale, prior_loc, prior_scale)
    )


def normal_log_joint(
    y: Float[ArrayLike, " n"],
    theta: Float[ArrayLike, " S"],
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
) -> Float[Array, " S"]:
    """``log p(y, θ) = log p(y | θ) + log p(θ)`` of the conjugate model at each
    of the scalar values ``theta`` (shape ``(S,)``), for ``y`` of shape
    ``(n,)``: what the gradient estimators of `companion.gradients` average.
    Differentiable in ``theta`` (traced values are not checked).

    Used in chapter 2 (through the gradient estimators).

    Example:
        >>> float(normal_log_joint(jnp.zeros(1), jnp.zeros(1), 0.0, 1.0, 1.0)[0])
        -1.8378770...
    """
    y = _check_observations(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n,) (a scalar θ), got shape {y.shape}")
    theta = _check_real("theta", theta)
    if jnp.ndim(theta) != 1:
        raise ValueError(f"theta must have shape (S,), got shape {jnp.shape(theta)}")
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    return _log_joint(y, theta, prior_loc, prior_scale, noise_scale)


# --------------------------------------------------------------------------
# Why the evidence is hard: the naive Monte Carlo estimator.


def naive_log_evidence(
    rng_key: jax.Array,
    y: Float[ArrayLike, " n *d"],
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
    num_samples: int,
) -> Float[Array, ""]:
    """The log of the naive Monte Carlo evidence estimate.

    ``p̂(D) = (1/S) Σ_s p(y | θ_s)`` with ``θ_s`` drawn from the prior: unbiased
    for ``p(D)``, but almost every prior draw misses the small region where
    the likelihood lives once ``n`` or ``d`` grows. Returns ``log p̂(D)``
    (computed with ``logsumexp``); the likelihood uses the sufficient
    statistics, so the cost is ``O(S d)`` after one pass over ``y``. Vmap over
    keys for repeated estimates.

    Used in chapter 1.
    """
    y, prior_loc, prior_scale, noise_scale = _check_naive_args(
        y, prior_loc, prior_scale, noise_scale, num_samples
    )
    # Only the sufficient statistics reach the compiled core, so data sets of
    # different sizes n share one compilation.
    mean, within = _sufficient_statistics(y)
    num_obs = jnp.asarray(y.shape[0], dtype=mean.dtype)
    return _naive_log_evidence(
        rng_key, num_obs, mean, within, prior_loc, prior_scale, noise_scale, num_samples
    )


def naive_evidence_relative_error(
    y: Float[ArrayLike, " n *d"],
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
    num_samples: int,
) -> Float[Array, ""]:
    """The exact relative standard error ``sd(p̂(D)) / p(D)`` of
    :func:`naive_log_evidence`'s estimate (before the log).

    ``p̂`` averages ``S`` independent draws of ``L = p(y | θ)``, θ from the prior,
    so ``sd(p̂)/p(D) = sqrt((E[L²]/p(D)² - 1) / S)``. ``E[L²]`` is itself a
    Gaussian integral: ``p(y | θ)²`` is ``(4π noise_scale²)^(-n/2)`` times the
    likelihood with noise scale ``noise_scale/√2``. May overflow to ``inf``
    when the estimator is hopeless (large ``n`` or ``d``).

    Used in chapter 1.
    """
    y, prior_loc, prior_scale, noise_scale = _check_naive_args(
        y, prior_loc, prior_scale, noise_scale, num_samples
    )
    n = y.shape[0]
    log_evidence = _log_evidence_per_coordinate(y, prior_loc, prior_scale, noise_scale)
    log_second_moment = -0.5 * n * (
        math.log(4.0 * math.pi) + 2.0 * jnp.log(noise_scale)
    ) + _log_evidence_per_coordinate(
        y, prior_loc, prior_scale, noise_scale / math.sqrt(2.0)
    )
    log_ratio = jnp.sum(log_second_moment - 2.0 * log_evidence)
    return jnp.sqrt(jnp.expm1(log_ratio) / num_samples)


# --------------------------------------------------------------------------
# The same model in NumPyro.


def normal_model(
    y: Float[Array, " n"] | None = None,
    prior_loc: float = 0.0,
    prior_scale: float = 1.0,
    noise_scale: float = 1.0,
    num_obs: int | None = None,
) -> None:
    """The conjugate model in NumPyro: latent site ``theta``, observed ``y``.

    ``theta ~ Normal(prior_loc, prior_scale)`` and, in a plate,
    ``y ~ Normal(theta, noise_scale)``. With ``y=None`` it simulates
    ``num_obs`` observations. Its exact answers are :func:`normal_posterior`,
    :func:`normal_log_evidence` and :func:`normal_elbo`.

    Used in chapter 2.
    """
    y, num_obs = _check_model_args(y, num_obs)
    theta = numpyro.sample("theta", dist.Normal(prior_loc, prior_scale))
    size = num_obs if y is None else y.shape[0]
    with numpyro.plate("data", 1 if size is None else size):
        numpyro.sample("y", dist.Normal(theta, noise_scale), obs=y)


def normal_guide(
    y: Float[Array, " n"] | None = None,
    prior_loc: float = 0.0,
    prior_scale: float = 1.0,
    noise_scale: float = 1.0,
    num_obs: int | None = None,
) -> None:
    """``q_φ(θ) = Normal(theta_loc, theta_scale)`` for :func:`normal_model`.

    ``φ`` is the params ``theta_loc`` (initialised at 0) and ``theta_scale``
    (initialised at 1, constrained positive); the talk's naming,
    ``<site>_loc`` and ``<site>_scale``. Same arguments as the model.

    Used in chapter 2.
    """
    theta_loc = numpyro.param("theta_loc", 0.0)
    theta_scale = numpyro.param(
        "theta_scale", 1.0, constraint=dist.constraints.positive
    )
    numpyro.sample("theta", dist.Normal(theta_loc, theta_scale))


# --------------------------------------------------------------------------
# Private helpers: log densities.


def _sufficient_statistics(y):
    """Per-coordinate mean and within sum of squares ``Σ_i (y_i - ȳ)²``."""
    mean = jnp.mean(y, axis=0)
    return mean, jnp.sum((y - mean) ** 2, axis=0)


def _log_evidence_per_coordinate(y, prior_loc, prior_scale, noise_scale):
    """Log evidence of each column of ``y`` (shape ``y.shape[1:]``)."""
    n = y.shape[0]
    mean, within = _sufficient_statistics(y)
    noise_var = noise_scale**2
    marginal_var = noise_var + n * prior_scale**2
    return -0.5 * (
        n * _LOG_2PI
        + n * jnp.log(noise_var)
        + jnp.log(marginal_var / noise_var)
        + within / noise_var
        + n * (mean - prior_loc) ** 2 / marginal_var
    )


@functools.partial(jax.jit, static_argnames="num_samples")
def _naive_log_evidence(
    rng_key, num_obs, mean, within, prior_loc, prior_scale, noise_scale, num_samples
):
    theta = prior_loc + prior_scale * jax.random.normal(
        rng_key, (num_samples, *jnp.shape(mean))
    )
    noise_var = noise_scale**2
    log_likelihood = -0.5 * (
        num_obs * (_LOG_2PI + jnp.log(noise_var))
        + (within + num_obs * (mean - theta) ** 2) / noise_var
    )
    log_likelihood = jnp.sum(log_likelihood.reshape(num_samples, -1), axis=1)
    return logsumexp(log_likelihood) - jnp.log(num_samples)


def _log_likelihood(y, theta, noise_scale):
    """``log p(y | θ)`` summed over observations and coordinates."""
    n = y.shape[0]
    mean, within = _sufficient_statistics(y)
    noise_var = noise_scale**2
    per_coordinate = -0.5 * (
        n * (_LOG_2PI + jnp.log(noise_var))
        + (within + n * (mean - theta) ** 2) / noise_var
    )
    return jnp.sum(per_coordinate)


def _log_joint(y, theta, prior_loc, prior_scale, noise_scale):
    """``log p(y, θ)`` for a vector of scalar θ values (shape ``(S,)``)."""
    log_lik = jax.vmap(lambda t: _log_likelihood(y, t, noise_scale))(theta)
    return log_lik + dist.Normal(prior_loc, prior_scale).log_prob(theta)


# --------------------------------------------------------------------------
# Input checks, before any tracing. Traced values pass through unchecked, so
# the functions stay usable under jax.grad, jax.vmap and jax.jit.


def _check_model_args(y, num_obs):
    if y is None:
        if num_obs is not None:
            _check_count("num_obs", num_obs)
        return y, num_obs
    y = _check_observations(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n,), got shape {y.shape}")
    return y, num_obs


def _check_naive_args(y, prior_loc, prior_scale, noise_scale, num_samples):
    y = _check_observations(y)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    _check_count("num_samples", num_samples)
    return y, prior_loc, prior_scale, noise_scale
