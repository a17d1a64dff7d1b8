"""The benchmark scripts run as real programs, with tiny arguments (the cheaper problem only), so they
cannot rot between the runs recorded in benchmarks/README.md."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_training_runs_and_prints_every_method():
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_training.py"),
            "--steps",
            "40",
            "--talk-steps",
            "4",
            "--repeats",
            "1",
            "--problems",
            "gamma",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
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
