"""Checks of the talk deck, slides/talk.qmd, read as text (CI has no Quarto).

What a render would show wrongly, caught from the source: a slide without
speaker notes, a code listing without its stepped highlighting, code that is
not the book's, an embedded figure whose chapter cell is gone, a scrolling
slide, a footer that names the wrong chapter, a citation missing from the
bibliography.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TALK = ROOT / "slides" / "talk.qmd"

FENCE = re.compile(r"^(`{3,})\s*(\{[^}]*\}|[\w-]+)?\s*$")
EMBED = re.compile(r"\{\{<\s*embed\s+(\S+?)#([\w-]+)\s*>\}\}")
ELISION = re.compile(r"^\s*\.\.\.(\s+#.*)?$")
LINE_NUMBERS = re.compile(r'code-line-numbers="([^"]*)"')


@dataclass
class CodeBlock:
    info: str  # what follows the opening backticks
    lines: list[str]

    @property
    def language(self) -> str:
        match = re.match(r"\{?\s*\.?([\w-]+)", self.info)
        return match.group(1) if match else ""

    @property
    def line_numbers(self) -> str | None:
        match = LINE_NUMBERS.search(self.info)
        return match.group(1) if match else None


@dataclass
class Slide:
    title: str
    level: int
    text: list[str] = field(default_factory=list)  # lines outside code blocks
    code: list[CodeBlock] = field(default_factory=list)

    @property
    def body(self) -> str:
        return "\n".join(self.text)


def _split_front_matter(source: str) -> tuple[dict, str]:
    match = re.match(r"^---\n(.*?)\n---\n", source, flags=re.S)
    assert match, "slides/talk.qmd must start with YAML front matter"
    return yaml.safe_load(match.group(1)), source[match.end() :]


@cache
def _parse() -> tuple[dict, tuple[Slide, ...]]:
    front, body = _split_front_matter(TALK.read_text(encoding="utf-8"))
    slides: list[Slide] = []
    fence: str | None = None
    block: CodeBlock | None = None
    for line in body.splitlines():
        if fence is not None:
            if line.strip() == fence:
                slides[-1].code.append(block)
                fence, block = None, None
            else:
                block.lines.append(line)
            continue
        opening = FENCE.match(line)
        if opening and opening.group(2):
            assert slides, "code before the first slide"
            fence, block = opening.group(1), CodeBlock(opening.group(2), [])
            continue
        heading = re.match(r"^(#{1,2}) (.+)$", line)
        if heading:
            slides.append(Slide(heading.group(2).strip(), len(heading.group(1))))
        elif slides:
            slides[-1].text.append(line)
        else:
            assert not line.strip(), f"content before the first slide: {line!r}"
    assert fence is None, "unclosed code block"
    return front, tuple(slides)


def _slides() -> tuple[Slide, ...]:
    return _parse()[1]


def _code_blocks() -> list[tuple[Slide, CodeBlock]]:
    return [(s, b) for s in _slides() for b in s.code]


def _listings() -> list[tuple[Slide, CodeBlock]]:
    """The code listings: every fenced block but diagrams."""
    return [(s, b) for s, b in _code_blocks() if b.language != "mermaid"]


def _steps(block: CodeBlock) -> list[list[int]]:
    """The highlighted lines of each step of the block's ``code-line-numbers``.

    Each range must lie in the block and start and end on a line of code (not
    a blank or an elision line): a range that does not is a miscount.
    """
    spec, lines = block.line_numbers or "", block.lines
    steps = []
    for step in spec.split("|"):
        highlighted = []
        for part in filter(None, (p.strip() for p in step.split(","))):
            low, _, high = part.partition("-")
            low, high = int(low), int(high or low)
            assert 1 <= low <= high <= len(lines), (spec, len(lines))
            for end in (low, high):
                line = lines[end - 1]
                assert line.strip() and not ELISION.match(line), (spec, end, line)
            highlighted.extend(range(low, high + 1))
        steps.append(highlighted)
    return steps


@cache
def _sources() -> dict[str, list[str]]:
    """The book's code as lines: the companion package, the scripts whose
    results chapters load, and every chapter cell (code cells, and the
    listings inside markdown cells)."""
    sources = {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8").splitlines()
        for folder in ("companion", "scripts")
        for p in sorted((ROOT / folder).glob("*.py"))
    }
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(notebook["cells"]):
            sources[f"{path.relative_to(ROOT)}[{i}]"] = "".join(
                cell["source"]
            ).splitlines()
    return sources


def _chunks(block: CodeBlock) -> list[list[str]]:
    """The block cut at its elision lines (``...`` or ``...  # what``)."""
    chunks: list[list[str]] = [[]]
    for line in block.lines:
        if ELISION.match(line):
            chunks.append([])
        else:
            chunks[-1].append(line)
    return [c for c in chunks if any(line.strip() for line in c)]


def _find(chunk: list[str], lines: list[str], start: int) -> int | None:
    """Where ``chunk`` occurs in ``lines`` at or after ``start`` (up to a
    common indentation), or None."""
    target = textwrap.dedent("\n".join(chunk))
    for i in range(start, len(lines) - len(chunk) + 1):
        if textwrap.dedent("\n".join(lines[i : i + len(chunk)])) == target:
            return i + len(chunk)
    return None


def _source_of(block: CodeBlock) -> str | None:
    """The file (or chapter cell) holding every chunk of ``block``, in order."""
    chunks = _chunks(block)
    for name, lines in _sources().items():
        position: int | None = 0
        for chunk in chunks:
            position = _find(chunk, lines, position)
            if position is None:
                break
        else:
            return name
    return None


# --- the tests ---------------------------------------------------------------


def test_parser_sees_the_deck():
    slides = _slides()
    assert len(slides) >= 30
    assert slides[0].title == "Outline"
    assert slides[-1].title.startswith("Thank you")


def test_every_slide_has_speaker_notes():
    front, slides = _parse()
    title_notes = front.get("title-slide-attributes", {}).get("data-notes", "")
    assert len(title_notes.split()) >= 10, "the title slide needs notes (data-notes)"
    missing = [s.title for s in slides if "::: {.notes}" not in s.body]
    assert not missing, f"slides without speaker notes: {missing}"


def test_notes_blocks_are_closed():
    for slide in _slides():
        lines = slide.body.splitlines()
        assert lines.count("::: {.notes}") == 1, slide.title
        start = lines.index("::: {.notes}")
        assert ":::" in [line.strip() for line in lines[start + 1 :]], slide.title


def test_no_scrolling():
    front, slides = _parse()
    revealjs = front["format"]["revealjs"]
    # said in the deck itself, whatever the slides profile sets
    assert revealjs.get("scrollable") is False
    for slide in slides:
        assert ".scrollable" not in slide.title, slide.title
        assert ".scrollable" not in slide.body, slide.title
    assert (revealjs.get("width"), revealjs.get("height")) == (1050, 700)


def test_every_listing_has_stepped_line_numbers():
    listings = _listings()
    assert listings
    for slide, block in listings:
        assert block.language == "python", (slide.title, block.info)
        spec = block.line_numbers
        assert spec is not None, f"{slide.title}: a listing without code-line-numbers"
        steps = _steps(block)
        assert len(steps) >= 2, f"{slide.title}: {spec!r} has no steps"


def test_at_least_six_stepped_walk_throughs():
    walk_throughs = [
        (slide.title, block.line_numbers)
        for slide, block in _listings()
        # a walk-through: the whole listing, then at least three highlights
        if block.line_numbers and len(_steps(block)) >= 4
    ]
    assert len(walk_throughs) >= 6, walk_throughs


def test_listings_fit_the_slide():
    for slide, block in _listings():
        assert len(block.lines) <= 24, f"{slide.title}: {len(block.lines)} lines"
        # the book's line length; talk.scss sizes code for it
        assert max(len(line) for line in block.lines) <= 88, slide.title
    for slide in _slides():
        lines = sum(len(b.lines) for b in slide.code)
        assert lines <= 26, f"{slide.title}: {lines} lines of code"


def test_listings_are_the_books_code():
    """Every listing is the book's code as it is (companion/ or a chapter
    cell), up to elided lines marked ``...`` and a common indentation."""
    for slide, block in _listings():
        assert _source_of(block) is not None, (
            f"{slide.title}: this listing is not an excerpt of companion/, "
            f"scripts/ or a chapter cell:\n" + "\n".join(block.lines)
        )


def test_diagrams_show_no_source():
    """The slides profile echoes code cells; a diagram shows the picture only."""
    diagrams = [b for _, b in _code_blocks() if b.language == "mermaid"]
    for block in diagrams:
        assert "%%| echo: false" in block.lines, block.lines


def test_no_executable_cells():
    """Numbers on the slides come from embedded chapter cells, never from
    code run (or typed) in the deck itself."""
    for slide, block in _code_blocks():
        assert not block.info.startswith("{python"), slide.title


EMBEDS = [(s.title, *m) for s in _slides() for m in EMBED.findall(s.body)]


def test_the_deck_embeds_the_chapters():
    notebooks = {Path(path).name[:2] for _, path, _ in EMBEDS}
    assert {"03", "04", "05", "06", "07", "08", "09"} <= notebooks
    assert len(EMBEDS) >= 20


@pytest.mark.parametrize(("title", "path", "label"), EMBEDS)
def test_embed_target_exists(title, path, label):
    notebook_path = (TALK.parent / path).resolve()
    assert notebook_path.is_file(), f"{title}: {path} does not exist"
    cells = json.loads(notebook_path.read_text(encoding="utf-8"))["cells"]
    labelled = [
        c
        for c in cells
        if c["cell_type"] == "code"
        and re.search(
            rf"^#\|\s*label:\s*{re.escape(label)}\s*$",
            "".join(c["source"]),
            flags=re.M,
        )
    ]
    assert len(labelled) == 1, f"{title}: no cell labelled {label} in {path}"


def test_no_figure_is_embedded_twice():
    targets = [(path, label) for _, path, label in EMBEDS]
    assert len(targets) == len(set(targets))


def test_embed_slides_cite_their_chapter():
    """A slide showing a chapter's figure says which chapter in its footer."""
    for slide in _slides():
        embeds = EMBED.findall(slide.body)
        if not embeds:
            continue
        footer = re.search(r"::: footer\n(.*?)\n:::", slide.body, flags=re.S)
        assert footer, f"{slide.title}: no footer"
        for path, _ in embeds:
            number = int(Path(path).name[:2])
            name = "Appendix A" if number == 0 else f"Chapter {number}"
            assert name in footer.group(1), (slide.title, name)


def test_citations_are_in_the_bibliography():
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.M))
    front, slides = _parse()
    text = "\n".join([str(front)] + [s.body for s in slides])  # code left out
    cited = set(re.findall(r"(?<![\w.])@([\w-]+)", text))
    assert cited, "the talk cites nothing"
    assert cited <= keys, cited - keys


def test_incremental_lists():
    assert sum(".incremental" in s.body for s in _slides()) >= 3
    nutshell = next(s for s in _slides() if "nutshell" in s.title)
    assert "::: {.incremental}" in nutshell.body


def test_outline_follows_the_talk():
    """The talk's sections, in the talk's order."""
    titles = [s.title.lower() for s in _slides()]
    order = [
        "outline",
        "motivating examples",
        "what is variational inference?",
        "variational inference in pymc",
        "the jax ecosystem",
        "variational inference in a nutshell",
        "toy example",
        "end-to-end example",
        "tips & tricks",
        "references",
        "thank you!",
    ]
    positions = [
        next(i for i, t in enumerate(titles) if t.startswith(o)) for o in order
    ]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
