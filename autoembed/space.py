"""The search space: which hyperparameters a study samples, and how one sample becomes a :class:`TrialConfig`.

A space is a YAML file (format: README, "Search spaces"; examples in ``search_spaces/``) with ``params``
(name -> spec, sampled in file order), ``fixed``, ``metric``, ``pruner``, ``sampler`` and ``starting_points``.
A param conditional on ``when: {param: X, in: [...]}`` gets one Optuna name per branch, ``<name>_<value>``
(``margin_contrastive``, ``margin_triplet``), so each Optuna name keeps one fixed distribution and TPE models
each branch apart. Attention heads are restricted to divisors of the backbone's hidden size (the choices are
filtered before the distribution is made, so it is fixed for a given backbone); the projection ``output_dim``
is clamped to its input width after sampling (:func:`autoembed.config.finalize`).

pydantic checks the shape of each mapping (unknown keys, types, ranges, the ``type``-keyed param union);
what only autoembed knows is checked after it: targets and values against the config's own rules, params
against each other, pruners against Optuna's signatures, starting points against the params. Every error
names a place by its dotted path, and the line table of the loaded YAML gives its line.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import math
import re
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import optuna
import pydantic
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from autoembed.config import SECTIONS, SHORT_NAMES, DataConfig, TrialConfig, config_keys, finalize
from autoembed.errors import AutoembedError
from autoembed.spaces import SPACES_DIR, resolve_space, shipped_spaces
from autoembed.yamlio import line_table, load_yaml, plain

__all__ = [
    "DEFAULT_METRIC", "DEFAULT_TARGETS", "PARAM_TYPES", "PRUNERS", "SPACES_DIR", "Condition", "Param", "SearchSpace",
    "resolve_space", "shipped_spaces",
]  # fmt: skip

DEFAULT_METRIC = "recall@10"

# The config key a param sets when its spec names no ``target``: the keys' short names.
DEFAULT_TARGETS = SHORT_NAMES

HEADS_KEY = "architecture.attention_heads"
PARAM_TYPES = ("float", "int", "categorical", "fixed")
CONDITION_OPS = ("in", "gt", "ge", "lt", "le")
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
SAMPLERS = ("tpe", "random")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")

def _fail(message: str, *at: str) -> PydanticCustomError:
    """A failed check in autoembed's words, placed at pydantic's loc plus ``at``."""
    return PydanticCustomError("autoembed", "{message}", {"message": message, "at": at})


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true as 1.0
        raise PydanticCustomError("float_type", "not a number")
    return value


_Number = Annotated[float, pydantic.BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    """One mapping of a space file: unknown keys are errors; ``what`` names the mapping in messages."""

    model_config = ConfigDict(extra="forbid")
    what: ClassVar[str]


class Condition(_Strict):
    """``when:`` of a param: active only if an earlier param was sampled and its value passes the test."""

    what: ClassVar[str] = "a condition"
    param: str
    in_: tuple[Any, ...] | None = Field(None, alias="in", min_length=1)
    gt: _Number | None = None
    ge: _Number | None = None
    lt: _Number | None = None
    le: _Number | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if len(tests := [k for k in self.to_dict() if k != "param"]) != 1:
            raise _fail(f"needs exactly one of {', '.join(CONDITION_OPS)}, got {tests or 'none'}")
        return self

    @property
    def op(self) -> str:
        """One of :data:`CONDITION_OPS`."""
        return next(op for op in CONDITION_OPS if getattr(self, "in_" if op == "in" else op) is not None)

    @property
    def value(self) -> Any:
        """A tuple for ``in``, a number otherwise."""
        return self.in_ if self.op == "in" else getattr(self, self.op)

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds for the values sampled so far (an inactive param never passes)."""
        if self.param not in values:
            return False
        v = values[self.param]
        if self.op == "in":
            return any(_same(v, c) for c in self.value)
        if not _is_number(v):
            return False
        return {"gt": v > self.value, "ge": v >= self.value, "lt": v < self.value, "le": v <= self.value}[self.op]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Param(_Strict):
    """One entry of ``params``: a distribution (or a fixed value) for one config key; a subclass per ``type``."""

    type: str
    # the parser fills in the default; an explicit ``target: null`` on a categorical makes a gate, which sets no
    # config key and only conditions later params (``architecture: {choices: [plain, adapter], target: null}``)
    target: str | None = None
    when: Condition | None = None
    _name: str = pydantic.PrivateAttr("")
    _file: str | None = pydantic.PrivateAttr(None)
    _lines: dict[str, int] = pydantic.PrivateAttr(default_factory=dict)  # spec key -> line; "" -> the name's

    name = property(lambda self: self._name)
    file = property(lambda self: self._file)
    lines = property(lambda self: self._lines)

    def optuna_name(self, values: Mapping[str, Any]) -> str:
        """The Optuna name under the values sampled so far: ``margin_triplet`` when ``loss`` is triplet."""
        if self.when is not None and self.when.op == "in":
            return f"{self.name}_{_token(values[self.when.param])}"
        return self.name

    def optuna_names(self) -> list[str]:
        """Every Optuna name this param can be suggested under; none for a fixed param."""
        if self.type == "fixed":
            return []
        if self.when is not None and self.when.op == "in":
            return [f"{self.name}_{_token(c)}" for c in self.when.value]
        return [self.name]

    def distribution(self, *, hidden_size: int | None = None) -> BaseDistribution:
        """The Optuna distribution; attention heads are limited to divisors of ``hidden_size`` when given."""
        heads = self.target == HEADS_KEY and hidden_size is not None
        if self.type == "categorical":
            choices = self.choices
            if heads:
                choices = tuple(c for c in choices if c is None or hidden_size % c == 0)
                self._need_heads(choices, hidden_size, "choices")
            return CategoricalDistribution(choices)
        if self.type == "int":
            if heads:
                choices = tuple(d for d in range(self.low, self.high + 1, self.step or 1) if hidden_size % d == 0)
                self._need_heads(choices, hidden_size, "low")
                return CategoricalDistribution(choices)
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        if self.type == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        raise ValueError(f"a {self.type} param has no distribution")

    def _need_heads(self, choices: tuple[Any, ...], hidden_size: int, key: str) -> None:
        if not choices:
            offered = list(self.choices) if self.type == "categorical" else f"[{self.low}, {self.high}]"
            raise AutoembedError(
                f"no attention-head count in {offered} divides the backbone's hidden size {hidden_size}; "
                "heads must divide the hidden size",
                file=self.file,
                line=self.lines.get(key, self.lines.get("")),
                key=f"params.{self.name}.{key}",
            )

    def contains(self, value: Any) -> bool:
        """Whether ``value`` can come out of this param (before any backbone filtering)."""
        if self.type == "fixed":
            return _same(value, self.value)
        if self.type == "categorical":
            return any(_same(value, c) for c in self.choices)
        if self.type == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            return False
        if not _is_number(value) or not self.low <= value <= self.high:
            return False
        return not self.step or math.isclose(k := (value - self.low) / self.step, round(k), abs_tol=1e-8)

    def describe(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"when"})
        if self.when is not None:
            out["when"] = self.when.to_dict()
        return {**out, "optuna_names": self.optuna_names()}


class _Range(Param):
    low: Any
    high: Any
    log: StrictBool = False
    step: Any = None

    @model_validator(mode="after")
    def _range(self) -> _Range:
        low, high, step = self.low, self.high, self.step
        if step is not None and self.log:
            raise _fail("cannot be combined with log: true (Optuna samples a log range without steps)", "step")
        if low > high:
            raise _fail(f"must be <= high ({high!r}), got low={low!r}", "low")
        if self.log and low <= 0:
            raise _fail(f"must be > 0 with log: true, got {low!r}", "low")
        if step is not None and not math.isclose(k := (high - low) / step, round(k), abs_tol=1e-8):
            raise _fail(f"high - low ({high - low!r}) must be a multiple of step ({step!r})", "step")
        return self


class _Float(_Range):
    what: ClassVar[str] = "a float param"
    type: Literal["float"]
    low: _Number
    high: _Number
    step: _Number | None = Field(None, gt=0)


class _Int(_Range):
    what: ClassVar[str] = "an int param"
    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    step: StrictInt | None = Field(None, gt=0)


def _scalar(choice: Any) -> Any:
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    raise _fail(f"each choice must be null, a bool, a number or a string, got {_type_name(choice)} {choice!r}")


class _Categorical(Param):
    what: ClassVar[str] = "a categorical param"
    type: Literal["categorical"]
    choices: tuple[Annotated[Any, pydantic.AfterValidator(_scalar)], ...] = Field(min_length=1)


class _Fixed(Param):
    what: ClassVar[str] = "a fixed param"
    type: Literal["fixed"]
    value: Any


class _Tpe(_Strict):
    what: ClassVar[str] = "a tpe sampler"
    type: Literal["tpe"]
    n_startup_trials: StrictInt | None = Field(None, ge=0)


class _Random(_Strict):
    what: ClassVar[str] = "a random sampler"
    type: Literal["random"]


class SearchSpace(_Strict):
    """A parsed, validated search space. Build one with :meth:`from_yaml_file` or :meth:`from_dict`."""

    what: ClassVar[str] = "a search space"
    name: str | None = None
    metric: str | None = None  # from_dict fills in the default
    params: dict[str, Annotated[_Float | _Int | _Categorical | _Fixed, Field(discriminator="type")]] = {}
    fixed: dict[str, Any] = {}
    pruner: dict[str, Any] = DEFAULT_PRUNER  # checked against Optuna's signatures by from_dict
    sampler: Annotated[_Tpe | _Random, Field(discriminator="type")] = _Tpe(type="tpe")
    starting_points: list[dict[str, Any]] = []
    _file: str | None = pydantic.PrivateAttr(None)
    # Line of each key in the file, by its dotted path ("fixed.training.max_steps", "starting_points[0].loss").
    _lines: dict[str, int] = pydantic.PrivateAttr(default_factory=dict)

    file = property(lambda self: self._file)
    lines = property(lambda self: self._lines)

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> SearchSpace:
        """Read a space file, or a shipped space by name (:func:`resolve_space`)."""
        path = resolve_space(path)
        return cls.from_dict(load_yaml(path), file=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str | None = None) -> SearchSpace:
        """Parse and validate a space; every mistake is an :class:`AutoembedError` naming file, line and key."""
        lines = line_table(data)
        try:
            # A key left empty (``fixed:`` with every entry commented out) is as if absent.
            space = cls.model_validate({k: v for k, v in data.items() if v is not None})
        except ValidationError as exc:
            raise _error(getattr(data, "file", None) or file, lines, *_explain(exc, data)) from None
        space._file, space._lines = getattr(data, "file", None) or file, lines
        _Checks(space, data).run()
        return space

    @property
    def conditional(self) -> bool:
        """Whether any param has a ``when``; TPE then samples the branches as separate groups."""
        return any(p.when is not None for p in self.params.values())

    def sample(
        self,
        trial: optuna.trial.BaseTrial,
        base: TrialConfig,
        *,
        hidden_size: int,
        threads: int | None = None,
        gpus: float | None = None,
    ) -> TrialConfig:
        """Suggest every active param on ``trial`` and return the validated config for it.

        Fixed values then sampled values are applied onto ``base`` (which gives model and data), then the
        backbone constraints, then :func:`autoembed.config.finalize` (the projection clamp, ``threads``), so what
        this returns is exactly what trains. Works with :class:`optuna.Trial` and :class:`optuna.trial.FixedTrial`.
        """
        values: dict[str, Any] = {}
        updates: dict[str, Any] = dict(self.fixed)
        updates["evaluation.metric"] = self.metric
        for param in self.params.values():
            if param.when is not None and not param.when.holds(values):
                continue
            if param.type == "fixed":
                value = param.value
            else:
                value = _suggest(trial, param.optuna_name(values), param.distribution(hidden_size=hidden_size))
            values[param.name] = value
            if param.target is not None:  # a gate sets nothing
                updates[param.target] = value
        config = self._apply(base, updates)
        arch = config.architecture
        if arch.attention_heads is not None and hidden_size % arch.attention_heads:
            file, line, key = self._source(HEADS_KEY)
            msg = f"must divide the backbone's hidden size {hidden_size}, got {arch.attention_heads}"
            raise AutoembedError(msg, file=file, line=line, key=key)
        config, adjusted = finalize(config, hidden_size=hidden_size, threads=threads, gpus=gpus)
        if adjusted:
            trial.set_user_attr("clamped", adjusted)
        return config

    def possible(self, target: str) -> list[Any]:
        """Every value a fixed entry or a categorical/fixed param may give config key ``target``."""
        values = [self.fixed[target]] if target in self.fixed else []
        for p in self.params.values():
            if p.target == target:
                values.extend([p.value] if p.type == "fixed" else list(p.choices or ()))
        return values

    def largest(self, target: str) -> Any:
        """The largest value any trial may give config key ``target`` (fixed, ranges, choices); None if none sets it."""
        values = [self.fixed[target]] if target in self.fixed else []
        for p in self.params.values():
            if p.target == target:
                values.extend([p.value] if p.type == "fixed" else p.choices if p.type == "categorical" else [p.high])
        values = [v for v in values if v is not None]
        return max(values) if values else None

    def starting_params(self, *, hidden_size: int) -> list[dict[str, Any]]:
        """The starting points as Optuna param dicts for ``study.enqueue_trial``, in file order.

        Params a point leaves out are sampled as usual; conditional params use their branch names.
        """
        out = []
        for i, point in enumerate(self.starting_points):
            params: dict[str, Any] = {}
            for param, value, optuna_name in self._resolve(point, f"starting_points[{i}]"):
                dist = param.distribution(hidden_size=hidden_size)
                if isinstance(dist, CategoricalDistribution) and not any(_same(value, c) for c in dist.choices):
                    raise _error(
                        self.file,
                        self.lines,
                        f"{value!r} is not possible with this backbone (hidden size {hidden_size}); "
                        f"expected one of {list(dist.choices)}",
                        f"starting_points[{i}].{param.name}",
                    )
                params[optuna_name] = value
            out.append(params)
        return out

    def build_pruner(self) -> optuna.pruners.BasePruner:
        return _make_pruner(self.pruner)

    def build_sampler(self, *, seed: int | None, n_workers: int) -> optuna.samplers.BaseSampler:
        """TPE (multivariate; grouped when params are conditional; constant liar with parallel workers) or random."""
        if self.sampler.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        kwargs = self.sampler.model_dump(exclude={"type"}, exclude_none=True)
        with warnings.catch_warnings():
            # ``group`` is marked experimental; it is what keeps conditional branches apart.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=self.conditional, constant_liar=n_workers > 1, **kwargs
            )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for provenance and dashboards."""
        return {
            "name": self.name,
            "file": self.file,
            "metric": self.metric,
            "params": {name: p.describe() for name, p in self.params.items()},
            "fixed": dict(self.fixed),
            "pruner": plain(self.pruner),
            "sampler": self.sampler.model_dump(exclude_none=True),
            "starting_points": [dict(p) for p in self.starting_points],
        }

    # --- internals -------------------------------------------------------------------------------------

    def _resolve(self, point: Mapping[str, Any], prefix: str) -> list[tuple[Param, Any, str]]:
        """(param, value, Optuna name) for each sampled param ``point`` sets; a point that does not fit the
        params (a value outside its param, a param its conditions leave inactive) is an error."""
        known: dict[str, Any] = {}  # params whose value this point settles
        unknown: set[str] = set()  # params the sampler still decides
        out = []
        for param in self.params.values():
            path, parent = f"{prefix}.{param.name}", param.when.param if param.when is not None else None
            active = parent not in unknown and (param.when is None or param.when.holds(known))
            if param.name not in point:
                if parent in unknown or (active and param.type != "fixed"):
                    unknown.add(param.name)
                elif active:
                    known[param.name] = param.value
                continue
            value = point[param.name]
            if parent in unknown:
                msg = f"{param.name!r} depends on {parent!r}; set {parent!r} in this starting point too"
                raise _error(self.file, self.lines, msg, path)
            if not active:
                has = f"has {parent}={known[parent]!r}" if parent in known else f"leaves {parent!r} inactive"
                msg = f"is only sampled when {parent} {_describe_condition(param.when)}, but this starting point {has}"
                raise _error(self.file, self.lines, msg, path)
            if not param.contains(value):
                msg = f"{value!r} is outside the param's distribution {param.describe()}"
                raise _error(self.file, self.lines, msg, path)
            known[param.name] = value
            if param.type != "fixed":
                out.append((param, value, param.optuna_name(known)))
        return out

    def _apply(self, base: TrialConfig, updates: dict[str, Any]) -> TrialConfig:
        try:
            return base.replace(**updates)
        except AutoembedError as exc:
            file, line, key = self._source(exc.key or "")
            raise AutoembedError(f"the sampled config is invalid: {exc.message}", file=file, line=line, key=key) from None

    def _source(self, config_key: str) -> tuple[str | None, int | None, str]:
        """Where a config key's value came from: a param, a fixed entry, or else the base config."""
        for param in self.params.values():
            if param.target == config_key:
                return self.file, param.lines.get(""), f"params.{param.name}"
        if config_key in self.fixed:
            return self.file, self.lines.get(f"fixed.{config_key}"), f"fixed.{config_key}"
        if config_key == "evaluation.metric":
            return self.file, self.lines.get("metric"), "metric"
        return None, None, config_key


class _Checks:
    """What pydantic cannot check: targets and values against the config's rules, params against each other,
    the pruner against Optuna, starting points against the params. Fills in what the file leaves out."""

    def __init__(self, space: SearchSpace, data: Any):
        self.space, self.data = space, data
        # A config with every required field filled, to check values against the config's own rules.
        self.probe = TrialConfig(model="base-model", data=DataConfig(train="train.jsonl"))

    def err(self, message: str, path: str) -> AutoembedError:
        return _error(self.space.file, self.space.lines, message, path)

    def run(self) -> None:
        space = self.space
        space.fixed = {self.config_key(k, f"fixed.{k}"): plain(v) for k, v in space.fixed.items()}
        explicit = space.metric is not None
        space.metric = space.metric if explicit else space.fixed.get("evaluation.metric", DEFAULT_METRIC)
        if space.fixed.get("evaluation.metric", space.metric) != space.metric:
            fixed = space.fixed["evaluation.metric"]
            msg = f"is {space.metric!r} but fixed evaluation.metric is {fixed!r}; set the metric in one place"
            raise self.err(msg, "metric")
        # The fixed values and the metric are checked together: the metric's rule depends on evaluation.k.
        try:
            self.probe = self.probe.replace(**space.fixed, **{"evaluation.metric": space.metric})
        except AutoembedError as exc:
            if exc.key in space.fixed:
                raise self.err(exc.message, f"fixed.{exc.key}") from None
            default = "" if explicit else " (the default; set 'metric' to one the k values allow)"
            raise self.err(exc.message + default, "metric" if exc.key == "evaluation.metric" else "fixed") from None
        earlier: dict[str, Param] = {}
        for name, param in space.params.items():
            if not _NAME.match(name):
                raise self.err(f"a param name must be letters, digits, '_' or '.', got {name!r}", f"params.{name}")
            earlier[name] = self.param(name, param, earlier)
        self.targets()
        space.pruner = self.pruner(space.pruner, "pruner")
        for i, point in enumerate(space.starting_points):
            prefix = f"starting_points[{i}]"
            for key in point:
                if key not in space.params:
                    msg = f"unknown param {key!r}; a starting point sets params by name: {', '.join(space.params)}"
                    raise self.err(msg, f"{prefix}.{key}")
            space.starting_points[i] = {k: _coerce(plain(v), space.params[k].target) for k, v in point.items()}
            space._resolve(space.starting_points[i], prefix)

    def config_key(self, key: Any, path: str) -> str:
        keys = [k for k in config_keys() if k != "model"]
        if key == "model":
            raise self.err("the base model cannot be searched or fixed here; it comes from the base config", path)
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.err(f"{key!r} is not a config key{hint}; expected a dotted key such as training.batch_size", path)
        return key

    def check_value(self, target: str, value: Any, path: str) -> None:
        """Raise naming ``path`` if the config's rule for ``target`` rejects ``value``."""
        try:
            self.probe.replace(**{target: value})
        except AutoembedError as exc:
            raise self.err(f"{value!r} is not a valid {target}: {exc.message}", path) from None

    def param(self, name: str, param: Param, earlier: dict[str, Param]) -> Param:
        path = f"params.{name}"
        param._name, param._file = name, self.space.file
        param._lines = {**getattr(self.data["params"][name], "lines", {}), "": self.space.lines.get(path)}
        raw = self.data["params"][name]
        if isinstance(raw, Mapping) and "target" in raw and raw["target"] is None:
            if param.type != "categorical":
                raise self.err(f"a gate ('target: null') must be categorical, got type {param.type!r}", f"{path}.target")
            for i, c in enumerate(param.choices):
                if any(_same(c, d) for d in param.choices[:i]):
                    raise self.err(f"{c!r} is listed twice", f"{path}.choices")
            if param.when is not None:
                self.when(param.when, f"{path}.when", earlier)
            return param
        if param.target is None:
            param.target = DEFAULT_TARGETS.get(name, name if name in config_keys() else None)
            if param.target is None:
                hint = "set 'target' to the config key it tunes (e.g. training.batch_size). Names with a default"
                raise self.err(f"has no default target; {hint}: {', '.join(DEFAULT_TARGETS)}", path)
        target = self.config_key(param.target, f"{path}.target")
        if param.type == "categorical":
            param.choices = tuple(_coerce(c, target) for c in param.choices)
            for i, c in enumerate(param.choices):
                if any(_same(c, d) for d in param.choices[:i]):
                    raise self.err(f"{c!r} is listed twice", f"{path}.choices")
                self.check_value(target, c, f"{path}.choices")
        elif param.type == "fixed":
            param.value = _coerce(plain(param.value), target)
            self.check_value(target, param.value, f"{path}.value")
        else:
            for key in ("low", "high"):
                self.check_value(target, getattr(param, key), f"{path}.{key}")
        if param.when is not None:
            self.when(param.when, f"{path}.when", earlier)
        return param

    def when(self, cond: Condition, path: str, earlier: dict[str, Param]) -> None:
        if cond.param not in earlier:
            declared = ", ".join(earlier) or "(none)"
            msg = f"names {cond.param!r}, which is not a param declared above; expected one of: {declared}"
            raise self.err(msg, f"{path}.param")
        if cond.op != "in":
            return
        parent = earlier[cond.param]
        cond.in_ = tuple(_coerce(v, parent.target) for v in cond.in_)
        for v in cond.in_:
            if parent.type == "fixed":
                # A branch a fixed param does not take yet is fine: editing the value switches it on.
                self.check_value(parent.target, v, f"{path}.in")
            elif not parent.contains(v):
                offered = list(parent.choices) if parent.type == "categorical" else parent.describe()
                raise self.err(f"{v!r} is not a value {cond.param!r} can take ({offered})", f"{path}.in")

    def targets(self) -> None:
        """No two params set one key unless their branches exclude each other; no two share an Optuna name."""
        by_target: dict[str, Param] = {}
        optuna_names: dict[str, str] = {}
        for param in self.space.params.values():
            path = f"params.{param.name}"
            by_target_skip = param.target is None  # a gate sets no key
            if not by_target_skip and param.target in self.space.fixed and param.when is None:
                msg = "which 'fixed' also sets; a param without 'when' always overrides it. Remove one of them"
                raise self.err(f"sets {param.target}, {msg}", path)
            other = None if by_target_skip else by_target.get(param.target)
            if other is not None and not _exclusive(param, other):
                msg = "two params may share a target only when their 'when: {param: X, in: [...]}' lists are disjoint"
                raise self.err(f"sets {param.target}, like param {other.name!r}; {msg}", path)
            if not by_target_skip:
                by_target[param.target] = param
            for name in param.optuna_names():
                clash = optuna_names.get(name) or (name if name in self.space.params and name != param.name else None)
                if clash:
                    raise self.err(f"its Optuna name {name!r} clashes with param {clash!r}; rename one of them", path)
                optuna_names[name] = param.name

    def pruner(self, spec: Any, path: str) -> dict[str, Any]:
        """A pruner's arguments, checked against the signature of its Optuna class, then by Optuna itself."""
        if not isinstance(spec, Mapping):
            raise self.err(f"must be a mapping, got {_type_name(spec)} {spec!r}", path)
        kind = spec.get("type")
        if kind not in PRUNERS:
            raise self.err(f"unknown pruner {kind!r}; expected one of: {', '.join(PRUNERS)}", f"{path}.type")
        init = PRUNERS[kind].__init__
        skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        signature = {n: p for n, p in inspect.signature(init).parameters.items() if n != "self" and p.kind not in skip}
        allowed = ("type", *signature)
        if signature.pop("wrapped_pruner", None):  # PatientPruner: the wrapped pruner is a spec of its own
            allowed = ("type", "wrapped", *signature)
        for key in spec:
            if key not in allowed:
                msg = f"unknown key {key!r} in a {kind} pruner; expected one of: {', '.join(allowed)}"
                raise self.err(msg, f"{path}.{key}")
        out: dict[str, Any] = {"type": kind}
        for name, param in signature.items():
            if name in spec:
                out[name] = self.pruner_arg(spec[name], typing.get_type_hints(init)[name], f"{path}.{name}")
            elif param.default is inspect.Parameter.empty:
                raise self.err(f"a {kind} pruner needs {name!r}", f"{path}.{name}")
        if "wrapped" in spec:
            out["wrapped"] = self.pruner(spec["wrapped"], f"{path}.wrapped")
        try:
            _make_pruner(out)
        except (ValueError, TypeError) as exc:
            name = next((n for n in out if n != "type" and n in str(exc)), None)
            raise self.err(f"Optuna rejects this {kind} pruner: {exc}", f"{path}.{name}" if name else path) from None
        return out

    def pruner_arg(self, value: Any, hint: Any, path: str) -> Any:
        types = typing.get_args(hint) or (hint,)
        try:
            if isinstance(value, bool) and bool not in types:  # pydantic would read true as 1
                raise ValueError
            return pydantic.TypeAdapter(hint).validate_python(value)
        except (ValueError, ValidationError):
            expected = " or ".join(sorted("null" if t is type(None) else t.__name__ for t in types))
            raise self.err(f"must be {expected}, got {_type_name(value)} {value!r}", path) from None


# --- errors: pydantic's loc as the file's dotted path and line -------------------------------------------

# The model behind an error's loc, by the loc's part before the key: a union tag, "when", or none (the top).
_MODELS: dict[str, type[_Strict]] = {"": SearchSpace, "when": Condition, "tpe": _Tpe, "random": _Random}
_MODELS.update({"float": _Float, "int": _Int, "categorical": _Categorical, "fixed": _Fixed})
_TAGS = {"params": PARAM_TYPES, "sampler": SAMPLERS}
# What a failed pydantic check says; a type mismatch also names the type it got.
_SAYS = {
    "int_type": "must be an int",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "too_short": "must not be empty",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be an int >= {ge}",  # only counts have a lower bound
}


def _explain(exc: ValidationError, data: Any) -> tuple[str, str]:
    """The message and dotted path of the first error, an unknown key before the rest (it explains the rest)."""
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    kind, loc, value, ctx = error["type"], error["loc"], error.get("input"), error.get("ctx", {})
    path, model = _path(data, loc), _MODELS.get(str(loc[-2]) if len(loc) > 1 else "")
    if kind == "autoembed":
        return ctx["message"], ".".join([path, *ctx["at"]]).strip(".")
    if kind == "extra_forbidden" and model:
        allowed = ", ".join(f.alias or n for n, f in model.model_fields.items())
        return f"unknown key {loc[-1]!r} in {model.what}; expected one of: {allowed}", path
    if kind == "missing" and model:
        return f"{model.what} needs {loc[-1]!r}", _path(data, loc[:-1])
    if kind == "union_tag_not_found":
        return f"is missing 'type'; expected one of: {', '.join(_TAGS[loc[0]])}", path
    if kind == "union_tag_invalid":
        word = "type" if loc[0] == "params" else loc[0]
        return f"unknown {word} {ctx['tag']!r}; expected one of: {', '.join(_TAGS[loc[0]])}", f"{path}.type"
    says = _SAYS.get(kind, error["msg"][:1].lower() + error["msg"][1:]).format(**ctx)
    if path == "starting_points" and kind == "list_type":
        says += " of mappings"
    got = f"{_type_name(value)} {value!r}" if kind.endswith(("_type", "_parsing")) else repr(value)
    return f"{says}, got {got}", path


def _path(data: Any, loc: tuple[Any, ...]) -> str:
    """Pydantic's loc as a dotted path through the file, without the union tags pydantic adds."""
    path, node = "", data
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            path, node = f"{path}[{part}]", node[part] if part < len(node) else None
        elif isinstance(node, Mapping) and part not in node and part == node.get("type"):
            continue
        else:
            path, node = f"{path}.{part}".lstrip("."), node.get(part) if isinstance(node, Mapping) else None
    return path


def _error(file: str | None, lines: dict[str, int], message: str, path: str) -> AutoembedError:
    """The error at ``path``, on the line of the nearest key along it that the file has."""
    key = path
    while key and key not in lines:
        key = key[: max(key.rfind("."), key.rfind("["), 0)]
    return AutoembedError(message, file=file, line=lines.get(key), key=path or None)


# --- helpers ---------------------------------------------------------------------------------------------


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "wrapped")}
    cls = PRUNERS[spec["type"]]
    if cls is optuna.pruners.PatientPruner:
        wrapped = spec.get("wrapped")
        kwargs["wrapped_pruner"] = _make_pruner(wrapped) if wrapped is not None else None
    if cls in (optuna.pruners.MedianPruner, optuna.pruners.PercentilePruner) and "n_warmup_steps" in kwargs:
        # "skip the first N" means N itself is not judged either; Optuna's pruners judge from step N on
        kwargs["n_warmup_steps"] = kwargs["n_warmup_steps"] + 1
    with warnings.catch_warnings():
        # PatientPruner and WilcoxonPruner are marked experimental; choosing one in the file is the opt-in.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**kwargs)


def _exclusive(a: Param, b: Param) -> bool:
    if a.when is None or b.when is None or a.when.param != b.when.param or a.when.op != "in" or b.when.op != "in":
        return False
    return not any(_same(x, y) for x in a.when.value for y in b.when.value)


def _describe_condition(cond: Condition) -> str:
    if cond.op == "in":
        return f"is in {list(cond.value)}"
    return {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[cond.op] + f" {cond.value}"


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 (YAML gives both)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _token(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _coerce(value: Any, target: str | None) -> Any:
    """Numbers for float keys: YAML reads ``1e-5`` as a string and ``0`` as an int (a gate's values stay as given)."""
    if target is None:
        return value
    section, _, name = target.partition(".")
    fields = getattr(SECTIONS.get(section), "__dataclass_fields__", {})
    rule = fields[name].metadata.get("rule") if name in fields else None
    if rule is not None and float in rule.types and not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
