"""A training loop for SVI as fast as a compiled scan, with validation, early
stopping and a progress bar.

`SVI.run` either steps from Python (with its progress bar) or compiles one
`lax.scan` with no way to look at the run while it goes, and it re-traces that
scan at every call. :func:`fit` runs the steps in compiled chunks, a
`lax.scan` under `jax.jit` that is compiled once per SVI object, chunk length
and argument shapes and reused across calls, and talks to the host only between
chunks: to update the progress bar, read the validation loss, decide on
early stopping and check that the loss is finite.

Loss means negative ELBO, to minimise, as in NumPyro. The validation loss is,
by default, the same one-draw negative ELBO on the validation data
(`svi.evaluate`); ``val_loss="neg_lpd"`` replaces it with the negative log
predictive density of the validation data under the guide,
:func:`log_predictive_density` with ``num_lpd_samples`` draws, computed inside
the same compiled chunk.

Introduced in chapter 5 (BNN inference); used in the primer and chapters 3, 6, 7 and 9.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.svi import SVIState
from numpyro.infer.util import log_likelihood
from tqdm import tqdm

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._checks import check_optional_count as _check_optional_count
from companion._checks import check_positive as _check_positive
from companion._checks import is_int as _is_int
from companion._compile import cached_jit as _cached_jit
from companion._progress import bar_disabled

__all__ = [
    "EarlyStopping",
    "FitResult",
    "NonFiniteLossWarning",
    "StopRule",
    "ValLoss",
    "default_chunk_size",
    "fit",
    "log_predictive_density",
]

StopRule = Literal["no_improvement", "val_above_train"]
_STOP_RULES = ("no_improvement", "val_above_train")
ValLoss = Literal["neg_elbo", "neg_lpd"]
_VAL_LOSSES = ("neg_elbo", "neg_lpd")
# fit's draws for the log predictive density use the key
# jax.random.fold_in(<the SVI state's key at the start of the call>, _LPD_STREAM):
# a stream of their own, so they never touch the training steps' keys.
_LPD_STREAM = 0x4C5044  # "LPD"


class NonFiniteLossWarning(RuntimeWarning):
    """Warned when :func:`fit` stops because the loss became NaN or infinite;
    :func:`fit` is used in chapters 3, 5, 6 and 9."""


class FitResult(NamedTuple):
    """What :func:`fit` returns; the first three fields match `SVIRunResult`.
    Used in chapters 3, 5, 6 and 9.

    Attributes:
        params: the constrained parameters: the best by validation loss when
            validation data were given, else those after the last finite step.
        state: the `SVIState` after the last step run (pass it, or the whole
            result, back as ``init_state`` to resume).
        losses: the training loss (negative ELBO) of every step run.
        val_losses: the validation loss after each chunk (``None`` without
            validation data), summed over the validation data (not
            normalised), of the kind ``val_loss_kind`` names: the one-draw
            negative ELBO of `svi.evaluate` (``"neg_elbo"``) or the negative
            log predictive density (``"neg_lpd"``). Early stopping and
            ``params`` follow this signal.
        num_steps_run: how many steps ran.
        stopped_early: whether the run ended before ``num_steps``.
        stop_reason: ``"completed"``, ``"early_stopping"`` or
            ``"non_finite_loss"``.
        val_steps: the step (1-based, counted in this call) after which each
            validation loss was taken.
        best_step: the step whose parameters ``params`` holds, counted in
            this call (0 or less: the best of the run resumed, carried over).
        train_size: the number of training observations used to normalise.
        val_size: the number of validation observations used to normalise.
        val_loss_kind: ``"neg_elbo"`` or ``"neg_lpd"``, what ``val_losses``
            holds (``None`` without validation data).
        early_stopping: the :class:`EarlyStopping` rule after the last
            evaluation, its best loss and count included (``None`` without
            validation data); resuming from this result goes on from it.
        val_records: every validation loss recorded after each chunk, by
            kind: ``val_loss_kind``'s (the values of ``val_losses``) and
            those :func:`fit` was asked to record beside it
            (``also_record``), all on the same parameters (``None`` without
            validation data).
    """

    params: dict[str, Any]
    state: SVIState
    losses: Float[np.ndarray, " num_steps_run"]
    val_losses: Float[np.ndarray, " num_evaluations"] | None
    num_steps_run: int
    stopped_early: bool
    stop_reason: str
    val_steps: np.ndarray | None
    best_step: int
    train_size: int
    val_size: int | None
    val_loss_kind: str | None = None
    early_stopping: EarlyStopping | None = None
    val_records: dict[str, Float[np.ndarray, " num_evaluations"]] | None = None


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Host-side early-stopping rule and its record, a value: :meth:`update`
    takes one evaluation and returns the updated rule, the old one unchanged.

    Two rules, both counting *evaluations* (one per chunk in :func:`fit`):

    - ``"no_improvement"`` (the default): stop once the validation loss has
      not improved on its best by more than ``min_delta`` for ``patience``
      evaluations in a row.
    - ``"val_above_train"``: the rule of the talk's custom loop: stop once the
      per-observation validation loss has exceeded the per-observation
      training loss for ``patience`` evaluations in a row.

    Whatever the rule, :attr:`is_best` says whether the last evaluation set a
    new best validation loss, so the caller can keep the best parameters.
    :func:`fit` keeps the rule's last value in ``FitResult.early_stopping``,
    so a run resumed from that result keeps its best loss and its count.

    Attributes:
        patience: evaluations that fail the rule before stopping (``None``:
            never stop).
        rule: ``"no_improvement"`` or ``"val_above_train"``.
        min_delta: the least decrease that counts as an improvement.
        best: the best validation loss so far (per observation).
        counter: evaluations in a row that failed the rule.
        is_best: whether the last evaluation set a new best.

    Used in chapter 5.

    Example:
        >>> rule = EarlyStopping(patience=2)
        >>> stops = []
        >>> for val in (3.0, 2.0, 2.5, 2.4, 1.0):
        ...     rule = rule.update(train=1.0, val=val)
        ...     stops.append(rule.should_stop)
        >>> stops, rule.best
        ([False, False, False, True, False], 1.0)
    """

    patience: int | None
    rule: StopRule = "no_improvement"
    min_delta: float = 0.0
    best: float = math.inf
    counter: int = 0
    is_best: bool = False

    def __post_init__(self) -> None:
        _check_optional_count("patience", self.patience)
        if self.rule not in _STOP_RULES:
            raise ValueError(
                f"stop_rule must be one of {_STOP_RULES}, got {self.rule!r}"
            )
        _check_positive("min_delta", self.min_delta, allow_zero=True)

    @property
    def should_stop(self) -> bool:
        """Whether the evaluations so far say stop."""
        return self.patience is not None and self.counter >= self.patience

    def update(self, train: float, val: float) -> EarlyStopping:
        """The rule after one more evaluation (both losses per observation)."""
        is_best = bool(val < self.best - self.min_delta)
        if self.rule == "no_improvement":
            counter = 0 if is_best else self.counter + 1
        else:
            counter = self.counter + 1 if val > train else 0
        best = float(val) if is_best else self.best
        return dataclasses.replace(self, best=best, counter=counter, is_best=is_best)


def default_chunk_size(num_steps: int, num_chunks: int = 20) -> int:
    """Steps per compiled chunk when :func:`fit` is not told: about
    ``num_steps / num_chunks``, preferring a divisor of ``num_steps`` (within
    a factor of two) so that no second, shorter chunk has to be compiled.

    Used in chapter 5.

    Example:
        >>> (
        ...     default_chunk_size(10_000),
        ...     default_chunk_size(1_000),
        ...     default_chunk_size(997),
        ... )
        (500, 50, 50)
    """
    _check_count("num_steps", num_steps)
    ideal = max(1, math.ceil(num_steps / num_chunks))
    for size in range(ideal, max(1, ideal // 2) - 1, -1):
        if num_steps % size == 0:
            return size
    return ideal


def log_predictive_density(
    rng_key: jax.Array,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    params: dict[str, Any],
    *args: Any,
    num_samples: int = 100,
    **kwargs: Any,
) -> Float[Array, ""]:
    """The log predictive density of data under the guide, the held-out score
    of chapter 5's early stopping:

        lpd = Σ_i log (1/S Σ_s p(y_i | θ_s)),   θ_s ~ q_φ,  s = 1..S,

    with ``S = num_samples`` draws from ``guide`` at ``params``, and
    ``p(y_i | θ_s)`` the likelihood of observation ``i`` at the model's
    observed sites (`numpyro.infer.util.log_likelihood`). Each element of an
    observed site's log-probability is one observation (ArviZ's pointwise
    convention); sites and elements are summed after the average over draws.
    The log-probabilities are not scaled (a ``scale`` handler or subsampling
    in the model is ignored). For a finite ``S`` this estimates the lpd with
    a downward bias (Jensen) that shrinks as ``S`` grows; higher is better,
    and :func:`fit` minimises its negative (``val_loss="neg_lpd"``).

    Pure JAX, so it can be jitted and vmapped (over ``rng_key``, say).

    Args:
        rng_key: a JAX PRNG key, split into one key per draw.
        model: the NumPyro model, with its observations among ``args`` or
            ``kwargs``.
        guide: the guide; every latent site of the model must be one of its
            sample sites.
        params: the guide's constrained parameters (``svi.get_params(state)``
            or ``result.params``).
        *args: positional arguments of model and guide (the held-out data).
        num_samples: the number of draws ``S``.
        **kwargs: keyword arguments of model and guide.

    Returns:
        The lpd, a scalar, summed over observations (divide by their number
        for a per-observation value).

    Used in chapter 5.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     with numpyro.plate("data", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> def guide(y):
        ...     numpyro.sample("loc", dist.Normal(numpyro.param("m", 0.0), 1e-3))
        >>> lpd = log_predictive_density(
        ...     jax.random.key(0), model, guide, {"m": 0.0}, jnp.zeros(4)
        ... )
        >>> round(float(lpd), 3)  # 4 log N(0 | 0, 1)
        -3.676
    """
    _check_key(rng_key)
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not callable(guide):
        raise TypeError(f"guide must be callable, got {type(guide).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    _check_count("num_samples", num_samples)
    return _log_predictive_density(
        rng_key, model, guide, params, num_samples, args, kwargs
    )


def _log_predictive_density(
    rng_key: jax.Array,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    params: dict[str, Any],
    num_samples: int,
    args: tuple,
    kwargs: dict[str, Any],
) -> jax.Array:
    def draw(key):  # one θ_s ~ q_φ: the guide's latent sample sites
        seeded = handlers.seed(handlers.substitute(guide, data=params), key)
        guide_trace = handlers.trace(seeded).get_trace(*args, **kwargs)
        return {
            name: site["value"]
            for name, site in guide_trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        }

    draws = jax.vmap(draw)(jax.random.split(rng_key, num_samples))
    pointwise = log_likelihood(model, draws, *args, parallel=True, **kwargs)
    if not pointwise:
        raise ValueError("model has no observed sites: nothing to score")
    log_s = jnp.log(num_samples)
    return sum(
        jnp.sum(jax.nn.logsumexp(value, axis=0) - log_s) for value in pointwise.values()
    )


def fit(
    svi: SVI,
    rng_key: jax.Array,
    num_steps: int,
    *args: Any,
    val_args: tuple | None = None,
    val_kwargs: dict[str, Any] | None = None,
    val_loss: ValLoss = "neg_elbo",
    also_record: Sequence[ValLoss] = (),
    num_lpd_samples: int = 100,
    patience: int | None = None,
    stop_rule: StopRule = "no_improvement",
    min_delta: float = 0.0,
    chunk_size: int | None = None,
    progress_bar: bool = True,
    init_state: SVIState | FitResult | None = None,
    init_params: dict[str, Any] | None = None,
    stable_update: bool = False,
    **kwargs: Any,
) -> FitResult:
    """Run ``num_steps`` of SVI in compiled chunks; a drop-in for `svi.run`.

    Args:
        svi: the `numpyro.infer.SVI` to run (any NumPyro or optax optimizer,
            including optax transformations that need the loss value, such as
            ``optax.contrib.reduce_on_plateau``).
        rng_key: a JAX PRNG key; ignored when ``init_state`` is given (the
            state carries its own key).
        num_steps: the most steps to run.
        *args: positional arguments of the model and guide (the training data).
        val_args: positional arguments for the validation loss, in the same
            places and with the same trailing shapes as ``args``; turns on
            validation (a validation loss after every chunk).
        val_kwargs: keyword arguments that replace those in ``kwargs`` for the
            validation loss (for models that take their data by keyword);
            turns on validation too.
        val_loss: the validation loss, the signal that early stopping and the
            choice of ``params`` follow. ``"neg_elbo"`` (the default, as
            before): `svi.evaluate`, the negative ELBO on the validation data
            with the loss's own number of particles (one for
            ``Trace_ELBO()``), which counts the KL term of the whole guide
            once and is as noisy as a training step. ``"neg_lpd"``: the
            negative log predictive density of the validation data,
            ``-log_predictive_density`` with ``num_lpd_samples`` draws, which
            scores predictions only. Both are computed inside the compiled
            chunk. The lpd draws use one key for every evaluation of a call
            (common random numbers, so that evaluations differ by the change
            in the parameters rather than by new draws), folded out of the
            SVI state's key at the start of the call: the training steps and
            their results are the same whichever signal is chosen.
        also_record: more validation losses to compute after every chunk,
            beside ``val_loss``, in the same compiled chunk and on the same
            parameters (a ``"neg_lpd"`` with the draws a run with
            ``val_loss="neg_lpd"`` would use): recorded in
            ``FitResult.val_records`` and never acted on: early stopping
            and ``params`` follow ``val_loss`` alone. Without early stopping
            one run then gives the records that separate runs, one per
            signal, would give (up to rounding: the compiled chunks differ).
            Needs validation data.
        num_lpd_samples: draws per evaluation of the ``"neg_lpd"`` loss.
        patience: stop after this many evaluations that fail the
            ``stop_rule``; needs validation data. ``None`` never stops early.
        stop_rule: ``"no_improvement"`` (validation loss has not improved on
            its best by more than ``min_delta``) or ``"val_above_train"``
            (the talk's rule: per-observation validation loss, whichever
            ``val_loss``, above the per-observation training loss, a negative
            ELBO); see :class:`EarlyStopping`.
        min_delta: the least decrease that counts as an improvement.
        chunk_size: steps per compiled chunk; the progress bar, the
            validation loss and early stopping update once per chunk.
            Default :func:`default_chunk_size`.
        progress_bar: show a tqdm progress bar with the per-observation
            training loss (mean over the last chunk) and validation loss.
        init_state: an `SVIState` to resume from (``result.state`` of an
            earlier run), or that whole :class:`FitResult`: then its
            early-stopping record goes on as well (the best validation loss,
            the parameters that reached it, and the count of evaluations
            that failed the rule), so that a run split over two calls stops
            where, and returns what, one call would. The ``patience``,
            ``stop_rule`` and ``min_delta`` of this call apply.
        init_params: initial parameter values, passed to `svi.init`.
        stable_update: use `svi.stable_update`, which skips steps whose loss
            or parameters are not finite.
        **kwargs: keyword arguments of the model and guide.

    Returns:
        A :class:`FitResult`. Losses are normalised per observation only for
        display and early stopping: the number of observations is the leading
        dimension of the first array among ``args`` (then ``kwargs``), and the
        same for the validation data.

    A non-finite loss stops the run with a :class:`NonFiniteLossWarning`
    naming the step; the result then holds the last finite parameters (those
    the bad step started from, or one step earlier when those are not finite
    already) and the state that goes with them, and ``losses`` ends there.
    With ``stable_update=True`` non-finite steps are skipped instead (NumPyro's
    `stable_update`) and the run goes on.

    Used in chapter 5 (introduced), the primer, chapters 3, 6 and 9.

    Example:
        >>> import numpyro, numpyro.distributions as dist, optax
        >>> from numpyro.infer import SVI, Trace_ELBO
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     with numpyro.plate("data", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
        >>> y = jnp.full(50, 3.0)
        >>> result = fit(svi, jax.random.key(0), 2_000, y, progress_bar=False)
        >>> round(float(result.params["loc_auto_loc"]), 1)
        3.0
    """
    if not isinstance(svi, SVI):
        raise TypeError(f"svi must be a numpyro.infer.SVI, got {type(svi).__name__}")
    resumed = None
    if isinstance(init_state, FitResult):
        resumed, init_state = init_state, init_state.state
    if init_state is None:
        _check_key(rng_key)
    elif not isinstance(init_state, SVIState):
        raise TypeError(
            "init_state must be an SVIState (result.state) or a FitResult, "
            f"got {type(init_state).__name__}"
        )
    _check_count("num_steps", num_steps)
    validate = val_args is not None or val_kwargs is not None
    if patience is not None and not validate:
        raise ValueError("patience needs validation data: pass val_args or val_kwargs")
    if val_loss not in _VAL_LOSSES:
        raise ValueError(f"val_loss must be one of {_VAL_LOSSES}, got {val_loss!r}")
    if val_loss == "neg_lpd" and not validate:
        raise ValueError(
            "val_loss='neg_lpd' needs validation data: pass val_args or val_kwargs"
        )
    if isinstance(also_record, str) or not isinstance(also_record, Sequence):
        raise TypeError(
            "also_record must be a tuple or list of validation losses "
            f"{_VAL_LOSSES}, got {type(also_record).__name__}"
        )
    for kind in also_record:
        if kind not in _VAL_LOSSES:
            raise ValueError(f"also_record may hold only {_VAL_LOSSES}, got {kind!r}")
    if also_record and not validate:
        raise ValueError(
            "also_record needs validation data: pass val_args or val_kwargs"
        )
    # the losses the chunk computes: val_loss first, then the others, once each
    kinds = tuple(dict.fromkeys((val_loss, *also_record))) if validate else ()
    _check_count("num_lpd_samples", num_lpd_samples)
    stopper = EarlyStopping(patience, stop_rule, min_delta)
    params = None
    best_step = 0
    record = None if resumed is None else resumed.early_stopping
    if record is not None and validate:
        if resumed.val_loss_kind != val_loss:
            raise ValueError(
                f"init_state's early-stopping record follows val_loss="
                f"{resumed.val_loss_kind!r}; this call's val_loss is {val_loss!r}"
            )
        stopper = dataclasses.replace(stopper, best=record.best, counter=record.counter)
        if math.isfinite(record.best):
            params = resumed.params
            best_step = resumed.best_step - resumed.num_steps_run
    if chunk_size is None:
        chunk_size = default_chunk_size(num_steps)
    if not _is_int(chunk_size) or not 1 <= chunk_size <= num_steps:
        raise ValueError(
            f"chunk_size must be an int between 1 and num_steps={num_steps}, "
            f"got {chunk_size!r}"
        )

    val = None
    if validate:
        val_args = tuple(val_args) if val_args is not None else args
        _check_validation_data(args, kwargs, val_args, val_kwargs or {})
        val = (val_args, {**kwargs, **(val_kwargs or {})})
    data = _Arguments(args, kwargs, val)
    train_size = _num_obs(args, kwargs)
    val_size = _num_obs(*val) if val is not None else None

    if init_state is None:
        state = svi.init(rng_key, *args, init_params=init_params, **kwargs)
    else:
        state = init_state
    lpd_key = None
    if "neg_lpd" in kinds:
        lpd_key = jax.random.fold_in(state.rng_key, _LPD_STREAM)
    lpd_samples = num_lpd_samples if lpd_key is not None else None

    losses: list[np.ndarray] = []
    val_records: dict[str, list[float]] = {kind: [] for kind in kinds}
    val_steps: list[int] = []
    steps_run = 0
    stop_reason = "completed"
    # The states at the start of the last two chunks: a non-finite loss is
    # traced back from there (the parameters can turn non-finite one step
    # before the loss does, possibly in the previous chunk).
    checkpoints = [(0, state)]
    with tqdm(total=num_steps, disable=bar_disabled(progress_bar), leave=True) as bar:
        # the compiled chunk of each length, looked up once per call
        runners: dict[int, Callable] = {}
        while steps_run < num_steps:
            length = min(chunk_size, num_steps - steps_run)
            if length not in runners:  # at most two lengths: chunk_size, the rest
                runners[length] = _chunk_runner(  # kinds sorted: one program
                    svi, length, stable_update, data, tuple(sorted(kinds)), lpd_samples
                )
            run_chunk = runners[length]
            checkpoints = [*checkpoints[-1:], (steps_run, state)]
            state, chunk_losses, chunk_val, chunk_params = run_chunk(state, lpd_key)
            chunk_losses = np.asarray(jax.device_get(chunk_losses))
            finite = np.isfinite(chunk_losses)
            if not (stable_update or finite.all()):
                bad_step = steps_run + int(np.argmin(finite)) + 1
                steps_run, state = _last_finite(
                    svi, stable_update, data, checkpoints, bad_step - 1
                )
                losses = [np.concatenate([*losses, chunk_losses])[:steps_run]]
                stop_reason = "non_finite_loss"
                warnings.warn(
                    f"loss is {chunk_losses[bad_step - 1 - checkpoints[-1][0]]} at "
                    f"step {bad_step}; stopped, keeping the parameters after step "
                    f"{steps_run}, the last finite ones",
                    NonFiniteLossWarning,
                    stacklevel=2,
                )
                break
            losses.append(chunk_losses)
            steps_run += length
            train_norm = float(chunk_losses.mean()) / train_size
            postfix = f"train {train_norm:.4f}"
            stop = False
            if val is not None:
                for kind, value in chunk_val.items():
                    val_records[kind].append(float(value))
                val_steps.append(steps_run)
                val_norm = val_records[val_loss][-1] / val_size
                stopper = stopper.update(train_norm, val_norm)
                stop = stopper.should_stop
                if stopper.is_best:
                    params, best_step = chunk_params, steps_run
                postfix += f", val {val_norm:.4f}"
            bar.set_postfix_str(postfix, refresh=False)
            bar.update(length)
            if stop:
                stop_reason = "early_stopping"
                break

    if params is None:
        params, best_step = svi.get_params(state), steps_run
    return FitResult(
        params=params,
        state=state,
        losses=np.concatenate(losses) if losses else np.zeros(0, np.float32),
        val_losses=np.asarray(val_records[val_loss]) if val is not None else None,
        num_steps_run=steps_run,
        stopped_early=steps_run < num_steps,
        stop_reason=stop_reason,
        val_steps=np.asarray(val_steps, dtype=int) if val is not None else None,
        best_step=best_step,
        train_size=train_size,
        val_size=val_size,
        val_loss_kind=val_loss if val is not None else None,
        early_stopping=stopper if val is not None else None,
        val_records=(
            {kind: np.asarray(values) for kind, values in val_records.items()}
            if val is not None
            else None
        ),
    )


# --------------------------------------------------------------------------
# Compiled chunks, cached per SVI object (companion._compile.cached_jit: the
# arrays among the model's arguments are traced, everything else is baked in).


class _Arguments:
    """The model's arguments for training and, optionally, validation."""

    def __init__(
        self, args: tuple, kwargs: dict[str, Any], val: tuple[tuple, dict] | None
    ) -> None:
        self.args, self.kwargs = tuple(args), dict(kwargs)
        self.val = val

    @property
    def packed(self) -> tuple[tuple, dict[str, Any]]:
        """Training and validation arguments as one ``(args, kwargs)`` for
        `cached_jit`, taken apart again inside the compiled chunk."""
        val_args, val_kwargs = self.val if self.val is not None else (None, None)
        return (self.args, val_args), {"train": self.kwargs, "val": val_kwargs}


def _chunk_runner(
    svi: SVI,
    length: int,
    stable_update: bool,
    data: _Arguments,
    kinds: tuple[str, ...],
    lpd_samples: int | None,
) -> Callable:
    """The compiled chunk ``run_chunk(state, lpd_key)``: ``length`` steps,
    then (with validation data) the validation losses ``kinds`` as a dict:
    ``"neg_elbo"``, `svi.evaluate`, and ``"neg_lpd"``, the negative lpd with
    ``lpd_samples`` draws."""
    update = svi.stable_update if stable_update else svi.update
    validate = data.val is not None

    def run_chunk(state, lpd_key, call_args, call_kwargs):
        (args, vargs), kwargs, vkwargs = (
            call_args,
            call_kwargs["train"],
            call_kwargs["val"],
        )

        def body(state, _):
            return update(state, *args, **kwargs)

        state, losses = lax.scan(body, state, None, length=length)
        if not validate:
            return state, losses, None, None
        params = svi.get_params(state)
        val_losses = {}
        for kind in kinds:
            if kind == "neg_elbo":
                val_losses[kind] = svi.evaluate(state, *vargs, **vkwargs)
            else:
                val_losses[kind] = -_log_predictive_density(
                    lpd_key, svi.model, svi.guide, params, lpd_samples, vargs, vkwargs
                )
        return state, losses, val_losses, params

    settings = ("fit_chunk", length, stable_update, validate, kinds, lpd_samples)
    return _cached_jit(svi, settings, run_chunk, *data.packed)


def _last_finite(
    svi: SVI,
    stable_update: bool,
    data: _Arguments,
    checkpoints: list[tuple[int, SVIState]],
    num_steps: int,
) -> tuple[int, SVIState]:
    """The state after ``num_steps`` steps, or one step earlier when its
    parameters are not finite; replayed from the closest checkpoint."""
    for steps in (num_steps, num_steps - 1):
        start, state = max(
            (c for c in checkpoints if c[0] <= steps), key=lambda c: c[0]
        )
        state = _replay(svi, stable_update, data, state, steps - start)
        finite = jax.tree.map(
            lambda x: bool(jnp.all(jnp.isfinite(x))), svi.get_params(state)
        )
        if all(jax.tree.leaves(finite)) or steps == 0:
            return steps, state
    return steps, state


def _replay(
    svi: SVI, stable_update: bool, data: _Arguments, state: SVIState, num: int
) -> SVIState:
    """Re-run the first ``num`` steps of a chunk (the key lives in the state, so
    this reproduces them exactly): the state just before a non-finite loss."""
    if num == 0:
        return state
    update = svi.stable_update if stable_update else svi.update

    def replay(state, num, call_args, call_kwargs):
        args, kwargs = call_args, call_kwargs
        return lax.fori_loop(0, num, lambda _, s: update(s, *args, **kwargs)[0], state)

    run = _cached_jit(
        svi, ("fit_replay", stable_update), replay, data.args, data.kwargs
    )
    return run(state, num)


# --------------------------------------------------------------------------
# Input checks, before any tracing.


def _num_obs(args: tuple, kwargs: dict[str, Any]) -> int:
    for value in (*args, *kwargs.values()):
        if isinstance(value, jax.Array | np.ndarray) and value.ndim >= 1:
            return max(int(value.shape[0]), 1)
    return 1


def _check_validation_data(
    args: tuple, kwargs: dict[str, Any], val_args: tuple, val_kwargs: dict[str, Any]
) -> None:
    if len(val_args) != len(args):
        raise ValueError(
            f"val_args must hold as many arguments as the training args "
            f"({len(args)}), got {len(val_args)}"
        )
    unknown = set(val_kwargs) - set(kwargs)
    if unknown:
        raise ValueError(
            f"val_kwargs names arguments the training call lacks: {sorted(unknown)}"
        )
    pairs = [
        (f"val_args[{i}]", a, v)
        for i, (a, v) in enumerate(zip(args, val_args, strict=True))
    ]
    pairs += [(f"val_kwargs[{k!r}]", kwargs[k], v) for k, v in val_kwargs.items()]
    for name, train_value, val_value in pairs:
        train_is_array = isinstance(train_value, jax.Array | np.ndarray)
        if train_is_array != isinstance(val_value, jax.Array | np.ndarray):
            raise ValueError(
                f"{name} must be an array exactly where the training argument is one, "
                f"got {type(val_value).__name__} for {type(train_value).__name__}"
            )
        if not train_is_array:
            continue
        if (
            val_value.ndim != train_value.ndim
            or val_value.shape[1:] != train_value.shape[1:]
        ):
            raise ValueError(
                f"{name} must have shape (n, {', '.join(map(str, train_value.shape[1:]))}) "
                f"to match the training data {train_value.shape}, got {val_value.shape}"
            )
        if val_value.ndim >= 1 and val_value.shape[0] < 1:
            raise ValueError(f"{name} must not be empty, got shape {val_value.shape}")
