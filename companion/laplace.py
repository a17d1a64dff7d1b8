"""The linearised (GLM) Laplace predictive of a classifier.

A Laplace approximation is a Gaussian ``N(θ*, Σ)`` over the latent
variables (in NumPyro, `AutoLaplaceApproximation`: ``θ*`` the MAP point in
the unconstrained space, ``Σ`` the inverse Hessian of the negative log joint
there). Pushing its draws through the network (the *sampled* predictive)
trusts the Gaussian far out along directions where the log density is flat.
The linearised predictive (MacKay 1992; Immer et al. 2021) replaces the
network by its first-order Taylor expansion in the weights at ``θ*``::

    f(x; θ) ≈ f(x; θ*) + J(x) (θ − θ*),      J(x) = ∂f(x; θ)/∂θ at θ*,

so under ``θ ~ N(θ*, Σ)`` the logits are Gaussian, ``N(f(x; θ*), J Σ Jᵀ)``,
jointly over inputs. With ``Σ = L Lᵀ`` the draws are
``f* + (J L) ε``, ``ε ~ N(0, I)``; the predictive probability is the mean
of ``sigmoid`` over them, or, in closed form, the probit approximation
``sigmoid(m / sqrt(1 + π v / 8))`` for a logit ``N(m, v)``.

- :func:`laplace_gaussian`: ``(θ*, L)`` of a fitted Laplace guide.
- :func:`logit_function`: ``θ ↦ logits`` of the model's Bernoulli site, as
  a function of the flat unconstrained latent vector.
- :func:`linearise`: the Gaussian of the linearised logits,
  ``LinearisedLogits(mean, factor)`` with ``factor = J L``.
- :func:`glm_predictive`: draws of the probability under the linearised
  logits; :func:`probit_predictive`: the closed-form approximation.

Used in chapter 10 (other inference methods).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from numpyro import handlers
from numpyro.infer.autoguide import AutoContinuous

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key

__all__ = [
    "LatentGaussian",
    "LinearisedLogits",
    "glm_predictive",
    "laplace_gaussian",
    "linearise",
    "logit_function",
    "probit_predictive",
]


class LatentGaussian(NamedTuple):
    """A Gaussian ``N(loc, scale_tril @ scale_tril.T)`` over the flat vector of
    a model's unconstrained latent variables (:func:`laplace_gaussian`).
    Used in chapter 10."""

    loc: Float[Array, " d"]
    scale_tril: Float[Array, "d d"]


class LinearisedLogits(NamedTuple):
    """The Gaussian of linearised logits at ``n`` inputs: the logits are
    ``mean + factor @ ε`` with ``ε ~ N(0, I_d)``, i.e.
    ``N(mean, factor @ factor.T)`` jointly over the inputs.

    Used in chapter 10.

    Attributes:
        mean: ``f(x; θ*)``, the logits at the centre of the Gaussian, ``(n,)``.
        factor: ``J(x) L``, the Jacobian of the logits at ``θ*`` times the
            Cholesky factor of the covariance, ``(n, d)``.
    """

    mean: Float[Array, " n"]
    factor: Float[Array, "n d"]

    @property
    def variance(self) -> Float[Array, " n"]:
        """The marginal variance of each logit, ``diag(J Σ Jᵀ)``."""
        return jnp.sum(self.factor**2, axis=-1)


def laplace_gaussian(guide: AutoContinuous, params: dict[str, Any]) -> LatentGaussian:
    """The Gaussian ``N(loc, scale_tril @ scale_tril.T)`` of a fitted guide in
    the unconstrained latent space: for `AutoLaplaceApproximation`, the MAP
    point and the Cholesky factor of the inverse Hessian there (what its
    ``get_transform`` computes; also works for `AutoMultivariateNormal`).

    Raises ``ValueError`` when the covariance is degenerate: NumPyro replaces
    the Cholesky factor of a Hessian that is not positive definite by zeros
    (its draws are then all the MAP point). Compute it once and pass it on:
    each call computes the Hessian again.

    Used in chapter 10.
    """
    _check_guide(guide, params)

    def gaussian(params):
        transform = guide.get_transform(params)  # the Hessian, for Laplace
        if not (hasattr(transform, "loc") and hasattr(transform, "scale_tril")):
            raise TypeError(
                f"guide must give a Gaussian (a LowerCholeskyAffine transform), "
                f"{type(guide).__name__} gives {type(transform).__name__}"
            )
        return transform.loc, transform.scale_tril

    loc, scale_tril = jax.jit(gaussian)(params)  # compiled: the Hessian is costly
    if not np.all(np.abs(np.diag(np.asarray(scale_tril))) > 0):
        raise ValueError(
            "the guide's covariance is degenerate: the Hessian at its point is "
            "not positive definite (train longer, or use another guide)"
        )
    return LatentGaussian(loc, scale_tril)


def logit_function(
    model: Callable[..., Any],
    guide: AutoContinuous,
    params: dict[str, Any],
    *args: Any,
    site: str = "y",
    **kwargs: Any,
) -> Callable[[Float[Array, " d"]], Float[Array, " n"]]:
    """``z ↦ logits``: the logits of the Bernoulli site ``site`` of
    ``model(*args, **kwargs)`` when the latent variables take the values that
    the flat unconstrained vector ``z`` (the guide's latent space, length
    ``d``) stands for. ``args`` are the inputs to predict at (``y`` left out).

    The guide must have been set up (``svi.init``); it turns ``z`` into the
    model's sites (unpacking and constraining) exactly as it does for its own
    draws. The returned function is pure and can be differentiated
    (:func:`linearise`) and compiled.

    Used in chapter 10.
    """
    _check_guide(guide, params)
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not isinstance(site, str):
        raise TypeError(f"site must be a str, got {site!r}")
    latent_site = f"_{guide.prefix}_latent"

    def logits(z: Float[Array, " d"]) -> Float[Array, " n"]:
        conditioned = handlers.condition(guide, data={latent_site: z})
        guide_trace = handlers.trace(
            handlers.substitute(handlers.seed(conditioned, 0), data=params)
        ).get_trace(*args, **kwargs)
        values = {
            name: s["value"]
            for name, s in guide_trace.items()
            if s["type"] == "sample" and name != latent_site
        }
        model_trace = handlers.trace(
            handlers.substitute(handlers.seed(model, 0), data=values)
        ).get_trace(*args, **kwargs)
        if site not in model_trace:
            raise ValueError(
                f"site {site!r} is not a site of the model; it has "
                f"{sorted(model_trace)}"
            )
        fn = model_trace[site]["fn"]
        while not hasattr(fn, "logits") and hasattr(fn, "base_dist"):
            fn = fn.base_dist  # an expanded or masked Bernoulli
        if not hasattr(fn, "logits"):
            raise ValueError(
                f"site {site!r} must be a Bernoulli site (a distribution with "
                f"logits), got {type(fn).__name__}"
            )
        return fn.logits

    return logits


def linearise(
    fn: Callable[[Float[Array, " d"]], Float[Array, " n"]],
    loc: Float[Array, " d"],
    scale_tril: Float[Array, "d d"],
) -> LinearisedLogits:
    """Linearise ``fn`` at ``loc`` and push ``N(loc, scale_tril @ scale_tril.T)``
    through the linear map: ``LinearisedLogits(fn(loc), J @ scale_tril)``,
    ``J`` the Jacobian of ``fn`` at ``loc``.

    ``J @ scale_tril`` is computed column by column with forward-mode
    derivatives (``jax.linearize``, one Jacobian-vector product per latent
    dimension), never forming ``J`` itself. For ``fn`` linear in its argument
    the result is exact.

    Used in chapter 10.

    Example:
        >>> a = jnp.array([[1.0, 2.0], [0.0, 3.0], [1.0, -1.0]])
        >>> out = linearise(lambda z: a @ z, jnp.zeros(2), 0.5 * jnp.eye(2))
        >>> out.mean.tolist(), out.variance.tolist()
        ([0.0, 0.0, 0.0], [1.25, 2.25, 0.5])
    """
    loc, scale_tril = _check_linearise(fn, loc, scale_tril)

    @jax.jit
    def linearised(loc, scale_tril):
        mean, jvp = jax.linearize(fn, loc)  # f(θ*), and the map v ↦ J v
        factor = jax.vmap(jvp, in_axes=1, out_axes=1)(scale_tril)  # J L, by column
        return LinearisedLogits(mean, factor)

    return linearised(loc, scale_tril)


def glm_predictive(
    rng_key: jax.Array, logits: LinearisedLogits, *, num_samples: int
) -> Float[Array, "num_samples n"]:
    """``num_samples`` joint draws of the probabilities ``sigmoid(mean +
    factor @ ε)``, ``ε ~ N(0, I_d)``: the linearised (GLM) predictive. Their
    mean over draws is the predictive probability; every draw is one
    function of the inputs (one ``ε`` for all of them), so per-draw summaries
    (an AUC per draw) are meaningful.

    With ``ε`` drawn as ``jax.random.normal(rng_key, (num_samples, d))``,
    these are the draws of ``MultivariateNormal(loc, scale_tril=L).sample``
    with the same key, pushed through the linearised model.

    Used in chapter 10.
    """
    _check_key(rng_key)
    _check_count("num_samples", num_samples)
    _check_logits(logits)
    eps = jax.random.normal(
        rng_key, (num_samples, logits.factor.shape[-1]), logits.factor.dtype
    )
    return jax.nn.sigmoid(logits.mean + eps @ logits.factor.T)


def probit_predictive(logits: LinearisedLogits) -> Float[Array, " n"]:
    """The probit approximation (MacKay 1992) of ``E[sigmoid(f)]`` for
    ``f ~ N(mean, variance)``: ``sigmoid(mean / sqrt(1 + π variance / 8))``,
    exact at zero variance and for ``mean = 0``, within about 0.02 elsewhere.

    Used in chapter 10.

    Example:
        >>> out = LinearisedLogits(jnp.array([0.0, 2.0]), jnp.array([[1.0], [0.0]]))
        >>> [round(float(p), 4) for p in probit_predictive(out)]
        [0.5, 0.8808]
    """
    _check_logits(logits)
    return jax.nn.sigmoid(logits.mean / jnp.sqrt(1.0 + math.pi * logits.variance / 8))


# --------------------------------------------------------------------------
# Helpers.


def _check_linearise(fn: Any, loc: Any, scale_tril: Any) -> tuple[Array, Array]:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    loc, scale_tril = jnp.asarray(loc), jnp.asarray(scale_tril)
    if loc.ndim != 1:
        raise ValueError(f"loc must be a vector (d,), got shape {loc.shape}")
    d = loc.shape[0]
    if scale_tril.shape != (d, d):
        raise ValueError(
            f"scale_tril must have shape ({d}, {d}) to match loc, got "
            f"{scale_tril.shape}"
        )
    return loc, scale_tril


def _check_guide(guide: Any, params: Any) -> None:
    if not isinstance(guide, AutoContinuous):
        raise TypeError(
            "guide must be a NumPyro AutoContinuous guide "
            f"(AutoLaplaceApproximation), got {type(guide).__name__}"
        )
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (svi_result.params), got {params!r}")
    if guide.prototype_trace is None:
        raise ValueError(
            "guide has not been set up: run svi.init (or svi.run) on the "
            "training data first"
        )


def _check_logits(logits: Any) -> None:
    if not isinstance(logits, LinearisedLogits):
        raise TypeError(
            f"logits must be a LinearisedLogits (from linearise), got "
            f"{type(logits).__name__}"
        )
    if logits.mean.ndim != 1 or logits.factor.ndim != 2:
        raise ValueError(
            "logits must hold mean (n,) and factor (n, d), got shapes "
            f"{logits.mean.shape} and {logits.factor.shape}"
        )
    if logits.factor.shape[0] != logits.mean.shape[0]:
        raise ValueError(
            f"logits.factor must have one row per input ({logits.mean.shape[0]}), "
            f"got shape {logits.factor.shape}"
        )
