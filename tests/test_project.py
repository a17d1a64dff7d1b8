"""Checks of the book's scaffolding that need no Quarto: configuration parses,
everything it lists exists, chapters are clean notebooks with a title, and the
README, CI and conda environment agree with `pyproject.toml`."""

import json
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _notebook(path: Path) -> dict:
    return json.loads(path.read_text())


def test_there_are_chapters() -> None:
    assert CHAPTERS, "chapters/ holds no notebooks"


def test_quarto_shared_config() -> None:
    config = _yaml("_quarto.yml")
    assert config["profile"]["default"] == "book"
    assert config["execute"]["enabled"] is True
    assert config["execute"]["freeze"] == "auto"
    assert (ROOT / config["bibliography"]).is_file()


def test_book_profile_lists_existing_files_and_every_chapter() -> None:
    book = _yaml("_quarto-book.yml")
    assert book["project"]["type"] == "book"
    assert book["project"]["output-dir"] == "_book"
    assert "html" in book["format"]
    listed = book["book"]["chapters"]
    assert listed[0] == "index.qmd"
    appendices = book["book"].get("appendices", [])
    for entry in listed + appendices:
        assert (ROOT / entry).is_file(), f"_quarto-book.yml lists missing {entry}"
    chapter_entries = [e for e in listed + appendices if e.startswith("chapters/")]
    assert sorted(chapter_entries) == [str(p.relative_to(ROOT)) for p in CHAPTERS]
    assert len(set(chapter_entries)) == len(chapter_entries)


def test_slides_profile_renders_the_chapters_as_revealjs() -> None:
    slides = _yaml("_quarto-slides.yml")
    assert slides["project"]["type"] == "default"
    assert slides["project"]["output-dir"] == "_slides"
    assert "revealjs" in slides["format"]
    rendered = slides["project"]["render"]
    for entry in rendered:
        assert (ROOT / entry).is_file(), f"_quarto-slides.yml lists missing {entry}"
    chapters = {str(p.relative_to(ROOT)) for p in CHAPTERS}
    assert chapters <= set(rendered)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_a_title_and_a_hidden_setup_cell(path: Path) -> None:
    cells = _notebook(path)["cells"]
    first_md = next(c for c in cells if c["cell_type"] == "markdown")
    assert "".join(first_md["source"]).lstrip().startswith("# "), "no '# Title'"
    first_code = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert "#| include: false" in first_code
    assert re.search(r"^SEED\s*=", first_code, re.MULTILINE), "set-up cell has no SEED"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_committed_without_outputs(path: Path) -> None:
    for cell in _notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{path.name} keeps outputs"
            assert cell.get("execution_count") is None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_figures_are_labelled_and_captioned(path: Path) -> None:
    for cell in _notebook(path)["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "#| label: fig-" in source:
            assert "#| fig-cap:" in source, f"figure without caption in {path.name}"


def test_citations_resolve_to_the_bibliography() -> None:
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "references.bib").read_text()))
    sources = [ROOT / "index.qmd", *ROOT.glob("slides/*.qmd")]
    texts = [p.read_text() for p in sources]
    for path in CHAPTERS:
        for cell in _notebook(path)["cells"]:
            if cell["cell_type"] == "markdown":
                texts.append("".join(cell["source"]))
    cited = set()
    for text in texts:
        for group in re.findall(r"\[([^\]]*@[^\]]*)\]", text):
            cited.update(re.findall(r"-?@([\w:-]+)", group))
    cited = {c for c in cited if not c.startswith(("fig-", "tbl-", "sec-", "eq-"))}
    assert cited, "no citations found"
    assert cited <= keys, f"unknown citation keys: {sorted(cited - keys)}"


def test_environment_installs_the_project_with_its_dev_extra() -> None:
    env = _yaml("environment.yml")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {"python=3.11", "quarto", "pip"} == set(conda)
    # The pip section installs exactly the project with its dev extra, so the
    # conda environment names the same packages as pyproject.toml.
    assert pip == ["-e .[dev]"]
    assert "dev" in pyproject["project"]["optional-dependencies"]
    assert pyproject["project"]["requires-python"] == ">=3.11"


def test_pyproject_names_the_stack() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=\[ ]", d)[0] for d in pyproject["project"]["dependencies"]}
    assert {
        "jax",
        "numpyro",
        "flax",
        "optax",
        "arviz",
        "matplotlib",
        "jaxtyping",
        "tqdm",
    } <= names
    arviz = next(
        d for d in pyproject["project"]["dependencies"] if d.startswith("arviz")
    )
    assert "<1.0" in arviz
    dev = {
        re.split(r"[<>=\[ ]", d)[0]
        for d in pyproject["project"]["optional-dependencies"]["dev"]
    }
    assert {"pytest", "nbmake", "ruff", "ipykernel", "nbstripout"} <= dev


def test_ci_runs_the_readme_setup_and_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ['pip install -e ".[dev]"', "nbstripout --install", "pytest -n 2"]:
        assert command in readme, f"README lacks {command!r}"
        assert command in ci, f".ci/run lacks {command!r}"


def test_the_readme_lists_every_stored_result() -> None:
    # Each file in data/ has a row in the README's "Stored results" table
    # naming the script that makes it, the chapter that loads it and the
    # test that checks it; and every script that makes one has a row.
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Stored results", 1)[1].split("\n## ", 1)[0]
    rows = {}  # file in data/ -> (script, test, chapter) its row names
    for line in section.splitlines():
        if line.startswith("| `data/"):
            rows[re.search(r"`data/([^`]+)`", line).group(1)] = (
                re.search(r"`scripts/(make_\w+\.py)`", line).group(1),
                re.search(r"`tests/(test_\w+\.py)`", line).group(1),
                int(re.search(r"\| chapter (\d+) \|", line).group(1)),
            )
    stored = sorted(p.name for p in (ROOT / "data").iterdir() if p.is_file())
    assert sorted(rows) == stored
    scripts = sorted(p.name for p in (ROOT / "scripts").glob("make_*.py"))
    assert sorted(script for script, _, _ in rows.values()) == scripts
    for name, (script, test, chapter) in rows.items():
        assert name in (ROOT / "scripts" / script).read_text(), (name, script)
        assert name in (ROOT / "tests" / test).read_text(), (name, test)
        (notebook,) = (ROOT / "chapters").glob(f"{chapter:02d}-*.ipynb")
        assert name in notebook.read_text(), (name, notebook.name)


def _sources(path: Path, cell_type: str | None = None) -> list[str]:
    return [
        "".join(cell["source"])
        for cell in _notebook(path)["cells"]
        if cell_type is None or cell["cell_type"] == cell_type
    ]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_cross_references_resolve_within_the_chapter(path: Path) -> None:
    # Each chapter is also rendered alone (as slides), so every @fig-/@tbl-
    # it cites, in prose or in generated Markdown, must be labelled in it,
    # once.
    sources = _sources(path)
    labels = []
    for source in sources:
        labels += re.findall(r"^#\| label: ((?:fig|tbl)-[\w-]+)", source, re.M)
        labels += re.findall(r"\{#((?:fig|tbl)-[\w-]+)\}", source)
    duplicates = sorted(label for label, n in Counter(labels).items() if n > 1)
    assert not duplicates, f"{path.name}: labels used twice: {duplicates}"
    cited = set()
    for source in sources:
        cited.update(re.findall(r"@((?:fig|tbl)-[\w-]*\w)", source))
    assert cited <= set(labels), (
        f"unresolved in {path.name}: {sorted(cited - set(labels))}"
    )


def _div_depths(markdown: str) -> list[int]:
    """Nesting depth of fenced divs after each line, fenced code left out."""
    markdown = re.sub(r"^\s*```.*?^\s*```", "", markdown, flags=re.M | re.S)
    depth, depths = 0, []
    for line in markdown.splitlines():
        if re.match(r"^\s*:::+\s*(\{.*\}|[\w-]+)\s*$", line):
            depth += 1
        elif re.match(r"^\s*:::+\s*$", line):
            depth -= 1
        depths.append(depth)
    return depths


def test_div_depth_counter() -> None:
    assert _div_depths("::: {.notes}\ntext\n:::")[-1] == 0
    assert _div_depths("   ::: {.callout-tip}\n   ## Hint\n   :::")[-1] == 0
    assert _div_depths("::: notes\n:::\n:::")[-1] == -1
    assert min(_div_depths(":::\n::: {.a}")) == -1  # closed before opened
    assert _div_depths("```\n::: {.a}\n```\n")[-1] == 0  # inside code


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_conditional_content_and_divs_are_well_formed(path: Path) -> None:
    # Quarto's "html" format alias includes revealjs, so book-only content
    # must say unless-format="revealjs"; and every fenced div that is opened
    # (possibly in one cell, around code cells) is closed, never before it
    # is opened.
    markdown = "\n".join(_sources(path, "markdown"))
    assert 'when-format="html"' not in markdown, path.name
    depths = _div_depths(markdown)
    assert min(depths, default=0) >= 0, f"{path.name}: a div closed before it opened"
    assert depths[-1] == 0, f"{path.name}: {depths[-1]} divs left open"


def test_slide_embeds_point_at_labelled_cells() -> None:
    embeds = []
    for deck in ROOT.glob("slides/*.qmd"):
        for inside in re.findall(r"\{\{<\s*embed\s+([^>]*?)\s*>\}\}", deck.read_text()):
            match = re.match(r"^(\S+)#([\w-]+)(\s|$)", inside)
            assert match, f"{deck.name}: embed without a #label: {inside!r}"
            embeds.append((deck, match.group(1), match.group(2)))
    assert embeds, "the talk deck embeds no chapter output"
    for deck, target, label in embeds:
        notebook = (deck.parent / target).resolve()
        assert notebook.exists(), f"{deck.name}: {target} does not exist"
        labels = {
            found
            for source in _sources(notebook, "code")
            for found in re.findall(r"^#\| label: ([\w-]+)", source, re.M)
        }
        assert label in labels, f"{deck.name}: no cell labelled {label} in {target}"
