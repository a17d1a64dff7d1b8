// elbo_explorer.js: the closed forms behind chapter 2's interactive ELBO
// explorer, written once. The OJS cells in chapters/_elbo-explorer.qmd import
// this module in the reader's browser; tests/test_elbo_explorer.py imports it
// with Node and checks every function against companion.theory (to 1e-10).
//
// The conjugate Gaussian model of chapters 1 and 2:
//   θ ~ N(priorLoc, priorScale²),  y_i | θ ~ N(θ, noiseScale²),  i = 1..n,
// and a Gaussian guide q(θ) = N(qLoc, qScale²). The data enter only through
// their sufficient statistics {n, mean, within}, within = Σ_i (y_i - ȳ)², so
// the explorer can change the data's size and noise without re-reading them.
// The ELBO is the bound itself (to maximise), as in companion.theory.

const LOG_2PI = Math.log(2 * Math.PI);

/** The sufficient statistics {n, mean, within} of an array of observations. */
export function sufficientStatistics(y) {
  const n = y.length;
  if (n === 0) return { n: 0, mean: 0, within: 0 };
  let sum = 0;
  for (const v of y) sum += v;
  const mean = sum / n;
  let within = 0;
  for (const v of y) within += (v - mean) ** 2;
  return { n, mean, within };
}

/** The first n observations y_i = trueLoc + noiseScale·ε_i from a pool of ε_i ~ N(0, 1). */
export function observations(eps, trueLoc, noiseScale, n) {
  return eps.slice(0, n).map((e) => trueLoc + noiseScale * e);
}

/** The exact posterior p(θ | y) = N(loc, scale²): precisions add. */
export function normalPosterior(stats, priorLoc, priorScale, noiseScale) {
  const precision = 1 / priorScale ** 2 + stats.n / noiseScale ** 2;
  const loc =
    (priorLoc / priorScale ** 2 + (stats.n * stats.mean) / noiseScale ** 2) / precision;
  return { loc, scale: 1 / Math.sqrt(precision) };
}

/** log p(D), the log evidence: the density of y under N(priorLoc·1, priorScale²·11ᵀ + noiseScale²·I). */
export function normalLogEvidence(stats, priorLoc, priorScale, noiseScale) {
  const { n, mean, within } = stats;
  if (n === 0) return 0;
  const s2 = noiseScale ** 2;
  const t2 = priorScale ** 2;
  return (
    -0.5 * n * (LOG_2PI + Math.log(s2)) -
    0.5 * Math.log1p((n * t2) / s2) -
    within / (2 * s2) -
    (n * (mean - priorLoc) ** 2) / (2 * (s2 + n * t2))
  );
}

/** E_q[log p(y | θ)], the ELBO's first term: how well q explains the data. */
export function normalExpectedLogLikelihood(stats, qLoc, qScale, noiseScale) {
  const { n, mean, within } = stats;
  const squares = within + n * (mean - qLoc) ** 2 + n * qScale ** 2;
  return -0.5 * n * (LOG_2PI + 2 * Math.log(noiseScale)) - squares / (2 * noiseScale ** 2);
}

/** KL(N(locQ, scaleQ²) ‖ N(locP, scaleP²)). */
export function klNormal(locQ, scaleQ, locP, scaleP) {
  const ratio = (scaleQ / scaleP) ** 2;
  return 0.5 * (ratio + ((locQ - locP) / scaleP) ** 2 - 1 - Math.log(ratio));
}

/** The ELBO of q: E_q[log p(y | θ)] - KL(q ‖ p(θ)). */
export function normalElbo(stats, qLoc, qScale, priorLoc, priorScale, noiseScale) {
  return (
    normalExpectedLogLikelihood(stats, qLoc, qScale, noiseScale) -
    klNormal(qLoc, qScale, priorLoc, priorScale)
  );
}

/** The density of N(loc, scale²) at x. */
export function normalDensity(x, loc, scale) {
  return Math.exp(-0.5 * ((x - loc) / scale) ** 2 - 0.5 * LOG_2PI) / scale;
}

/**
 * Everything the explorer shows, for one setting of the sliders: the
 * posterior, log p(D), the ELBO, KL(q ‖ p(θ | D)), and the ELBO's two terms.
 * The identity log p(D) = ELBO + KL(q ‖ p(θ | D)) is not used to compute any
 * of them, so the page (and the test) can check it.
 */
export function explore(stats, qLoc, qScale, priorLoc, priorScale, noiseScale) {
  const posterior = normalPosterior(stats, priorLoc, priorScale, noiseScale);
  const expectedLogLik = normalExpectedLogLikelihood(stats, qLoc, qScale, noiseScale);
  const klPrior = klNormal(qLoc, qScale, priorLoc, priorScale);
  return {
    posterior,
    logEvidence: normalLogEvidence(stats, priorLoc, priorScale, noiseScale),
    elbo: expectedLogLik - klPrior,
    klPosterior: klNormal(qLoc, qScale, posterior.loc, posterior.scale),
    expectedLogLik,
    klPrior,
  };
}
