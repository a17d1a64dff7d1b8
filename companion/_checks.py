"""Input checks shared by the `companion` modules (private).

Each raises a `TypeError` or `ValueError` that names the argument and what
was expected, before any JAX tracing can turn the mistake into a cryptic
error deep inside a compiled function.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_count", "check_key", "is_int"]


def is_int(value: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_count(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


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
