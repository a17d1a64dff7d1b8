"""Chapter 10's stored comparison of guides (``data/guide_comparison.json``)
matches the script that made it (``scripts/make_guide_comparison.py``), and
the script's comparison runs at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from flax import nnx

from companion import bnn

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "make_guide_comparison", ROOT / "scripts" / "make_guide_comparison.py"
)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

GUIDES = [
    "AutoNormal",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "AutoIAFNormal",
]
COLUMNS = {
    "guide",
    "num_steps",
    "num_params",
    "setup_s",
    "run_s",
    "final_loss",
    "test_log_loss",
    "test_auc",
    "mean_pred_sd",
}


@pytest.fixture(scope="module")
def stored():
    assert script.OUTPUT == ROOT / "data" / "guide_comparison.json"
    return json.loads(script.OUTPUT.read_text())


def num_weights(hidden_layers) -> int:
    mlp = bnn.MLP(2, 1, hidden_layers, rngs=nnx.Rngs(0))
    return sum(math.prod(shape) for shape in bnn.param_shapes(mlp).values())


def test_the_settings_are_the_script_s(stored):
    assert stored["settings"] == script.SETTINGS
    assert stored["machine"]["backend"] == "cpu"
    assert stored["machine"]["comparison_s"] > 0


def test_the_data_are_the_chapter_s(stored):
    # the script derives the chapter's data from its seed; the stored
    # fingerprint is what the chapter checks its own training points against
    setup = script.chapter_setup(script.SETTINGS)
    expected = script.fingerprint(*setup["train"])
    assert stored["data"]["num_train"] == expected["num_train"] == 600
    assert stored["data"]["num_ones"] == expected["num_ones"]
    assert stored["data"]["x_sum"] == pytest.approx(expected["x_sum"], rel=1e-6)


def test_one_row_per_guide_with_its_parameter_count(stored):
    rows = stored["rows"]
    assert [r["guide"] for r in rows] == GUIDES
    d = num_weights(script.SETTINGS["hidden_layers"])
    rank = script.SETTINGS["rank"]
    expected_params = {
        "AutoNormal": 2 * d,  # a loc and a scale per weight
        "AutoLowRankMultivariateNormal": d + d * rank + d,  # loc, factor, diagonal
        "AutoMultivariateNormal": d + d * d,  # loc and a (lower) triangular factor
    }
    for row in rows:
        assert set(row) == COLUMNS
        assert row["num_steps"] == script.SETTINGS["num_steps"]
        assert row["setup_s"] > 0 and row["run_s"] > 0
        assert 0.9 < row["test_auc"] <= 1.0
        assert 0 < row["test_log_loss"] < math.log(2)  # better than a coin
        assert row["mean_pred_sd"] > 0
        if row["guide"] in expected_params:
            assert row["num_params"] == expected_params[row["guide"]], row
    assert rows[-1]["num_params"] > rows[-2]["num_params"]  # the flow is largest


TINY = {
    **script.SETTINGS,
    "hidden_layers": [3],
    "num_obs": 120,
    "num_train": 80,
    "num_steps": 60,
    "learning_rate": {"init": 0.001, "peak": 0.02, "warmup_steps": 10, "end": 0.001},
    "num_draws": 20,
    "rank": 2,
    "iaf": {"num_flows": 1, "hidden_dims": [16]},  # at least the 13 weights
}


@pytest.mark.slow
def test_the_comparison_runs_at_a_tiny_size():
    rows, data_fingerprint = script.guide_comparison(TINY)
    assert [r["guide"] for r in rows] == GUIDES
    d = num_weights(TINY["hidden_layers"])
    assert rows[0]["num_params"] == 2 * d
    assert rows[1]["num_params"] == d + d * TINY["rank"] + d
    for row in rows:
        assert set(row) == COLUMNS
        assert row["num_steps"] == TINY["num_steps"]
        assert math.isfinite(row["final_loss"])
        assert 0 <= row["test_auc"] <= 1
    assert data_fingerprint["num_train"] == TINY["num_train"]
    json.dumps(rows)  # what main() writes: plain numbers only
