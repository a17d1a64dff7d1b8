"""Compiling functions of a model's arguments (private, shared by the
`companion` modules).

A model or guide takes arrays (the data) and other values (sizes, flags,
``None``). To compile a function of them once and reuse it, the arrays
become traced inputs of the compiled program and everything else is baked
in: :func:`split_static` splits the arguments that way, and
:func:`cached_jit` keeps one compiled function per owner (a model, a guide),
settings and baked-in values, so that a second call with new arrays of the
same shapes does not compile again.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np

__all__ = ["cached_jit", "split_static"]


def split_static(
    args: tuple, kwargs: dict[str, Any]
) -> tuple[list[Any], Callable[[list[Any]], tuple[tuple, dict[str, Any]]]]:
    """Split the model's arguments into arrays (traced inputs of the compiled
    program) and everything else (baked in); return the arrays and a function
    that puts the arguments back together from (traced) arrays. The function
    has a ``signature`` attribute: the structure and the baked-in values, for
    caching compiled programs (``None`` when a baked-in value is unhashable)."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    is_array = tuple(isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves)
    static = tuple(
        None if a else leaf for leaf, a in zip(leaves, is_array, strict=True)
    )
    dynamic = [leaf for leaf, a in zip(leaves, is_array, strict=True) if a]

    def rebuild(arrays: list[Any]) -> tuple[tuple, dict[str, Any]]:
        it = iter(arrays)
        values = [next(it) if a else v for v, a in zip(static, is_array, strict=True)]
        return jax.tree.unflatten(treedef, values)

    signature: Hashable | None = (treedef, is_array, static)
    try:
        hash(signature)
    except TypeError:
        signature = None
    rebuild.signature = signature  # type: ignore[attr-defined]
    return dynamic, rebuild


# One dict of compiled functions per owner (a model or a guide), dropped with it.
_CACHE: weakref.WeakKeyDictionary[Any, dict[Hashable, Callable]] = (
    weakref.WeakKeyDictionary()
)


def cached_jit(
    owner: Any,
    settings: Hashable,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
) -> Callable[..., Any]:
    """``fn(*leading, call_args, call_kwargs)`` compiled with the arrays among
    ``args``/``kwargs`` traced and everything else baked in; returns a
    function of the leading arguments only.

    The compiled function is kept per ``owner`` (weakly: it goes with the
    owner) under ``settings`` and the baked-in values, and reused by later
    calls: ``settings`` must name everything ``fn`` depends on beyond the
    owner and the arguments. Unhashable settings or baked-in values, or an
    owner without weak references, compile afresh at every call."""
    dynamic, rebuild = split_static(args, kwargs)

    def merged(*leading_and_arrays):
        *leading, arrays = leading_and_arrays
        call_args, call_kwargs = rebuild(arrays)
        return fn(*leading, call_args, call_kwargs)

    key = None if rebuild.signature is None else (settings, rebuild.signature)
    try:
        hash(key)
        cache = _CACHE.setdefault(owner, {}) if key is not None else {}
    except TypeError:  # unhashable settings, or an owner without weak references
        key, cache = None, {}
    if key is None or key not in cache:
        jitted = jax.jit(merged)
        if key is not None:
            cache[key] = jitted
    else:
        jitted = cache[key]
    return lambda *leading: jitted(*leading, dynamic)
