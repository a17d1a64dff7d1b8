"""The render set-up of the book and the decks, checked without Quarto.

Quarto is not installed where the tests run; what it would do with our
filters is checked by running them under pandoc (from ``pypandoc_binary``)
with a stub of the two Quarto functions they call
(``tests/filters/quarto_stub.lua``), and the profiles are checked as files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "tests" / "filters" / "quarto_stub.lua"


def _pandoc() -> str:
    pypandoc = pytest.importorskip("pypandoc")
    return pypandoc.get_pandoc_path()


def run_filter(
    markdown: str, filter_name: str, fmt: str, input_file: str = "ch.ipynb"
) -> list:
    """The pandoc AST (JSON blocks) of ``markdown`` after ``filters/<filter_name>``."""
    env = {
        **os.environ,
        "STUB_FILTER": str(ROOT / "filters" / filter_name),
        "STUB_FORMAT": fmt,
        "STUB_INPUT": input_file,
    }
    out = subprocess.run(
        [_pandoc(), "-f", "markdown", "-t", "json", f"--lua-filter={STUB}"],
        input=markdown,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout)["blocks"]


def text(node) -> str:
    """Every string in an AST fragment, joined: what a reader would read."""
    if isinstance(node, dict):
        if node.get("t") == "Str":
            return node["c"]
        if node.get("t") in ("Space", "SoftBreak"):
            return " "
        if node.get("t") == "Math":
            return node["c"][1]
        if node.get("t") == "CodeBlock":
            return node["c"][1]
        return text(node.get("c", []))
    if isinstance(node, list):
        return "".join(text(x) for x in node)
    return ""


def classes(block) -> list[str]:
    return block["c"][0][1] if block["t"] in ("Div", "Header", "CodeBlock") else []


def slides(blocks: list) -> list[dict]:
    """Split top-level blocks at level-2 headers: title, shown blocks, notes text."""
    out = []
    for b in blocks:
        if b["t"] == "Header" and b["c"][0] <= 2:
            out.append({"title": text(b["c"][2]), "shown": [], "notes": ""})
        elif out:
            if b["t"] == "Div" and "notes" in classes(b):
                out[-1]["notes"] += text(b)
            else:
                out[-1]["shown"].append(b)
    return out


CHAPTER = """
Opening prose of the chapter.

## The ELBO

A long paragraph that explains the bound, with an equation
$$\\log p(D) = \\mathrm{ELBO} + \\mathrm{KL}$$
inside it.

- a short
- list

::: {.notes}
Ask the audience.
:::

::: {.cell}
```{.python .cell-code}
hidden_code = 1
```

::: {.cell-output .cell-output-display}
![First figure.](one.png)
:::
:::

::: {.cell}
::: {.cell-output .cell-output-markdown}
A computed sentence: 0.42.
:::
:::

::: {.cell .slide-code}
```{.python .cell-code}
shown_code = 2
```
:::

::: {.cell}
```{.python .cell-code}
print("x")
```

::: {.cell-output .cell-output-stdout}
```
printed text
```
:::
:::

::: {.cell}
::: {.cell-output .cell-output-display}
![Second figure.](two.png)
:::
:::

## The data

Twenty draws from a Gamma distribution with a known concentration. The rest
of the paragraph explains why [@blei2017variational].

::: {.cell}
::: {.cell-output .cell-output-display}
```
{'concentration_loc': 0.9196}
```
:::
:::

::: {.content-visible unless-format="revealjs"}
A book-only aside, with its table (@tbl-aside).

| a | b |
|---|---|
| 1 | 2 |

: An aside's table. {#tbl-aside}
:::

## Tables

::: {.cell}
::: {.cell-output .cell-output-display}
| guide | error |
|---|---|
| AutoNormal | 0.1 |
| AutoDelta | 0.2 |

: A compact table. {#tbl-compact}
:::
:::

::: {.cell}
::: {.cell-output .cell-output-display}
| guide | what the family can represent | error | sd range |
|---|---|---|---|
| AutoLowRankMultivariateNormal (rank 1) | means, variances and one direction of correlation between all coefficients | 0.10 | 0.50-0.98 |
| AutoMultivariateNormal | means, variances and every correlation between the coefficients, a full matrix | 0.11 | 0.97-1.02 |
| AutoIAFNormal | a Gaussian bent by two learned autoregressive transformations, skew and curvature | 0.12 | 0.95-1.05 |
| AutoLaplaceApproximation | a Gaussian with the curvature of the log density at the MAP point, all correlations | 0.13 | 0.99-1.01 |
| AutoDelta | a point, the maximum of the posterior density, no spread at all around it | 0.14 | 0.00-0.00 |

: A table of phrases, taller than a slide: five guides, what each family of
distributions can represent, the largest error of a mean in posterior standard
deviations and the range of the fitted standard deviations over the exact
ones, for every coordinate of the posterior. {#tbl-phrases}
:::
:::

::: {.cell}
::: {#tbl-styled}
::: {.cell-output .cell-output-display}
```{=html}
<style type="text/css"></style><table><thead><tr><th>guide</th><th>parameters</th><th>can represent</th><th>error</th></tr></thead><tbody><tr><td>AutoGuideNumber0 with a long descriptive name</td><td>0</td><td>means, variances and a correlation or two between the coefficients</td><td>0.00</td></tr><tr><td>AutoGuideNumber1 with a long descriptive name</td><td>1</td><td>means, variances and a correlation or two between the coefficients</td><td>0.01</td></tr><tr><td>AutoGuideNumber2 with a long descriptive name</td><td>2</td><td>means, variances and a correlation or two between the coefficients</td><td>0.02</td></tr><tr><td>AutoGuideNumber3 with a long descriptive name</td><td>3</td><td>means, variances and a correlation or two between the coefficients</td><td>0.03</td></tr><tr><td>AutoGuideNumber4 with a long descriptive name</td><td>4</td><td>means, variances and a correlation or two between the coefficients</td><td>0.04</td></tr><tr><td>AutoGuideNumber5 with a long descriptive name</td><td>5</td><td>means, variances and a correlation or two between the coefficients</td><td>0.05</td></tr></tbody></table>
```
:::
:::
:::

::: {.cell}
::: {#tbl-styled-small}
::: {.cell-output .cell-output-display}
```{=html}
<style type="text/css"></style><table><tr><th>guide</th><th>error</th></tr><tr><td>StyledSmall</td><td>0.1</td></tr></table>
```
:::
:::
:::

::: {.cell}
::: {#tbl-floated}
Table 9: A caption that Quarto keeps beside the table, in the float around
it: what every guide is, how many parameters it has, what it can represent,
how far its means are from the exact ones and how its standard deviations
compare, over every coordinate of the posterior, for six guides in all, and
the correlation of the two coefficients that the posterior ties most closely.

::: {.cell-output .cell-output-display}
| guide | parameters | can represent | error |
|---|---|---|---|
| FloatedGuideA | 3 | a point | 0.00 |
| FloatedGuideB | 6 | means, marginal variances | 0.02 |
| FloatedGuideC | 9 | one direction of correlation | 0.05 |
| FloatedGuideD | 12 | all correlations | 0.03 |
| FloatedGuideE | 316 | skew, non-Gaussian shapes | 0.09 |
| FloatedGuideF | 3 | MAP and the curvature there | 0.02 |
:::
:::
:::

## A listing

- **AutoNormal.** Fast and cheap.
- **AutoDelta.** A point.

::: {.cell}
::: {.cell-output .cell-output-display}
```{=html}
<style>.xr-wrap {}</style><div class="xr-wrap">an xarray view</div>
```
:::
:::

A long equation:
$$\\mathbb{E}_{\\mathcal{B}}\\Big[\\frac{N}{B} \\sum_{i \\in \\mathcal{B}} \\log p(y_i \\mid x_i, \\theta)\\Big] = \\sum_{i=1}^N \\frac{B}{N} \\cdot \\frac{N}{B} \\log p(y_i \\mid x_i, \\theta) = \\sum_{i=1}^N \\log p(y_i \\mid x_i, \\theta)$$


::: {.cell}
::: {.cell-output .cell-output-markdown}
```python
def listing():
    return "the idea"
```
:::
:::

::: {.content-visible when-format="revealjs"}
Written for the slides.
:::

## Exercises

1. **Try a wider guide.** Then a long question that goes on and on about what
   to change and what to look for, far too long for a slide, with many words in
   it so that the list does not fit on the slide as it is, and more words: a
   reader has time for all of this, a slide does not, so the words belong to
   the presenter, who reads them in the notes while the audience sees titles.

   ::: {.callout-tip collapse="true"}
   ## Hint
   The hint text.
   :::

2. **Second exercise.** Another question.
"""


@pytest.fixture(scope="module")
def deck() -> list[dict]:
    return slides(run_filter(CHAPTER, "slides.lua", "revealjs"))


def test_slides_move_prose_to_notes_and_keep_equations(deck):
    first = deck[0]
    assert first["title"] == "The ELBO"
    shown = text(first["shown"])
    assert "long paragraph" not in shown
    assert "long paragraph" in first["notes"]
    assert "Opening prose" in first["notes"]  # prose before the first title
    assert "Ask the audience" in first["notes"]
    assert "\\log p(D)" in shown  # the display equation stays on the slide
    assert "a short" in shown  # a short list stays


def test_slides_show_code_only_when_asked_and_no_printed_output(deck):
    shown = "".join(text(s["shown"]) for s in deck)
    assert "hidden_code" not in shown
    assert "shown_code" in shown
    assert "printed text" not in shown
    notes = "".join(s["notes"] for s in deck)
    assert "A computed sentence: 0.42." in notes


def test_slides_give_each_figure_its_own_slide_under_the_same_title(deck):
    elbo = [s for s in deck if s["title"] == "The ELBO"]
    images = [json.dumps(s["shown"]).count('"Image"') for s in elbo]
    assert sorted(images) == [0, 0, 1, 1] or images.count(1) == 2
    assert all(n <= 1 for n in images)


def test_slides_show_exercise_titles_without_hints(deck):
    ex = next(s for s in deck if s["title"] == "Exercises")
    shown = text(ex["shown"])
    assert "Try a wider guide." in shown and "Second exercise." in shown
    assert "far too long" not in shown and "far too long" in ex["notes"]
    everything = json.dumps(ex)
    assert "The hint text" not in everything


def test_slides_show_a_topic_sentence_listings_and_the_references_on_their_own(deck):
    data = next(s for s in deck if s["title"] == "The data")
    shown = text(data["shown"])
    # a slide with nothing else to show gets the section's first sentence
    assert shown.startswith(
        "Twenty draws from a Gamma distribution with a known concentration."
    )
    assert "The rest" not in shown and "The rest" in data["notes"]
    assert "concentration_loc" not in json.dumps(deck)  # a value's repr is the book's
    # book-only content joins the notes (its cross-references still resolve)
    assert "A book-only aside, with its table (in the book)." in data["notes"]
    assert "book-only" not in text(data["shown"])
    assert "An aside's table" not in json.dumps(deck)  # tables stay in the book
    assert "Written for the slides." in "".join(text(s["shown"]) for s in deck)
    # a long display equation is set smaller, a short one is not
    sized = [b for s in deck for b in s["shown"] if "long-math" in classes(b)]
    assert len(sized) == 1 and "font-size: " in json.dumps(sized[0])
    assert "\\frac{N}{B}" in text(sized[0])
    listing = next(s for s in deck if s["title"] == "A listing")
    # a list of bold-titled items shows the titles, however short
    assert "AutoNormal." in text(listing["shown"]) and "Fast" not in text(
        listing["shown"]
    )
    assert "Fast and cheap." in listing["notes"]
    assert "an xarray view" not in json.dumps(deck)  # a library's styled html view
    assert 'return "the idea"' in text(listing["shown"])  # a listing a cell chose
    assert deck[-1]["title"] == "References"
    refs = deck[-1]["shown"]
    assert refs and refs[0]["t"] == "Div" and refs[0]["c"][0][0] == "refs"


def test_slides_keep_compact_tables_and_move_tall_ones_to_the_notes(deck):
    tables = next(s for s in deck if s["title"] == "Tables")
    shown = text(tables["shown"])
    assert "AutoNormal" in shown and "A compact table." in shown
    # five rows only, but each wraps to two lines, and the caption to three
    assert "AutoIAFNormal" not in shown
    assert "AutoIAFNormal" in tables["notes"]
    # the same for a table that arrives as raw HTML (a pandas Styler's)
    everything_shown = json.dumps([s["shown"] for s in deck if s["title"] == "Tables"])
    assert "StyledSmall" in everything_shown
    assert "AutoGuideNumber3" not in everything_shown
    # a short table under a long caption that sits in the float around it
    assert "FloatedGuideC" not in everything_shown


def test_slides_filter_leaves_the_book_and_handwritten_decks_alone():
    book = run_filter(CHAPTER, "slides.lua", "html")
    plain = subprocess.run(
        [_pandoc(), "-f", "markdown", "-t", "json"],
        input=CHAPTER,
        capture_output=True,
        text=True,
        check=True,
    )
    assert book == json.loads(plain.stdout)["blocks"]
    talk = run_filter(CHAPTER, "slides.lua", "revealjs", input_file="talk.qmd")
    assert "long paragraph" in text([b for b in talk if b["t"] == "Para"])
    assert "The hint text" not in json.dumps(talk)  # hints are dropped everywhere


def test_book_filter_removes_speaker_notes_only():
    blocks = run_filter(CHAPTER, "book.lua", "html")
    everything = text(blocks)
    assert "Ask the audience" not in everything
    assert "long paragraph" in everything and "The hint text" in everything
    kept = run_filter(CHAPTER, "book.lua", "revealjs")
    assert "Ask the audience" in text(kept)


def _profile(name: str) -> dict:
    return yaml.safe_load((ROOT / f"_quarto-{name}.yml").read_text())


def test_profiles_register_the_filters_and_styles():
    book, deck = _profile("book"), _profile("slides")
    assert "filters/book.lua" in book["filters"]
    assert "filters/slides.lua" in deck["filters"]
    for profile, css in (
        (book["format"]["html"], "book.css"),
        (deck["format"]["revealjs"], "slides.css"),
    ):
        assert profile["css"] == css and (ROOT / css).is_file()
    # both profiles execute with code echoed, so a deck reusing the book's
    # frozen results looks the same as a deck rendered alone
    assert deck["execute"]["echo"] is True
    shared = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    assert shared["execute"].get("echo", True) is True


def test_no_chapter_deck_scrolls():
    # the talk deck has its own check in tests/test_talk.py
    sources = [ROOT / "_quarto-slides.yml", ROOT / "_quarto.yml"]
    sources += sorted((ROOT / "chapters").glob("*.ipynb"))
    for path in sources:
        assert "scrollable" not in path.read_text(), path.name


def test_renders_disable_progress_bars_and_tqdm_obeys():
    env_file = (ROOT / "_environment").read_text().splitlines()
    settings = dict(
        line.split("=", 1) for line in env_file if line and not line.startswith("#")
    )
    assert settings["TQDM_DISABLE"] == "1"
    code = "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass\n"
    shown = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **settings},
    )
    assert shown.stderr == "" and shown.stdout == ""
    live = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": ""},
    )
    assert "3/3" in live.stderr  # the same bar, without the setting, does print


def _captions():
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).splitlines()
            options = "\n".join(line[3:] for line in lines if line.startswith("#| "))
            if options:
                parsed = yaml.safe_load(options) or {}
                for key in ("fig-cap", "tbl-cap"):
                    if key in parsed:
                        yield path.name, str(parsed[key])


def test_captions_write_math_as_math_and_code_as_code():
    # "φ_loc" or "Trace_ELBO" outside $...$ or `...` prints a literal underscore
    import re

    captions = list(_captions())
    assert len(captions) > 30
    for name, caption in captions:
        prose = re.sub(r"`[^`]*`", "", re.sub(r"\$[^$]*\$", "", caption))
        assert not re.search(r"\w_\w|\w_\{", prose), (name, caption)


def test_a_chapters_title_heading_is_no_second_title_slide():
    """A book's frozen notebook keeps "# Title" as a heading (a slides-first
    render makes it the title): either way the deck starts at the first
    slide title, the lead paragraph in its notes."""
    body = "Lead paragraph of the chapter.\n\n## First slide\n\nMore prose here.\n"
    frozen = "---\ntitle: Bayes' rule\n---\n\n# Bayes' rule\n\n" + body
    executed = "---\ntitle: Bayes' rule\n---\n\n" + body
    decks = [
        slides(run_filter(md, "slides.lua", "revealjs")) for md in (frozen, executed)
    ]
    assert decks[0] == decks[1]
    assert [s["title"] for s in decks[0]] == ["First slide"]
    assert "Lead paragraph" in decks[0][0]["notes"]
    # without a document title a level-1 heading is a section slide, as before
    untitled = slides(run_filter("# Part one\n\n" + body, "slides.lua", "revealjs"))
    assert [s["title"] for s in untitled] == ["Part one", "First slide"]
