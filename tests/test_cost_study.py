"""Chapter 7's stored cost study (``data/cost_study.json``) matches the script
that made it (``scripts/make_cost_study.py``), and the script's study runs,
deterministically, at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "make_cost_study", ROOT / "scripts" / "make_cost_study.py"
)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

COLUMNS = {
    "method",
    "n",
    "setup (s)",
    "run (s)",
    "total (s)",
    "mean error (sd)",
    "relative error of mean",
    "sd ratio",
    "leapfrog steps per draw",
}


@pytest.fixture(scope="module")
def stored():
    assert script.OUTPUT == ROOT / "data" / "cost_study.json"
    return json.loads(script.OUTPUT.read_text())


def test_the_settings_are_the_script_s(stored):
    assert stored["settings"] == script.SETTINGS
    assert stored["machine"]["backend"] == "cpu"
    assert stored["machine"]["study_s"] > 0


def test_one_row_per_method_and_size_in_order(stored):
    expected = [
        (method, n) for method, sizes in script.SETTINGS["sizes"].items() for n in sizes
    ]
    assert [(r["method"], r["n"]) for r in stored["rows"]] == expected
    for row in stored["rows"]:
        assert set(row) == COLUMNS
        assert row["setup (s)"] > 0 and row["run (s)"] > 0
        assert row["total (s)"] == pytest.approx(row["setup (s)"] + row["run (s)"])
        assert row["sd ratio"] > 0
        sampler = row["method"] in ("NUTS", "HMCECS")
        assert math.isnan(row["leapfrog steps per draw"]) != sampler


TINY = {
    **script.SETTINGS,
    "svi_steps": 200,
    "batch": 50,
    "blocks": 5,
    "num_warmup": 50,
    "num_samples": 50,
    "sizes": {
        "NUTS": [100],
        "SVI full batch": [100],
        "SVI mini-batch": [200],
        "HMCECS": [200],
    },
}


@pytest.mark.slow
def test_the_study_runs_at_tiny_sizes():
    rows = script.cost_study(TINY)
    assert [(r["method"], r["n"]) for r in rows] == [
        ("NUTS", 100),
        ("SVI full batch", 100),
        ("SVI mini-batch", 200),
        ("HMCECS", 200),
    ]
    for row in rows:
        assert set(row) == COLUMNS
        assert row["setup (s)"] > 0 and row["run (s)"] > 0
    # short runs still land near the exact posterior of 100 or 200 observations
    for row in rows:
        assert abs(row["mean error (sd)"]) < 1.5, row
        assert 0.4 < row["sd ratio"] < 1.6, row
