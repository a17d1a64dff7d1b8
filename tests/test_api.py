"""The package's public surface keeps the book's standards: every public name
is documented with the chapter that uses it, and every public function is
fully annotated (the types readers and tools see)."""

import importlib
import inspect
import pkgutil
import re

import pytest

import companion

MODULES = [
    importlib.import_module(f"companion.{info.name}")
    for info in pkgutil.iter_modules(companion.__path__)
    if not info.name.startswith("_")
]
PUBLIC = [
    (module, name)
    for module in MODULES
    for name in module.__all__
    if inspect.isfunction(getattr(module, name))
    or inspect.isclass(getattr(module, name))
]


def test_every_module_is_checked_and_reexported():
    assert len(MODULES) >= 9
    for module in MODULES:
        assert getattr(companion, module.__name__.split(".")[-1]) is module


def test_package_reexports_resolve():
    for name in companion.__all__:
        assert getattr(companion, name) is not None, name


@pytest.mark.parametrize(
    ("module", "name"), PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC]
)
def test_public_callables_name_their_chapter_and_are_annotated(module, name):
    obj = getattr(module, name)
    doc = inspect.getdoc(obj) or ""
    assert re.search(r"[Cc]hapters? \d", doc), f"{name}: docstring names no chapter"
    if inspect.isfunction(obj):
        signature = inspect.signature(obj)
        missing = [
            p.name
            for p in signature.parameters.values()
            if p.annotation is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        assert not missing, f"{name}: parameters without annotation {missing}"
        assert signature.return_annotation is not inspect.Signature.empty, (
            f"{name}: no return annotation"
        )
