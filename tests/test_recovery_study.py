"""Chapter 3's stored recovery study (``data/recovery_study.json``) matches the
script that made it (``scripts/make_recovery_study.py``), and the script's
study runs, deterministically, at tiny settings."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "make_recovery_study", ROOT / "scripts" / "make_recovery_study.py"
)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

COLUMNS = {
    "true_concentration",
    "num_obs",
    "exact_mean",
    "exact_sd",
    "exact_lower",
    "exact_upper",
    "exact_covers_truth",
    "q_mean",
    "q_sd",
    "q_lower",
    "q_upper",
    "q_covers_truth",
    "mean_error_in_sd",
    "sd_ratio",
    "pareto_k",
    "psis_ess",
}


@pytest.fixture(scope="module")
def stored():
    assert script.OUTPUT == ROOT / "data" / "recovery_study.json"
    return json.loads(script.OUTPUT.read_text())


def test_the_settings_are_the_script_s(stored):
    assert stored["settings"] == script.SETTINGS
    assert stored["machine"]["backend"] == "cpu"
    assert stored["machine"]["study_s"] > 0


def _check_rows(rows, settings, psis=True):
    expected = [(c, n) for c in settings["concentrations"] for n in settings["sizes"]]
    assert [(r["true_concentration"], r["num_obs"]) for r in rows] == expected
    for row in rows:
        assert set(row) == COLUMNS
        assert isinstance(row["num_obs"], int)
        assert isinstance(row["exact_covers_truth"], bool)
        assert isinstance(row["q_covers_truth"], bool)
        for side in ("exact", "q"):
            assert row[f"{side}_sd"] > 0
            assert 0 < row[f"{side}_lower"] < row[f"{side}_mean"] < row[f"{side}_upper"]
            covers = row[f"{side}_lower"] <= row["true_concentration"]
            covers = covers and row["true_concentration"] <= row[f"{side}_upper"]
            assert row[f"{side}_covers_truth"] == covers
        assert row["sd_ratio"] == pytest.approx(row["q_sd"] / row["exact_sd"])
        assert row["mean_error_in_sd"] == pytest.approx(
            (row["q_mean"] - row["exact_mean"]) / row["exact_sd"]
        )
        if psis:
            assert math.isfinite(row["pareto_k"])
            assert 0 < row["psis_ess"] <= 1
        else:
            assert math.isnan(row["pareto_k"]) and math.isnan(row["psis_ess"])


def test_one_row_per_concentration_and_size_for_each_step_count(stored):
    settings = stored["settings"]
    assert list(stored["rows"]) == [str(n) for n in settings["num_steps"]]
    for rows in stored["rows"].values():
        _check_rows(rows, settings)
    # the same key for every step count: the same data, so the same exact
    # posterior
    first, *others = stored["rows"].values()
    for rows in others:
        for a, b in zip(first, rows, strict=True):
            for name in ("exact_mean", "exact_sd", "exact_lower", "exact_upper"):
                assert a[name] == b[name]


TINY = {
    **script.SETTINGS,
    "concentrations": [1.0],
    "sizes": [20],
    "num_steps": [50, 100],
    "num_psis_particles": 1_000,
}


@pytest.mark.slow
def test_the_study_runs_at_tiny_settings():
    study = script.recovery_study(TINY)
    assert list(study) == [50, 100]
    for rows in study.values():
        _check_rows(rows, TINY)
    assert script.recovery_study(TINY) == study  # deterministic for a fixed seed
    json.dumps({str(k): rows for k, rows in study.items()})  # plain values only
