"""Tests of companion.plotting: the book's listings of source code (what is
left out, to the character), the two-moons scatter plot, the moving average,
and the rejection of bad inputs."""

import inspect
import linecache
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from companion import plotting


def _check_x(x):
    """A stand-in for the package's check helpers."""
    return x


def example(x, names):
    """What the example does.

    A second paragraph.
    """
    x = _check_x(x)
    _check_x(names)
    if x > 100:
        raise ValueError("x must be at most 100")
    for name in names:
        if not name:
            raise ValueError("names must not be empty")

    def inner(y):
        """The nested function's docstring."""
        return y + x  # a comment stays

    return inner(x)


class Counter:
    """A counter."""

    def __init__(self, start: int) -> None:
        """Start at ``start``."""
        if start < 0:
            raise ValueError("start must be >= 0")
        self.count = start

    def step(self) -> int:
        """One more."""
        self.count += 1
        return self.count


def only_checks(x):
    """Nothing but checks."""
    if x is None:
        raise TypeError("x must not be None")


def keeps_if_with_else(x):
    if x < 0:
        raise ValueError("x must be >= 0")
    else:
        x = x + 1
    if x > 10:
        x = 10
    return x


def _define(text, name):
    """A function defined from ``text`` with its source findable, as
    IPython does for notebook cells."""
    filename = f"<test_plotting {name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace = {"_check_x": _check_x}
    exec(compile(text, filename, "exec"), namespace)
    return namespace[name]


def test_source_leaves_out_docstrings_and_checks_by_default():
    assert plotting.source(example) == (
        "def example(x, names):\n"
        "    def inner(y):\n"
        "        return y + x  # a comment stays\n"
        "\n"
        "    return inner(x)\n"
    )


def test_source_keeps_docstrings_or_checks_on_request():
    assert plotting.source(example, docstrings=True) == (
        "def example(x, names):\n"
        '    """What the example does.\n'
        "\n"
        "    A second paragraph.\n"
        '    """\n'
        "\n"
        "    def inner(y):\n"
        '        """The nested function\'s docstring."""\n'
        "        return y + x  # a comment stays\n"
        "\n"
        "    return inner(x)\n"
    )
    assert plotting.source(example, checks=True) == (
        "def example(x, names):\n"
        "    x = _check_x(x)\n"
        "    _check_x(names)\n"
        "    if x > 100:\n"
        '        raise ValueError("x must be at most 100")\n'
        "    for name in names:\n"
        "        if not name:\n"
        '            raise ValueError("names must not be empty")\n'
        "\n"
        "    def inner(y):\n"
        "        return y + x  # a comment stays\n"
        "\n"
        "    return inner(x)\n"
    )
    full = inspect.getsource(example)
    assert plotting.source(example, docstrings=True, checks=True) == full


def test_source_of_a_class_and_of_a_method_is_dedented_and_stripped():
    assert plotting.source(Counter) == (
        "class Counter:\n"
        "    def __init__(self, start: int) -> None:\n"
        "        self.count = start\n"
        "\n"
        "    def step(self) -> int:\n"
        "        self.count += 1\n"
        "        return self.count\n"
    )
    assert plotting.source(Counter.step) == (
        "def step(self) -> int:\n    self.count += 1\n    return self.count\n"
    )


def test_source_keeps_an_emptied_block_python_and_other_ifs_whole():
    assert plotting.source(only_checks) == "def only_checks(x):\n    ...\n"
    # an `if` with an `else`, or one that does more than raise, is code
    source = plotting.source(keeps_if_with_else)
    assert source == plotting.source(keeps_if_with_else, checks=True)
    assert "raise ValueError" in source and "x = 10" in source


def test_source_drops_only_statements_that_fill_their_lines():
    one_liner = _define('def one_liner(x): "doc"; return x\n', "one_liner")
    assert plotting.source(one_liner) == 'def one_liner(x): "doc"; return x\n'
    shared = _define("def shared(x):\n    y = x; _check_x(y)\n    return y\n", "shared")
    assert plotting.source(shared) == (
        "def shared(x):\n    y = x; _check_x(y)\n    return y\n"
    )
    # columns count UTF-8 bytes: a check with a non-ASCII argument and a
    # trailing comment is still recognised as filling its line
    text = 'def greek(x):\n    _check_x("θθθθ")  # the name\n    return x\n'
    greek = _define(text, "greek")
    assert plotting.source(greek) == "def greek(x):\n    return x\n"


def test_show_source_displays_the_source_as_a_python_block(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    plotting.show_source(Counter.step, docstrings=True)
    assert len(shown) == 1
    assert shown[0].data == (
        "```python\n" + plotting.source(Counter.step, docstrings=True) + "```"
    )
    assert '"""One more."""' in shown[0].data


def test_importing_plotting_does_not_import_ipython_or_pyplot():
    code = (
        "import sys, companion.plotting; "
        "assert 'IPython' not in sys.modules, 'IPython'; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_source_rejects_objects_without_source_and_bad_flags():
    with pytest.raises(TypeError, match="obj must be a function, class or method"):
        plotting.source(len)
    with pytest.raises(TypeError, match="obj must be a function, class or method"):
        plotting.source(3)
    namespace = {}
    exec(compile("def lost(): pass\n", "<nowhere>", "exec"), namespace)
    with pytest.raises(ValueError, match="obj has no source code"):
        plotting.source(namespace["lost"])
    with pytest.raises(TypeError, match="docstrings must be a bool"):
        plotting.source(example, docstrings="yes")
    with pytest.raises(TypeError, match="checks must be a bool"):
        plotting.show_source(example, checks=1)


X = np.array([[0.0, 0.5], [1.0, 1.5], [2.0, 2.5], [3.0, 3.5], [4.0, 4.5]])
Y = np.array([0, 1, 1, 0, 1])


def test_class_colours_are_the_ends_of_the_probability_scale():
    assert plotting.PROBABILITY_CMAP.name == "RdBu_r"
    low, high = plotting.CLASS_COLOURS
    assert low == plotting.PROBABILITY_CMAP(0.1)
    assert high == plotting.PROBABILITY_CMAP(0.9)
    assert low[2] > low[0] and high[0] > high[2]  # class 0 blue, class 1 red


def test_plot_classes_puts_each_point_in_its_class_and_colour():
    ax = Figure().add_subplot()
    first, second = plotting.plot_classes(ax, jnp.asarray(X), jnp.asarray(Y))
    assert list(ax.collections) == [first, second]
    np.testing.assert_array_equal(first.get_offsets(), X[[0, 3]])
    np.testing.assert_array_equal(second.get_offsets(), X[[1, 2, 4]])
    assert [first.get_label(), second.get_label()] == ["class 0", "class 1"]
    for collection, colour in zip([first, second], plotting.CLASS_COLOURS, strict=True):
        np.testing.assert_allclose(collection.get_facecolors(), [colour])
        np.testing.assert_allclose(collection.get_edgecolors(), [to_rgba("white")])
        np.testing.assert_array_equal(collection.get_sizes(), [8])
    _, labels = ax.get_legend_handles_labels()
    assert labels == ["class 0", "class 1"]


def test_plot_classes_in_black_and_white_as_chapter_6():
    ax = Figure().add_subplot()
    first, second = plotting.plot_classes(
        ax, X, Y, colours=("white", "black"), edgecolor="black", s=6, alpha=0.8
    )
    np.testing.assert_allclose(first.get_facecolors(), [[1.0, 1.0, 1.0, 0.8]])
    np.testing.assert_allclose(second.get_facecolors(), [[0.0, 0.0, 0.0, 0.8]])
    np.testing.assert_allclose(first.get_edgecolors(), [[0.0, 0.0, 0.0, 0.8]])
    np.testing.assert_array_equal(second.get_sizes(), [6])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("ax", X, Y), {}, TypeError, "ax must be a matplotlib Axes"),
        ((None, X[:, :1], Y), {}, ValueError, r"x must have shape \(n, 2\)"),
        ((None, X[0], Y), {}, ValueError, r"x must have shape \(n, 2\)"),
        ((None, X, Y[:4]), {}, ValueError, r"y must have shape \(n,\) with n = 5"),
        ((None, X, Y + 1), {}, ValueError, "y must hold labels 0 and 1"),
        ((None, X, Y), {"colours": ("red",)}, ValueError, "colours must be two"),
        ((None, X, Y), {"colours": "rb"}, ValueError, "colours must be two"),
        ((None, X, Y), {"colours": ("red", "nope")}, ValueError, "colours must be"),
        ((None, X, Y), {"edgecolor": "nope"}, ValueError, "edgecolor must be"),
        ((None, X, Y), {"s": 0}, ValueError, "s must be a finite number > 0"),
        ((None, X, Y), {"s": np.nan}, ValueError, "s must be a finite number > 0"),
        ((None, X, Y), {"s": [1, 2]}, TypeError, r"s must be a number > 0"),
        ((None, X, Y), {"s": True}, TypeError, r"s must be a number > 0"),
    ],
)
def test_plot_classes_rejects_bad_input(args, kwargs, error, match):
    ax = Figure().add_subplot()
    args = tuple(ax if a is None else a for a in args)
    with pytest.raises(error, match=match):
        plotting.plot_classes(*args, **kwargs)
    assert not ax.collections  # nothing drawn before the error


def test_moving_average_by_hand_and_as_the_chapters_computed_it():
    np.testing.assert_allclose(
        plotting.moving_average([1.0, 2.0, 6.0, 3.0, 8.0], 3),
        [3.0, 11 / 3, 17 / 3],
    )
    np.testing.assert_array_equal(plotting.moving_average([4, 5, 6], 1), [4, 5, 6])
    np.testing.assert_array_equal(plotting.moving_average([4, 5, 6], 3), [5.0])
    losses = np.random.default_rng(0).gamma(2.0, size=1_000).astype(np.float32)
    for window in (50, 100):
        smooth = plotting.moving_average(jnp.asarray(losses), window)
        assert smooth.shape == (1_000 - window + 1,)
        expected = np.convolve(losses, np.ones(window) / window, mode="valid")
        np.testing.assert_array_equal(smooth, expected)


@pytest.mark.parametrize(
    ("values", "window", "match"),
    [
        ([1.0, 2.0], 0, "window must be an int >= 1"),
        ([1.0, 2.0], 1.5, "window must be an int >= 1"),
        ([1.0, 2.0], True, "window must be an int >= 1"),
        ([1.0, 2.0], 3, r"window must be at most the number of values \(2\)"),
        ([], 1, r"window must be at most the number of values \(0\)"),
        ([[1.0, 2.0], [3.0, 4.0]], 1, r"values must be one-dimensional"),
    ],
)
def test_moving_average_rejects_bad_input(values, window, match):
    with pytest.raises(ValueError, match=match):
        plotting.moving_average(values, window)
