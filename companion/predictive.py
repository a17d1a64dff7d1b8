"""Posterior predictive in batches of posterior draws, with bounded memory.

`numpyro.infer.Predictive` runs the model once per posterior draw, in one
of two ways. By default (``parallel=False``) one draw after another, a
sequential ``lax.map`` over the draws: little working memory, but a loop of
``num_draws`` iterations, each one draw's worth of work. With
``parallel=True`` all draws at once, one ``vmap``: for a fine grid of inputs
and many draws every intermediate activation of every draw is alive at the
same time. Here the draws go through the model ``batch_size`` at a time
(``jax.lax.map`` with ``batch_size``: a compiled loop over batches, ``vmap``
inside a batch), anywhere between the two (``batch_size=1`` is the
sequential loop, ``batch_size=None`` the single ``vmap``), so the working
memory grows with ``batch_size`` rather than with the number of draws; only
the returned sites are kept for all draws.

Batching does not change the numbers: the key is split into one key per draw
before batching, and each draw goes through ``Predictive`` alone with its own
key, so draw ``i`` sees the same key whatever the batch size.
:func:`posterior_predictive` first draws all parameter samples from the guide
with one key, then runs the model on them with another.

Used in chapter 6 (introduced), chapter 9 (scaling) and chapter 10 (other
guides).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from numpyro.infer import Predictive
from numpyro.infer.autoguide import AutoGuide

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._compile import cached_jit as _cached_jit

__all__ = ["posterior_predictive", "predict", "sample_posterior"]


def sample_posterior(
    rng_key: jax.Array,
    guide: Callable[..., Any],
    params: dict[str, Any],
    *args: Any,
    num_samples: int,
    **kwargs: Any,
) -> dict[str, Array]:
    """``num_samples`` draws of the latent variables from the fitted guide
    ``q_φ`` (``params`` = φ, e.g. ``svi_result.params``), one array per site
    with a leading ``num_samples`` axis. ``args``/``kwargs`` are what the guide
    is called with (the model's arguments).

    The one way the package draws from a guide (:func:`posterior_predictive`,
    `companion.convert.svi_to_inference_data` and
    `companion.studies.compare_guides` all come here). A NumPyro autoguide
    draws through its own ``sample_posterior``: for most autoguides the same
    distribution as running the guide, but `AutoLaplaceApproximation` runs as
    a point mass at the MAP (what it trains) and samples its Gaussian only
    there, so drawing by running the guide (`Predictive`) would give the MAP
    point ``num_samples`` times. Only the model's latent sample sites are
    returned (some autoguides add the model's deterministic sites, computed
    on ``args``). Any other guide runs through `numpyro.infer.Predictive`,
    which returns its sample sites.

    An autoguide must have been set up on the observed data before
    (``svi.init`` or ``svi.run`` does that): one first called without ``y``
    takes ``y`` for a latent variable; an autoguide never set up is refused
    with a ``ValueError``. For a Laplace guide the Gaussian's precision is
    the Hessian on the data it was set up with, whatever ``args`` are.

    The draws are bit-for-bit reproducible from ``rng_key``; one compiled
    function per guide and settings is reused across calls.

    Used in chapter 6 (through :func:`posterior_predictive`) and chapters 7,
    9 and 10.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> def guide():
        ...     numpyro.sample("w", dist.Normal(numpyro.param("w_loc", 0.0), 0.1))
        >>> draws = sample_posterior(
        ...     jax.random.key(0), guide, {"w_loc": jnp.array(1.0)}, num_samples=4
        ... )
        >>> draws["w"].shape
        (4,)
    """
    _check_key(rng_key)
    _check_count("num_samples", num_samples)
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (svi_result.params), got {params!r}")
    if not callable(guide):
        raise TypeError(f"guide must be callable, got {type(guide).__name__}")
    if isinstance(guide, AutoGuide) and guide.prototype_trace is None:
        raise ValueError(
            f"guide ({type(guide).__name__}) has not been set up: run svi.init "
            "(or svi.run) on the observed data first, so that it knows the "
            "model's latent sites"
        )

    def draw(key, params, call_args, call_kwargs):
        if not isinstance(guide, AutoGuide):
            return Predictive(guide, params=params, num_samples=num_samples)(
                key, *call_args, **call_kwargs
            )
        draws = guide.sample_posterior(
            key, params, *call_args, sample_shape=(num_samples,), **call_kwargs
        )
        latent = _latent_sites(guide)
        return {name: value for name, value in draws.items() if name in latent}

    run = _cached_jit(guide, ("sample_posterior", num_samples), draw, args, kwargs)
    return dict(run(rng_key, params))


def predict(
    rng_key: jax.Array,
    model: Callable[..., Any],
    posterior_samples: dict[str, Array],
    *args: Any,
    batch_size: int | None = None,
    return_sites: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, Array]:
    """Run ``model(*args, **kwargs)`` once per posterior draw, ``batch_size``
    draws at a time, and return the requested sites for every draw.

    Args:
        rng_key: a JAX PRNG key, split into one key per draw.
        model: the NumPyro model.
        posterior_samples: latent draws, one array per site with a common
            leading axis of length ``num_draws`` (from
            :func:`sample_posterior`, an MCMC run, ...).
        *args: the model's positional arguments (e.g. a grid of inputs).
        batch_size: draws per batch; ``None`` runs all draws at once (one
            ``vmap``, as ``Predictive(..., parallel=True)`` does); ``1`` runs
            them one at a time (a sequential loop, as ``Predictive`` does by
            default).
        return_sites: the sites to return; ``None`` returns what
            ``Predictive`` returns by default (sample sites not in
            ``posterior_samples`` and deterministic sites).
        **kwargs: the model's keyword arguments.

    Returns:
        A dict of arrays with leading axis ``num_draws``; the same numbers
        whatever ``batch_size``.

    Used in chapters 6, 7, 9 and 10.
    """
    _check_key(rng_key)
    if not isinstance(posterior_samples, dict) or not posterior_samples:
        raise ValueError(
            "posterior_samples must be a non-empty dict of arrays, got "
            f"{type(posterior_samples).__name__}"
        )
    lengths = {
        jnp.shape(v)[0] if jnp.ndim(v) else None for v in posterior_samples.values()
    }
    if len(lengths) != 1 or None in lengths:
        raise ValueError(
            "posterior_samples must share one leading (draw) axis, got shapes "
            f"{ {k: jnp.shape(v) for k, v in posterior_samples.items()} }"
        )
    (num_draws,) = lengths
    if batch_size is not None:
        _check_count("batch_size", batch_size)
    if return_sites is not None:
        if isinstance(return_sites, str) or not all(
            isinstance(s, str) for s in return_sites
        ):
            raise ValueError(
                f"return_sites must be None or a sequence of str, got {return_sites!r}"
            )
        return_sites = list(return_sites)

    def run(keys, samples, call_args, call_kwargs):
        def one_draw(key_and_sample):
            key, sample = key_and_sample
            sample = jax.tree.map(lambda v: v[None], sample)
            out = Predictive(
                model, posterior_samples=sample, return_sites=return_sites
            )(key, *call_args, **call_kwargs)
            return jax.tree.map(lambda v: v[0], out)

        if batch_size is None or batch_size >= keys.shape[0]:
            return jax.vmap(lambda k, s: one_draw((k, s)))(keys, samples)
        return jax.lax.map(one_draw, (keys, samples), batch_size=batch_size)

    sites = None if return_sites is None else tuple(return_sites)
    compiled = _cached_jit(model, ("predict", batch_size, sites), run, args, kwargs)
    keys = jax.random.split(rng_key, num_draws)
    return compiled(keys, dict(posterior_samples))


def posterior_predictive(
    rng_key: jax.Array,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    params: dict[str, Any],
    *args: Any,
    num_samples: int,
    batch_size: int | None = None,
    return_sites: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, Array]:
    """The posterior predictive of a fitted guide, in batches of draws.

    Draws ``num_samples`` parameter samples from ``q_φ`` (:func:`sample_posterior`,
    with the first half of ``rng_key``), then runs the model on them
    ``batch_size`` draws at a time (:func:`predict`, with the second half).
    For the BNN of chapter 4, ``return_sites=["p"]`` gives the probabilities
    ``p`` with shape ``(num_samples, n)`` for inputs ``x`` of shape ``(n, 2)``.

    The result does not depend on ``batch_size`` (up to float rounding):
    ``batch_size`` only bounds the memory the model's intermediate values take.

    Used in chapters 6, 9 and 10.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> def model(x, y=None):
        ...     w = numpyro.sample("w", dist.Normal(0, 1))
        ...     with numpyro.plate("data", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(w * x, 1), obs=y)
        >>> def guide(x, y=None):
        ...     numpyro.sample("w", dist.Normal(numpyro.param("w_loc", 0.0), 0.1))
        >>> params = {"w_loc": jnp.array(1.0)}
        >>> x = jnp.linspace(0, 1, 5)
        >>> out = posterior_predictive(
        ...     jax.random.key(0), model, guide, params, x, num_samples=8, batch_size=3
        ... )
        >>> out["y"].shape
        (8, 5)
    """
    _check_key(rng_key)
    _check_count("num_samples", num_samples)
    if batch_size is not None:
        _check_count("batch_size", batch_size)
    key_guide, key_model = jax.random.split(rng_key)
    samples = sample_posterior(
        key_guide, guide, params, *args, num_samples=num_samples, **kwargs
    )
    return predict(
        key_model,
        model,
        samples,
        *args,
        batch_size=batch_size,
        return_sites=return_sites,
        **kwargs,
    )


def _latent_sites(guide: AutoGuide) -> set[str]:
    """The latent (unobserved sample) sites of the model an autoguide was set
    up on."""
    return {
        name
        for name, site in guide.prototype_trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
