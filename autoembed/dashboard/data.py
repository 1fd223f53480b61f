"""The dashboard's data half: the study read without writing to it, and plain dataclasses of its trials.

Each `_get_<name>_info(trials, ...)` is a pure function of the trials (as `optuna.visualization`'s are),
so the tests check what a figure will show without drawing it; `figures.py` draws them.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import random
import statistics
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.engine
import sqlalchemy.exc
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autoembed.errors import AutoembedError
from autoembed.study import mask_url

# The architecture choices that get a slice each, when the study searched over them.
ARCHITECTURE_SLICES = (
    ("output_dim", "output dimension"),
    ("attention_heads", "attention heads"),
    ("adapter_depth", "adapter depth"),
    ("loss", "loss type"),
)
TOP_TRIALS = 15
# fANOVA with Optuna's defaults (64 trees of depth 64) takes ~7 s on 450 trials; 32 trees of depth 8
# rank the parameters the same way in ~1 s. Above this many completed trials, a fixed-seed sample is used.
FANOVA_TREES = 32
FANOVA_DEPTH = 8
FANOVA_MAX_TRIALS = 1000
MIN_TRIALS_FOR_IMPORTANCE = 5

_STATE_LABELS = {
    TrialState.COMPLETE: "completed",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
_MISSING = "—"


# --------------------------------------------------------------------------------------------------
# Reading the study


def _readonly_url(storage_url: str, study_name: str) -> tuple[str, dict[str, Any]]:
    """A URL and engine arguments under which the database refuses every write."""
    try:
        url = sqlalchemy.engine.make_url(storage_url)
    except Exception as exc:
        raise AutoembedError(
            f"the storage URL {mask_url(storage_url)!r} of study {study_name!r} is not a database URL "
            f"(expected e.g. sqlite:///studies/{study_name}.db or postgresql+psycopg://user@host/db): {exc}",
            key="storage",
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or "mode=memory" in database:
            raise AutoembedError(
                f"study {study_name!r}: {mask_url(storage_url)} is an in-memory SQLite database, which "
                "holds no study another process could read; give the URL of the study's file",
                key="storage",
            )
        if database.startswith("file:"):
            path = Path(urllib.parse.unquote(database[5:].split("?", 1)[0]))
            target = database
        else:
            path = Path(database)
            target = "file:" + urllib.parse.quote(str(path.resolve()))
        if not path.is_file():
            raise AutoembedError(
                f"no study {study_name!r}: the database file {str(path)!r} of {mask_url(storage_url)} does not exist",
                key="study",
            )
        # mode=ro: SQLite itself refuses writes, and optuna's schema set-up cannot create anything.
        url = url.set(database=target, query={**url.query, "mode": "ro", "uri": "true"})
        # While a writer commits, wait for its lock (as study.py's writers wait for ours) rather than fail.
        return url.render_as_string(hide_password=False), {"connect_args": {"timeout": 30}}
    if backend == "postgresql":
        # The session refuses writes; PostgreSQL readers never block writers anyway (MVCC).
        options = "-c default_transaction_read_only=on"
        return storage_url, {"connect_args": {"options": options}}
    if backend in ("mysql", "mariadb"):
        return storage_url, {"connect_args": {"init_command": "SET SESSION TRANSACTION READ ONLY"}}
    return storage_url, {}


def load_study_readonly(storage_url: str, study_name: str) -> optuna.Study:
    """Load a study without writing to its storage or blocking the processes that write to it.

    SQLite is opened with `mode=ro`, PostgreSQL and MySQL sessions are read-only; Optuna's table
    creation and schema check are skipped (they would write, or refuse an older schema).

    Raises:
        AutoembedError: the database file is missing, the storage is not an Optuna database, or it
            holds no study of that name (the message lists the ones it holds).
    """
    url, engine_kwargs = _readonly_url(storage_url, study_name)
    masked = mask_url(storage_url)
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, skip_compatibility_check=True, skip_table_creation=True
        )
        try:
            storage.get_study_id_from_name(study_name)
        except KeyError:
            names = sorted(s.study_name for s in storage.get_all_studies())
            held = ", ".join(repr(n) for n in names) if names else "no studies"
            raise AutoembedError(f"no study {study_name!r} in {masked}; it holds {held}", key="study") from None
        return optuna.load_study(study_name=study_name, storage=storage)
    except ImportError as exc:
        raise AutoembedError(
            f"study {study_name!r} cannot be read from {masked}: its database driver is missing ({exc}); "
            "for PostgreSQL install psycopg: pip install 'psycopg[binary]'",
            key="storage",
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        cause = exc.__cause__ or exc
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        password = sqlalchemy.engine.make_url(storage_url).password
        if password:
            reason = reason.replace(str(password), "***")
        not_optuna = ("no such table", "does not exist", "readonly database", "read-only transaction")
        hint = " (is it an Optuna study database?)" if any(s in reason.lower() for s in not_optuna) else ""
        raise AutoembedError(
            f"study {study_name!r} cannot be read from {masked}: {reason}{hint}", key="storage"
        ) from None


# --------------------------------------------------------------------------------------------------
# Data: plain functions of the trials


def _finite_value(trial: FrozenTrial) -> float | None:
    if trial.state != TrialState.COMPLETE or trial.values is None:
        return None
    value = trial.values[0]
    return value if value is not None and math.isfinite(value) else None


def _completed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    done = [t for t in trials if _finite_value(t) is not None]
    return sorted(done, key=lambda t: t.number)


def _better(direction: StudyDirection) -> Callable[[float, float], bool]:
    if direction == StudyDirection.MINIMIZE:
        return lambda a, b: a < b
    return lambda a, b: a > b


@dataclasses.dataclass(frozen=True)
class _HistoryInfo:
    numbers: list[int]
    values: list[float]
    best_so_far: list[float]
    best_number: int | None


def _get_history_info(trials: Sequence[FrozenTrial], direction: StudyDirection) -> _HistoryInfo:
    """Completed trials in order, their objective value and the best value seen up to each."""
    better = _better(direction)
    numbers, values, best_so_far = [], [], []
    best, best_number = None, None
    for trial in _completed(trials):
        value = _finite_value(trial)
        if best is None or better(value, best):
            best, best_number = value, trial.number
        numbers.append(trial.number)
        values.append(value)
        best_so_far.append(best)
    return _HistoryInfo(numbers, values, best_so_far, best_number)


@dataclasses.dataclass(frozen=True)
class _Curve:
    number: int
    state: str  # "completed", "pruned", "running", ...
    steps: list[int]
    values: list[float]


@dataclasses.dataclass(frozen=True)
class _IntermediateInfo:
    curves: list[_Curve]
    unit: str = "steps"  # what the curves are keyed by: the study's fidelity, "pairs" or "steps"

    @property
    def unit_label(self) -> str:
        return "training pairs seen" if self.unit == "pairs" else "evaluation step"


def _get_intermediate_info(trials: Sequence[FrozenTrial], unit: str = "steps") -> _IntermediateInfo:
    """The objective value each trial reported per evaluation; failed trials are left out.

    ``unit`` is the study's ``fidelity`` attribute: curves are keyed by training pairs seen (studies made since
    compute-fair pruning) or by optimizer step (older ones)."""
    curves = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == TrialState.FAIL or not trial.intermediate_values:
            continue
        points = sorted((s, v) for s, v in trial.intermediate_values.items() if v is not None and math.isfinite(v))
        if points:
            steps, values = zip(*points, strict=True)
            curves.append(_Curve(trial.number, _STATE_LABELS[trial.state], list(steps), list(values)))
    return _IntermediateInfo(curves, unit)


def _trial_seconds(trial: FrozenTrial) -> float | None:
    """Compute a trial spent: its `train_seconds`, else the wall-clock time of a finished trial.

    A running trial without `train_seconds` counts nothing: its process may have died long ago.
    """
    seconds = trial.user_attrs.get("train_seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds):
        return float(seconds)
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return max(0.0, (trial.datetime_complete - trial.datetime_start).total_seconds())


@dataclasses.dataclass(frozen=True)
class _ComputeInfo:
    seconds: dict[str, float]  # by state label, over trials whose compute is known
    counts: dict[str, int]  # trials by state label
    saved_seconds: float | None  # what the pruned trials would have cost more had they run to the end
    full_steps: int | None  # the last evaluation step of a typical completed trial

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def _get_compute_info(trials: Sequence[FrozenTrial]) -> _ComputeInfo:
    """Compute per trial state and an estimate of what pruning saved.

    A pruned trial that spent `t` seconds to reach evaluation step `s` would have spent about
    `t * S / s` to reach `S`, the median last step of the completed trials; what pruning saved is the
    sum of the differences. Without a completed trial there is nothing to extrapolate to.
    """
    seconds: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for trial in trials:
        label = _STATE_LABELS[trial.state]
        counts[label] += 1
        spent = _trial_seconds(trial)
        if spent is not None:
            seconds[label] = seconds.get(label, 0.0) + spent
    last_steps = [
        max(t.intermediate_values) for t in trials if t.state == TrialState.COMPLETE and t.intermediate_values
    ]
    full_steps = int(statistics.median(last_steps)) if last_steps else None
    complete_seconds = [s for t in trials if t.state == TrialState.COMPLETE and (s := _trial_seconds(t)) is not None]
    saved = None
    if full_steps and complete_seconds:
        saved = 0.0
        for trial in trials:
            spent = _trial_seconds(trial) if trial.state == TrialState.PRUNED else None
            if spent is None:
                continue
            reached = max(trial.intermediate_values, default=0)
            full = spent * full_steps / reached if reached > 0 else statistics.median(complete_seconds)
            saved += max(0.0, full - spent)
    return _ComputeInfo(seconds, dict(counts), saved, full_steps)


def _embedding_dim(trial: FrozenTrial) -> int | None:
    """The effective output dimension: the trial's `embedding_dim`, else its config's or param's."""
    candidates = [
        trial.user_attrs.get("embedding_dim"),
        ((trial.user_attrs.get("config") or {}).get("architecture") or {}).get("output_dim"),
        trial.params.get("output_dim"),
    ]
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclasses.dataclass(frozen=True)
class _ParetoInfo:
    numbers: list[int]
    dims: list[int]
    values: list[float]
    front: list[int]  # trial numbers on the front, by increasing dimension
    # (dimension, objective after PCA, trial number, variance kept) of trials whose config exported with PCA
    pca: list[tuple[int, float, int, float]] = dataclasses.field(default_factory=list)


def _pareto_front(points: Sequence[tuple[int, float, int]], direction: StudyDirection) -> list[int]:
    """Numbers of the (dim, value, number) points no other point beats: smaller or equal dimension
    and better or equal value, strictly in one. Equal points are both on the front."""
    sign = -1.0 if direction == StudyDirection.MINIMIZE else 1.0
    by_dim: dict[int, list[tuple[float, int]]] = {}
    for dim, value, number in points:
        by_dim.setdefault(dim, []).append((sign * value, number))
    front, best_smaller = [], -math.inf
    for dim in sorted(by_dim):
        top = max(v for v, _ in by_dim[dim])
        if top > best_smaller:
            front += sorted(n for v, n in by_dim[dim] if v == top)
            best_smaller = top
    return front


def _pca_point(trial: FrozenTrial, objective: str) -> tuple[int, float, int, float] | None:
    """The trial's model after its export's PCA (``export.pca_variance``): (dimension, objective, number, variance)."""
    pca = (trial.user_attrs.get("export") or {}).get("pca") or {}
    value = pca.get(f"{objective}_after")
    if not isinstance(pca.get("dim"), int) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return pca["dim"], float(value), trial.number, float(pca.get("variance") or 0.0)


def _get_pareto_info(trials: Sequence[FrozenTrial], direction: StudyDirection, objective: str = "objective") -> _ParetoInfo:
    """Objective against the embedding dimension of the completed trials, with the Pareto front (trained models),
    and the PCA points of trials that measured their export."""
    completed = _completed(trials)
    points = [(d, _finite_value(t), t.number) for t in completed if (d := _embedding_dim(t)) is not None]
    return _ParetoInfo(
        numbers=[n for _, _, n in points],
        dims=[d for d, _, _ in points],
        values=[v for _, v, _ in points],
        front=_pareto_front(points, direction),
        pca=[p for t in completed if (p := _pca_point(t, objective)) is not None],
    )


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclasses.dataclass(frozen=True)
class _Slice:
    param: str
    title: str
    categories: list[str]  # in display order
    x: list[str]  # each trial's category
    values: list[float]
    numbers: list[int]


@dataclasses.dataclass(frozen=True)
class _SliceInfo:
    slices: list[_Slice]


def _get_slice_info(trials: Sequence[FrozenTrial]) -> _SliceInfo:
    """Objective per architecture choice, for the choices the study searched over."""
    completed = _completed(trials)
    slices = []
    for param, title in ARCHITECTURE_SLICES:
        having = [t for t in completed if param in t.params]
        if not having:
            continue
        distribution = having[-1].distributions[param]
        if isinstance(distribution, CategoricalDistribution):
            order = list(distribution.choices)
            order += [v for v in dict.fromkeys(t.params[param] for t in having) if v not in order]
        else:
            order = sorted(set(t.params[param] for t in having))
        names = {value: _label(value) for value in order}
        if param == "output_dim" and None in names:
            hidden = {_embedding_dim(t) for t in having if t.params[param] is None} - {None}
            names[None] = f"None (hidden size {hidden.pop()})" if len(hidden) == 1 else "None (hidden size)"
        present = {t.params[param] for t in having}
        slices.append(
            _Slice(
                param=param,
                title=title,
                categories=[names[v] for v in order if v in present],
                x=[names[t.params[param]] for t in having],
                values=[_finite_value(t) for t in having],
                numbers=[t.number for t in having],
            )
        )
    return _SliceInfo(slices)


@dataclasses.dataclass(frozen=True)
class _Axis:
    label: str
    values: list[float]
    range: tuple[float, float]
    tickvals: list[float] | None = None
    ticktext: list[str] | None = None


@dataclasses.dataclass(frozen=True)
class _ParallelInfo:
    numbers: list[int]
    objective: _Axis
    axes: list[_Axis]
    left_out: list[str]  # parameters beyond `max_axes`


def _ticks(low: float, high: float, log: bool) -> tuple[list[float], list[str]]:
    if log:
        exps = list(range(math.ceil(low), math.floor(high) + 1)) or [low, high]
        return [float(e) for e in exps], [f"{10**e:.0e}".replace("e-0", "e-").replace("e+00", "") for e in exps]
    if high == low:
        return [low], [_label(low)]
    vals = [low + (high - low) * i / 4 for i in range(5)]
    return vals, [f"{v:.3g}" for v in vals]


def _param_axis(name: str, trials: Sequence[FrozenTrial]) -> _Axis:
    """One parallel-coordinates axis; trials without the parameter sit on a `—` tick below the rest."""
    having = [t for t in trials if name in t.params]
    distribution = having[-1].distributions[name]
    missing = len(having) < len(trials)
    if isinstance(distribution, CategoricalDistribution):
        choices = list(distribution.choices)
        choices += [v for v in dict.fromkeys(t.params[name] for t in having) if v not in choices]
        index = {_label(c): i for i, c in enumerate(choices)}
        values = [float(index[_label(t.params[name])]) if name in t.params else -1.0 for t in trials]
        tickvals = [float(i) for i in range(len(choices))]
        ticktext = [_label(c) for c in choices]
        low, high = 0.0, float(len(choices) - 1)
        if missing:
            tickvals, ticktext, low = [-1.0, *tickvals], [_MISSING, *ticktext], -1.0
        return _Axis(name, values, (low, high), tickvals, ticktext)
    log = isinstance(distribution, (FloatDistribution, IntDistribution)) and distribution.log
    raw = [float(t.params[name]) for t in having]
    shown = [math.log10(v) for v in raw] if log else raw
    low, high = min(shown), max(shown)
    tickvals, ticktext = _ticks(low, high, log)
    label = f"{name} (log)" if log else name
    if not missing:
        return _Axis(label, shown, (low, high), tickvals, ticktext)
    sentinel = low - 0.15 * ((high - low) or 1.0)
    it = iter(shown)
    values = [next(it) if name in t.params else sentinel for t in trials]
    return _Axis(label, values, (sentinel, high), [sentinel, *tickvals], [_MISSING, *ticktext])


def _get_parallel_info(
    trials: Sequence[FrozenTrial], objective: str = "objective", *, first: Sequence[str] = (), max_axes: int = 12
) -> _ParallelInfo:
    """The parameters of the completed trials: those in `first` (e.g. by importance), then the others
    in the order the trials suggested them; beyond `max_axes` they are left out (unreadable)."""
    completed = _completed(trials)
    suggested = list(dict.fromkeys(name for t in completed for name in t.params))
    names = [n for n in first if n in suggested] + [n for n in suggested if n not in first]
    values = [_finite_value(t) for t in completed]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    return _ParallelInfo(
        numbers=[t.number for t in completed],
        objective=_Axis(objective, values, (low, high)),
        axes=[_param_axis(name, completed) for name in names[:max_axes]],
        left_out=names[max_axes:],
    )


@dataclasses.dataclass(frozen=True)
class _ImportanceInfo:
    importances: dict[str, float]  # most important first
    left_out: list[str]  # parameters not every completed trial has
    message: str | None  # why there are no importances
    seconds: float = 0.0


def _get_importance_info(trials: Sequence[FrozenTrial], direction: StudyDirection, *, seed: int = 0) -> _ImportanceInfo:
    """fANOVA importances over the parameters every completed trial has (fixed seed, small forest)."""
    completed = _completed(trials)
    all_names = list(dict.fromkeys(name for t in completed for name in t.params))
    if len(completed) < MIN_TRIALS_FOR_IMPORTANCE:
        message = (
            f"Hyperparameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials; "
            f"the study has {len(completed)}."
        )
        return _ImportanceInfo({}, [], message)
    shared = [n for n in all_names if all(n in t.params for t in completed)]
    left_out = [n for n in all_names if n not in shared]
    if len(completed) > FANOVA_MAX_TRIALS:
        completed = random.Random(seed).sample(completed, FANOVA_MAX_TRIALS)
    start = time.perf_counter()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        scratch = optuna.create_study(direction=direction)
        scratch.add_trials(completed)
        evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=FANOVA_TREES, max_depth=FANOVA_DEPTH, seed=seed)
        result = optuna.importance.get_param_importances(scratch, evaluator=evaluator, params=shared or None)
    except Exception as exc:  # fANOVA refuses degenerate inputs (one distinct value, no shared parameter...)
        message = f"Hyperparameter importances could not be computed: {type(exc).__name__}: {exc}"
        return _ImportanceInfo({}, left_out, message, time.perf_counter() - start)
    finally:
        optuna.logging.set_verbosity(verbosity)
    importances = {name: float(value) for name, value in result.items()}
    if not importances:
        message = "Hyperparameter importances: no parameter varies across the completed trials."
        return _ImportanceInfo({}, left_out, message, time.perf_counter() - start)
    return _ImportanceInfo(importances, left_out, None, time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class _TopTrial:
    rank: int
    number: int
    value: float
    embedding_dim: int | None
    value_step: int | None  # the evaluation step whose value is the trial's value
    seconds: float | None
    params: dict[str, Any]
    config: dict[str, Any] | None


def _value_step(trial: FrozenTrial) -> int | None:
    """The step the trial's value comes from; studies written before `value_step` recorded it as `best_step`."""
    attrs = trial.user_attrs
    return attrs["value_step"] if "value_step" in attrs else attrs.get("best_step")


def _get_top_trials_info(
    trials: Sequence[FrozenTrial], direction: StudyDirection, k: int = TOP_TRIALS
) -> list[_TopTrial]:
    """The `k` best completed trials, best first; ties go to the earlier trial."""
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(_completed(trials), key=lambda t: (sign * _finite_value(t), t.number))[:k]
    return [
        _TopTrial(
            rank=i + 1,
            number=t.number,
            value=_finite_value(t),
            embedding_dim=_embedding_dim(t),
            value_step=_value_step(t),
            seconds=_trial_seconds(t),
            params=dict(t.params),
            config=t.user_attrs.get("config"),
        )
        for i, t in enumerate(ranked)
    ]


@dataclasses.dataclass(frozen=True)
class _SummaryInfo:
    study_name: str
    storage: str  # masked
    direction: str
    objective: str
    counts: dict[str, int]
    best_number: int | None
    best_value: float | None
    provenance: dict[str, Any] | None
    space_summary: Any
    failures: list[tuple[str, int, list[int]]]  # (reason, count, some trial numbers), commonest first
    first_start: datetime.datetime | None
    last_complete: datetime.datetime | None
    fidelity: str = "steps"  # what intermediate values are keyed by: "pairs" (training pairs seen) or "steps"

    @property
    def n_trials(self) -> int:
        return sum(self.counts.values())

    @property
    def n_completed(self) -> int:
        return self.counts.get("completed", 0)


def _get_summary_info(
    study_name: str,
    storage_url: str,
    user_attrs: dict[str, Any],
    trials: Sequence[FrozenTrial],
    direction: StudyDirection,
) -> _SummaryInfo:
    counts = Counter(_STATE_LABELS[t.state] for t in trials)
    history = _get_history_info(trials, direction)
    reasons: dict[str, list[int]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.FAIL:
            reason = str(t.user_attrs.get("fail_reason") or "no fail_reason recorded").strip()
            reason = (reason.splitlines() or [""])[0][:300]
            reasons.setdefault(reason, []).append(t.number)
    failures = sorted(((r, len(ns), ns[:10]) for r, ns in reasons.items()), key=lambda f: (-f[1], f[0]))
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    provenance = user_attrs.get("provenance")
    return _SummaryInfo(
        study_name=study_name,
        storage=mask_url(storage_url),
        direction="maximize" if direction == StudyDirection.MAXIMIZE else "minimize",
        objective=str(user_attrs.get("objective") or "objective"),
        counts=dict(counts),
        best_number=history.best_number,
        best_value=history.best_so_far[-1] if history.best_so_far else None,
        provenance=provenance if isinstance(provenance, dict) else None,
        space_summary=user_attrs.get("space_summary"),
        failures=failures,
        first_start=min(starts) if starts else None,
        last_complete=max(ends) if ends else None,
        fidelity=str(user_attrs.get("fidelity") or "steps"),
    )


# --------------------------------------------------------------------------------------------------
# Formatting shared by the figures and the page


def _format_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"

