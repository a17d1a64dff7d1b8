"""Closed forms for chapters 1 and 2: Bayes' rule and the ELBO, exactly.

The conjugate Gaussian model, with everything about it in closed form::

    θ ~ N(prior_loc, prior_scale²),   y_i | θ ~ N(θ, noise_scale²),  i = 1..n.

``y`` of shape ``(n,)`` is this model with a scalar θ. ``y`` of shape
``(n, d)`` is ``d`` independent copies of it sharing the prior and the noise:
θ ∈ ℝᵈ, coordinate ``j`` observed in column ``y[:, j]``. Posteriors then come
back per coordinate and log densities (evidence, ELBO) are summed over them,
so the dimension of θ can grow while the truth stays known (chapter 1).

Beyond the posterior, the evidence, the ELBO and KL divergences, the module
has what the chapters measure against them: the naive Monte Carlo evidence
estimator and its exact relative error, reparameterised and score-function
estimators of the ELBO's gradient and the exact variance of the
reparameterised one (with the KL sampled or in closed form), NumPyro versions of the model and of a
Gaussian guide, and the mean-field optimum for a correlated Gaussian target.

ELBO means the evidence lower bound itself (to maximise); NumPyro's losses
are its negative.

Used in chapter 1 (Bayes' rule) and chapter 2 (the ELBO).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import cho_solve
from jax.scipy.special import logsumexp
from jaxtyping import Array, ArrayLike, Float

__all__ = [
    "elbo_grad_reparam",
    "elbo_grad_score",
    "elbo_grad_variance",
    "kl_mvn",
    "kl_normal",
    "mean_field_optimum",
    "naive_evidence_relative_error",
    "naive_log_evidence",
    "normal_elbo",
    "normal_expected_log_likelihood",
    "normal_guide",
    "normal_log_evidence",
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
) -> tuple[Float[Array, "*d"], Float[Array, "*d"]]:
    """The exact posterior ``p(θ | y) = N(loc, scale²)`` of the conjugate model.

    Precisions add: ``1/scale² = 1/prior_scale² + n/noise_scale²``, and
    ``loc`` is the precision-weighted mean of ``prior_loc`` and the data.
    ``y`` of shape ``(n,)`` gives scalars; ``(n, d)`` gives arrays of shape
    ``(d,)``, one posterior per coordinate.

    Used in chapters 1 and 2.
    """
    y = _check_y(y)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    n = y.shape[0]
    precision = 1.0 / prior_scale**2 + n / noise_scale**2
    loc = (prior_loc / prior_scale**2 + jnp.sum(y, axis=0) / noise_scale**2) / precision
    return loc, jnp.broadcast_to(1.0 / jnp.sqrt(precision), jnp.shape(loc))


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
    y = _check_y(y)
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
    y = _check_y(y)
    q_loc, q_scale = _check_q(y, q_loc, q_scale)
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
    y = _check_y(y)
    q_loc, q_scale = _check_q(y, q_loc, q_scale)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    expected = normal_expected_log_likelihood(y, q_loc, q_scale, noise_scale)
    return expected - jnp.sum(kl_normal(q_loc, q_scale, prior_loc, prior_scale))


def kl_normal(
    loc_q: Float[ArrayLike, "*shape"],
    scale_q: Float[ArrayLike, "*shape"],
    loc_p: Float[ArrayLike, "*shape"],
    scale_p: Float[ArrayLike, "*shape"],
) -> Float[Array, "*shape"]:
    """``KL(N(loc_q, scale_q²) ‖ N(loc_p, scale_p²))``, elementwise.

    ``log(scale_p / scale_q) + (scale_q² + (loc_q - loc_p)²) / (2 scale_p²) - ½``.
    The arguments broadcast against each other; the result has their
    broadcast shape (sum it for a product of independent normals).

    Used in chapter 2.
    """
    loc_q = _check_real("loc_q", loc_q)
    scale_q = _check_real("scale_q", scale_q, positive=True)
    loc_p = _check_real("loc_p", loc_p)
    scale_p = _check_real("scale_p", scale_p, positive=True)
    _check_broadcast(loc_q=loc_q, scale_q=scale_q, loc_p=loc_p, scale_p=scale_p)
    ratio = (scale_q / scale_p) ** 2
    return 0.5 * (ratio + ((loc_q - loc_p) / scale_p) ** 2 - 1.0 - jnp.log(ratio))


def kl_mvn(
    loc_q: Float[ArrayLike, " k"],
    cov_q: Float[ArrayLike, "k k"],
    loc_p: Float[ArrayLike, " k"],
    cov_p: Float[ArrayLike, "k k"],
) -> Float[Array, ""]:
    """``KL(N(loc_q, cov_q) ‖ N(loc_p, cov_p))`` between multivariate normals.

    ``½ [tr(Σp⁻¹ Σq) + (μp - μq)ᵀ Σp⁻¹ (μp - μq) - k + log det Σp - log det Σq]``,
    via Cholesky factors. Covariances must be symmetric positive definite.

    Used in chapter 2 (mean-field approximation of a correlated posterior).
    """
    loc_q, cov_q = _check_mvn("loc_q", loc_q, "cov_q", cov_q)
    loc_p, cov_p = _check_mvn("loc_p", loc_p, "cov_p", cov_p)
    if loc_q.shape != loc_p.shape:
        raise ValueError(
            f"loc_q and loc_p must have the same shape, got {loc_q.shape} "
            f"and {loc_p.shape}"
        )
    k = loc_q.shape[0]
    chol_q = jnp.linalg.cholesky(cov_q)
    chol_p = jnp.linalg.cholesky(cov_p)
    diff = loc_p - loc_q
    trace = jnp.trace(cho_solve((chol_p, True), cov_q))
    mahalanobis = diff @ cho_solve((chol_p, True), diff)
    logdet_p = 2.0 * jnp.sum(jnp.log(jnp.diag(chol_p)))
    logdet_q = 2.0 * jnp.sum(jnp.log(jnp.diag(chol_q)))
    return 0.5 * (trace + mahalanobis - k + logdet_p - logdet_q)


def mean_field_optimum(
    loc: Float[ArrayLike, " k"], cov: Float[ArrayLike, "k k"]
) -> tuple[Float[Array, " k"], Float[Array, " k"]]:
    """The mean-field Gaussian closest to ``N(loc, cov)`` in ``KL(q ‖ p)``.

    Among ``q = Π_i N(m_i, s_i²)`` the minimiser of ``KL(q ‖ N(loc, cov))`` has
    ``m = loc`` and ``s_i² = 1 / Λ_ii``, with ``Λ = cov⁻¹`` the precision: the
    conditional variances, never larger (and for correlated targets smaller)
    than the marginal variances ``cov_ii``. Returns ``(loc, scale)``.

    Used in chapter 2.
    """
    loc, cov = _check_mvn("loc", loc, "cov", cov)
    precision = jnp.linalg.inv(cov)
    return loc, 1.0 / jnp.sqrt(jnp.diag(precision))


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
    y = _check_y(y)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    _check_positive_int("num_samples", num_samples)
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
    y = _check_y(y)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    _check_positive_int("num_samples", num_samples)
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
# The same model in NumPyro, and two gradient estimators of its ELBO.


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


def elbo_grad_reparam(
    rng_key: jax.Array,
    y: Float[ArrayLike, " n"],
    q_loc: float,
    q_scale: float,
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
    num_samples: int = 1,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Reparameterised Monte Carlo estimate of ``∇_φ ELBO``, ``φ = (q_loc, q_scale)``.

    Writes ``θ = q_loc + q_scale ε``, ``ε ~ N(0, 1)``, and differentiates
    ``log p(y, θ) - log q_φ(θ)`` through the sample [Kingma & Welling 2014].
    Unbiased; averages ``num_samples`` draws. Returns
    ``(d ELBO / d q_loc, d ELBO / d q_scale)``. Scalar θ (``y`` of shape
    ``(n,)``) only.

    Used in chapter 2.
    """
    y, q_loc, q_scale, prior_loc, prior_scale, noise_scale = _check_grad_args(
        y, q_loc, q_scale, prior_loc, prior_scale, noise_scale, num_samples
    )
    eps = jax.random.normal(rng_key, (num_samples,))

    def surrogate(loc, scale):
        theta = loc + scale * eps
        return jnp.mean(
            _log_joint(y, theta, prior_loc, prior_scale, noise_scale)
            - dist.Normal(loc, scale).log_prob(theta)
        )

    return jax.grad(surrogate, argnums=(0, 1))(q_loc, q_scale)


def elbo_grad_score(
    rng_key: jax.Array,
    y: Float[ArrayLike, " n"],
    q_loc: float,
    q_scale: float,
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
    num_samples: int = 1,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Score-function (REINFORCE) Monte Carlo estimate of ``∇_φ ELBO``.

    ``∇_φ ELBO = E_q[(log p(y, θ) - log q_φ(θ)) ∇_φ log q_φ(θ)]`` with θ drawn
    from ``q_φ`` and not differentiated through, as in black-box VI
    [Ranganath et al. 2014]: it needs only ``log q``'s gradient, not the
    model's, and no control variate is used here. Unbiased; averages
    ``num_samples`` draws. Returns ``(d ELBO / d q_loc, d ELBO / d q_scale)``.

    Used in chapter 2.
    """
    y, q_loc, q_scale, prior_loc, prior_scale, noise_scale = _check_grad_args(
        y, q_loc, q_scale, prior_loc, prior_scale, noise_scale, num_samples
    )
    theta = q_loc + q_scale * jax.random.normal(rng_key, (num_samples,))
    weight = _log_joint(y, theta, prior_loc, prior_scale, noise_scale) - dist.Normal(
        q_loc, q_scale
    ).log_prob(theta)
    score_loc, score_scale = jax.vmap(
        jax.grad(lambda t, m, s: dist.Normal(m, s).log_prob(t), argnums=(1, 2)),
        in_axes=(0, None, None),
    )(theta, q_loc, q_scale)
    return jnp.mean(weight * score_loc), jnp.mean(weight * score_scale)


def elbo_grad_variance(
    y: Float[ArrayLike, " n"],
    q_loc: float,
    q_scale: float,
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
    num_samples: int = 1,
    *,
    closed_form_kl: bool = False,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Exact variance of the reparameterised estimate of ``∇_φ ELBO``.

    ``φ = (q_loc, q_scale)``, ``θ = q_loc + q_scale ε``, ``ε ~ N(0, 1)``; the
    variance of an average of ``num_samples`` independent draws. Two
    estimators of the same gradient:

    - ``closed_form_kl=False``: ``log p(y | θ) + log p(θ) - log q_φ(θ)`` all
      sampled (NumPyro's ``Trace_ELBO``, :func:`elbo_grad_reparam`);
    - ``closed_form_kl=True``: only ``log p(y | θ)`` sampled, ``KL(q_φ ‖ p(θ))``
      in closed form (NumPyro's ``TraceMeanField_ELBO``).

    For a Gaussian ``q_φ`` the entropy term's total derivative does not depend
    on ε, so only the sampled log densities carry noise. Each is a quadratic
    ``-½ λ (θ - c)²`` plus a constant: precision ``λ = n/noise_scale² +
    1/prior_scale²`` and centre ``c`` = the posterior mean when the prior is
    sampled, ``λ = n/noise_scale²`` and ``c = mean(y)`` when it is not. Its
    gradient is ``-λ (θ - c) (1, ε)``, whence the variances
    ``(λ² q_scale², λ² ((q_loc - c)² + 2 q_scale²)) / num_samples``.
    Returns ``(var of d/d q_loc, var of d/d q_scale)``. Scalar θ only.

    Used in chapter 2.
    """
    y, q_loc, q_scale, prior_loc, prior_scale, noise_scale = _check_grad_args(
        y, q_loc, q_scale, prior_loc, prior_scale, noise_scale, num_samples
    )
    if not isinstance(closed_form_kl, bool):
        raise TypeError(f"closed_form_kl must be a bool, got {closed_form_kl!r}")
    n = y.shape[0]
    if closed_form_kl:
        precision, centre = n / noise_scale**2, jnp.mean(y)
    else:
        centre, _ = normal_posterior(y, prior_loc, prior_scale, noise_scale)
        precision = n / noise_scale**2 + 1.0 / prior_scale**2
    var_loc = precision**2 * q_scale**2
    var_scale = precision**2 * ((q_loc - centre) ** 2 + 2.0 * q_scale**2)
    return var_loc / num_samples, var_scale / num_samples


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


def _is_traced(value: object) -> bool:
    return isinstance(value, jax.core.Tracer)


def _as_real_array(name: str, value: object) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as error:
        raise TypeError(
            f"{name} must be a real number or array, got {type(value).__name__}"
        ) from error
    if (
        array.dtype == bool
        or not np.issubdtype(array.dtype, np.number)
        or np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array


def _check_real(name: str, value: object, *, positive: bool = False):
    """A finite real scalar or array (``> 0`` if ``positive``), as a jnp array."""
    if _is_traced(value):
        return value
    array = _as_real_array(name, value)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and not np.all(array > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def _check_y(y: object):
    if _is_traced(y):
        if y.ndim not in (1, 2):
            raise ValueError(f"y must have shape (n,) or (n, d), got shape {y.shape}")
        return y
    array = _as_real_array("y", y)
    if array.ndim not in (1, 2):
        raise ValueError(f"y must have shape (n,) or (n, d), got shape {array.shape}")
    if array.shape[0] == 0 or array.size == 0:
        raise ValueError(
            f"y must hold at least one observation, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("y must be finite: no NaN or infinite observations")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def _check_q(y, q_loc: object, q_scale: object):
    """``q_loc`` and ``q_scale`` must broadcast to θ's shape ``y.shape[1:]``."""
    q_loc = _check_real("q_loc", q_loc)
    q_scale = _check_real("q_scale", q_scale, positive=True)
    theta_shape = tuple(y.shape[1:])
    for name, value in (("q_loc", q_loc), ("q_scale", q_scale)):
        shape = tuple(jnp.shape(value))
        try:
            broadcast = np.broadcast_shapes(shape, theta_shape)
        except ValueError:
            broadcast = None
        if broadcast != theta_shape:
            raise ValueError(
                f"{name} must be a scalar or have θ's shape {theta_shape} "
                f"(y.shape[1:]), got shape {shape}"
            )
    return q_loc, q_scale


def _check_broadcast(**arrays) -> None:
    shapes = {name: tuple(jnp.shape(value)) for name, value in arrays.items()}
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError as error:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(
            f"arguments must broadcast against each other, got shapes {described}"
        ) from error


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_mvn(loc_name: str, loc: object, cov_name: str, cov: object):
    loc = _check_real(loc_name, loc)
    cov = _check_real(cov_name, cov)
    if jnp.ndim(loc) != 1:
        raise ValueError(
            f"{loc_name} must be a vector (k,), got shape {jnp.shape(loc)}"
        )
    k = jnp.shape(loc)[0]
    if tuple(jnp.shape(cov)) != (k, k):
        raise ValueError(
            f"{cov_name} must have shape ({k}, {k}) to match {loc_name}, "
            f"got {jnp.shape(cov)}"
        )
    if not _is_traced(cov):
        matrix = np.asarray(cov, dtype=np.float64)
        if not np.allclose(matrix, matrix.T, rtol=1e-6, atol=1e-8):
            raise ValueError(f"{cov_name} must be symmetric")
        try:
            np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError as error:
            raise ValueError(f"{cov_name} must be positive definite") from error
    return loc, cov


def _check_model_args(y, num_obs):
    if y is None:
        if num_obs is not None:
            _check_positive_int("num_obs", num_obs)
        return y, num_obs
    y = _check_y(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n,), got shape {y.shape}")
    return y, num_obs


def _check_grad_args(
    y, q_loc, q_scale, prior_loc, prior_scale, noise_scale, num_samples
):
    y = _check_y(y)
    if y.ndim != 1:
        raise ValueError(
            f"y must have shape (n,) (a scalar θ) for the gradient estimators, "
            f"got shape {y.shape}"
        )
    q_loc, q_scale = _check_q(y, q_loc, q_scale)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    _check_positive_int("num_samples", num_samples)
    return y, q_loc, q_scale, prior_loc, prior_scale, noise_scale
