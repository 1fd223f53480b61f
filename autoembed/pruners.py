"""The study's pruner and sampler, as a space file declares them (``pruner:``, ``sampler:``).

A pruner spec names one of Optuna's pruners and gives its arguments by Optuna's own names; they are checked
against the pruner class's signature and type hints, then by building it, so every message names the argument
and no table of arguments has to follow Optuna's. The sampler is TPE or random.
"""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import optuna
import pydantic
from pydantic import Field, StrictInt, ValidationError

from autoembed.schema import Strict, fail, type_name

__all__ = ["BoundedTPESampler", "DEFAULT_PRUNER", "DEFAULT_SAMPLER", "PRUNERS", "SAMPLERS", "Pruner", "Sampler", "check_pruner", "make_pruner", "make_sampler"]

PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "none": optuna.pruners.NopPruner,
}
DEFAULT_PRUNER = {"type": "median"}


def check_pruner(spec: Any, at: tuple[str, ...] = ()) -> dict[str, Any]:
    """A pruner spec with its arguments checked, as a pydantic validator: a mistake raises :func:`fail` at ``at``."""
    if not isinstance(spec, Mapping):
        raise fail(f"must be a mapping, got {type_name(spec)} {spec!r}", *at)
    kind = spec.get("type")
    if kind not in PRUNERS:
        raise fail(f"unknown pruner {kind!r}; expected one of: {', '.join(PRUNERS)}", *at, "type")
    init = PRUNERS[kind].__init__
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    signature = {n: p for n, p in inspect.signature(init).parameters.items() if n != "self" and p.kind not in skip}
    allowed = ("type", *signature)
    if signature.pop("wrapped_pruner", None):  # PatientPruner: the wrapped pruner is a spec of its own
        allowed = ("type", "wrapped", *signature)
    for key in spec:
        if key not in allowed:
            raise fail(f"unknown key {key!r} in a {kind} pruner; expected one of: {', '.join(allowed)}", *at, key)
    out: dict[str, Any] = {"type": kind}
    for name, param in signature.items():
        if name in spec:
            out[name] = _argument(spec[name], typing.get_type_hints(init)[name], (*at, name))
        elif param.default is inspect.Parameter.empty:
            raise fail(f"a {kind} pruner needs {name!r}", *at, name)
    if "wrapped" in spec:
        out["wrapped"] = check_pruner(spec["wrapped"], (*at, "wrapped"))
    try:
        make_pruner(out)
    except (ValueError, TypeError) as exc:
        name = next((n for n in out if n != "type" and n in str(exc)), None)
        raise fail(f"Optuna rejects this {kind} pruner: {exc}", *at, *[name] if name else []) from None
    return out


# A pruner spec in a pydantic model: a mapping, checked by :func:`check_pruner`.
Pruner = Annotated[dict[str, Any], pydantic.AfterValidator(check_pruner)]


def _argument(value: Any, hint: Any, at: tuple[str, ...]) -> Any:
    types = typing.get_args(hint) or (hint,)
    try:
        if isinstance(value, bool) and bool not in types:  # pydantic would read true as 1
            raise ValueError
        return pydantic.TypeAdapter(hint).validate_python(value)
    except (ValueError, ValidationError):
        expected = " or ".join(sorted("null" if t is type(None) else t.__name__ for t in types))
        raise fail(f"must be {expected}, got {type_name(value)} {value!r}", *at) from None


def make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The Optuna pruner of a checked spec."""
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "wrapped")}
    cls = PRUNERS[spec["type"]]
    if cls is optuna.pruners.PatientPruner:
        wrapped = spec.get("wrapped")
        kwargs["wrapped_pruner"] = make_pruner(wrapped) if wrapped is not None else None
    if cls in (optuna.pruners.MedianPruner, optuna.pruners.PercentilePruner) and "n_warmup_steps" in kwargs:
        # "skip the first N" means N itself is not judged either; Optuna's pruners judge from step N on
        kwargs["n_warmup_steps"] = kwargs["n_warmup_steps"] + 1
    with warnings.catch_warnings():
        # PatientPruner and WilcoxonPruner are marked experimental; choosing one in the file is the opt-in.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**kwargs)


# TPE's good set is at most 25 trials (optuna.samplers._tpe.sampler.default_gamma); a bounded history keeps them all
BEST_KEPT = 25
DEFAULT_HISTORY = 300
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class _Tpe(Strict):
    what: ClassVar[str] = "a tpe sampler"
    type: Literal["tpe"]
    n_startup_trials: StrictInt | None = Field(None, ge=0)
    # TPE models at most this many finished trials: the best ``BEST_KEPT`` and the most recent (null: all of them)
    max_history: StrictInt | None = Field(DEFAULT_HISTORY, ge=BEST_KEPT + 1)


class _Random(Strict):
    what: ClassVar[str] = "a random sampler"
    type: Literal["random"]


SAMPLERS = ("tpe", "random")
Sampler = Annotated[_Tpe | _Random, Field(discriminator="type")]
DEFAULT_SAMPLER = _Tpe(type="tpe")


def make_sampler(spec: _Tpe | _Random, *, seed: int | None, n_workers: int, group: bool) -> optuna.samplers.BaseSampler:
    """TPE (multivariate; ``group`` keeps conditional branches apart; constant liar with parallel workers) or random."""
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    kwargs = spec.model_dump(exclude={"type", "max_history"}, exclude_none=True)
    with warnings.catch_warnings():
        # ``group`` is marked experimental; it is what keeps conditional branches apart.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return BoundedTPESampler(
            seed=seed, multivariate=True, group=group, constant_liar=n_workers > 1, max_history=spec.max_history, **kwargs
        )


class BoundedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE, modelling at most ``max_history`` finished trials: the ``BEST_KEPT`` best and the most recent.

    TPE's ask costs time in proportion to the study: each of its parameter groups splits and scans every trial
    (144 ms per ask at 1,000 trials of the default space, 8 groups, on this project's 2-core machine). Its "good"
    set is at most the best 25 trials (Optuna's ``default_gamma``), which are always kept, and its weights already
    fade the oldest trials of the "bad" set; so past ``max_history`` finished trials the oldest of the rest are left
    out and the ask stays flat. Below that the sampler is Optuna's TPE unchanged. Running trials (constant liar)
    are always seen.
    """

    def __init__(self, *, max_history: int | None = DEFAULT_HISTORY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_history = max_history
        self._last_view: tuple[tuple[int, int], _RecentHistory] | None = None

    def _view(self, study: optuna.Study, trial: Any) -> optuna.Study:
        """The bounded study, one per asked trial (its groups and parameters share one choice of trials)."""
        if self.max_history is None:
            return study
        key = (id(study), trial.number)
        if self._last_view is None or self._last_view[0] != key:
            self._last_view = (key, _RecentHistory(study, self.max_history))
        return typing.cast(optuna.Study, self._last_view[1])

    def infer_relative_search_space(self, study, trial):
        return super().infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(self._view(study, trial), trial, param_name, param_distribution)


class _RecentHistory:
    """A study as the bounded TPE sees it: listings keep the best and the most recent finished trials.

    Which trials are kept is decided once, on the first listing, so every group of one ask models the same trials.
    """

    def __init__(self, study: optuna.Study, limit: int) -> None:
        self._study, self._limit = study, limit
        self._keep: set[int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[Any]:
        return self._bounded(self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache))

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return self._bounded(self._study.get_trials(deepcopy=deepcopy, states=states))

    def _bounded(self, trials: list[Any]) -> list[Any]:
        if self._keep is None:
            self._keep = self._choose()
        keep = self._keep
        if not keep:  # an empty set: the study is within the bound
            return trials
        return [t for t in trials if t.state not in _FINISHED or t.number in keep]

    def _choose(self) -> set[int]:
        finished = self._study._get_trials(deepcopy=False, states=_FINISHED, use_cache=True)
        if len(finished) <= self._limit or self._study._is_multi_objective():
            return set()
        complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
        sign = -1.0 if self._study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        keep = {t.number for t in sorted(complete, key=lambda t: sign * t.value)[:BEST_KEPT]}
        recent = sorted(t.number for t in finished if t.number not in keep)
        keep.update(recent[len(recent) - (self._limit - len(keep)) :])
        return keep
