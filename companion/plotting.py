"""Helpers the chapters share to show code and draw figures, as d2l keeps its
``plot``: listings of the package's own source, the two-moons scatter plot
and the moving average of a noisy loss curve.

- :func:`source` and :func:`show_source` print a function's or class's code
  the way the book lists it: without docstrings and input checks, which the
  prose replaces (chapters 2, 3, 4, 5, 8, 9 and 10).
- :func:`plot_classes` draws the two classes of the two-moons data, in one
  colour scheme with :data:`PROBABILITY_CMAP`, the colour scale of the
  probability maps (chapters 4 and 6).
- :func:`moving_average` smooths a loss curve (chapters 3, 5 and 9).

Used in chapters 2 to 6 and 8 to 10.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import matplotlib as mpl
import numpy as np
from jaxtyping import ArrayLike, Float, Int
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.colors import Colormap, is_color_like, to_rgba
from matplotlib.typing import ColorType

from companion._checks import check_count as _check_count
from companion._checks import check_positive as _check_positive

__all__ = [
    "CLASS_COLOURS",
    "PROBABILITY_CMAP",
    "moving_average",
    "plot_classes",
    "show_source",
    "source",
]

#: The colour scale of the probability maps p(x): blue near 0, red near 1.
PROBABILITY_CMAP: Colormap = mpl.colormaps["RdBu_r"]
#: Class 0 and class 1 in the colours of the two ends of that scale, so that
#: a point stands out where the map is sure of the other class.
CLASS_COLOURS: tuple[ColorType, ColorType] = (
    PROBABILITY_CMAP(0.1),
    PROBABILITY_CMAP(0.9),
)

_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def source(obj: Any, *, docstrings: bool = False, checks: bool = False) -> str:
    """The source of ``obj`` (a function, class or method), dedented, as the
    book lists it: without the docstrings of the object and of the functions
    and classes inside it (``docstrings=False``) and without its input checks
    (``checks=False``): an ``if`` that only raises, a loop of such checks, and
    a call of a ``_check...`` helper as a statement of its own or assigned,
    ``x = _check_x(x)``.

    No blank line is left where a removed statement opened a block, and a
    block left empty shows ``...``. Comments stay. The text ends with a
    newline, like :func:`inspect.getsource`.

    Used in chapter 3 (and through :func:`show_source` in chapters 2, 3, 4,
    5, 8, 9 and 10).

    Example:
        >>> def half(x: float) -> float:
        ...     "Half of x."
        ...     if x is None:
        ...         raise TypeError("x is None")
        ...     return x / 2
        >>> print(source(half), end="")
        def half(x: float) -> float:
            return x / 2
    """
    for name, flag in (("docstrings", docstrings), ("checks", checks)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    try:
        text = inspect.getsource(obj)
    except TypeError as error:
        raise TypeError(
            f"obj must be a function, class or method, got {type(obj).__name__}"
        ) from error
    except OSError as error:
        raise ValueError(f"obj has no source code to show: {obj!r}") from error
    text = textwrap.dedent(text)
    if docstrings and checks:
        return text
    try:
        tree = ast.parse(text)
    except SyntaxError:  # a lambda inside an expression: no statements to drop
        return text
    lines = text.splitlines()
    drop: set[int] = set()
    for node in ast.walk(tree):
        if not docstrings and isinstance(node, _DEFINITIONS):
            first = node.body[0]
            if _is_docstring(first) and _whole_lines(first, lines):
                drop.update(range(first.lineno, first.end_lineno + 1))
        if not checks and _is_check(node) and _whole_lines(node, lines):
            drop.update(range(node.lineno, node.end_lineno + 1))
    return _assemble(lines, drop, _emptied_blocks(tree, lines, drop))


def show_source(obj: Any, *, docstrings: bool = False, checks: bool = False) -> None:
    """Display :func:`source` of ``obj`` as a Python code block (Markdown), so
    that the book lists the package's real code. Needs IPython.

    Used in chapters 2, 3, 4, 5, 8, 9 and 10.
    """
    text = source(obj, docstrings=docstrings, checks=checks)
    from IPython.display import Markdown, display

    display(Markdown(f"```python\n{text}```"))


def plot_classes(
    ax: Axes,
    x: Float[ArrayLike, "n 2"],
    y: Int[ArrayLike, " n"],
    *,
    colours: tuple[ColorType, ColorType] = CLASS_COLOURS,
    edgecolor: ColorType = "white",
    s: float = 8,
    **kwargs: Any,
) -> tuple[PathCollection, PathCollection]:
    """Scatter the points ``x`` on ``ax`` by their label ``y`` (0 or 1): class 0
    in ``colours[0]``, class 1 in ``colours[1]``, labelled ``"class 0"`` and
    ``"class 1"`` for a legend, with a thin ``edgecolor`` edge that keeps them
    visible on top of a probability map. ``s`` is the marker size; other
    keywords (``alpha``, ``zorder``) go to ``ax.scatter``.

    The default colours are the ends of :data:`PROBABILITY_CMAP` (chapter 4);
    chapter 6 draws black and white points,
    ``colours=("white", "black"), edgecolor="black", s=6``.

    Returns the two collections, class 0 first. Used in chapters 4 and 6.
    """
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have shape (n,) with n = {x.shape[0]} rows of x, got {y.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y must hold labels 0 and 1, got {np.unique(y).tolist()}")
    if (
        isinstance(colours, str)
        or len(colours) != 2
        or not all(is_color_like(c) for c in colours)
    ):
        raise ValueError(f"colours must be two matplotlib colours, got {colours!r}")
    if not is_color_like(edgecolor):
        raise ValueError(f"edgecolor must be a matplotlib colour, got {edgecolor!r}")
    _check_positive("s", s)
    first, second = (
        ax.scatter(
            *x[y == label].T,
            s=s,
            c=[to_rgba(colour)],
            edgecolors=edgecolor,
            linewidths=0.3,
            label=f"class {label}",
            **kwargs,
        )
        for label, colour in enumerate(colours)
    )
    return first, second


def moving_average(
    values: Float[ArrayLike, " n"], window: int
) -> Float[np.ndarray, " n_minus_window_plus_1"]:
    """The mean of each run of ``window`` consecutive ``values``: entry ``i``
    averages ``values[i : i + window]``, so the result has
    ``n - window + 1`` entries and belongs to steps ``window - 1`` to
    ``n - 1``. For plotting noisy losses.

    Used in chapters 3, 5 and 9.

    Example:
        >>> moving_average([1.0, 2.0, 3.0, 4.0], 2).tolist()
        [1.5, 2.5, 3.5]
    """
    _check_count("window", window)
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {values.shape}")
    if window > values.shape[0]:
        raise ValueError(
            f"window must be at most the number of values ({values.shape[0]}), "
            f"got {window}"
        )
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _is_docstring(node: ast.stmt) -> bool:
    """A string literal as a statement of its own."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _is_check(node: ast.AST) -> bool:
    """An input check: an ``if`` that only raises, a loop of such checks, or a
    call of a ``_check...`` helper, alone or assigned (``x = _check_x(x)``)."""
    if isinstance(node, ast.If):
        return not node.orelse and all(isinstance(s, ast.Raise) for s in node.body)
    if isinstance(node, ast.For):
        return not node.orelse and all(_is_check(s) for s in node.body)
    if isinstance(node, ast.Expr | ast.Assign) and isinstance(node.value, ast.Call):
        func = node.value.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name.startswith("_check")
    return False


def _whole_lines(node: ast.stmt, lines: list[str]) -> bool:
    """Whether ``node`` fills its lines (a trailing comment aside), so that
    dropping the lines drops nothing else (not ``def f(): "doc"``)."""
    first = lines[node.lineno - 1].encode()  # ast counts columns in UTF-8 bytes
    last = lines[node.end_lineno - 1].encode()
    after = last[node.end_col_offset :].strip()
    return not first[: node.col_offset].strip() and (
        not after or after.startswith(b"#")
    )


def _emptied_blocks(tree: ast.AST, lines: list[str], drop: set[int]) -> dict[int, str]:
    """``...`` in place of the first statement of every kept block whose
    statements are all dropped, so that the listing stays Python."""
    placeholders = {}
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in drop:
            continue
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list) or not block:
                continue
            if all(n in drop for s in block for n in range(s.lineno, s.end_lineno + 1)):
                line = lines[block[0].lineno - 1]
                indent = line[: len(line) - len(line.lstrip())]
                placeholders[block[0].lineno] = f"{indent}..."
    return placeholders


def _assemble(lines: list[str], drop: set[int], placeholders: dict[int, str]) -> str:
    """The lines not dropped, without the blank lines that a dropped statement
    leaves after a block's opening line or after another blank line."""
    kept: list[str] = []
    after_drop = False
    for number, line in enumerate(lines, start=1):
        if number in placeholders:
            kept.append(placeholders[number])
            after_drop = False
        elif number in drop:
            after_drop = True
        elif line.strip() or not after_drop:
            kept.append(line)
            after_drop = False
        elif kept and kept[-1].strip() and not _opens_block(kept[-1]):
            kept.append(line)
            after_drop = False
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n"


def _opens_block(line: str) -> bool:
    """A line that ends with a colon, a comment aside: ``def f(x):``."""
    return line.split("#", 1)[0].rstrip().endswith(":")
