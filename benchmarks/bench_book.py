"""How long each chapter takes to run, cold and warm, and how much of it is
compilation.

Each chapter is executed top to bottom in a fresh Jupyter kernel (nbclient,
as nbmake and Quarto do), twice:

- **cold**: JAX's persistent compilation cache points at a new, empty
  directory (``JAX_COMPILATION_CACHE_DIR``) for this chapter alone, so every
  program is compiled: a reader who opens this one chapter first;
- **book**: one new, empty cache for the whole book, chapters run in order,
  as a first ``quarto render`` or a CI run of a fresh clone executes them:
  a chapter reads back what earlier chapters compiled (the same network at
  the same shapes, the same small operations that ``svi.init`` runs one by
  one);
- **warm**: the same chapter again in a new kernel with the cache its
  earlier run filled (the book's, when ``book`` ran), as a reader's re-run
  or a re-render would find it.

A cell prepended to the notebook (not saved) registers a listener on JAX's
monitoring events and a cell appended at the end reports, for the kernel:
the seconds spent tracing, lowering and compiling programs
(``/jax/core/compile/*_duration``: XLA's backend compile is the bulk on a
CPU) and the persistent cache's hits and misses. Wall time is measured
around the whole execution (kernel start included).

    python benchmarks/bench_book.py [--chapters 01 05] [--runs cold warm]
        [--csv benchmarks/results/book.csv] [--slowest 5] [--probe]

Run it on a quiet machine: chapters use both cores. Record what it prints,
with the machine, in benchmarks/README.md. The machine's own speed drifts
(on the 2-core VM that builds the book, by half within a day): ``--probe``
times a fixed piece of work in a fresh process before and after the
chapters, compiling 500 one-operation programs (most of a chapter's time is
such compiling; the probe counts them) and running one compiled loop, so that runs made at
different times can be compared.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
MARK = "BENCH_BOOK_RESULT "

_LISTEN = """
import jax.monitoring as _bench_monitoring
_bench = {"trace": 0.0, "lower": 0.0, "compile": 0.0, "hits": 0, "misses": 0}
_bench["programs"] = {}  # backend compile (or cache read) seconds by program
_bench_durations = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}

def _bench_on_duration(event, duration, **kwargs):
    if event in _bench_durations:
        _bench[_bench_durations[event]] += duration
        if _bench_durations[event] == "compile":
            name = str(kwargs.get("fun_name"))
            count, seconds = _bench["programs"].get(name, (0, 0.0))
            _bench["programs"][name] = (count + 1, seconds + duration)

def _bench_on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        _bench["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        _bench["misses"] += 1

_bench_monitoring.register_event_duration_secs_listener(_bench_on_duration)
_bench_monitoring.register_event_listener(_bench_on_event)

"""

_REPORT = f"""
import json as _bench_json
print({MARK!r} + _bench_json.dumps(_bench))
"""


_PROBE = """
import json, os, time
os.environ["COMPANION_JAX_CACHE"] = "off"
import companion  # its XLA flags, as the chapters have them
import jax
import jax.monitoring
import jax.numpy as jnp
compiled = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **kw: compiled.append(seconds)
    if event == "/jax/core/compile/backend_compile_duration" else None
)
jnp.zeros(1).block_until_ready()
before = len(compiled)
start = time.perf_counter()
for n in range(2, 102):  # new one-operation programs at every size
    jnp.tanh(jnp.ones(n) * 2.0 + 1.0).sum().block_until_ready()
programs = len(compiled) - before
compile_ms = 1000 * (time.perf_counter() - start) / programs
x = jnp.full((256, 256), 0.01)
loop = jax.jit(lambda x: jax.lax.fori_loop(0, 400, lambda i, y: jnp.tanh(y @ x), x))
loop(x).block_until_ready()
start = time.perf_counter()
loop(x).block_until_ready()
run_ms = 1000 * (time.perf_counter() - start)
print(json.dumps({"programs": programs, "ms_per_program": compile_ms, "loop_ms": run_ms}))
"""


def speed_probe() -> dict:
    """The machine's speed now: milliseconds per one-operation program
    (tracing, lowering and compiling it, no cache) and for one compiled loop,
    in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the speed probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_probe(when: str) -> None:
    probe = speed_probe()
    print(
        f"# speed probe {when}: {probe['ms_per_program']:.1f} ms per one-operation "
        f"program ({probe['programs']} programs), {probe['loop_ms']:.0f} ms for the "
        "compiled loop",
        flush=True,
    )


def run_chapter(path: Path, cache_dir: Path, timeout: int) -> dict:
    """Execute one chapter in a fresh kernel; wall time and JAX's compile log."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_LISTEN))
    nb.cells.append(nbformat.v4.new_code_cell(_REPORT))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    for output in nb.cells[-1].outputs:
        text = output.get("text", "")
        if MARK in text:
            stats = json.loads(text.split(MARK, 1)[1])
            break
    else:
        raise RuntimeError(f"{path.name}: the report cell printed nothing")
    return {"wall_s": wall, **stats, "cells": cell_times(nb)}


def cell_times(nb) -> list[tuple[float, int, str]]:
    """(seconds, cell index, first line) of every executed code cell.

    From the timestamps nbclient records in each cell's metadata; the two
    cells this script adds are left out.
    """
    times = []
    for index, cell in enumerate(nb.cells[1:-1]):
        stamps = cell.get("metadata", {}).get("execution", {})
        start = stamps.get("iopub.execute_input")
        end = stamps.get("shell.execute_reply")
        if cell.cell_type != "code" or not (start and end):
            continue
        seconds = (
            datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))
        ).total_seconds()
        lines = [line for line in cell.source.splitlines() if not line.startswith("#|")]
        times.append((seconds, index, (lines[0] if lines else "")[:60]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--chapters", nargs="*", help="number prefixes, e.g. 01 05 (default: all)"
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["cold", "book", "warm"],
        choices=["cold", "book", "warm"],
    )
    parser.add_argument("--timeout", type=int, default=1_800)
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    parser.add_argument(
        "--notebooks",
        nargs="+",
        type=Path,
        help="run these notebooks instead of the chapters (the tests use it)",
    )
    parser.add_argument(
        "--slowest",
        type=int,
        default=0,
        metavar="N",
        help="also print each run's N slowest cells (index, seconds, first line)",
    )
    parser.add_argument(
        "--programs",
        type=int,
        default=0,
        metavar="N",
        help="also print the N programs that took longest to compile, in total",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="time a fixed piece of work before and after the chapters",
    )
    args = parser.parse_args()
    # The kernels inherit it: NumPyro's Trace_ELBO orders its sites by a set of
    # names, so without a fixed hash seed each kernel compiles a different
    # program and a warm run misses the cache (companion/_cache.py).
    os.environ.setdefault("PYTHONHASHSEED", "0")

    paths = sorted(CHAPTERS.glob("[0-9][0-9]-*.ipynb"))
    if args.notebooks:
        paths = [p.resolve() for p in args.notebooks]
    elif args.chapters:
        paths = [p for p in paths if p.name[:2] in args.chapters]
        if not paths:
            parser.error(f"--chapters {args.chapters} matches no chapter")
    print(
        f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"PYTHONHASHSEED={os.environ['PYTHONHASHSEED']}"
    )
    header = (
        f"{'chapter':34} {'run':5} {'wall s':>7} {'compile s':>9} {'share':>6} "
        f"{'trace':>6} {'lower':>6} {'xla':>6} {'hits':>5} {'misses':>6}"
    )
    if args.probe:
        print_probe("before")
    print(header)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            for run in args.runs:
                shared = run == "book" or (run == "warm" and "book" in args.runs)
                # new and empty until this chapter's cold run, or the book's
                cache = Path(tmp) / ("book" if shared else path.stem)
                r = run_chapter(path, cache, args.timeout)
                cells = r.pop("cells")
                programs = r.pop("programs")
                compile_s = r["trace"] + r["lower"] + r["compile"]
                row = {
                    "chapter": path.stem,
                    "run": run,
                    **r,
                    "compile_total_s": compile_s,
                }
                rows.append(row)
                print(
                    f"{path.stem:34} {run:5} {r['wall_s']:7.1f} {compile_s:9.1f} "
                    f"{compile_s / r['wall_s']:6.0%} {r['trace']:6.1f} {r['lower']:6.1f} "
                    f"{r['compile']:6.1f} {r['hits']:5d} {r['misses']:6d}",
                    flush=True,
                )
                for seconds, index, first in sorted(cells, reverse=True)[
                    : args.slowest
                ]:
                    print(f"    cell {index:3d} {seconds:6.1f} s  {first}", flush=True)
                by_time = sorted(programs.items(), key=lambda kv: -kv[1][1])
                for name, (count, seconds) in by_time[: args.programs]:
                    print(f"    {seconds:6.1f} s {count:4d}x  {name[:70]}", flush=True)
    for run in args.runs:
        total = sum(r["wall_s"] for r in rows if r["run"] == run)
        print(f"{'book total':34} {run:5} {total:7.1f}")
    if args.probe:
        print_probe("after")
    first = next((run for run in ("book", "cold") if run in args.runs), None)
    if first and "warm" in args.runs:

        def wall(stem, run):
            return sum(
                r["wall_s"]
                for r in rows
                if r["run"] == run and stem in (None, r["chapter"])
            )

        for path in paths:
            ratio = wall(path.stem, "warm") / wall(path.stem, first)
            print(f"{path.stem:34} warm/{first} {ratio:.2f}")
        print(
            f"{'book total':34} warm/{first} {wall(None, 'warm') / wall(None, first):.2f}"
        )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
