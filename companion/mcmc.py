"""MCMC and SVI side by side: NUTS runs as ArviZ ``InferenceData`` (SVI draws
join them there through `companion.convert`), and timed runs that keep
compilation apart from computation.

- :func:`run_nuts` runs NumPyro's `MCMC` with a NUTS kernel.
- :func:`timed_nuts` and :func:`timed_svi` compile each run into one XLA
  program and time the set-up (tracing, compiling, initialising: paid once per
  model and data shape) apart from the run itself. `MCMC.run` compiles its
  loops again at every call, so timing a second call of :func:`run_nuts` would
  still count compilation; here the compiled program is timed alone.
- :func:`timed_svi_fits` runs several SVI fits from different seeds as one
  vectorised program, to measure what varies with the seed.
- :func:`timed_mcmc` does the same for any HMC-family kernel, HMCECS
  (energy-conserving subsampling, mini-batch MCMC) included.

Introduced in chapter 3 (Gamma recovery, NUTS as the reference); used in
chapter 7 (SVI vs MCMC), chapter 8 (a hierarchical model at scale),
chapter 9 (scaling) and chapter 10 (other guides).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.handlers import seed, trace
from numpyro.infer import HMC, HMCECS, MCMC, NUTS, SVI
from numpyro.infer.svi import SVIRunResult

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._compile import split_static as _split_static

if TYPE_CHECKING:
    import arviz as az


def _arviz() -> Any:
    """ArviZ, imported on first use: chapters 9 and 10 time SVI fits with
    this module and never build an ``InferenceData``, and ArviZ (with the
    SciPy statistics it loads) takes about two seconds to import."""
    with warnings.catch_warnings():
        # arviz 0.23 announces its 1.0 refactor at import; the book pins arviz < 1.0.
        warnings.filterwarnings("ignore", r"\s*ArviZ is undergoing", FutureWarning)
        import arviz

    return arviz


__all__ = [
    "Timed",
    "Timing",
    "run_nuts",
    "timed_mcmc",
    "timed_nuts",
    "timed_svi",
    "timed_svi_fits",
]

ChainMethod = Literal["sequential", "parallel", "vectorized"]
ResultT = TypeVar("ResultT")


class Timing(NamedTuple):
    """Wall-clock seconds of one timed run (see :func:`timed_nuts`,
    :func:`timed_svi`). Used in chapters 7 and 9.

    Attributes:
        setup_s: tracing, compiling and initialising: paid once per model,
            settings and data shape, and again whenever any of them changes.
        run_s: running the compiled program, until its results are ready.
    """

    setup_s: float
    run_s: float

    @property
    def total_s(self) -> float:
        """Set-up and run together: what a first, cold call costs."""
        return self.setup_s + self.run_s


class Timed(NamedTuple, Generic[ResultT]):
    """A result and the :class:`Timing` of the run that made it, as the
    ``timed_*`` functions return them (``idata, timing = timed_nuts(...)``).
    Used in chapters 7, 8, 9 and 10.
    """

    result: ResultT
    timing: Timing


def run_nuts(
    rng_key: jax.Array,
    model: Callable[..., Any],
    *args: Any,
    num_warmup: int = 500,
    num_samples: int = 1_000,
    num_chains: int = 4,
    chain_method: ChainMethod = "sequential",
    target_accept_prob: float = 0.8,
    progress_bar: bool = False,
    max_tree_depth: int = 10,
    **kwargs: Any,
) -> az.InferenceData:
    """Run NUTS (Hoffman & Gelman, 2014) on ``model(*args, **kwargs)`` and return an
    ArviZ ``InferenceData`` with ``posterior``, ``sample_stats`` and
    ``observed_data`` groups (``chain`` × ``draw`` dimensions).

    ``chain_method="parallel"`` runs one chain per device (see chapter 9 for
    several devices); with fewer devices than chains NumPyro falls back to
    sequential chains. ``max_tree_depth`` caps a trajectory at
    ``2**max_tree_depth - 1`` leapfrog steps (NumPyro's default, 10).

    Used in chapter 3 (reference posterior) and chapter 7.

    Example:
        >>> import numpyro, numpyro.distributions as dist, jax.numpy as jnp
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> idata = run_nuts(
        ...     jax.random.key(0),
        ...     model,
        ...     jnp.ones(20),
        ...     num_chains=2,
        ...     num_warmup=200,
        ...     num_samples=200,
        ... )
        >>> idata.posterior["loc"].shape
        (2, 200)
    """
    _check_nuts_settings(
        model, num_warmup, num_samples, num_chains, target_accept_prob, max_tree_depth
    )
    if chain_method not in ("sequential", "parallel", "vectorized"):
        raise ValueError(
            "chain_method must be 'sequential', 'parallel' or 'vectorized', "
            f"got {chain_method!r}"
        )
    if chain_method == "parallel" and jax.local_device_count() < num_chains:
        chain_method = "sequential"  # what NumPyro would do, without its warning
    mcmc = MCMC(
        NUTS(
            model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth
        ),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    mcmc.run(rng_key, *args, **kwargs)
    return _arviz().from_numpyro(mcmc)


def timed_nuts(
    rng_key: jax.Array,
    model: Callable[..., Any],
    *args: Any,
    num_warmup: int = 500,
    num_samples: int = 1_000,
    num_chains: int = 4,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    **kwargs: Any,
) -> Timed[az.InferenceData]:
    """NUTS as one compiled program, timed: set-up apart from sampling.

    The same sampler as :func:`run_nuts` (NumPyro's NUTS kernel with step-size
    and diagonal mass-matrix adaptation during ``num_warmup`` steps), with the
    ``num_chains`` chains vectorised (``vmap``, as
    ``chain_method="vectorized"``) and warm-up and sampling in one
    `jax.jit`-compiled function of the data. ``setup_s`` covers initialising
    the chains and compiling; ``run_s`` covers warm-up and sampling.

    Returns:
        A :class:`Timed` ``(idata, timing)``: ``idata`` has a ``posterior`` group (latent and
        deterministic sites, constrained, dims ``chain`` × ``draw`` × site
        shape), a ``sample_stats`` group (``diverging``, ``n_steps``: leapfrog
        steps per draw, ``acceptance_rate``, ``lp``: the log joint density in
        the unconstrained space) and an ``observed_data`` group.

    Used in chapters 7, 8 and 9.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     with numpyro.plate("data", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> idata, timing = timed_nuts(
        ...     jax.random.key(0), model, jnp.ones(20), num_warmup=100, num_samples=100
        ... )
        >>> idata.posterior["loc"].shape, timing.run_s > 0
        ((4, 100), True)
    """
    _check_key(rng_key)
    _check_nuts_settings(
        model, num_warmup, num_samples, num_chains, target_accept_prob, max_tree_depth
    )
    kernel = NUTS(
        model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth
    )
    return timed_mcmc(
        rng_key,
        kernel,
        *args,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        **kwargs,
    )


def timed_mcmc(
    rng_key: jax.Array,
    kernel: HMC | HMCECS,
    *args: Any,
    num_warmup: int = 500,
    num_samples: int = 1_000,
    num_chains: int = 1,
    **kwargs: Any,
) -> Timed[az.InferenceData]:
    """A NumPyro HMC-family kernel as one compiled program, timed: set-up
    apart from warm-up and sampling.

    ``kernel`` is an `numpyro.infer.HMC` or `numpyro.infer.NUTS` kernel, or an
    `numpyro.infer.HMCECS` kernel around one (energy-conserving subsampling:
    the model's subsample plate is read through a mini-batch that the kernel
    updates by Gibbs steps, Dang et al. 2019). The kernel runs on
    ``model(*args, **kwargs)``; :func:`timed_nuts` is this function with a
    NUTS kernel built from its settings. HMC and NUTS kernels run
    ``num_chains`` vectorised chains; an HMCECS kernel runs one chain
    (``num_chains=1``). ``setup_s`` covers initialising (for HMCECS with a
    Taylor proxy, its pass over the full data) and compiling; ``run_s``
    covers warm-up and sampling.

    Returns:
        A :class:`Timed` ``(idata, timing)`` as :func:`timed_nuts`: the ``sample_stats`` come
        from the (inner) HMC state, and an HMCECS run adds
        ``subsample_acceptance``, the acceptance probability of the proposed
        mini-batch at each draw. ``lp`` is minus the potential energy the
        kernel used: for HMCECS, an estimate from the mini-batch.

    Used in chapter 7 (HMCECS in the cost study).

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import HMCECS, NUTS
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     with numpyro.plate("data", y.shape[0], subsample_size=50):
        ...         numpyro.sample(
        ...             "y", dist.Normal(loc, 1), obs=numpyro.subsample(y, 0)
        ...         )
        >>> kernel = HMCECS(NUTS(model), num_blocks=10)
        >>> idata, timing = timed_mcmc(
        ...     jax.random.key(0),
        ...     kernel,
        ...     jnp.ones(500),
        ...     num_warmup=100,
        ...     num_samples=100,
        ... )
        >>> idata.posterior["loc"].shape, "subsample_acceptance" in idata.sample_stats
        ((1, 100), True)
    """
    _check_key(rng_key)
    if not isinstance(kernel, HMC | HMCECS):
        raise TypeError(
            "kernel must be a numpyro.infer HMC, NUTS or HMCECS kernel, "
            f"got {type(kernel).__name__}"
        )
    for name, value in (
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("num_chains", num_chains),
    ):
        _check_count(name, value)
    vectorised = isinstance(kernel, HMC)
    if not vectorised and num_chains != 1:
        raise ValueError(
            f"num_chains must be 1 for an HMCECS kernel, got {num_chains} "
            "(run one call per chain)"
        )
    subsampled = isinstance(kernel, HMCECS)
    dynamic, rebuild = _split_static(args, kwargs)

    def run(state, dynamic):
        call_args, call_kwargs = rebuild(dynamic)

        def step(state, _):
            state = kernel.sample(state, call_args, call_kwargs)
            inner = state.hmc_state if subsampled else state
            stats = {
                "diverging": inner.diverging,
                "n_steps": inner.num_steps,
                "acceptance_rate": inner.accept_prob,
                "lp": -inner.potential_energy,
            }
            if subsampled:
                stats["subsample_acceptance"] = state.accept_prob
            return state, (state.z, stats)

        state, _ = lax.scan(
            lambda s, _: (step(s, _)[0], None), state, length=num_warmup
        )
        _, (z, stats) = lax.scan(step, state, length=num_samples)
        constrain = kernel.postprocess_fn(call_args, call_kwargs)
        if vectorised:
            draws = jax.vmap(jax.vmap(constrain))(z)  # (draw, chain, ...)
        else:
            draws = jax.vmap(constrain)(z)  # (draw, ...)
        return draws, stats

    start = time.perf_counter()
    # one key per chain, vectorised; HMCECS runs one chain from the key itself
    keys = jax.random.split(rng_key, num_chains) if vectorised else rng_key
    state = kernel.init(keys, num_warmup, None, args, kwargs)
    compiled = jax.jit(run).lower(state, dynamic).compile()
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    draws, stats = jax.block_until_ready(compiled(state, dynamic))
    run_s = time.perf_counter() - start

    def chain_first(x):
        x = np.asarray(x)
        return np.swapaxes(x, 0, 1) if vectorised else x[None]

    idata = _arviz().from_dict(
        posterior={name: chain_first(value) for name, value in draws.items()},
        sample_stats={name: chain_first(value) for name, value in stats.items()},
        observed_data=_observed(kernel.model, args, kwargs),
    )
    return Timed(idata, Timing(setup_s, run_s))


def timed_svi(
    rng_key: jax.Array, svi: SVI, num_steps: int, *args: Any, **kwargs: Any
) -> Timed[SVIRunResult]:
    """``num_steps`` of SVI as one compiled `lax.scan`, timed: set-up (``svi.init``
    and compiling) apart from the steps.

    Returns:
        A :class:`Timed` ``(result, timing)``; ``result`` is an `SVIRunResult` as `svi.run`
        returns (``params``, ``state``, ``losses``: the loss, negative ELBO, of
        every step).

    Used in chapters 7, 9 and 10.

    Example:
        >>> import numpyro, numpyro.distributions as dist, optax
        >>> from numpyro.infer import Trace_ELBO
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     with numpyro.plate("data", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
        >>> result, timing = timed_svi(jax.random.key(0), svi, 2_000, jnp.full(50, 3.0))
        >>> result.losses.shape, round(float(result.params["loc_auto_loc"]), 1)
        ((2000,), 3.0)
    """
    _check_key(rng_key)
    if not isinstance(svi, SVI):
        raise TypeError(f"svi must be a numpyro.infer.SVI, got {type(svi).__name__}")
    _check_count("num_steps", num_steps)
    dynamic, rebuild = _split_static(args, kwargs)

    run = _svi_scan(svi, num_steps, rebuild)

    start = time.perf_counter()
    state = svi.init(rng_key, *args, **kwargs)
    compiled = jax.jit(run).lower(state, dynamic).compile()
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    state, losses = jax.block_until_ready(compiled(state, dynamic))
    run_s = time.perf_counter() - start
    result = SVIRunResult(svi.get_params(state), state, losses)
    return Timed(result, Timing(setup_s, run_s))


def timed_svi_fits(
    rng_key: jax.Array,
    svi: SVI,
    num_steps: int,
    num_fits: int,
    *args: Any,
    **kwargs: Any,
) -> Timed[SVIRunResult]:
    """``num_fits`` independent SVI fits from different seeds, vectorised into
    one compiled program (``vmap`` over the SVI state), timed as
    :func:`timed_svi`: set-up (``num_fits`` calls of ``svi.init`` and one
    compilation) apart from the steps of all fits together.

    Fit ``i`` starts from ``svi.init`` with the ``i``-th key of
    ``jax.random.split(rng_key, num_fits)``, so it is the fit that
    :func:`timed_svi` would give with that key, up to floating-point
    rounding. Results that vary with the seed are then measured across seeds
    for about the price of one compilation.

    Returns:
        A :class:`Timed` ``(result, timing)``; ``result`` is an `SVIRunResult` whose
        ``params`` and ``state`` leaves have a leading axis of length
        ``num_fits`` and whose ``losses`` have shape ``(num_fits, num_steps)``.

    Used in chapters 7 and 10.

    Example:
        >>> import numpyro, numpyro.distributions as dist, optax
        >>> from numpyro.infer import Trace_ELBO
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     with numpyro.plate("data", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
        >>> result, timing = timed_svi_fits(
        ...     jax.random.key(0), svi, 2_000, 3, jnp.full(50, 3.0)
        ... )
        >>> result.losses.shape, result.params["loc_auto_loc"].round(1).tolist()
        ((3, 2000), [3.0, 3.0, 3.0])
    """
    _check_key(rng_key)
    if not isinstance(svi, SVI):
        raise TypeError(f"svi must be a numpyro.infer.SVI, got {type(svi).__name__}")
    _check_count("num_steps", num_steps)
    _check_count("num_fits", num_fits)
    dynamic, rebuild = _split_static(args, kwargs)

    run = _svi_scan(svi, num_steps, rebuild)

    start = time.perf_counter()
    states = [
        svi.init(key, *args, **kwargs) for key in jax.random.split(rng_key, num_fits)
    ]
    state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    vectorised = jax.vmap(run, in_axes=(0, None))
    compiled = jax.jit(vectorised).lower(state, dynamic).compile()
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    state, losses = jax.block_until_ready(compiled(state, dynamic))
    run_s = time.perf_counter() - start
    result = SVIRunResult(jax.vmap(svi.get_params)(state), state, losses)
    return Timed(result, Timing(setup_s, run_s))


# --------------------------------------------------------------------------
# Helpers.


def _svi_scan(svi: SVI, num_steps: int, rebuild: Callable) -> Callable:
    """``run(state, dynamic)``: ``num_steps`` SVI steps as one ``lax.scan``,
    the traced arrays merged back into the model's arguments by ``rebuild``."""

    def run(state, dynamic):
        call_args, call_kwargs = rebuild(dynamic)
        return lax.scan(
            lambda s, _: svi.update(s, *call_args, **call_kwargs),
            state,
            length=num_steps,
        )

    return run


def _observed(
    model: Callable[..., Any], args: tuple, kwargs: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The observed sites of one trace of the model (their data)."""
    model_trace = trace(seed(model, jax.random.key(0))).get_trace(*args, **kwargs)
    return {
        name: np.asarray(site["value"])
        for name, site in model_trace.items()
        if site["type"] == "sample" and site["is_observed"]
    }


def _check_nuts_settings(
    model: Any,
    num_warmup: Any,
    num_samples: Any,
    num_chains: Any,
    target_accept_prob: Any,
    max_tree_depth: Any,
) -> None:
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    for name, value in (
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("num_chains", num_chains),
        ("max_tree_depth", max_tree_depth),
    ):
        _check_count(name, value)
    if not isinstance(target_accept_prob, int | float) or not (
        0.0 < target_accept_prob < 1.0
    ):
        raise ValueError(
            f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}"
        )
