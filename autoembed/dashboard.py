"""One self-contained HTML page that shows an autoembed study, read without writing to it.

The layout follows `optuna.visualization`: each figure has a pure data half, `_get_<name>_info(trials)`,
returning a plain dataclass that the tests check without a browser, and a drawing half,
`_get_<name>_plot(info)`, returning a plotly figure. `write_dashboard` reads the study once
(`get_trials(deepcopy=False)`), builds every figure and writes one HTML file with plotly.js inlined
once, so the page works offline.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
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
import plotly.graph_objects as go
import sqlalchemy.engine
import sqlalchemy.exc
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from autoembed.errors import AutoembedError
from autoembed.fileio import atomic_write_text
from autoembed.study import mask_url

__all__ = ["load_study_readonly", "mask_url", "write_dashboard"]

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
_COLORS = {
    "completed": "#1f77b4",
    "pruned": "#d62728",
    "failed": "#7f7f7f",
    "running": "#2ca02c",
    "waiting": "#bcbd22",
    "saved": "#ff9896",
    "best": "#ff7f0e",
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


def _get_intermediate_info(trials: Sequence[FrozenTrial]) -> _IntermediateInfo:
    """The recall each trial reported per evaluation step; failed trials are left out."""
    curves = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == TrialState.FAIL or not trial.intermediate_values:
            continue
        points = sorted((s, v) for s, v in trial.intermediate_values.items() if v is not None and math.isfinite(v))
        if points:
            steps, values = zip(*points, strict=True)
            curves.append(_Curve(trial.number, _STATE_LABELS[trial.state], list(steps), list(values)))
    return _IntermediateInfo(curves)


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


def _get_pareto_info(trials: Sequence[FrozenTrial], direction: StudyDirection) -> _ParetoInfo:
    """Objective against the embedding dimension of the completed trials, with the Pareto front."""
    points = [(d, _finite_value(t), t.number) for t in _completed(trials) if (d := _embedding_dim(t)) is not None]
    return _ParetoInfo(
        numbers=[n for _, _, n in points],
        dims=[d for d, _, _ in points],
        values=[v for _, v, _ in points],
        front=_pareto_front(points, direction),
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
    best_step: int | None
    seconds: float | None
    params: dict[str, Any]
    config: dict[str, Any] | None


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
            best_step=t.user_attrs.get("best_step"),
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
    )


# --------------------------------------------------------------------------------------------------
# Drawing: plotly figures from the data


def _layout(fig: go.Figure, *, height: int, margin: dict[str, int] | None = None, **kwargs: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin=margin or {"l": 60, "r": 30, "t": 30, "b": 50},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        **kwargs,
    )
    return fig


def _get_history_plot(info: _HistoryInfo, objective: str) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=info.numbers,
            y=info.values,
            mode="markers",
            name=f"{objective} of a completed trial",
            marker={"color": _COLORS["completed"], "size": 6, "opacity": 0.6},
            hovertemplate="trial %{x}<br>%{y:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=info.numbers,
            y=info.best_so_far,
            mode="lines",
            line={"shape": "hv", "color": _COLORS["best"], "width": 2},
            name="best so far",
            hovertemplate="after trial %{x}: best %{y:.4f}<extra></extra>",
        )
    )
    return _layout(fig, height=420, xaxis_title="trial", yaxis_title=objective)


def _joined(curves: Sequence[_Curve]) -> tuple[list, list, list]:
    """All curves of one state as one trace, separated by gaps: fast to draw with 1,000 trials."""
    xs: list = []
    ys: list = []
    numbers: list = []
    for curve in curves:
        xs += [*curve.steps, None]
        ys += [*curve.values, None]
        numbers += [curve.number] * len(curve.steps) + [None]
    return xs, ys, numbers


def _get_intermediate_plot(info: _IntermediateInfo, objective: str) -> go.Figure:
    fig = go.Figure()
    # Pruned curves go over the completed ones: they end early, where the completed ones are dense.
    for state, width, opacity in (("completed", 1.5, 0.5), ("pruned", 1, 0.45), ("running", 2, 0.9)):
        curves = [c for c in info.curves if c.state == state]
        if not curves:
            continue
        xs, ys, numbers = _joined(curves)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                customdata=numbers,
                mode="lines+markers" if state == "running" else "lines",
                line={"color": _COLORS[state], "width": width},
                marker={"size": 4},
                opacity=opacity,
                name=f"{state} ({len(curves)})",
                connectgaps=False,
                hovertemplate=f"{state} trial %{{customdata}}<br>step %{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )
    return _layout(fig, height=420, xaxis_title="evaluation step", yaxis_title=objective)


def _format_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def _get_compute_plot(info: _ComputeInfo) -> go.Figure:
    labels, hours, colors, texts = [], [], [], []
    for state in ("completed", "pruned", "failed", "running"):
        if state in info.seconds:
            labels.append(f"{state} ({info.counts.get(state, 0)} trials)")
            hours.append(info.seconds[state] / 3600)
            colors.append(_COLORS[state])
            texts.append(_format_seconds(info.seconds[state]))
    if info.saved_seconds is not None and info.counts.get("pruned"):
        labels.append("saved by pruning (estimate)")
        hours.append(info.saved_seconds / 3600)
        colors.append(_COLORS["saved"])
        texts.append(_format_seconds(info.saved_seconds))
    fig = go.Figure(
        go.Bar(
            x=hours,
            y=labels,
            orientation="h",
            marker={"color": colors},
            text=texts,
            textposition="auto",
            hovertemplate="%{y}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(
        fig, height=120 + 45 * len(labels), xaxis_title="compute (hours)", margin={"l": 220, "r": 30, "t": 20, "b": 50}
    )


def _get_pareto_plot(info: _ParetoInfo, objective: str) -> go.Figure:
    by_number = {n: (d, v) for n, d, v in zip(info.numbers, info.dims, info.values, strict=True)}
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=info.dims,
            y=info.values,
            customdata=info.numbers,
            mode="markers",
            name="completed trial",
            marker={"color": _COLORS["completed"], "size": 7, "opacity": 0.45},
            hovertemplate="trial %{customdata}<br>dimension %{x}<br>%{y:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[by_number[n][0] for n in info.front],
            y=[by_number[n][1] for n in info.front],
            customdata=info.front,
            mode="lines+markers",
            line={"shape": "hv", "color": _COLORS["best"], "width": 2},
            marker={"size": 10, "symbol": "diamond"},
            name="Pareto front (no smaller dimension does as well)",
            hovertemplate="trial %{customdata}<br>dimension %{x}<br>%{y:.4f}<extra></extra>",
        )
    )
    dims = sorted(set(info.dims))
    fig.update_xaxes(type="log", tickvals=dims, ticktext=[str(d) for d in dims])
    return _layout(fig, height=420, xaxis_title="embedding dimension (log scale)", yaxis_title=objective)


def _get_slice_plot(info: _SliceInfo, objective: str) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=len(info.slices),
        shared_yaxes=True,
        subplot_titles=[s.title for s in info.slices],
        horizontal_spacing=0.03,
    )
    for col, piece in enumerate(info.slices, start=1):
        fig.add_trace(
            go.Box(
                x=piece.x,
                y=piece.values,
                customdata=piece.numbers,
                name=piece.title,
                boxpoints="all",
                jitter=0.5,
                pointpos=0,
                marker={"size": 4, "opacity": 0.5, "color": _COLORS["completed"]},
                line={"color": "#444", "width": 1},
                fillcolor="rgba(0,0,0,0)",
                showlegend=False,
                hovertemplate="trial %{customdata}<br>%{x}: %{y:.4f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=piece.categories, row=1, col=col)
    fig.update_yaxes(title_text=objective, row=1, col=1)
    return _layout(fig, height=420, margin={"l": 60, "r": 30, "t": 40, "b": 60})


def _get_parallel_plot(info: _ParallelInfo) -> go.Figure:
    def dimension(axis: _Axis) -> dict[str, Any]:
        d: dict[str, Any] = {"label": axis.label, "values": axis.values, "range": list(axis.range)}
        if axis.tickvals is not None:
            d.update(tickvals=axis.tickvals, ticktext=axis.ticktext)
        return d

    fig = go.Figure(
        go.Parcoords(
            line={
                "color": info.objective.values,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": info.objective.label}},
            },
            dimensions=[dimension(info.objective), *(dimension(a) for a in info.axes)],
            labelangle=-30,
            labelside="top",
        )
    )
    return _layout(fig, height=520, margin={"l": 70, "r": 70, "t": 110, "b": 40})


def _get_importance_plot(info: _ImportanceInfo) -> go.Figure:
    names = list(info.importances)[::-1]  # most important on top
    fig = go.Figure(
        go.Bar(
            x=[info.importances[n] for n in names],
            y=names,
            orientation="h",
            marker={"color": _COLORS["completed"]},
            text=[f"{info.importances[n]:.2f}" for n in names],
            textposition="auto",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    return _layout(
        fig,
        height=120 + 28 * len(names),
        xaxis_title="fANOVA importance (sums to 1)",
        margin={"l": 160, "r": 30, "t": 20, "b": 50},
    )


# --------------------------------------------------------------------------------------------------
# The page

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header { background: #1f2937; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 6px 0; font-size: 22px; }
header .meta { font-size: 13px; color: #cbd5e1; }
nav { padding: 8px 32px; background: #e5e7eb; font-size: 13px; position: sticky; top: 0; z-index: 10; }
nav a { margin-right: 14px; color: #1f2937; }
main { padding: 16px 32px 48px 32px; max-width: 1500px; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 6px; margin: 16px 0; padding: 12px 20px; }
section h2 { font-size: 17px; margin: 4px 0 4px 0; }
p.note { font-size: 13px; color: #555; margin: 2px 0 8px 0; }
p.empty, div.notice { background: #fff7e6; border: 1px solid #f5c26b; padding: 10px 14px; border-radius: 4px; }
div.notice { font-size: 15px; margin: 16px 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
pre { background: #f8fafc; padding: 8px; overflow-x: auto; max-height: 420px; }
.stats { display: flex; flex-wrap: wrap; gap: 24px; }
.stat b { display: block; font-size: 20px; }
.stat span { font-size: 12px; color: #555; }
.params { max-width: 620px; }
#ae-errors { display: none; }
"""

# Caught errors go into a hidden element and the check's result into #ae-check, which a headless
# browser's --dump-dom can read: "ok N" when each figure's traces hold data, else "fail: ...".
_ERROR_CATCHER = """
(function () {
  var errors = [];
  function record(message) {
    errors.push(String(message));
    var box = document.getElementById("ae-errors");
    if (box) { box.textContent = errors.join("\\n"); }
  }
  window.__aeErrors = errors;
  window.addEventListener("error", function (e) { record("error: " + (e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) { record("unhandled rejection: " + e.reason); });
  var original = console.error;
  console.error = function () {
    record("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
"""

_CHECKER = """
(function () {
  function points(trace) {
    var n = 0;
    ["x", "y", "values"].forEach(function (k) {
      if (trace[k] && trace[k].length > n) { n = trace[k].length; }
    });
    (trace.dimensions || []).forEach(function (d) {
      if (d.values && d.values.length > n) { n = d.values.length; }
    });
    return n;
  }
  function check() {
    var problems = [];
    var figures = document.querySelectorAll(".ae-figure");
    figures.forEach(function (box) {
      var plot = box.querySelector(".js-plotly-plot");
      if (!plot || !plot.data) { problems.push(box.id + " not drawn"); return; }
      var total = 0;
      plot.data.forEach(function (t) { total += points(t); });
      if (total === 0) { problems.push(box.id + " has no data"); }
      box.setAttribute("data-points", String(total));
    });
    if (typeof Plotly === "undefined") { problems.push("plotly.js missing"); }
    problems = problems.concat(window.__aeErrors || []);
    var out = document.getElementById("ae-check");
    out.setAttribute("data-figures", String(figures.length));
    out.textContent = problems.length ? "fail: " + problems.join("; ") : "ok " + figures.length;
  }
  window.addEventListener("load", function () { setTimeout(check, 500); });
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _figure(fig: go.Figure, fig_id: str) -> str:
    body = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"{fig_id}-plot",
        default_height=f"{fig.layout.height or 450}px",
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="ae-figure" id="{_e(fig_id)}">{body}</div>'


def _section(anchor: str, title: str, note: str, content: str) -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{note_html}{content}</section>'


def _empty(message: str) -> str:
    return f'<p class="empty">{_e(message)}</p>'


def _json_block(value: Any) -> str:
    return f"<pre>{_e(json.dumps(value, indent=2, default=str, ensure_ascii=False))}</pre>"


def _dataset_rows(data: dict[str, Any]) -> str:
    rows = []
    for split in ("train", "val", "corpus"):
        entry = data.get(split)
        if not isinstance(entry, dict):
            rows.append(f"<tr><td>{split}</td><td colspan=3>none</td></tr>")
            continue
        sha = str(entry.get("sha256") or "")
        rows.append(
            f"<tr><td>{split}</td><td><code>{_e(entry.get('path', ''))}</code></td>"
            f'<td class="num">{_e(entry.get("rows", ""))}</td><td><code title="{_e(sha)}">{_e(sha[:16])}</code></td></tr>'
        )
    return "<table><tr><th>split</th><th>path</th><th>rows</th><th>sha256</th></tr>" + "".join(rows) + "</table>"


def _provenance_html(summary: _SummaryInfo) -> str:
    p = summary.provenance
    if not p:
        return _empty("The study records no provenance (study.user_attrs['provenance'] is missing).")
    space = p.get("space") if isinstance(p.get("space"), dict) else {}
    items = [
        ("base model", f"<code>{_e(p.get('model', 'unknown'))}</code>"),
        ("search space", f"<code>{_e(space.get('name', ''))}</code> from <code>{_e(space.get('path', ''))}</code>"),
        ("storage", f"<code>{_e(mask_url(str(p.get('storage') or summary.storage)))}</code>"),
    ]
    for key, value in p.items():  # whatever else the search recorded: base model hashes, versions, device...
        if key in ("model", "space", "storage", "data"):
            continue
        if isinstance(value, (dict, list)):
            items.append(
                (
                    key.replace("_", " "),
                    f"<details><summary>{len(value)} entries</summary>{_json_block(value)}</details>",
                )
            )
        else:
            items.append((key.replace("_", " "), f"<code>{_e(value)}</code>"))
    out = "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in items) + "</table>"
    if isinstance(p.get("data"), dict):
        out += "<h3>Data</h3>" + _dataset_rows(p["data"])
    if summary.space_summary is not None:
        out += "<details><summary>search space summary</summary>" + _json_block(summary.space_summary) + "</details>"
    return out


def _stats_html(summary: _SummaryInfo, compute: _ComputeInfo) -> str:
    stats = [(str(summary.n_trials), "trials")]
    stats += [
        (str(summary.counts.get(s, 0)), s)
        for s in ("completed", "pruned", "failed", "running")
        if summary.counts.get(s)
    ]
    if summary.best_value is not None:
        stats.append((f"{summary.best_value:.4f}", f"best {summary.objective} (trial {summary.best_number})"))
    if compute.total_seconds:
        stats.append((_format_seconds(compute.total_seconds), "compute spent"))
    return (
        '<div class="stats">'
        + "".join(f'<div class="stat"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in stats)
        + "</div>"
    )


def _notice(summary: _SummaryInfo) -> str:
    if summary.n_trials == 0:
        text = "This study has no trials yet: there is nothing to plot. The figures appear as trials complete."
    elif summary.n_completed == 0 and summary.counts.get("failed", 0) == summary.n_trials:
        text = (
            f"All {summary.n_trials} trials of this study failed: no trial has a result to plot. "
            "Why they failed is listed under Failed trials below."
        )
    elif summary.n_completed == 0:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
        text = f"No trial has completed yet ({parts}); the figures that need a completed trial appear once one does."
    else:
        return ""
    return f'<div class="notice" id="ae-notice">{_e(text)}</div>'


def _top_trials_html(top: Sequence[_TopTrial], objective: str) -> str:
    if not top:
        return _empty("No completed trials yet.")
    rows = []
    for t in top:
        params = ", ".join(f"{k}={_label(v)}" for k, v in t.params.items())
        config = (
            "<details><summary>config</summary>" + _json_block(t.config) + "</details>" if t.config is not None else ""
        )
        rows.append(
            f'<tr><td class="num">{t.rank}</td><td class="num">{t.number}</td><td class="num">{t.value:.4f}</td>'
            f'<td class="num">{_e(t.embedding_dim if t.embedding_dim is not None else "")}</td>'
            f'<td class="num">{_e(t.best_step if t.best_step is not None else "")}</td>'
            f'<td class="num">{_e(_format_seconds(t.seconds) if t.seconds is not None else "")}</td>'
            f'<td class="params"><code>{_e(params)}</code>{config}</td></tr>'
        )
    head = (
        f"<tr><th>rank</th><th>trial</th><th>{_e(objective)}</th><th>embedding dim</th><th>best step</th>"
        "<th>compute</th><th>parameters and config</th></tr>"
    )
    return f'<table id="ae-top-trials">{head}{"".join(rows)}</table>'


def _failures_html(summary: _SummaryInfo) -> str:
    rows = "".join(
        f'<tr><td class="num">{count}</td><td><code>{_e(reason)}</code></td><td>{_e(", ".join(map(str, numbers)))}'
        f"{' …' if count > len(numbers) else ''}</td></tr>"
        for reason, count, numbers in summary.failures
    )
    return f"<table><tr><th>trials</th><th>reason</th><th>trial numbers</th></tr>{rows}</table>"


def _render_page(
    title: str, summary: _SummaryInfo, trials: Sequence[FrozenTrial], direction: StudyDirection, now: datetime.datetime
) -> str:
    objective = summary.objective
    compute = _get_compute_info(trials)
    sections: list[tuple[str, str, str, str]] = []  # (anchor, title, note, content)

    history = _get_history_info(trials, direction)
    sections.append(
        (
            "history",
            "Optimization history",
            f"{_e(objective)} of each completed trial, and the best so far ({summary.direction}).",
            _figure(_get_history_plot(history, objective), "fig-history")
            if history.numbers
            else _empty("No completed trials yet."),
        )
    )

    intermediate = _get_intermediate_info(trials)
    sections.append(
        (
            "curves",
            "Intermediate recall curves",
            f"{_e(objective)} at each evaluation, one line per trial: completed trials in blue, pruned in red, "
            "running in green.",
            _figure(_get_intermediate_plot(intermediate, objective), "fig-intermediate")
            if intermediate.curves
            else _empty("No trial has reported an evaluation yet."),
        )
    )

    compute_note = "Compute seconds each trial spent training and evaluating (train_seconds), summed by outcome."
    if compute.saved_seconds is not None and compute.counts.get("pruned"):
        compute_note += (
            f" Pruning saved about {_e(_format_seconds(compute.saved_seconds))}: each pruned trial's cost, "
            f"extrapolated at its own rate to step {compute.full_steps} (the median last step of the completed "
            "trials), minus what it spent."
        )
    sections.append(
        (
            "compute",
            "Compute: completed vs pruned trials",
            compute_note,
            _figure(_get_compute_plot(compute), "fig-compute")
            if compute.total_seconds > 0
            else _empty("No trial has recorded compute time yet."),
        )
    )

    pareto = _get_pareto_info(trials, direction)
    sections.append(
        (
            "pareto",
            f"{objective} against embedding dimension",
            "Smaller embeddings cost less to store and search. The front joins the trials that no trial with a "
            "smaller or equal dimension beats.",
            _figure(_get_pareto_plot(pareto, objective), "fig-pareto")
            if pareto.numbers
            else _empty("No completed trial records its embedding dimension yet."),
        )
    )

    slices = _get_slice_info(trials)
    sections.append(
        (
            "slices",
            "Architecture choices",
            f"{_e(objective)} of the completed trials for each architecture choice the study searched over.",
            _figure(_get_slice_plot(slices, objective), "fig-slices")
            if slices.slices
            else _empty("No completed trial has an architecture parameter (output_dim, attention_heads, ...)."),
        )
    )

    importance = _get_importance_info(trials, direction)
    note = "fANOVA on the completed trials (fixed seed): how much of the variance of the objective each parameter explains."
    if importance.left_out:
        note += (
            " Conditional parameters, which not every trial has, are left out: "
            + ", ".join(f"<code>{_e(n)}</code>" for n in importance.left_out)
            + "."
        )
    sections.append(
        (
            "importance",
            "Hyperparameter importances",
            note,
            _figure(_get_importance_plot(importance), "fig-importance")
            if importance.importances
            else _empty(importance.message or "No importances."),
        )
    )

    parallel = _get_parallel_info(trials, objective, first=list(importance.importances))
    note = (
        "Each line is a completed trial, coloured by its objective; the most important parameters come first. "
        f"Drag along an axis to filter. Trials without a conditional parameter sit on its {_MISSING} tick; "
        "log-scale parameters show log10."
    )
    if parallel.left_out:
        note += " Left out, for room: " + ", ".join(f"<code>{_e(n)}</code>" for n in parallel.left_out) + "."
    sections.append(
        (
            "parallel",
            "Parallel coordinates",
            note,
            _figure(_get_parallel_plot(parallel), "fig-parallel")
            if parallel.numbers
            else _empty("No completed trials yet."),
        )
    )

    top = _get_top_trials_info(trials, direction)
    sections.append(
        (
            "top",
            f"Top {len(top)} trials",
            "Best first; open a row's config for the full trial config.",
            _top_trials_html(top, objective),
        )
    )
    sections.append(("provenance", "Provenance", "What the study was run on.", _provenance_html(summary)))
    if summary.failures:
        sections.append(
            ("failures", "Failed trials", "Why trials failed, commonest reason first.", _failures_html(summary))
        )

    if summary.n_completed == 0:  # keep what there is to show: curves and compute of pruned trials, the record
        sections = [s for s in sections if 'class="ae-figure"' in s[3] or s[0] in ("provenance", "failures")]
    nav = "".join(f'<a href="#{_e(a)}">{_e(t)}</a>' for a, t, _, _ in sections)
    meta = (
        f"study <code>{_e(summary.study_name)}</code> · storage <code>{_e(summary.storage)}</code> · "
        f"objective {_e(objective)} ({_e(summary.direction)}) · written {_e(now.strftime('%Y-%m-%d %H:%M:%S'))}"
    )
    if summary.last_complete:
        meta += f" · last trial finished {_e(summary.last_complete.strftime('%Y-%m-%d %H:%M:%S'))}"
    body = "".join(_section(a, t, n, c) for a, t, n, c in sections)
    plotly_js = _plotly_js()
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style>"
        f"<script>{_ERROR_CATCHER}</script>"
        f'<script type="text/javascript">{plotly_js}</script>'
        "</head><body>"
        f"<header><h1>{_e(title)}</h1><div class='meta'>{meta}</div></header>"
        f"<nav>{nav}</nav><main>"
        f"{_stats_html(summary, compute)}{_notice(summary)}{body}"
        '<pre id="ae-errors"></pre><div id="ae-check" hidden>pending</div>'
        f"</main><script>{_CHECKER}</script></body></html>\n"
    )


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def write_dashboard(storage_url: str, study_name: str, out_path: str | Path, *, title: str | None = None) -> Path:
    """Write one self-contained HTML page showing the study, and return its path.

    The study is read once, read-only (see `load_study_readonly`), so this is safe while trials run.
    The file is replaced atomically: a browser reloading it never sees half a page.

    Raises:
        AutoembedError: the study cannot be read (missing database file or study, not an Optuna database).
    """
    study = load_study_readonly(storage_url, study_name)
    trials = study.get_trials(deepcopy=False)
    direction = study.directions[0]
    now = datetime.datetime.now()
    summary = _get_summary_info(study_name, storage_url, study.user_attrs, trials, direction)
    page = _render_page(title or f"autoembed study {study_name}", summary, trials, direction, now)
    out_path = Path(out_path)
    atomic_write_text(out_path, page)
    return out_path
