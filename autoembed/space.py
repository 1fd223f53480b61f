"""The search space: which hyperparameters a study samples, and how one sample becomes a :class:`TrialConfig`.

A space is a YAML file (format: README, "Search spaces"; examples in ``search_spaces/``) with ``params``
(name -> spec, sampled in file order), ``fixed``, ``metric``, ``pruner``, ``sampler`` and ``starting_points``.
A param conditional on ``when: {param: X, in: [...]}`` gets one Optuna name per branch, ``<name>_<value>``
(``margin_contrastive``, ``margin_triplet``), so each Optuna name keeps one fixed distribution and TPE models
each branch apart. Attention heads are restricted to divisors of the backbone's hidden size (the choices are
filtered before the distribution is made, so it is fixed for a given backbone); the projection ``output_dim``
is clamped to its input width after sampling (:func:`autoembed.config.finalize`).

pydantic checks the shape of each mapping (unknown keys, types, ranges, the ``type``-keyed param union; the
models and their messages: :mod:`autoembed.schema`) and the pruner against Optuna's signatures
(:mod:`autoembed.pruners`); what only autoembed knows is checked after it: targets and values against the
config's own rules, params against each other, starting points against the params. Every error names a place
by its dotted path, and the line table of the loaded YAML gives its line.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import operator
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import optuna
import pydantic
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import Field, StrictBool, StrictInt, ValidationError, model_validator

from autoembed.config import SECTIONS, SHORT_NAMES, DataConfig, TrialConfig, config_keys, finalize
from autoembed.errors import AutoembedError
from autoembed.pruners import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    PRUNERS,
    SAMPLERS,
    Pruner,
    Sampler,
    make_pruner,
    make_sampler,
)
from autoembed.schema import Number, Strict, error_at, fail, located, type_name
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
CONDITION_OPS = {"in": "is in", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}  # how a message says each
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class Condition(Strict):
    """``when:`` of a param: active only if an earlier param was sampled and its value passes the test."""

    what: ClassVar[str] = "a condition"
    param: str
    in_: tuple[Any, ...] | None = Field(None, alias="in", min_length=1)
    gt: Number | None = None
    ge: Number | None = None
    lt: Number | None = None
    le: Number | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if len(tests := [k for k in self.to_dict() if k != "param"]) != 1:
            raise fail(f"needs exactly one of {', '.join(CONDITION_OPS)}, got {tests or 'none'}")
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
        return _is_number(v) and getattr(operator, self.op)(v, self.value)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def __str__(self) -> str:
        return f"{CONDITION_OPS[self.op]} {list(self.value) if self.op == 'in' else self.value}"


class Param(Strict):
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
            raise fail("cannot be combined with log: true (Optuna samples a log range without steps)", "step")
        if low > high:
            raise fail(f"must be <= high ({high!r}), got low={low!r}", "low")
        if self.log and low <= 0:
            raise fail(f"must be > 0 with log: true, got {low!r}", "low")
        if step is not None and not math.isclose(k := (high - low) / step, round(k), abs_tol=1e-8):
            raise fail(f"high - low ({high - low!r}) must be a multiple of step ({step!r})", "step")
        return self


class _Float(_Range):
    what: ClassVar[str] = "a float param"
    type: Literal["float"]
    low: Number
    high: Number
    step: Number | None = Field(None, gt=0)


class _Int(_Range):
    what: ClassVar[str] = "an int param"
    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    step: StrictInt | None = Field(None, gt=0)


def _scalar(choice: Any) -> Any:
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    raise fail(f"each choice must be null, a bool, a number or a string, got {type_name(choice)} {choice!r}")


class _Categorical(Param):
    what: ClassVar[str] = "a categorical param"
    type: Literal["categorical"]
    choices: tuple[Annotated[Any, pydantic.AfterValidator(_scalar)], ...] = Field(min_length=1)


class _Fixed(Param):
    what: ClassVar[str] = "a fixed param"
    type: Literal["fixed"]
    value: Any


def _points(value: Any) -> Any:
    if not isinstance(value, list):
        raise fail(f"must be a list of mappings, got {type_name(value)} {value!r}")
    return value


class Screen(Strict):
    """``screen:``: how a space whose ``model`` param lists several base models drops the weak ones before the search.

    Each candidate is evaluated untrained on one validation sample (the same queries and documents for all); those
    more than ``margin`` below the best are dropped, and of the rest the best ``keep`` stay in the search.
    """

    what: ClassVar[str] = "a screen"
    keep: StrictInt = Field(2, ge=1)
    margin: Number = Field(0.1, ge=0)


class SearchSpace(Strict):
    """A parsed, validated search space. Build one with :meth:`from_yaml_file` or :meth:`from_dict`."""

    what: ClassVar[str] = "a search space"
    name: str | None = None
    metric: str | None = None  # from_dict fills in the default
    params: dict[str, Annotated[_Float | _Int | _Categorical | _Fixed, Field(discriminator="type")]] = {}
    fixed: dict[str, Any] = {}
    pruner: Pruner = DEFAULT_PRUNER
    sampler: Sampler = DEFAULT_SAMPLER
    starting_points: Annotated[list[dict[str, Any]], pydantic.BeforeValidator(_points)] = []
    screen: Screen = Screen()
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
        file, lines = getattr(data, "file", None) or file, line_table(data)
        try:
            # A key left empty (``fixed:`` with every entry commented out) is as if absent.
            space = cls.model_validate({k: v for k, v in data.items() if v is not None})
        except ValidationError as exc:
            raise located(exc, data, file=file, lines=lines, unions=_UNIONS) from None
        space._file, space._lines = file, lines
        _Checks(space, data).run()
        return space

    @property
    def model_param(self) -> Param | None:
        """The param that searches the base model (``model: {type: categorical, choices: [folder, package:...]}``)."""
        return next((p for p in self.params.values() if p.target == "model"), None)

    def keep_models(self, kept: list[str]) -> None:
        """Search only the models in ``kept`` (the screen's survivors, best first): the model param's choices."""
        param = self.model_param
        if param is not None:
            param.choices = tuple(kept)

    @property
    def conditional(self) -> bool:
        """Whether any param has a ``when``; TPE then samples the branches as separate groups."""
        return any(p.when is not None for p in self.params.values())

    def sample(
        self,
        trial: optuna.trial.BaseTrial,
        base: TrialConfig,
        *,
        hidden_size: int | Mapping[str, int],
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
        sizes = hidden_size if isinstance(hidden_size, Mapping) else None
        # with several base models, head counts must divide every one's hidden size: one distribution for all trials
        common = math.gcd(*sizes.values()) if sizes else hidden_size
        for param in self.params.values():
            if param.when is not None and not param.when.holds(values):
                continue
            if param.type == "fixed":
                value = param.value
            else:
                value = _suggest(trial, param.optuna_name(values), param.distribution(hidden_size=common))
            values[param.name] = value
            if param.target is not None:  # a gate sets nothing
                updates[param.target] = value
        config = self._apply(base, updates)
        hidden_size = sizes[config.model] if sizes else hidden_size
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
        """Every value a fixed entry or a categorical/fixed param may give config key ``target`` (not ranges)."""
        values = [self.fixed[target]] if target in self.fixed else []
        for p in self.params.values():
            if p.target == target and p.type in ("fixed", "categorical"):
                values.extend([p.value] if p.type == "fixed" else p.choices)
        return values

    def largest(self, target: str) -> Any:
        """The largest value any trial may give config key ``target`` (fixed, ranges, choices); None if none sets it."""
        highs = [p.high for p in self.params.values() if p.target == target and p.type in ("float", "int")]
        values = [v for v in [*self.possible(target), *highs] if v is not None]
        return max(values) if values else None

    def starting_params(self, *, hidden_size: int | Mapping[str, int]) -> list[dict[str, Any]]:
        """The starting points as Optuna param dicts for ``study.enqueue_trial``, in file order.

        Params a point leaves out are sampled as usual; conditional params use their branch names. When the space
        searches the base model, a point that names none takes the first choice (the screen's best), and one naming
        a model the screen dropped is left out.
        """
        if isinstance(hidden_size, Mapping):
            hidden_size = math.gcd(*hidden_size.values())
        model = self.model_param
        out = []
        for i, point in enumerate(self.starting_points):
            if model is not None and model.name in point and not model.contains(point[model.name]):
                continue
            if model is not None and model.name not in point:
                point = {model.name: model.choices[0], **point}
            params: dict[str, Any] = {}
            for param, value, optuna_name in self._resolve(point, f"starting_points[{i}]"):
                dist = param.distribution(hidden_size=hidden_size)
                if isinstance(dist, CategoricalDistribution) and not any(_same(value, c) for c in dist.choices):
                    raise self._error(
                        f"{value!r} is not possible with this backbone (hidden size {hidden_size}); "
                        f"expected one of {list(dist.choices)}",
                        f"starting_points[{i}].{param.name}",
                    )
                params[optuna_name] = value
            out.append(params)
        return out

    def build_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.pruner)

    def build_sampler(self, *, seed: int | None, n_workers: int) -> optuna.samplers.BaseSampler:
        """TPE (multivariate; grouped when params are conditional; constant liar with parallel workers) or random."""
        return make_sampler(self.sampler, seed=seed, n_workers=n_workers, group=self.conditional)

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
                raise self._error(msg, path)
            if not active:
                has = f"has {parent}={known[parent]!r}" if parent in known else f"leaves {parent!r} inactive"
                msg = f"is only sampled when {parent} {param.when}, but this starting point {has}"
                raise self._error(msg, path)
            if not param.contains(value):
                msg = f"{value!r} is outside the param's distribution {param.describe()}"
                raise self._error(msg, path)
            known[param.name] = value
            if param.type != "fixed":
                out.append((param, value, param.optuna_name(known)))
        return out

    def _error(self, message: str, path: str) -> AutoembedError:
        return error_at(self.file, self.lines, message, path)

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
    starting points against the params. Fills in what the file leaves out."""

    def __init__(self, space: SearchSpace, data: Any):
        self.space, self.data = space, data
        # A config with every required field filled, to check values against the config's own rules.
        self.probe = TrialConfig(model="base-model", data=DataConfig(train="train.jsonl"))

    def err(self, message: str, path: str) -> AutoembedError:
        return self.space._error(message, path)

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
        for i, point in enumerate(space.starting_points):
            prefix = f"starting_points[{i}]"
            for key in point:
                if key not in space.params:
                    msg = f"unknown param {key!r}; a starting point sets params by name: {', '.join(space.params)}"
                    raise self.err(msg, f"{prefix}.{key}")
            space.starting_points[i] = {k: _coerce(plain(v), space.params[k].target) for k, v in point.items()}
            space._resolve(space.starting_points[i], prefix)

    def config_key(self, key: Any, path: str, *, model: bool = False) -> str:
        keys = [k for k in config_keys() if k != "model"]
        if key == "model":
            if model:
                return key
            msg = "the base model cannot be fixed here; it comes from --model, or a 'model' param (a categorical of folders or package: names) searches it"
            raise self.err(msg, path)
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
        gate = param.target is None and "target" in param.model_fields_set  # the file says ``target: null``
        if gate and param.type != "categorical":
            raise self.err(f"a gate ('target: null') must be categorical, got type {param.type!r}", f"{path}.target")
        if param.target is None and not gate:
            param.target = DEFAULT_TARGETS.get(name, name if name in config_keys() else None)
            if param.target is None:
                hint = "set 'target' to the config key it tunes (e.g. training.batch_size). Names with a default"
                raise self.err(f"has no default target; {hint}: {', '.join(DEFAULT_TARGETS)}", path)
        target = None if gate else self.config_key(param.target, f"{path}.target", model=True)
        if target == "model":
            self.model(param, path)
        if param.type == "categorical":
            param.choices = tuple(_coerce(c, target) for c in param.choices)
            for i, c in enumerate(param.choices):
                if any(_same(c, d) for d in param.choices[:i]):
                    raise self.err(f"{c!r} is listed twice", f"{path}.choices")
                if not gate:
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

    def model(self, param: Param, path: str) -> None:
        """The base model as a search axis: a categorical of model folders or ``package:`` names, always active."""
        if param.type != "categorical":
            raise self.err(f"the base model is searched as a categorical of model folders or package: names, got type {param.type!r}", f"{path}.type")
        if param.when is not None:
            raise self.err("the base model is chosen for every trial; it cannot have 'when'", f"{path}.when")
        for choice in param.choices:
            if not isinstance(choice, str) or not choice:
                raise self.err(f"each choice must be a model folder or a package: name, got {choice!r}", f"{path}.choices")

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
            if param.target is not None:  # a gate sets no key
                if param.target in self.space.fixed and param.when is None:
                    msg = "which 'fixed' also sets; a param without 'when' always overrides it. Remove one of them"
                    raise self.err(f"sets {param.target}, {msg}", path)
                other = by_target.get(param.target)
                if other is not None and not _exclusive(param, other):
                    msg = "two params may share a target only when their 'when: {param: X, in: [...]}' lists are disjoint"
                    raise self.err(f"sets {param.target}, like param {other.name!r}; {msg}", path)
                by_target[param.target] = param
            for name in param.optuna_names():
                clash = optuna_names.get(name) or (name if name in self.space.params and name != param.name else None)
                if clash:
                    raise self.err(f"its Optuna name {name!r} clashes with param {clash!r}; rename one of them", path)
                optuna_names[name] = param.name


# How errors name the ``type``-tagged unions of a space file.
_UNIONS = {"params": ("type", PARAM_TYPES), "sampler": ("sampler", SAMPLERS)}


# --- helpers ---------------------------------------------------------------------------------------------


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _exclusive(a: Param, b: Param) -> bool:
    if a.when is None or b.when is None or a.when.param != b.when.param or a.when.op != "in" or b.when.op != "in":
        return False
    return not any(_same(x, y) for x in a.when.value for y in b.when.value)


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
