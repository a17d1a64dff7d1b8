"""The talk's Bayesian neural network: a Flax nnx MLP lifted into a NumPyro
model, and a hand-written layer-wise variational guide for it.

Model, for inputs ``x`` (``n × d``) and labels ``y`` in {0, 1}::

    θ = (kernels, biases) ~ SoftLaplace(0, s) on kernels, Normal(0, s) on biases
    f = MLP_θ(x)                     # tanh hidden layers, linear output: logits
    p = sigmoid(f)                   # recorded as the deterministic site p
    y_i ~ Bernoulli(logits=f_i)      # inside numpyro.plate("data", n)

with ``s = prior_scale`` (1 in the talk). The latent sites are named
``nn/layers.<i>.kernel`` and ``nn/layers.<i>.bias`` (NumPyro's
``random_nnx_module`` names them after the nnx parameter paths), the
per-observation probabilities are the deterministic site ``p``, the labels
the site ``y``. The likelihood takes the logits, not ``p``: ``Bernoulli(probs=p)``
clamps ``p`` to ``[eps, 1 - eps]``, so a confidently wrong prediction
(``sigmoid`` rounded to 0 or 1) would contribute a constant ``log(eps)`` and
no gradient; ``Bernoulli(logits=f)`` computes ``-softplus(∓f)`` exactly.

With ``build_model(..., subsample_size=b)`` the likelihood is evaluated on
a mini-batch of ``b`` rows per call (:func:`subsample_plate`), scaled by
``n / b``: the same model and site names, one factory for both.

Used in chapter 4 (model and priors, introduced), chapter 5 (the layer-wise
guide), chapter 6 (evaluation) and chapters 7 and 9 (mini-batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from flax import nnx
from jaxtyping import Array, Float, Int
from numpyro.contrib.module import random_nnx_module

from companion._checks import broadcasts_to as _broadcasts_to
from companion._checks import check_count as _check_count
from companion._checks import check_positive as _check_positive
from companion._checks import is_int as _is_int

__all__ = [
    "MLP",
    "build_guide",
    "build_model",
    "layer_guide",
    "make_prior",
    "param_shapes",
    "subsample_plate",
]

Model = Callable[..., None]


class MLP(nnx.Module):
    """The talk's multi-layer perceptron: ``tanh`` hidden layers and a
    linear last layer, so that it maps ``(n, din)`` inputs to logits of
    shape ``(n, dout)``; ``jax.nn.sigmoid`` of them are the probabilities.

    Two changes from the talk's code: the layers sit in an ``nnx.List``
    (Flax 0.12 refuses a plain Python list of modules as an attribute), and
    the network returns logits where the talk's applies a ``sigmoid``, so
    that the likelihood can take them (see :func:`build_model`).

    Args:
        din: number of input features.
        dout: number of outputs (1 for binary classification).
        hidden_layers: the width of each hidden layer, ``[4, 3]`` in the talk.
        rngs: the nnx random streams for the initial weights (in the
            Bayesian model only their shapes matter).

    Used in chapters 4, 5, 6, 7, 9 and 10.

    Example:
        >>> mlp = MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))
        >>> mlp(jnp.zeros((5, 2))).shape
        (5, 1)
    """

    def __init__(
        self,
        din: int,
        dout: int,
        hidden_layers: Sequence[int] = (4, 3),
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_count("din", din)
        _check_count("dout", dout)
        hidden_layers = tuple(hidden_layers)
        if not all(_is_int(h) and h >= 1 for h in hidden_layers):
            raise ValueError(
                f"hidden_layers must be a sequence of ints >= 1, got {hidden_layers!r}"
            )
        self.din = int(din)
        self.dout = int(dout)
        self.hidden_layers = tuple(int(h) for h in hidden_layers)
        self.layers = nnx.List()
        for in_dim, out_dim in pairwise([self.din, *self.hidden_layers, self.dout]):
            self.layers.append(nnx.Linear(in_dim, out_dim, rngs=rngs))

    def __call__(self, x: Float[Array, "n din"]) -> Float[Array, "n dout"]:
        """The logits of ``x``: ``tanh`` hidden layers, a linear output."""
        for layer in self.layers[:-1]:
            x = jax.nn.tanh(layer(x))
        return self.layers[-1](x)


def make_prior(
    prior_scale: float = 1.0,
) -> Callable[[str, tuple[int, ...]], dist.Distribution]:
    """The talk's prior as the callable ``random_nnx_module`` takes:
    ``(name, shape) -> distribution``, ``Normal(0, prior_scale)`` for biases
    (names containing ``"bias"``) and ``SoftLaplace(0, prior_scale)`` for
    everything else (the kernels). ``prior_scale=1`` is the talk's prior.

    Used in chapter 4.

    Example:
        >>> prior = make_prior(2.0)
        >>> (
        ...     type(prior("layers.0.kernel", (2, 4))).__name__,
        ...     float(prior("layers.0.bias", (4,)).scale),
        ... )
        ('SoftLaplace', 2.0)
    """
    _check_positive("prior_scale", prior_scale)
    scale = float(prior_scale)

    def prior(name: str, shape: tuple[int, ...]) -> dist.Distribution:
        if "bias" in name:
            return dist.Normal(loc=0.0, scale=scale)
        return dist.SoftLaplace(loc=0.0, scale=scale)

    return prior


@contextlib.contextmanager
def subsample_plate(
    name: str, size: int, subsample_size: int | None = None, *, replace: bool = True
) -> Iterator[Int[Array, " subsample_size"]]:
    """``numpyro.plate(name, size, subsample_size=subsample_size)``, yielding
    the mini-batch indices, with a cheap draw of the indices.

    With ``replace=True`` the indices are ``subsample_size`` uniform draws
    *with* replacement (`jax.random.randint` on the model's key), drawn at
    once; NumPyro's own draw, kept with ``replace=False``, is *without*
    replacement: on a CPU a partial Fisher–Yates shuffle, a sequential
    ``lax.scan`` of ``subsample_size`` swaps (each with its own key) in a copy
    of ``arange(size)``, and ``random.choice(..., replace=False)`` on other
    backends. Both give an unbiased estimate of the full-data
    log-likelihood once scaled by ``size / subsample_size``, which the plate
    does in either case. ``subsample_size=None`` (or ``= size``) is the plain
    full-batch plate.

    Index the data with the yielded indices (``x[idx]``) or call
    ``numpyro.subsample(x, event_dim=...)`` inside the plate. The model must
    run under a seed handler (SVI and `Predictive` provide one).

    Used in chapters 7 and 9 (as ``companion.scaling.subsample_plate``) and
    by :func:`build_model` for its mini-batches.

    Example:
        >>> import numpyro.distributions as dist
        >>> def model(z):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 1))
        ...     with subsample_plate("data", z.shape[0], 10) as idx:
        ...         numpyro.sample("z", dist.Normal(loc, 1), obs=z[idx])
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.zeros(1_000)
        ... )
        >>> tr["z"]["value"].shape, float(tr["z"]["scale"])
        ((10,), 100.0)
    """
    _check_count("size", size)
    if subsample_size is not None:
        _check_count("subsample_size", subsample_size)
        if subsample_size > size:
            raise ValueError(
                f"subsample_size must be at most size={size} (the number of "
                f"observations), got {subsample_size}"
            )
    if not isinstance(replace, bool):
        raise TypeError(f"replace must be a bool, got {replace!r}")
    if subsample_size is None or subsample_size == size or not replace:
        with numpyro.plate(name, size, subsample_size=subsample_size) as idx:
            yield idx
        return
    key = numpyro.prng_key()
    if key is None:
        raise ValueError(
            "subsample_plate needs a random key to draw indices: run the model "
            "under numpyro.handlers.seed (SVI and Predictive do)"
        )
    indices = jax.random.randint(key, (subsample_size,), 0, size)
    with (
        numpyro.handlers.substitute(data={name: indices}),
        numpyro.plate(name, size, subsample_size=subsample_size) as idx,
    ):
        yield idx


def build_model(
    mlp: MLP,
    *,
    prior_scale: float = 1.0,
    name: str = "nn",
    subsample_size: int | None = None,
    replace: bool = True,
) -> Model:
    """Lift ``mlp`` into the talk's Bayesian model ``model(x, y=None)``, on
    all rows of ``x`` or, with ``subsample_size``, on a mini-batch of them.

    The MLP's weights become latent sites ``{name}/layers.<i>.kernel`` and
    ``{name}/layers.<i>.bias`` with the prior of :func:`make_prior`; the
    network's output are logits ``f = mlp(x).squeeze(-1)``, the model records
    the probabilities ``p = sigmoid(f)`` as the deterministic site ``p`` and
    samples (or, given ``y``, observes) ``y ~ Bernoulli(logits=f)`` inside
    the plate ``"data"`` over the ``n`` rows of ``x``. The likelihood takes
    the logits because ``Bernoulli(probs=p)`` clamps ``p`` away from 0 and
    1: a confidently wrong prediction would then add a constant and no
    gradient, where the logits give ``-softplus`` exactly. The model has no ``param``
    sites (the MLP's initial weights, which ``random_nnx_module`` registers
    as one, are hidden from inference: only their shapes matter).

    With ``subsample_size`` the plate is a :func:`subsample_plate`: each call
    evaluates the likelihood on ``subsample_size`` rows (drawn with
    replacement, or without with ``replace=False``, NumPyro's own draw), and
    NumPyro multiplies its log-likelihood by ``n / subsample_size``, so the
    loss stays an unbiased estimate of the full-data loss; ``p`` and ``y``
    then cover the mini-batch only. The site names do not depend on
    ``subsample_size``, so a guide trained on the mini-batch model predicts
    with the full one. ``subsample_size=None`` (the default) is the
    full-data model.

    The returned model checks its inputs before anything is traced: ``x``
    must have shape ``(n, mlp.din)``, ``y`` (when given) shape ``(n,)`` with
    values in {0, 1} (the values are checked when ``y`` is concrete, not
    under ``jax.jit``), and ``subsample_size`` at most ``n``.

    Args:
        mlp: the network (only its architecture is used).
        prior_scale: the scale of the prior on every weight and bias.
        name: the prefix of the latent sites.
        subsample_size: rows per mini-batch; ``None`` for all rows.
        replace: draw the mini-batch with replacement (one vectorised draw,
            see :func:`subsample_plate`) or without (NumPyro's draw).

    Used in chapters 4, 5, 6 and 10 (full data) and chapters 7 and 9
    (mini-batches).

    Example:
        >>> mlp = MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))
        >>> model = build_model(mlp)
        >>> trace = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.zeros((5, 2))
        ... )
        >>> trace["p"]["value"].shape, trace["nn/layers.0.kernel"]["value"].shape
        ((5,), (2, 4))
        >>> mini = build_model(mlp, subsample_size=32)
        >>> x, y = jnp.zeros((1_000, 2)), jnp.zeros(1_000, dtype=jnp.int32)
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(mini, 0)).get_trace(x, y)
        >>> tr["p"]["value"].shape, float(tr["y"]["scale"])
        ((32,), 31.25)
    """
    if not isinstance(mlp, MLP):
        raise TypeError(f"mlp must be a companion.bnn.MLP, got {type(mlp).__name__}")
    if mlp.dout != 1:
        raise ValueError(f"mlp must have dout=1 for binary labels, got {mlp.dout}")
    prior = make_prior(prior_scale)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if subsample_size is not None:
        _check_count("subsample_size", subsample_size)
    if not isinstance(replace, bool):
        raise TypeError(f"replace must be a bool, got {replace!r}")
    din = mlp.din

    def model(x: Float[Array, "n din"], y: Int[Array, " n"] | None = None) -> None:
        _check_inputs(x, y, din)
        n = x.shape[0]
        if subsample_size is not None and subsample_size > n:
            raise ValueError(
                f"subsample_size={subsample_size} exceeds the number of "
                f"observations in x ({n})"
            )
        # random_nnx_module also registers the MLP's initial weights as a
        # `param` site ("nn$params"); every weight is then replaced by a sample,
        # so that param is dead weight for SVI: hide it from the inference.
        with numpyro.handlers.block(hide_fn=_is_param):
            nn = random_nnx_module(name, mlp, prior=prior)
        with subsample_plate("data", n, subsample_size, replace=replace) as idx:
            if subsample_size is not None:
                x, y = x[idx], None if y is None else y[idx]
            logits = nn(x).squeeze(-1)
            numpyro.deterministic("p", jax.nn.sigmoid(logits))
            numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)

    return model


def param_shapes(mlp: MLP, *, name: str = "nn") -> dict[str, tuple[int, ...]]:
    """The latent sites of ``build_model(mlp, name=name)`` and their shapes,
    read off a trace of the model (so a guide built from them matches the
    model's site names by construction).

    Used in chapters 4 and 5.

    Example:
        >>> mlp = MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))
        >>> param_shapes(mlp)["nn/layers.1.kernel"]
        (4, 3)
    """
    model = build_model(mlp, name=name)

    def latent_values() -> dict[str, Array]:
        x = jnp.zeros((1, mlp.din))
        # block: when called inside another model or guide, the sites of this
        # trace must not reach the handlers of the outer one
        with numpyro.handlers.block():
            trace = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(x)
        return {
            site_name: site["value"]
            for site_name, site in trace.items()
            if site["type"] == "sample" and not site["is_observed"] and site_name != "y"
        }

    # traced abstractly: shapes without computing (or compiling) anything
    return {k: tuple(v.shape) for k, v in jax.eval_shape(latent_values).items()}


def layer_guide(
    loc_shape: tuple[int, ...],
    loc_amplitude: float,
    scale_shape: tuple[int, ...],
    scale_amplitude: float,
    loc_name: str,
    scale_name: str,
    layer_name: str,
    event_dim: int | None = None,
) -> Float[Array, "..."]:
    """The variational factor of one layer's weights, as in the talk:
    ``q(w) = Normal(loc, scale)`` with its own parameters.

    ``loc`` (parameter ``loc_name``, shape ``loc_shape``) starts at
    ``loc_amplitude`` times standard normal noise (drawn from the key that
    `numpyro.handlers.seed` gives the guide, so ``svi.init``'s key fixes it),
    which breaks the symmetry between hidden units; ``scale`` (parameter
    ``scale_name``, constrained positive) starts at ``scale_amplitude``
    everywhere. ``scale_shape`` must broadcast to ``loc_shape``: equal to it
    for one scale per weight, ``(1,) * len(loc_shape)`` for one scale shared
    by the whole layer. The sample site ``layer_name`` has ``event_dim``
    event dimensions (default: all of ``loc_shape``, as the model's
    ``random_nnx_module`` sites have).

    The talk's version takes a ``seed``; here the key comes from the seed
    handler instead, so no key is hidden in the guide.

    Returns the sampled weights, shape ``loc_shape``. Used in chapter 5.
    """
    loc_shape, scale_shape = tuple(loc_shape), tuple(scale_shape)
    for arg, shape in (("loc_shape", loc_shape), ("scale_shape", scale_shape)):
        if not all(_is_int(s) and s >= 1 for s in shape):
            raise ValueError(f"{arg} must be a tuple of ints >= 1, got {shape!r}")
    if not _broadcasts_to(scale_shape, loc_shape):
        raise ValueError(
            f"scale_shape {scale_shape} must broadcast to loc_shape {loc_shape}"
        )
    _check_positive("loc_amplitude", loc_amplitude, allow_zero=True)
    _check_positive("scale_amplitude", scale_amplitude)
    for arg, value in (
        ("loc_name", loc_name),
        ("scale_name", scale_name),
        ("layer_name", layer_name),
    ):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{arg} must be a non-empty str, got {value!r}")
    if len({loc_name, scale_name, layer_name}) != 3:
        raise ValueError(
            "loc_name, scale_name and layer_name must differ, got "
            f"{loc_name!r}, {scale_name!r}, {layer_name!r}"
        )
    if event_dim is None:
        event_dim = len(loc_shape)
    if not _is_int(event_dim) or not 0 <= event_dim <= len(loc_shape):
        raise ValueError(
            f"event_dim must be an int between 0 and {len(loc_shape)}, got {event_dim!r}"
        )
    loc = numpyro.param(
        loc_name,
        lambda key: loc_amplitude * jax.random.normal(key, loc_shape),
    )
    scale = numpyro.param(
        scale_name,
        jnp.full(scale_shape, float(scale_amplitude)),
        constraint=dist.constraints.positive,
    )
    return numpyro.sample(
        layer_name, dist.Normal(loc=loc, scale=scale).to_event(event_dim)
    )


def build_guide(
    mlp: MLP,
    *,
    loc_amplitude: float = 1.0,
    scale_amplitude: float = 0.01,
    shared_scale: bool = False,
    name: str = "nn",
) -> Model:
    """A mean-field Gaussian guide ``guide(x, y=None)`` for
    ``build_model(mlp, name=name)``, written layer by layer with
    :func:`layer_guide`.

    Every latent site of the model (see :func:`param_shapes`) gets a
    ``Normal(loc, scale)`` factor with parameters ``<site>_loc`` and
    ``<site>_scale``; ``loc`` starts at ``loc_amplitude`` times standard
    normal noise and ``scale`` at ``scale_amplitude``. With
    ``shared_scale=True`` each kernel and each bias has one scale shared by
    all its entries (fewer parameters, a coarser approximation).

    The default ``loc_amplitude=1`` matters: with much smaller initial
    locations the ``tanh`` units start in their linear regime and fits often
    stall at a nearly linear decision boundary (chapter 5, exercise 2); with
    all locations equal, the units of a layer start identical and only the
    sampling noise tells them apart.

    Used in chapters 5 and 6.

    Example:
        >>> mlp = MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))
        >>> guide = build_guide(mlp)
        >>> trace = numpyro.handlers.trace(numpyro.handlers.seed(guide, 0)).get_trace(
        ...     jnp.zeros((5, 2))
        ... )
        >>> trace["nn/layers.0.kernel_scale"]["value"].shape
        (2, 4)
    """
    shapes = param_shapes(mlp, name=name)
    _check_positive("loc_amplitude", loc_amplitude, allow_zero=True)
    _check_positive("scale_amplitude", scale_amplitude)
    if not isinstance(shared_scale, bool):
        raise TypeError(f"shared_scale must be a bool, got {shared_scale!r}")
    din = mlp.din

    def guide(x: Float[Array, "n din"], y: Int[Array, " n"] | None = None) -> None:
        _check_inputs(x, y, din)
        for site, shape in shapes.items():
            layer_guide(
                loc_shape=shape,
                loc_amplitude=loc_amplitude,
                scale_shape=(1,) * len(shape) if shared_scale else shape,
                scale_amplitude=scale_amplitude,
                loc_name=f"{site}_loc",
                scale_name=f"{site}_scale",
                layer_name=site,
            )

    return guide


def _is_param(site: dict[str, Any]) -> bool:
    return site["type"] == "param"


def _check_inputs(x: Any, y: Any, din: int) -> None:
    if not hasattr(x, "shape") or len(x.shape) != 2 or x.shape[1] != din:
        raise ValueError(
            f"x must be a 2-D array of shape (n, {din}) (the MLP's din), "
            f"got shape {getattr(x, 'shape', type(x).__name__)}"
        )
    if y is None:
        return
    if not hasattr(y, "shape") or len(y.shape) != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must be a 1-D array with as many labels as x has rows "
            f"({x.shape[0]}), got shape {getattr(y, 'shape', type(y).__name__)}"
        )
    if not isinstance(y, jax.core.Tracer):
        values = np.asarray(y)
        if not np.isin(values, (0, 1)).all():
            bad = np.unique(values[~np.isin(values, (0, 1))])[:5]
            raise ValueError(f"y must hold labels in {{0, 1}}, got values {bad}")
