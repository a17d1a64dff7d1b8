"""The benchmark scripts run as real programs, with tiny arguments, so they
cannot rot between the runs recorded in benchmarks/README.md."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_benchmark(script: str, *args: str) -> str:
    """Run benchmarks/<script> on the CPU; return its standard output."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.slow
def test_bench_training_runs_and_prints_every_method():
    out = _run_benchmark(
        "bench_training.py",
        *("--steps", "40", "--talk-steps", "4", "--repeats", "1"),
        *("--problems", "gamma"),  # the cheaper problem only
    )
    for label in [
        "bare jit(lax.scan) [limit]",
        "fit, no validation",
        "fit, validation each chunk",
        "svi.run(progress_bar=False)",
        "svi.run(progress_bar=True)",
        "talk's per-step loop",
        "per-step loop, jit hoisted",
    ]:
        assert out.count(label) == 1, label


@pytest.mark.slow
def test_bench_predictive_runs_and_batches_agree():
    out = _run_benchmark(
        "bench_predictive.py",
        *("--grid-points", "20", "--draws", "12", "--batch-sizes", "5"),
        *("--repeats", "1"),
    )
    assert "12 draws x 400 grid points" in out
    # One row per configuration, and batching does not change the numbers.
    rows = [
        line.split()[0]
        for line in out.splitlines()
        if line.endswith(tuple("0123456789"))
    ]
    assert rows[-2:] == ["all", "5"], out
    difference = float(out.split("over all batch sizes: ")[1].split()[0])
    assert difference < 1e-5
