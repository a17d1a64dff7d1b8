"""The publish workflow (.github/workflows/publish.yml) cannot run here; these
checks read it: it parses, follows Quarto's documented GitHub Pages workflow
(quarto-actions setup and publish to gh-pages, without a second render),
installs the project with the README's install command on the Python the
project supports, renders the book and then the slides, and puts the decks
under the book's output directory so they are published with it."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "publish.yml"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def workflow() -> dict:
    return _yaml(WORKFLOW)


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def _uses(steps: list[dict], action: str) -> list[int]:
    return [i for i, s in enumerate(steps) if s.get("uses", "").startswith(action)]


def _commands(steps: list[dict]) -> list[tuple[int, str]]:
    """Every shell command of the run steps, one per line, with its step."""
    return [
        (i, line.strip())
        for i, s in enumerate(steps)
        for line in s.get("run", "").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _readme_install_command() -> str:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", setup, re.DOTALL).group(1)
    (command,) = [line for line in block.splitlines() if line.startswith("pip install")]
    return command.strip()


def test_runs_on_push_to_main_and_by_hand(workflow) -> None:
    # PyYAML reads the key `on` as True
    trigger = workflow.get("on", workflow.get(True))
    assert "workflow_dispatch" in trigger
    assert trigger["push"]["branches"] in ("main", ["main"])
    (job,) = workflow["jobs"].values()
    assert job["permissions"]["contents"] == "write"


def test_follows_quartos_documented_workflow(steps) -> None:
    checkout = _uses(steps, "actions/checkout@")
    setup = _uses(steps, "quarto-dev/quarto-actions/setup@v2")
    publish = _uses(steps, "quarto-dev/quarto-actions/publish@v2")
    assert checkout == [0] and len(setup) == 1 and publish == [len(steps) - 1]
    options = steps[publish[0]]["with"]
    assert options["target"] == "gh-pages"
    # the site is rendered by the steps before; a render here would erase the decks
    assert options["render"] is False
    assert "GITHUB_TOKEN" in steps[publish[0]]["env"]


def test_installs_the_project_as_the_readme_says(steps) -> None:
    command = _readme_install_command()
    assert command == 'pip install -e ".[dev]"'
    python = _uses(steps, "actions/setup-python@")
    assert len(python) == 1
    version = str(steps[python[0]]["with"]["python-version"])
    pyproject = (ROOT / "pyproject.toml").read_text()
    minimum = re.search(r'requires-python = ">=(\d+\.\d+)"', pyproject).group(1)
    assert version == minimum == "3.11"
    installs = [i for i, c in _commands(steps) if c == command]
    assert installs and python[0] < installs[0]


def test_renders_the_book_then_the_slides_into_the_site(steps) -> None:
    book_out = _yaml(ROOT / "_quarto-book.yml")["project"]["output-dir"]
    slides_out = _yaml(ROOT / "_quarto-slides.yml")["project"]["output-dir"]
    assert _yaml(ROOT / "_quarto.yml")["profile"]["default"] == "book"
    commands = _commands(steps)
    renders = {c: i for i, c in commands if c.startswith("quarto render")}
    # the default profile is the book; the decks reuse its frozen results
    assert set(renders) == {"quarto render", "quarto render --profile slides"}
    book, slides = renders["quarto render"], renders["quarto render --profile slides"]
    install = next(i for i, c in commands if c.startswith("pip install"))
    assert install < book <= slides
    copies = [(i, shlex.split(c)) for i, c in commands if c.startswith("cp ")]
    assert len(copies) == 1
    i, (_, flag, source, target) = copies[0]
    assert flag == "-r" and i >= slides
    assert source.rstrip("/") == slides_out
    assert target.startswith(f"{book_out}/") and len(target) > len(book_out) + 1
    assert i < _uses(steps, "quarto-dev/quarto-actions/publish@v2")[0]


def test_repository_url_is_set_in_one_place() -> None:
    """Edit/source/issue links and the chapters' Colab/Binder links all come
    from `book: repo-url`; the 'Run this chapter' box reads it off the page."""
    book = _yaml(ROOT / "_quarto-book.yml")
    url = book["book"]["repo-url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url)
    assert {"edit", "source"} <= set(book["book"]["repo-actions"])
    include = book["format"]["html"]["include-after-body"]
    script = (ROOT / include).read_text()
    assert "github.com/" + url.split("github.com/")[1] not in script
    assert "/chapters/*.ipynb" in book["project"]["resources"]
    for path in [ROOT / "README.md", ROOT / "index.qmd", WORKFLOW]:
        assert url not in path.read_text(), f"{path.name} repeats the repo-url"
