"""Gaussians in closed form for chapter 2: KL divergences between normal
distributions and the mean-field Gaussian closest to a correlated one.

:func:`kl_normal` is the KL term of the ELBO for a Gaussian guide and prior
(elementwise, for mean-field families); :func:`kl_mvn` compares full-covariance
Gaussians; :func:`mean_field_optimum` is what a mean-field guide converges to
when the target is a correlated Gaussian: the right means and the conditional
variances, too small where the target is correlated.

Used in chapter 2 (the ELBO).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve
from jaxtyping import Array, ArrayLike, Float

from companion._checks import check_broadcast as _check_broadcast
from companion._checks import check_real as _check_real
from companion._checks import is_traced as _is_traced

__all__ = ["Gaussian", "kl_mvn", "kl_normal", "mean_field_optimum"]


class Gaussian(NamedTuple):
    """A Gaussian ``N(loc, scale²)`` per coordinate: the mean-field optimum of
    :func:`mean_field_optimum` and the exact posterior of
    `companion.theory.normal_posterior`. Used in chapters 1 and 2."""

    loc: Float[Array, "*d"]
    scale: Float[Array, "*d"]


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
) -> Gaussian:
    """The mean-field Gaussian closest to ``N(loc, cov)`` in ``KL(q ‖ p)``.

    Among ``q = Π_i N(m_i, s_i²)`` the minimiser of ``KL(q ‖ N(loc, cov))`` has
    ``m = loc`` and ``s_i² = 1 / Λ_ii``, with ``Λ = cov⁻¹`` the precision: the
    conditional variances, never larger (and for correlated targets smaller)
    than the marginal variances ``cov_ii``. Returns ``(loc, scale)``.

    Used in chapter 2.
    """
    loc, cov = _check_mvn("loc", loc, "cov", cov)
    precision = jnp.linalg.inv(cov)
    return Gaussian(loc, 1.0 / jnp.sqrt(jnp.diag(precision)))


# --------------------------------------------------------------------------
# Input checks, before any tracing.


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
