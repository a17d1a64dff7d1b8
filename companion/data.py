"""Synthetic data for the Bayesian neural network: two interleaving half-moons,
train/validation/test splits and a grid over the input plane.

Everything is generated in JAX from explicit keys, so a data set is fixed by
its key and arguments, bit for bit, on any machine. ``make_moons`` follows
`sklearn.datasets.make_moons`: class 0 lies on the upper unit half-circle
centred at ``(0, 0)``, class 1 on the lower one centred at ``(1, 0.5)``, with
Gaussian noise of standard deviation ``noise`` added to both coordinates.

Used in chapter 4 (introduced) and chapters 5 and 6.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._checks import check_positive as _check_positive

__all__ = ["DataSplit", "Grid", "make_grid", "make_moons", "train_val_test_split"]


class DataSplit(NamedTuple):
    """Train, validation and test parts of one data set (see
    :func:`train_val_test_split`). Used in chapters 4 to 7."""

    x_train: Float[Array, "n_train 2"]
    y_train: Int[Array, " n_train"]
    x_val: Float[Array, "n_val 2"]
    y_val: Int[Array, " n_val"]
    x_test: Float[Array, "n_test 2"]
    y_test: Int[Array, " n_test"]


class Grid(NamedTuple):
    """A rectangular grid over the plane (see :func:`make_grid`). Used in
    chapters 4, 6, 7 and 9.

    Attributes:
        points: the grid points, one per row, ready to feed a model.
        xx, yy: the same points as two ``(num_points, num_points)`` meshes,
            ready for `matplotlib.pyplot.contourf`; reshape a value computed
            on ``points`` with ``values.reshape(xx.shape)``.
    """

    points: Float[Array, "num_points_sq 2"]
    xx: Float[Array, "num_points num_points"]
    yy: Float[Array, "num_points num_points"]


def make_moons(
    rng_key: jax.Array, num_obs: int, noise: float
) -> tuple[Float[Array, "num_obs 2"], Int[Array, " num_obs"]]:
    """Two interleaving half-moons with labels 0 and 1, as
    `sklearn.datasets.make_moons` defines them, in JAX.

    ``num_obs // 2`` points lie on the outer moon (label 0, the upper unit
    half-circle ``(cos t, sin t)``, ``t`` evenly spaced in ``[0, π]``) and the
    rest on the inner moon (label 1, ``(1 - cos t, 0.5 - sin t)``). Gaussian
    noise with standard deviation ``noise`` is added to both coordinates and
    the rows are shuffled.

    Args:
        rng_key: a JAX PRNG key (split inside: one part for the noise, one for
            the shuffle).
        num_obs: the number of points, at least 1.
        noise: the standard deviation of the Gaussian noise, at least 0.

    Returns:
        ``x`` with shape ``(num_obs, 2)`` (float32) and ``y`` with shape
        ``(num_obs,)`` (int32, values in {0, 1}).

    Used in chapters 4, 5, 6, 7, 9 and 10.

    Example:
        >>> x, y = make_moons(jax.random.key(0), num_obs=100, noise=0.1)
        >>> x.shape, y.shape, int(y.sum())
        ((100, 2), (100,), 50)
    """
    _check_key(rng_key)
    _check_count("num_obs", num_obs)
    _check_positive("noise", noise, allow_zero=True)
    return _moons(rng_key, int(num_obs), jnp.float32(noise))


def train_val_test_split(
    rng_key: jax.Array,
    x: Float[ArrayLike, "n d"],
    y: Int[ArrayLike, " n"],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> DataSplit:
    """Shuffle ``(x, y)`` and cut it into train, validation and test parts.

    The sizes are ``round(n * fractions[0])`` for training,
    ``round(n * fractions[1])`` for validation and the rest for testing, so
    every row lands in exactly one part.

    Args:
        rng_key: a JAX PRNG key for the shuffle.
        x: the inputs, shape ``(n, d)``.
        y: the labels, shape ``(n,)``.
        fractions: three non-negative numbers that sum to 1 (train,
            validation, test); every part must get at least one row.

    Returns:
        A :class:`DataSplit` (``x_train, y_train, x_val, y_val, x_test,
        y_test``).

    Used in chapters 4, 5, 6 and 7.

    Example:
        >>> x, y = make_moons(jax.random.key(0), 100, 0.1)
        >>> split = train_val_test_split(jax.random.key(1), x, y)
        >>> split.x_train.shape, split.x_val.shape, split.x_test.shape
        ((60, 2), (20, 2), (20, 2))
    """
    _check_key(rng_key)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (n, d), got shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array (n,), got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same length, got x: {x.shape[0]}, y: {y.shape[0]}"
        )
    fractions = tuple(fractions)
    if (
        len(fractions) != 3
        or not all(
            isinstance(f, int | float) and not isinstance(f, bool) for f in fractions
        )
        or any(not math.isfinite(f) or f < 0 for f in fractions)
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9)
    ):
        raise ValueError(
            "fractions must be three numbers >= 0 that sum to 1 "
            f"(train, validation, test), got {fractions!r}"
        )
    n = x.shape[0]
    num_train = round(n * fractions[0])
    num_val = round(n * fractions[1])
    num_test = n - num_train - num_val
    if min(num_train, num_val, num_test) < 1:
        raise ValueError(
            f"fractions {fractions!r} of {n} rows leave a part empty "
            f"(train {num_train}, validation {num_val}, test {num_test})"
        )
    return DataSplit(*_split(rng_key, x, y, num_train, num_val))


def make_grid(
    x: Float[ArrayLike, "n 2"], num_points: int = 100, padding: float = 0.5
) -> Grid:
    """A square grid of ``num_points × num_points`` points over the bounding
    box of ``x``, widened by ``padding`` times its width and height on every
    side (``padding=0`` covers the data exactly; larger values look further
    away from it).

    Used in chapters 4, 6, 7 and 9 to draw decision surfaces.

    Example:
        >>> grid = make_grid(jnp.array([[0.0, 0.0], [1.0, 2.0]]), 3, padding=0.0)
        >>> grid.points.shape, grid.xx.shape
        ((9, 2), (3, 3))
        >>> grid.xx[0].tolist(), grid.yy[:, 0].tolist()
        ([0.0, 0.5, 1.0], [0.0, 1.0, 2.0])
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (n, 2) with n >= 1, got {x.shape}")
    _check_count("num_points", num_points, minimum=2)
    _check_positive("padding", padding, allow_zero=True)
    low, high = x.min(axis=0), x.max(axis=0)
    width = high - low
    low, high = low - padding * width, high + padding * width
    xx, yy = jnp.meshgrid(
        jnp.linspace(low[0], high[0], num_points),
        jnp.linspace(low[1], high[1], num_points),
    )
    return Grid(points=jnp.stack([xx.ravel(), yy.ravel()], axis=-1), xx=xx, yy=yy)


@functools.partial(jax.jit, static_argnums=1)
def _moons(
    rng_key: jax.Array, num_obs: int, noise: Float[Array, ""]
) -> tuple[Float[Array, "num_obs 2"], Int[Array, " num_obs"]]:
    num_out = num_obs // 2
    num_in = num_obs - num_out
    t_out = jnp.linspace(0.0, jnp.pi, num_out)
    t_in = jnp.linspace(0.0, jnp.pi, num_in)
    x = jnp.concatenate(
        [
            jnp.stack([jnp.cos(t_out), jnp.sin(t_out)], axis=-1),
            jnp.stack([1.0 - jnp.cos(t_in), 0.5 - jnp.sin(t_in)], axis=-1),
        ]
    )
    y = jnp.concatenate(
        [jnp.zeros(num_out, dtype=jnp.int32), jnp.ones(num_in, dtype=jnp.int32)]
    )
    key_noise, key_shuffle = jax.random.split(rng_key)
    x = x + noise * jax.random.normal(key_noise, x.shape)
    order = jax.random.permutation(key_shuffle, num_obs)
    return x[order], y[order]


@functools.partial(jax.jit, static_argnums=(3, 4))
def _split(
    rng_key: jax.Array, x: Array, y: Array, num_train: int, num_val: int
) -> tuple[Array, ...]:
    order = jax.random.permutation(rng_key, x.shape[0])
    x, y = x[order], y[order]
    cut_val, cut_test = num_train, num_train + num_val
    return (
        x[:cut_val],
        y[:cut_val],
        x[cut_val:cut_test],
        y[cut_val:cut_test],
        x[cut_test:],
        y[cut_test:],
    )
