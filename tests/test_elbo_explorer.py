"""The interactive ELBO explorer of chapter 2 computes what companion.theory does.

The explorer's closed forms are written once, in JavaScript
(``chapters/elbo_explorer.js``), and run in the reader's browser. Here Node
evaluates them on a grid of data sets (sizes, noise scales, priors) and guides
(locations and scales, near and far from the posterior), and every number is
compared with ``companion.theory`` in float64 to 1e-10 (relative to the
value's size where it exceeds 1). The identity log p(D) = ELBO + KL(q‖p(θ|D))
is checked on the JavaScript numbers alone. The explorer's script is checked
to call only what the module exports and to read the data the chapter
writes. Skipped only if ``node`` is missing.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from scipy import stats

from companion import gaussians, theory

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "chapters" / "elbo_explorer.js"
EXPLORER = ROOT / "chapters" / "_elbo-explorer.qmd"
NODE = shutil.which("node")

TOL = 1e-10

# ((prior_loc, prior_scale), noise_scale, num_obs): the explorer's slider
# ranges (n from 1 to the pool's size, noise from 0.2 to 3) and other priors
DATA_SETTINGS = [
    ((0.0, 1.0), 1.0, 10),
    ((0.0, 1.0), 0.2, 1),
    ((0.0, 1.0), 3.0, 200),
    ((0.0, 1.0), 0.2, 200),
    ((0.0, 1.0), 3.0, 1),
    ((0.0, 1.0), 1.0, 57),
    ((0.5, 2.0), 1.5, 10),
    ((0.5, 2.0), 0.2, 200),
    ((-3.0, 0.3), 3.0, 57),
    ((-3.0, 0.3), 1.0, 1),
]
Q_LOCS = [-3.0, -0.5, 0.0, 1.3, 4.0]
Q_SCALES = [0.01, 0.1, 1.0, 2.0]
TRUE_LOC = 1.3
POOL_SIZE = 200

# Reads the cases on stdin, writes the module's numbers on stdout.
RUNNER = """
import { readFileSync } from "node:fs";
const m = await import(process.argv[1]);
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map((c) => {
  const y = m.observations(c.eps, c.trueLoc, c.noiseScale, c.n);
  const s = m.sufficientStatistics(y);
  const grid = c.qLocs.map((qLoc, i) => {
    const qScale = c.qScales[i];
    const e = m.explore(s, qLoc, qScale, c.priorLoc, c.priorScale, c.noiseScale);
    return {
      ...e,
      normalElbo: m.normalElbo(
        s, qLoc, qScale, c.priorLoc, c.priorScale, c.noiseScale),
      density: m.normalDensity(c.x[i], qLoc, qScale),
    };
  });
  return { y, stats: s, grid };
});
process.stdout.write(JSON.stringify(out));
"""


def _cases() -> list[dict]:
    eps = np.random.default_rng(15).normal(size=POOL_SIZE)
    q_locs, q_scales = (a.ravel() for a in np.meshgrid(Q_LOCS, Q_SCALES))
    x = np.linspace(-4.0, 5.0, q_locs.size)
    cases = []
    for (prior_loc, prior_scale), noise_scale, n in DATA_SETTINGS:
        # the exact posterior is one of the guides: KL = 0, ELBO = log p(D)
        y = TRUE_LOC + noise_scale * eps[:n]
        precision = 1 / prior_scale**2 + n / noise_scale**2
        loc = (prior_loc / prior_scale**2 + y.sum() / noise_scale**2) / precision
        scale = precision**-0.5
        cases.append(
            {
                "eps": eps.tolist(),
                "trueLoc": TRUE_LOC,
                "noiseScale": noise_scale,
                "n": n,
                "priorLoc": prior_loc,
                "priorScale": prior_scale,
                "qLocs": [*q_locs.tolist(), float(loc)],
                "qScales": [*q_scales.tolist(), float(scale)],
                "x": [*x.tolist(), float(loc)],
            }
        )
    return cases


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[list[dict], list[dict]]:
    if NODE is None:
        pytest.skip("node is not installed")
    # A copy named .mjs: Node 20 reads a bare .js file as CommonJS.
    module = tmp_path_factory.mktemp("explorer") / "elbo_explorer.mjs"
    shutil.copyfile(MODULE, module)
    cases = _cases()
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", RUNNER, module.as_uri()],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return cases, json.loads(result.stdout)


@jax.jit
def _elbo_terms(y, q_loc, q_scale, prior_loc, prior_scale, noise_scale):
    """companion.theory's ELBO and expected log-likelihood for a grid of guides
    (compiled once per data size)."""

    def one(loc, scale):
        return (
            theory.normal_elbo(y, loc, scale, prior_loc, prior_scale, noise_scale),
            theory.normal_expected_log_likelihood(y, loc, scale, noise_scale),
        )

    return jax.vmap(one)(q_loc, q_scale)


def _close(js: float, py: float, what: str) -> None:
    assert abs(js - py) <= TOL * max(1.0, abs(py)), f"{what}: js {js!r}, python {py!r}"


def test_data_and_sufficient_statistics(evaluated) -> None:
    cases, results = evaluated
    for case, result in zip(cases, results, strict=True):
        y = case["trueLoc"] + case["noiseScale"] * np.asarray(case["eps"][: case["n"]])
        np.testing.assert_array_equal(result["y"], y)
        assert result["stats"]["n"] == case["n"]
        _close(result["stats"]["mean"], float(np.mean(y)), "mean")
        within = float(np.sum((y - np.mean(y)) ** 2))
        _close(result["stats"]["within"], within, "within")


@pytest.mark.slow
def test_closed_forms_match_companion_theory(evaluated) -> None:
    cases, results = evaluated
    checked = 0
    with jax.enable_x64(True):
        for case, result in zip(cases, results, strict=True):
            y = jnp.asarray(result["y"], dtype=jnp.float64)
            model = (case["priorLoc"], case["priorScale"], case["noiseScale"])
            loc, scale = theory.normal_posterior(y, *model)
            log_evidence = float(theory.normal_log_evidence(y, *model))
            q_loc = jnp.asarray(case["qLocs"])
            q_scale = jnp.asarray(case["qScales"])
            noise = case["noiseScale"]
            elbo, expected = _elbo_terms(y, q_loc, q_scale, *model)
            kl_prior = gaussians.kl_normal(q_loc, q_scale, model[0], model[1])
            kl_post = gaussians.kl_normal(q_loc, q_scale, loc, scale)
            density = stats.norm.pdf(case["x"], case["qLocs"], case["qScales"])
            for i, js in enumerate(result["grid"]):
                where = f"n={case['n']} noise={noise} prior={model[:2]} q #{i}"
                _close(js["posterior"]["loc"], float(loc), f"posterior loc, {where}")
                _close(js["posterior"]["scale"], float(scale), f"posterior sd, {where}")
                _close(js["logEvidence"], log_evidence, f"log p(D), {where}")
                _close(js["elbo"], float(elbo[i]), f"ELBO, {where}")
                _close(js["normalElbo"], float(elbo[i]), f"normalElbo, {where}")
                _close(
                    js["expectedLogLik"], float(expected[i]), f"E_q log lik, {where}"
                )
                _close(js["klPrior"], float(kl_prior[i]), f"KL(q‖prior), {where}")
                _close(js["klPosterior"], float(kl_post[i]), f"KL(q‖post), {where}")
                _close(js["density"], float(density[i]), f"density, {where}")
                checked += 1
    assert checked == len(DATA_SETTINGS) * (len(Q_LOCS) * len(Q_SCALES) + 1)


def test_identity_holds_in_javascript(evaluated) -> None:
    _, results = evaluated
    for result in results:
        for js in result["grid"]:
            gap = js["logEvidence"] - (js["elbo"] + js["klPosterior"])
            assert abs(gap) <= TOL * max(1.0, abs(js["logEvidence"])), gap
            assert js["klPosterior"] >= -TOL
            assert js["elbo"] <= js["logEvidence"] + TOL * abs(js["logEvidence"])
        # the last guide is the exact posterior: the bound is tight there
        at_posterior = result["grid"][-1]
        assert abs(at_posterior["klPosterior"]) <= TOL
        _close(at_posterior["elbo"], at_posterior["logEvidence"], "ELBO at posterior")


def test_the_explorer_script_calls_the_module_and_reads_the_chapters_data() -> None:
    exported = set(
        re.findall(r"^export function (\w+)", MODULE.read_text(), re.MULTILINE)
    )
    source = EXPLORER.read_text()
    # plain JavaScript: OJS cells in a notebook make Quarto warn at every render
    assert "```{ojs}" not in source
    # loaded from the file beside the page, a resource of both profiles
    assert 'import * as theory from "./elbo_explorer.js";' in source
    for profile in ("_quarto-book.yml", "_quarto-slides.yml"):
        config = yaml.safe_load((ROOT / profile).read_text())
        assert "/chapters/elbo_explorer.js" in config["project"]["resources"], profile
    used = set(re.findall(r"\btheory\.(\w+)\(", source))
    assert used, "the explorer calls nothing from chapters/elbo_explorer.js"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # the data element it reads is the one chapter 2 displays, with its keys
    assert 'document.getElementById("elbo-explorer-data")' in source
    chapter = json.loads((ROOT / "chapters" / "02-elbo.ipynb").read_text())
    code = "\n".join(
        "".join(c["source"]) for c in chapter["cells"] if c["cell_type"] == "code"
    )
    assert 'id="elbo-explorer-data"' in code
    keys = set(re.findall(r"\bd\.(\w+)", source))
    assert keys <= {
        "eps",
        "true_loc",
        "prior_loc",
        "prior_scale",
        "noise_scale",
        "num_obs",
    }
