"""JAX's persistent compilation cache and CPU compile settings, set up once
for the whole book.

Importing :mod:`companion` calls :func:`configure`, so every chapter, test
and benchmark that imports the package reads compiled programs back from disk
instead of compiling them again in a new process (a reader's re-run, a
re-render, the next CI job on the same clone). Chapter 9 explains the cache;
chapter 7 measures what it saves on one program.

Where the programs go, first match wins:

1. ``COMPANION_JAX_CACHE=off`` (or ``0``/``false``/``no``): no cache at all,
   unless JAX's own settings name one;
2. a folder already set for JAX (``JAX_COMPILATION_CACHE_DIR`` or
   ``jax.config.update("jax_compilation_cache_dir", ...)`` before the import):
   kept as it is;
3. ``.jax_cache/`` at the root of the repository when the package runs from
   a checkout (an editable install), ignored by git;
4. otherwise ``$XDG_CACHE_HOME/companion-jax`` (``~/.cache/companion-jax``).

JAX stores by default only programs that took a second or more to compile;
most of the book's are smaller (``svi.init`` alone runs dozens of small
programs operation by operation), so the threshold is set to 0 unless
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise.

The folder has no size cap. JAX can cap it (``jax_compilation_cache_max_size``),
but then every write lists and stats every entry to find what to evict, and
with the book's thousands of small programs that made the writes, not the
compiling, the cost: chapters run in book order on one capped cache ran
slower than each chapter alone on an empty one (``benchmarks/README.md``). Without a cap JAX does not lock
the folder, so a process can, rarely, read an entry that another is still
writing; JAX then warns ("Error reading persistent compilation cache
entry") and compiles the program itself, which the tests accept
(``pyproject.toml``). Delete the folder to reclaim its space.

A cached program is found again only if the new process builds exactly the
same one. NumPyro 0.22's ``Trace_ELBO`` adds up the sites' terms in the order
of a Python ``set`` of their names, which follows the interpreter's hash
seed: with the default random seed every process compiles a different SVI
step for a model with several sites, misses the cache, and may round its
loss differently in the last bits. Renders (``_environment``), the tests
(``tests/conftest.py``) and ``benchmarks/bench_book.py`` start their kernels
with ``PYTHONHASHSEED=0``; start Jupyter the same way to get the benefit.

Faster compiles on the CPU (:func:`fast_cpu_compile`): the book's programs
are small and most of a chapter's time is XLA compiling them, hundreds of
one-operation programs (``svi.init`` runs the model and guide operation by
operation) and a few SVI steps. XLA's CPU backend compiles its fusions with
MLIR "fusion emitters" by default; with ``--xla_cpu_use_fusion_emitters=false``
it uses its older LLVM emitters, which on the 2-core machine compile a small
program in about half the time (21 against 38 ms; a BNN's SVI step in 1.6
against 2.8 s) and run the BNN's steps about 40% slower. Compiling dominates
here, so the book, in order, runs in 0.84 of the time (``benchmarks/README.md``).
:func:`configure` adds the flag to ``XLA_FLAGS`` unless ``XLA_FLAGS`` already
names it, ``COMPANION_FAST_COMPILE=off`` is set, JAX's backends are already
running (too late: XLA reads its flags once) or jaxlib is not the 0.10
series it was measured on (XLA aborts the process on a flag it does not
know). GPUs are not affected: the flag is the CPU backend's.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

_OFF = {"0", "off", "false", "no"}
FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
_ROOT = Path(__file__).resolve().parents[1]


def default_dir() -> Path:
    """The folder :func:`configure` uses when nothing else names one."""
    if (_ROOT / "pyproject.toml").is_file() and os.access(_ROOT, os.W_OK):
        return _ROOT / ".jax_cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "companion-jax"


def fast_cpu_compile() -> bool:
    """Add :data:`FAST_COMPILE_FLAG` to ``XLA_FLAGS`` (see the module's
    docstring); ``True`` if this call added it.

    Leaves ``XLA_FLAGS`` alone when it already names the flag, when
    ``COMPANION_FAST_COMPILE`` is ``off`` (or ``0``/``false``/``no``), when
    JAX's backends have started (XLA has read its flags) or when jaxlib is
    not 0.10.x.
    """
    from jax._src import xla_bridge
    from jaxlib.version import __version__ as jaxlib_version

    flags = os.environ.get("XLA_FLAGS", "")
    name = FAST_COMPILE_FLAG.split("=")[0].lstrip("-")
    if (
        os.environ.get("COMPANION_FAST_COMPILE", "").strip().lower() in _OFF
        or name in flags
        or xla_bridge.backends_are_initialized()
        or not jaxlib_version.startswith("0.10.")
    ):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_FLAG}".strip()
    return True


def configure() -> Path | None:
    """Point JAX's persistent compilation cache at the book's folder, and
    make XLA compile faster on the CPU (:func:`fast_cpu_compile`).

    Returns the folder in use, or ``None`` when the cache is switched off.
    Must run before the process compiles its first program: JAX reads the
    settings once, at its first compilation, and XLA its flags when the
    backend starts.
    """
    fast_cpu_compile()
    named = jax.config.jax_compilation_cache_dir
    if not named:
        if os.environ.get("COMPANION_JAX_CACHE", "").strip().lower() in _OFF:
            return None
        named = str(default_dir())
        jax.config.update("jax_compilation_cache_dir", named)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return Path(named)
