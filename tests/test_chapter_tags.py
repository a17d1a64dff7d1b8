"""Every public name of `companion` says in its docstring which chapters use
it ("Used in chapters 5 and 9", "Introduced in chapter 5; used in ...",
"Mentioned in chapter 9"), and those tags match the notebooks: a chapter that
calls a function (or names it in its prose as ``module.name``) is tagged, and
every tagged chapter uses the function, directly, through a script whose
results it loads, or through another public function of the package that
calls it."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import textwrap
from functools import cache
from pathlib import Path

import pytest

import companion

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    info.name: importlib.import_module(f"companion.{info.name}")
    for info in pkgutil.iter_modules(companion.__path__)
    if not info.name.startswith("_")
}
PUBLIC = [
    (short, name)
    for short, module in MODULES.items()
    for name in module.__all__
    if inspect.isfunction(getattr(module, name))
    or inspect.isclass(getattr(module, name))
]
# A sentence that says where a name is used: "Used in chapters 3, 5 and 9.",
# "Introduced in chapter 5; used in the primer and chapters 3 and 6.",
# "Mentioned in chapter 9, ...", "Used by :func:`f` (mentioned in chapter 9)."
_WHERE = re.compile(r"\b(?:[Uu]sed|[Ii]ntroduced|[Mm]entioned) in\b[^.]*\.")
_NUMBERS = re.compile(
    r"\bchapters?\s+((?:\d+(?:\s*[-–]\s*\d+)?(?:\s*,\s*|\s+and\s+)?)+)"
)


def tagged_chapters(doc: str) -> set[int]:
    """The chapters a docstring's where-used sentences name (the primer is
    chapter 0; "chapters 4-10" is a range)."""
    chapters: set[int] = set()
    for sentence in _WHERE.findall(" ".join(doc.split())):
        if re.search(r"\bprimer\b", sentence):
            chapters.add(0)
        for numbers in _NUMBERS.findall(sentence):
            for first, last in re.findall(r"(\d+)(?:\s*[-–]\s*(\d+))?", numbers):
                chapters.update(range(int(first), int(last or first) + 1))
    return chapters


def test_tags_are_parsed():
    doc = """What it does (chapter 4's network is an example, not a tag).

    Introduced in chapter 5; used in the primer, chapters 3, 6
    and 9, and chapters 11-12. Mentioned in chapter 2."""
    assert tagged_chapters(doc) == {0, 2, 3, 5, 6, 9, 11, 12}
    assert tagged_chapters("Used by :func:`f` (mentioned in chapter 9).") == {9}
    assert tagged_chapters("Nothing here about chapter 3.") == set()


@cache
def chapter_texts() -> dict[int, tuple[str, str]]:
    """Chapter number -> (its code, its prose)."""
    texts = {}
    for path in sorted((ROOT / "chapters").glob("[0-9][0-9]-*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "code"
        )
        prose = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
        )
        texts[int(path.name[:2])] = (code, prose)
    return texts


@cache
def script_chapters() -> dict[Path, set[int]]:
    """Each script in ``scripts/`` -> the chapters that load what it makes
    (they name the script)."""
    return {
        script: {
            number
            for number, (code, prose) in chapter_texts().items()
            if script.name in code or script.name in prose
        }
        for script in sorted((ROOT / "scripts").glob("*.py"))
    }


def direct_uses(short: str, name: str) -> set[int]:
    """Chapters whose code refers to ``short.name`` (or ``companion.name``,
    or imports it by name), or whose prose names `short.name`, or that load
    the results of a script that does."""
    qualified = rf"\b{short}\.{name}\b"
    in_code = re.compile(
        rf"({qualified}|\bcompanion\.{name}\b"
        rf"|^from companion\.{short} import[^\n]*\b{name}\b)",
        re.M,
    )
    chapters = {
        number
        for number, (code, prose) in chapter_texts().items()
        if in_code.search(code) or re.search(qualified, prose)
    }
    for script, loaders in script_chapters().items():
        if in_code.search(script.read_text(encoding="utf-8")):
            chapters |= loaders
    return chapters


def _references(short: str, name: str) -> set[tuple[str, str]]:
    """The public names of the package that the code of ``short.name`` refers
    to (its docstring left out): names of its own module that are not its own
    parameters or local variables, and ``module.name`` of the others."""
    node = ast.parse(textwrap.dedent(inspect.getsource(getattr(MODULES[short], name))))
    local = {n.arg for n in ast.walk(node) if isinstance(n, ast.arg)} | {
        n.id
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id not in local:
            found.add((short, n.id))
            # a public name imported from another module: its home
            home = getattr(getattr(MODULES[short], n.id, None), "__module__", "")
            found.add((home.rpartition(".")[2], n.id))
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            found.add((n.value.id, n.attr))
    return found & set(PUBLIC) - {(short, name)}


@cache
def chapters_using() -> dict[tuple[str, str], set[int]]:
    """Every public name -> the chapters that use it directly or through the
    public names whose code refers to it (to a fixed point)."""
    uses = {key: direct_uses(*key) for key in PUBLIC}
    callers = {key: set() for key in PUBLIC}
    for key in PUBLIC:
        for callee in _references(*key):
            callers[callee].add(key)
    changed = True
    while changed:
        changed = False
        for key in PUBLIC:
            reached = set().union(uses[key], *(uses[c] for c in callers[key]))
            if reached != uses[key]:
                uses[key], changed = reached, True
    return uses


@pytest.mark.parametrize(
    ("short", "name"), PUBLIC, ids=[f"{short}.{name}" for short, name in PUBLIC]
)
def test_docstring_tags_match_the_chapters(short, name):
    tags = tagged_chapters(inspect.getdoc(getattr(MODULES[short], name)) or "")
    direct = direct_uses(short, name)
    assert tags, f"{short}.{name}: its docstring says no 'Used in chapter ...'"
    assert direct <= tags, (
        f"{short}.{name} is used in chapters {sorted(direct - tags)} that its "
        f"docstring does not name (it names {sorted(tags)})"
    )
    unused = tags - chapters_using()[(short, name)]
    assert not unused, (
        f"{short}.{name}: its docstring names chapters {sorted(unused)}, which use "
        "it neither directly nor through another public function"
    )
