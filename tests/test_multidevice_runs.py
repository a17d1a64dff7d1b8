"""Chapter 9's stored runs on several devices and processes
(``data/multidevice_runs.json``) match the script that made them
(``scripts/make_multidevice_runs.py``) and its worker
(``scripts/multidevice_worker.py``), and the script's runs work, at a tiny
size, as the chapter says they do."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "make_multidevice_runs", ROOT / "scripts" / "make_multidevice_runs.py"
)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

RUN_KEYS = {"devices", "rows", "setup_s", "cpu_s", "losses", "params"}


@pytest.fixture(scope="module")
def stored():
    assert script.OUTPUT == ROOT / "data" / "multidevice_runs.json"
    return json.loads(script.OUTPUT.read_text())


def worker_defaults() -> dict:
    """The defaults of the worker's command-line options, read from its source."""
    tree = ast.parse(script.WORKER.read_text())
    defaults = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "add_argument"
        ):
            name = node.args[0].value.removeprefix("--")
            (default,) = [k.value for k in node.keywords if k.arg == "default"]
            defaults[name] = ast.literal_eval(default)
    return defaults


def test_the_settings_are_the_script_s_and_the_worker_s_defaults(stored):
    assert stored["settings"] == script.SETTINGS
    assert worker_defaults() == {
        name: script.SETTINGS[name] for name in ("rows", "groups", "batch", "epochs")
    }
    assert stored["machine"]["backend"] == "cpu"
    assert stored["machine"]["runs_s"] > 0


def check_runs(runs: dict, settings: dict) -> None:
    """What chapter 9 reads off the runs: every device its own block of every
    batch, the processes' parameters replicated, the same fit as on one
    device, and a second run on the filled cache using less CPU time."""
    batch, devices = settings["batch"], settings["devices"]
    num_steps = settings["epochs"] * (settings["rows"] // batch)
    four, again, two = runs["devices"], runs["devices_again"], runs["processes"]
    for run in [four, again, *two]:
        assert set(run) == RUN_KEYS
        assert len(run["losses"]) == num_steps
    share = batch // devices
    assert four["devices"] == again["devices"] == devices
    assert four["rows"] == [[i * share, (i + 1) * share] for i in range(devices)]
    num_processes = settings["processes"]
    part = batch // num_processes
    assert [run["devices"] for run in two] == [num_processes] * num_processes
    assert [run["rows"] for run in two] == [
        [[i * part, (i + 1) * part]] for i in range(num_processes)
    ]
    assert all(run["params"] == two[0]["params"] for run in two)  # replicated
    reference = runs["reference"]
    assert len(reference["losses"]) == num_steps
    for run in [four, again, two[0]]:
        for name, value in reference["params"].items():
            np.testing.assert_allclose(run["params"][name], value, atol=1e-5)
        np.testing.assert_allclose(run["losses"], reference["losses"], rtol=1e-5)
    cache = runs["cache"]
    assert cache["files"] > 0 and cache["mb"] > 0
    # the re-run read every program back (wrote nothing new) and so spent
    # clearly less CPU time than the run that compiled them
    assert cache["files_after_rerun"] == cache["files"]
    assert again["cpu_s"] < 0.75 * four["cpu_s"]


def test_the_stored_runs_say_what_the_chapter_says(stored):
    check_runs(stored, stored["settings"])


TINY = {**script.SETTINGS, "rows": 800, "groups": 5, "batch": 40, "epochs": 1}


@pytest.mark.slow
def test_the_runs_work_at_a_tiny_size():
    check_runs(script.multidevice_runs(TINY), TINY)
