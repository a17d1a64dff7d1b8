"""Two Monte Carlo estimators of the ELBO's gradient on chapter 2's conjugate
model (`companion.theory`), and the exact variance of one of them.

:func:`elbo_grad_reparam` differentiates through the sample (the
reparameterisation trick, what NumPyro's ``Trace_ELBO`` does for a Gaussian
guide); :func:`elbo_grad_score` weights the score ``∇_φ log q_φ`` (black-box
VI); :func:`elbo_grad_variance` gives the first one's variance exactly, with
the KL term sampled (``Trace_ELBO``) or in closed form
(``TraceMeanField_ELBO``). The guide is ``q_φ(θ) = N(q_loc, q_scale²)`` and θ
a scalar.

Used in chapter 2 (the ELBO).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float

from companion import theory
from companion._checks import check_count as _check_count
from companion._checks import check_guide_params as _check_guide_params
from companion._checks import check_observations as _check_observations
from companion._checks import check_real as _check_real

__all__ = [
    "GuideGradient",
    "elbo_grad_reparam",
    "elbo_grad_score",
    "elbo_grad_variance",
]


class GuideGradient(NamedTuple):
    """One value per parameter of the guide ``N(q_loc, q_scale²)``: the
    components of an estimate of ``∇_φ ELBO`` (:func:`elbo_grad_reparam`,
    :func:`elbo_grad_score`) or their variances (:func:`elbo_grad_variance`).
    Used in chapter 2."""

    q_loc: Float[Array, ""]
    q_scale: Float[Array, ""]


def elbo_grad_reparam(
    rng_key: jax.Array,
    y: Float[ArrayLike, " n"],
    q_loc: float,
    q_scale: float,
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
    num_samples: int = 1,
) -> GuideGradient:
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
            theory.normal_log_joint(y, theta, prior_loc, prior_scale, noise_scale)
            - dist.Normal(loc, scale).log_prob(theta)
        )

    return GuideGradient(*jax.grad(surrogate, argnums=(0, 1))(q_loc, q_scale))


def elbo_grad_score(
    rng_key: jax.Array,
    y: Float[ArrayLike, " n"],
    q_loc: float,
    q_scale: float,
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
    num_samples: int = 1,
) -> GuideGradient:
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
    weight = theory.normal_log_joint(
        y, theta, prior_loc, prior_scale, noise_scale
    ) - dist.Normal(q_loc, q_scale).log_prob(theta)
    score_loc, score_scale = jax.vmap(
        jax.grad(lambda t, m, s: dist.Normal(m, s).log_prob(t), argnums=(1, 2)),
        in_axes=(0, None, None),
    )(theta, q_loc, q_scale)
    return GuideGradient(jnp.mean(weight * score_loc), jnp.mean(weight * score_scale))


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
) -> GuideGradient:
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
        centre, _ = theory.normal_posterior(y, prior_loc, prior_scale, noise_scale)
        precision = n / noise_scale**2 + 1.0 / prior_scale**2
    var_loc = precision**2 * q_scale**2
    var_scale = precision**2 * ((q_loc - centre) ** 2 + 2.0 * q_scale**2)
    return GuideGradient(var_loc / num_samples, var_scale / num_samples)


# --------------------------------------------------------------------------
# Input checks, before any tracing.


def _check_grad_args(
    y, q_loc, q_scale, prior_loc, prior_scale, noise_scale, num_samples
):
    y = _check_observations(y)
    if y.ndim != 1:
        raise ValueError(
            f"y must have shape (n,) (a scalar θ) for the gradient estimators, "
            f"got shape {y.shape}"
        )
    q_loc, q_scale = _check_guide_params(y, q_loc, q_scale)
    prior_loc = _check_real("prior_loc", prior_loc)
    prior_scale = _check_real("prior_scale", prior_scale, positive=True)
    noise_scale = _check_real("noise_scale", noise_scale, positive=True)
    _check_count("num_samples", num_samples)
    return y, q_loc, q_scale, prior_loc, prior_scale, noise_scale
