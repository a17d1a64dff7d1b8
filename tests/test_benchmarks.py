"""The benchmark scripts run as real programs, with tiny arguments, so they
cannot rot between the runs recorded in benchmarks/README.md."""

import csv
import os
import re
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
        timeout=1_200,  # several fresh JAX processes; generous for a busy machine
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


@pytest.mark.slow
def test_bench_streaming_runs_and_records_its_settings(tmp_path):
    record = tmp_path / "streaming.csv"
    out = _run_benchmark(
        "bench_streaming.py",
        *("--rows", "4000", "--batch-size", "500", "--groups", "20"),
        *("--shuffle-blocks", "1", "16", "--limit-steps", "4", "--repeats", "1"),
        *("--record", str(record)),
    )
    assert "batch 500 rows, 20 groups" in out
    with record.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["num_rows"]) for r in rows] == [4000, 4000]
    assert [int(r["shuffle_block"]) for r in rows] == [1, 16]
    for row in rows:
        assert float(row["rows_per_s"]) > 0 and float(row["limit_rows_per_s"]) > 0


def test_recorded_streaming_results_match_the_benchmark_settings():
    """The table chapter 8 shows was made by bench_streaming.py with its
    default settings (rerun it with --record to refresh it)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_streaming
    finally:
        sys.path.pop(0)
    defaults = bench_streaming.DEFAULTS
    path = ROOT / "benchmarks" / "results" / "streaming.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == bench_streaming.COLUMNS
    blocks = defaults["shuffle_blocks"]
    assert [int(r["num_rows"]) for r in rows] == [
        n for n in defaults["rows"] for _ in blocks
    ]
    assert [int(r["shuffle_block"]) for r in rows] == blocks * len(defaults["rows"])
    for row in rows:
        assert int(row["batch_size"]) == defaults["batch_size"]
        assert int(row["num_groups"]) == defaults["groups"]
        assert int(row["epochs"]) == defaults["epochs"]
        ratio = float(row["rows_per_s"]) / float(row["limit_rows_per_s"])
        assert abs(ratio - float(row["ratio_to_limit"])) < 1e-9


@pytest.mark.slow
def test_bench_book_times_cold_book_and_warm_runs(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A tiny chapter"),
        nbformat.v4.new_code_cell(
            "import jax, jax.numpy as jnp\nimport companion\n"
            "f = jax.jit(lambda v: jnp.sin(v) @ v.T)\n"
            "f(jnp.ones((3, 3))).block_until_ready()"
        ),
    ]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(notebook, path)
    table = tmp_path / "book.csv"
    out = _run_benchmark(
        "bench_book.py",
        *("--notebooks", str(path), "--runs", "cold", "book", "warm"),
        *("--slowest", "1", "--programs", "1", "--csv", str(table), "--probe"),
    )
    with table.open(newline="") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"cold", "book", "warm"}
    for row in rows.values():
        assert float(row["wall_s"]) > 0 and float(row["compile"]) >= 0
    # cold and book start from empty caches; warm reads back what book wrote
    assert int(rows["cold"]["misses"]) >= 1 and int(rows["book"]["misses"]) >= 1
    assert int(rows["warm"]["misses"]) == 0 and int(rows["warm"]["hits"]) >= 1
    assert "jit(<lambda>)" in out  # the program listing
    assert "warm/book" in out
    probes = re.findall(
        r"speed probe (before|after): ([\d.]+) ms per .* \((\d+) programs\), "
        r"([\d.]+) ms",
        out,
    )
    assert [when for when, *_ in probes] == ["before", "after"]
    # five programs per size (ones, multiply, add, tanh, sum), 100 sizes
    assert all(int(n) == 500 for _, _, n, _ in probes)
    assert all(float(ms) > 0 and float(loop) > 0 for _, ms, _, loop in probes)
