"""Input checks shared by the `companion` modules (private).

Each raises a `TypeError` (the wrong kind of value) or a `ValueError` (the
right kind, out of range) that names the argument and what was expected,
before any JAX tracing can turn the mistake into a cryptic error deep inside
a compiled function. The modules check at their public boundary only; their
private cores take checked values and stay safe under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_real_array",
    "broadcasts_to",
    "check_broadcast",
    "check_count",
    "check_guide_params",
    "check_key",
    "check_observations",
    "check_optional_count",
    "check_positive",
    "check_real",
    "is_int",
    "is_real",
    "is_traced",
]


def is_int(value: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real scalar whose value is known here: a Python or NumPy number or a
    concrete 0-d NumPy/JAX array of a real dtype, not a bool and not a value
    being traced by JAX."""
    if isinstance(value, bool | np.bool_ | jax.core.Tracer):
        return False
    if isinstance(value, numbers.Real | np.integer | np.floating):
        return True
    return (
        isinstance(value, np.ndarray | jax.Array)
        and value.shape == ()
        and (
            jnp.issubdtype(value.dtype, jnp.integer)
            or jnp.issubdtype(value.dtype, jnp.floating)
        )
    )


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_optional_count(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or an int >= 1."""
    if value is not None and (not is_int(value) or value < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float; raise ``TypeError`` unless it is a real
    number (:func:`is_real`) and ``ValueError`` unless it is finite and
    ``> 0`` (``>= 0`` with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    if not is_real(value):
        raise TypeError(f"{name} must be a number {bound}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not (number >= 0 if allow_zero else number > 0):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def check_key(rng_key: Any) -> None:
    """Raise ``TypeError`` unless ``rng_key`` is one PRNG key: a typed key
    (``jax.random.key``) of shape ``()`` or a raw ``uint32[2]`` key
    (``jax.random.PRNGKey``)."""
    if isinstance(rng_key, jax.Array):
        if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key) and rng_key.shape == ():
            return
        if rng_key.dtype == jnp.uint32 and rng_key.shape == (2,):
            return
    raise TypeError(
        f"rng_key must be a JAX PRNG key (jax.random.key(0)), got {rng_key!r}"
    )


# --------------------------------------------------------------------------
# Real arrays, for functions that are also called under jax.grad, jax.vmap
# and jax.jit: a value being traced passes through unchecked.


def is_traced(value: Any) -> bool:
    """A value JAX is tracing (inside ``jit``, ``grad`` or ``vmap``)."""
    return isinstance(value, jax.core.Tracer)


def as_real_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array; ``TypeError`` unless it holds real numbers."""
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


def check_real(name: str, value: Any, *, positive: bool = False) -> Any:
    """A finite real scalar or array (``> 0`` if ``positive``), returned as a
    JAX array of the default float type; a traced value is returned as it is."""
    if is_traced(value):
        return value
    array = as_real_array(name, value)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and not np.all(array > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to exactly ``target``."""
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def check_broadcast(**arrays: Any) -> None:
    """``ValueError`` unless the arrays broadcast against each other."""
    shapes = {name: tuple(jnp.shape(value)) for name, value in arrays.items()}
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError as error:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(
            f"arguments must broadcast against each other, got shapes {described}"
        ) from error


def check_observations(y: Any) -> Any:
    """Observations ``y`` of shape ``(n,)`` or ``(n, d)``, ``n >= 1``, finite
    and real, as a JAX array (a traced ``y`` is checked for its shape only)."""
    if is_traced(y):
        if y.ndim not in (1, 2):
            raise ValueError(f"y must have shape (n,) or (n, d), got shape {y.shape}")
        return y
    array = as_real_array("y", y)
    if array.ndim not in (1, 2):
        raise ValueError(f"y must have shape (n,) or (n, d), got shape {array.shape}")
    if array.shape[0] == 0 or array.size == 0:
        raise ValueError(
            f"y must hold at least one observation, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("y must be finite: no NaN or infinite observations")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def check_guide_params(y: Any, q_loc: Any, q_scale: Any) -> tuple[Any, Any]:
    """A Gaussian guide's ``q_loc`` and ``q_scale`` (> 0) for observations
    ``y``: scalars or arrays of θ's shape ``y.shape[1:]``."""
    q_loc = check_real("q_loc", q_loc)
    q_scale = check_real("q_scale", q_scale, positive=True)
    theta_shape = tuple(y.shape[1:])
    for name, value in (("q_loc", q_loc), ("q_scale", q_scale)):
        shape = tuple(jnp.shape(value))
        if not broadcasts_to(shape, theta_shape):
            raise ValueError(
                f"{name} must be a scalar or have θ's shape {theta_shape} "
                f"(y.shape[1:]), got shape {shape}"
            )
    return q_loc, q_scale
