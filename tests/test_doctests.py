"""The examples in the package's docstrings run and print what they show
(Optax and Equinox check theirs the same way): one test per module.
(``gamma``, ``hierarchical`` and ``theory`` have no examples yet: their
chapters are the examples.)"""

import doctest
import importlib
import pkgutil

import pytest

import companion

MODULES = sorted(info.name for info in pkgutil.iter_modules(companion.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"companion.{name}")
    result = doctest.testmod(
        module,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=False,
    )
    assert result.failed == 0, f"{result.failed} docstring examples of {name} failed"
