"""The search space: which hyperparameters a study samples, and how one sample becomes a :class:`TrialConfig`.

A space is a YAML file (the shipped ones are package data in ``autoembed/spaces/``; ``--space default`` names one)::

    name: default                  # optional, shown in provenance and dashboards
    metric: recall@10              # optional; the study's objective, copied to evaluation.metric
    params:                        # name -> spec, sampled in this order
      loss: {type: categorical, choices: [infonce, triplet, contrastive]}
      margin: {type: float, low: 0.05, high: 1.0, when: {param: loss, in: [contrastive, triplet]}}
      backbone_lr: {type: float, low: 1.0e-5, high: 2.0e-4, log: true}
      adapter_depth: {type: int, low: 0, high: 2}
      adapter_width: {type: categorical, choices: [256, 512], when: {param: adapter_depth, gt: 0}}
    fixed:                         # dotted config key -> value, for every trial
      training.max_steps: 2000
    pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 200}
    sampler: {type: tpe, n_startup_trials: 10}
    starting_points:               # enqueued first, in this order
      - {loss: infonce, backbone_lr: 5.0e-5}

A param spec has ``type`` (float, int, categorical, fixed) and, by type, ``low``/``high``/``log``/``step``,
``choices`` or ``value``; ``target`` is the dotted config key it sets (default: :data:`DEFAULT_TARGETS`,
or the name itself when it is a config key); ``when`` makes it conditional on an earlier param with one of
``in`` (a list), ``gt``, ``ge``, ``lt``, ``le``. A categorical with ``target: null`` is a gate: it sets no config
key, and later params' ``when`` read it (``architecture: {type: categorical, choices: [plain, adapter], target: null}``),
so TPE learns which branch pays before it spends trials inside one.

A param conditional on ``in`` gets one Optuna name per branch, ``<name>_<value>`` (``margin_contrastive``,
``margin_triplet``), so each Optuna name keeps one fixed distribution and TPE models each branch apart.

Two constraints keep every sample buildable on the backbone: attention heads are restricted to divisors
of its hidden size (the choices are filtered before the distribution is made, so it is fixed for a given
backbone), and the projection ``output_dim`` is clamped to its input width after sampling (the
distribution stays the same; the trial records the clamp in its ``clamped`` user attribute).
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from autoembed.config import SECTIONS, DataConfig, Rule, TrialConfig, config_keys, finalize
from autoembed.errors import AutoembedError
from autoembed.yamlio import load_yaml

__all__ = ["SPACES_DIR", "resolve_space", "shipped_spaces", "DEFAULT_METRIC", "DEFAULT_TARGETS", "PARAM_TYPES", "PRUNERS", "Condition", "Param", "SearchSpace"]

DEFAULT_METRIC = "recall@10"

# The config key a param sets when its spec names no ``target``.
DEFAULT_TARGETS: dict[str, str] = {
    "output_dim": "architecture.output_dim",
    "attention_heads": "architecture.attention_heads",
    "adapter_depth": "architecture.adapter_depth",
    "adapter_width": "architecture.adapter_width",
    "adapter_activation": "architecture.adapter_activation",
    "pooling": "architecture.pooling",
    "hidden_dropout": "architecture.hidden_dropout",
    "attention_dropout": "architecture.attention_dropout",
    "head_dropout": "architecture.head_dropout",
    "loss": "loss.type",
    "margin": "loss.margin",
    "temperature": "loss.temperature",
    "label_smoothing": "loss.label_smoothing",
    "distance": "loss.distance",
    "backbone_lr": "training.backbone_lr",
    "head_lr": "training.head_lr",
    "warmup_ratio": "training.warmup_ratio",
    "weight_decay": "training.weight_decay",
    "batch_size": "training.batch_size",
    "epochs": "training.epochs",
    "max_steps": "training.max_steps",
    "freeze_layers": "training.freeze_layers",
    "hard_negatives": "data.hard_negatives",
    "mining_max_score_ratio": "data.mining_max_score_ratio",
    "mining_margin": "data.mining_margin",
}

HEADS_KEY = "architecture.attention_heads"

TOP_KEYS = ("name", "metric", "params", "fixed", "pruner", "sampler", "starting_points")
# Keys every param spec may have, then the keys of each type.
COMMON_KEYS = ("type", "target", "when")
PARAM_TYPES: dict[str, tuple[str, ...]] = {
    "float": ("low", "high", "log", "step"),
    "int": ("low", "high", "log", "step"),
    "categorical": ("choices",),
    "fixed": ("value",),
}
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
SAMPLERS: dict[str, tuple[str, ...]] = {"tpe": ("n_startup_trials",), "random": ()}
DEFAULT_SAMPLER = {"type": "tpe"}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")

# The spaces that ship with autoembed (package data); ``search_spaces/`` in a checkout links to the same files.
SPACES_DIR = Path(__file__).resolve().parent / "spaces"


def shipped_spaces() -> list[str]:
    """The names ``--space`` accepts without a path: default, training, icd10, tiny."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_space(ref: str | Path) -> Path:
    """The file a ``--space`` value means: a path to an existing file is that file; a bare name (``default``,
    ``icd10.yaml``) or the old ``search_spaces/NAME.yaml`` missing from the current folder is the packaged space,
    so the shipped spaces work from any folder."""
    path = Path(ref)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    bare = len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "search_spaces")
    if bare and (SPACES_DIR / f"{name}.yaml").is_file():
        return SPACES_DIR / f"{name}.yaml"
    raise AutoembedError(
        f"no such space file, and {str(ref)!r} names no shipped space; give a YAML path or one of: {', '.join(shipped_spaces())}",
        file=str(ref),
        key="space",
    )


@dataclass(frozen=True)
class Condition:
    """``when:`` of a param: active only if an earlier param was sampled and its value passes the test."""

    param: str
    op: str  # one of CONDITION_OPS
    value: Any  # a tuple for "in", a number otherwise

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
        return {"param": self.param, self.op: list(self.value) if self.op == "in" else self.value}


@dataclass(frozen=True)
class Param:
    """One entry of ``params``: a distribution (or a fixed value) for one config key."""

    name: str
    type: str  # one of PARAM_TYPES
    target: str | None  # None for a gate: a categorical that only conditions later params
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None
    value: Any = None
    when: Condition | None = None
    file: str | None = field(default=None, compare=False, repr=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # spec key -> line; "" -> name

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
            choices = self.choices or ()
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
            return any(_same(value, c) for c in self.choices or ())
        if self.type == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            return False
        if not _is_number(value) or not self.low <= value <= self.high:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-8)
        return True

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "target": self.target}
        if self.type in ("float", "int"):
            out.update(low=self.low, high=self.high, log=self.log, step=self.step)
        elif self.type == "categorical":
            out["choices"] = list(self.choices or ())
        else:
            out["value"] = self.value
        if self.when is not None:
            out["when"] = self.when.to_dict()
        out["optuna_names"] = self.optuna_names()
        return out


@dataclass
class SearchSpace:
    """A parsed, validated search space. Build one with :meth:`from_yaml_file` or :meth:`from_dict`."""

    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    metric: str = DEFAULT_METRIC
    name: str | None = None
    pruner: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRUNER))
    sampler: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SAMPLER))
    starting_points: list[dict[str, Any]] = field(default_factory=list)
    file: str | None = None
    # Line of each place in the file, by its dotted path ("fixed.training.max_steps", "starting_points[0].loss").
    lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> SearchSpace:
        """Read a space file, or a shipped space by name (:func:`resolve_space`)."""
        path = resolve_space(path)
        return cls.from_dict(load_yaml(path), file=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str | None = None) -> SearchSpace:
        """Parse and validate a space; every mistake is an :class:`AutoembedError` naming file, line and key."""
        return _Parser(getattr(data, "file", None) or file).space(data)

    @property
    def conditional(self) -> bool:
        """Whether any param has a ``when``; TPE then samples the branches as separate groups."""
        return any(p.when is not None for p in self.params.values())

    def sample(
        self, trial: optuna.trial.BaseTrial, base: TrialConfig, *, hidden_size: int, threads: int | None = None
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
            if param.target is not None:
                updates[param.target] = value
        config = self._apply(base, updates)
        arch = config.architecture
        if arch.attention_heads is not None and hidden_size % arch.attention_heads:
            file, line, key = self._source(HEADS_KEY)
            raise AutoembedError(
                f"must divide the backbone's hidden size {hidden_size}, got {arch.attention_heads}",
                file=file,
                line=line,
                key=key,
            )
        config, adjusted = finalize(config, hidden_size=hidden_size, threads=threads)
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
            if p.target != target:
                continue
            if p.type == "fixed":
                values.append(p.value)
            elif p.choices is not None:
                values.extend(c for c in p.choices if c is not None)
            else:
                values.append(p.high)
        values = [v for v in values if v is not None]
        return max(values) if values else None

    def starting_params(self, *, hidden_size: int) -> list[dict[str, Any]]:
        """The starting points as Optuna param dicts for ``study.enqueue_trial``, in file order.

        Params a point leaves out are sampled as usual; conditional params use their branch names.
        """
        out = []
        for i, point in enumerate(self.starting_points):
            params: dict[str, Any] = {}
            for name, value, optuna_name in self._resolve_point(point):
                param = self.params[name]
                if optuna_name is None:
                    continue
                dist = param.distribution(hidden_size=hidden_size)
                if isinstance(dist, CategoricalDistribution) and not any(_same(value, c) for c in dist.choices):
                    raise AutoembedError(
                        f"{value!r} is not possible with this backbone (hidden size {hidden_size}); "
                        f"expected one of {list(dist.choices)}",
                        file=self.file,
                        line=self.lines.get(f"starting_points[{i}].{name}"),
                        key=f"starting_points[{i}].{name}",
                    )
                params[optuna_name] = value
            out.append(params)
        return out

    def build_pruner(self) -> optuna.pruners.BasePruner:
        return _make_pruner(self.pruner)

    def build_sampler(self, *, seed: int | None, n_workers: int) -> optuna.samplers.BaseSampler:
        """TPE (multivariate; grouped when params are conditional; constant liar with parallel workers) or random."""
        if self.sampler["type"] == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        kwargs = {k: v for k, v in self.sampler.items() if k != "type"}
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
            "pruner": _plain(self.pruner),
            "sampler": dict(self.sampler),
            "starting_points": [dict(p) for p in self.starting_points],
        }

    # --- internals -------------------------------------------------------------------------------------

    def _resolve_point(self, point: Mapping[str, Any]) -> list[tuple[str, Any, str | None]]:
        """(name, value, optuna name or None for a fixed param) for each param the point sets."""
        known: dict[str, Any] = {}
        out = []
        for param in self.params.values():
            active = param.when is None or param.when.holds(known)
            if param.name in point and active:
                known[param.name] = point[param.name]
                out.append((param.name, point[param.name], None if param.type == "fixed" else param.optuna_name(known)))
            elif param.type == "fixed" and active:
                known[param.name] = param.value
        return out

    def _apply(self, base: TrialConfig, updates: dict[str, Any]) -> TrialConfig:
        try:
            return base.replace(**updates)
        except AutoembedError as exc:
            file, line, key = self._source(exc.key or "")
            raise AutoembedError(
                f"the sampled config is invalid: {exc.message}", file=file, line=line, key=key
            ) from None

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
    with warnings.catch_warnings():
        # PatientPruner and WilcoxonPruner are marked experimental; choosing one in the file is the opt-in.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**kwargs)


def _pruner_signature(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {n: p for n, p in params.items() if n != "self" and p.kind not in skip}


def _annotation_types(param: inspect.Parameter) -> set[str]:
    a = param.annotation
    if a is inspect.Parameter.empty:
        return set()
    text = a if isinstance(a, str) else inspect.formatannotation(a)
    return set(re.findall(r"\b(int|float|str|bool|None)\b", text))


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


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _rule(target: str | None) -> Rule | None:
    if target is None:
        return None
    section, _, name = target.partition(".")
    cls = SECTIONS.get(section)
    if cls is None:
        return None
    for f in cls.__dataclass_fields__.values():
        if f.name == name:
            return f.metadata.get("rule")
    return None


def _coerce(value: Any, target: str) -> Any:
    """Numbers for float keys: YAML reads ``1e-5`` as a string and ``0`` as an int."""
    rule = _rule(target)
    if rule is None or float not in rule.types or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Parser:
    """Turns a loaded YAML mapping into a :class:`SearchSpace`, failing on the first mistake."""

    def __init__(self, file: str | None):
        self.file = file
        self.lines: dict[str, int] = {}
        # A config with every required field filled, to check values against the config's own rules.
        self.probe = TrialConfig(model="base-model", data=DataConfig(train="train.jsonl"))

    def err(self, message: str, where: Mapping[str, Any] | None, key: str | None, path: str) -> AutoembedError:
        line = None
        if where is not None and key is not None:
            line = getattr(where, "lines", {}).get(key)
        if line is None:
            line = self.lines.get(path)
        return AutoembedError(message, file=getattr(where, "file", None) or self.file, line=line, key=path)

    def note(self, where: Mapping[str, Any], key: str, path: str) -> None:
        line = getattr(where, "lines", {}).get(key)
        if line is not None:
            self.lines[path] = line

    def mapping(self, value: Any, where: Mapping[str, Any] | None, key: str | None, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.err(f"must be a mapping, got {_type_name(value)} {value!r}", where, key, path)
        return value

    def known_keys(self, data: Mapping[str, Any], allowed: tuple[str, ...], prefix: str, what: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.err(
                    f"unknown key {key!r} in {what}; expected one of: {', '.join(allowed)}", data, key, prefix + key
                )

    def config_key(self, key: Any, where: Mapping[str, Any], line_key: str, path: str) -> str:
        keys = [k for k in config_keys() if k != "model"]
        if key == "model":
            raise self.err(
                "the base model cannot be searched or fixed here; it comes from the base config", where, line_key, path
            )
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.err(
                f"{key!r} is not a config key{hint}; expected a dotted key such as training.batch_size",
                where,
                line_key,
                path,
            )
        return key

    def check_value(self, target: str, value: Any, where: Mapping[str, Any], key: str, path: str) -> None:
        """Raise naming ``path`` if the config's rule for ``target`` rejects ``value``."""
        try:
            self.probe.replace(**{target: value})
        except AutoembedError as exc:
            raise self.err(f"{value!r} is not a valid {target}: {exc.message}", where, key, path) from None

    # --- top level -------------------------------------------------------------------------------------

    def space(self, data: Mapping[str, Any]) -> SearchSpace:
        data = self.mapping(data, None, None, "")
        self.known_keys(data, TOP_KEYS, "", "a search space")
        for key in data:
            self.note(data, key, key)
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise self.err(f"must be a string, got {_type_name(name)} {name!r}", data, "name", "name")
        fixed = self.fixed(data.get("fixed"), data)
        metric = self.metric(data, fixed)
        self.apply_fixed(fixed, metric, data)
        params = self.params(data.get("params"), data, fixed)
        space = SearchSpace(
            params=params,
            fixed=fixed,
            metric=metric,
            name=name,
            pruner=self.pruner(data["pruner"], data, "pruner", "pruner") if "pruner" in data else dict(DEFAULT_PRUNER),
            sampler=self.sampler(data["sampler"], data) if "sampler" in data else dict(DEFAULT_SAMPLER),
            file=self.file,
            lines=self.lines,
        )
        space.starting_points = self.starting_points(data.get("starting_points"), data, space)
        return space

    def fixed(self, value: Any, top: Mapping[str, Any]) -> dict[str, Any]:
        if value is None:
            return {}
        fixed = self.mapping(value, top, "fixed", "fixed")
        out = {}
        for key, v in fixed.items():
            path = f"fixed.{key}"
            self.note(fixed, key, path)
            self.config_key(key, fixed, key, path)
            out[key] = _plain(v)
        return out

    def apply_fixed(self, fixed: dict[str, Any], metric: str, top: Mapping[str, Any]) -> None:
        """Check the fixed values and the metric together (the metric's rule depends on evaluation.k)."""
        try:
            self.probe = self.probe.replace(**fixed, **{"evaluation.metric": metric})
        except AutoembedError as exc:
            message = exc.message
            if exc.key in fixed:
                where, key, path = top["fixed"], exc.key, f"fixed.{exc.key}"
            elif exc.key == "evaluation.metric":
                where, key, path = top, "metric", "metric"
                if "metric" not in top:
                    message += " (the default; set 'metric' to one the k values allow)"
            else:
                where, key, path = top, "fixed", "fixed"
            raise self.err(message, where, key, path) from None

    def metric(self, top: Mapping[str, Any], fixed: dict[str, Any]) -> str:
        metric = top.get("metric", fixed.get("evaluation.metric", DEFAULT_METRIC))
        if not isinstance(metric, str):
            raise self.err(
                f"must be a string such as recall@10, got {_type_name(metric)} {metric!r}", top, "metric", "metric"
            )
        if "evaluation.metric" in fixed and fixed["evaluation.metric"] != metric:
            raise self.err(
                f"is {metric!r} but fixed evaluation.metric is {fixed['evaluation.metric']!r}; set the metric in one place",
                top,
                "metric",
                "metric",
            )
        return metric

    # --- params ----------------------------------------------------------------------------------------

    def params(self, value: Any, top: Mapping[str, Any], fixed: dict[str, Any]) -> dict[str, Param]:
        if value is None:
            return {}
        specs = self.mapping(value, top, "params", "params")
        params: dict[str, Param] = {}
        for name, spec in specs.items():
            path = f"params.{name}"
            self.note(specs, name, path)
            if not _NAME.match(name):
                raise self.err(f"a param name must be letters, digits, '_' or '.', got {name!r}", specs, name, path)
            spec = self.mapping(spec, specs, name, path)
            params[name] = self.param(name, spec, specs, params)
        self.check_targets(params, fixed, specs)
        seen: dict[str, str] = {}
        for param in params.values():
            for optuna_name in param.optuna_names():
                other = seen.get(optuna_name) or (
                    optuna_name if optuna_name in params and optuna_name != param.name else None
                )
                if other:
                    raise self.err(
                        f"its Optuna name {optuna_name!r} clashes with param {other!r}; rename one of them",
                        specs,
                        param.name,
                        f"params.{param.name}",
                    )
                seen[optuna_name] = param.name
        return params

    def param(self, name: str, spec: Mapping[str, Any], specs: Mapping[str, Any], earlier: dict[str, Param]) -> Param:
        path = f"params.{name}"
        kind = spec.get("type")
        if kind is None:
            raise self.err(f"is missing 'type'; expected one of: {', '.join(PARAM_TYPES)}", specs, name, path)
        if kind not in PARAM_TYPES:
            raise self.err(
                f"unknown type {kind!r}; expected one of: {', '.join(PARAM_TYPES)}", spec, "type", path + ".type"
            )
        allowed = COMMON_KEYS + PARAM_TYPES[kind]
        for key in spec:
            if key not in allowed:
                every = set(COMMON_KEYS).union(*PARAM_TYPES.values())
                what = f"a {kind} param" if key in every else "a param spec"
                raise self.err(
                    f"unknown key {key!r} in {what}; expected one of: {', '.join(allowed)}", spec, key, f"{path}.{key}"
                )

        target = spec.get("target")
        gate = "target" in spec and target is None
        if gate and kind != "categorical":
            raise self.err(f"a gate ('target: null') must be categorical, got type {kind!r}", spec, "target", f"{path}.target")
        if gate:
            pass  # a gate sets no config key: only the 'when' of later params reads it
        elif target is None:
            target = DEFAULT_TARGETS.get(name, name if name in config_keys() else None)
            if target is None:
                raise self.err(
                    f"has no default target; set 'target' to the config key it tunes (e.g. training.batch_size). "
                    f"Names with a default: {', '.join(DEFAULT_TARGETS)}",
                    specs,
                    name,
                    path,
                )
        else:
            self.config_key(target, spec, "target", f"{path}.target")

        lines = dict(getattr(spec, "lines", {}))
        if name in getattr(specs, "lines", {}):
            lines[""] = specs.lines[name]
        fields: dict[str, Any] = {}
        if kind in ("float", "int"):
            fields = self.range(kind, spec, path, target)
        elif kind == "categorical":
            fields["choices"] = self.choices(spec, path, target)
        else:
            if "value" not in spec:
                raise self.err("a fixed param needs 'value'", specs, name, path)
            value = _coerce(_plain(spec["value"]), target)
            self.check_value(target, value, spec, "value", f"{path}.value")
            fields["value"] = value
        when = self.when(spec.get("when"), spec, path, earlier) if "when" in spec else None
        return Param(name=name, type=kind, target=target, when=when, file=self.file, lines=lines, **fields)

    def number(self, value: Any, integer: bool, spec: Mapping[str, Any], key: str, path: str) -> int | float:
        if integer:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self.err(f"must be an int, got {_type_name(value)} {value!r}", spec, key, path)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if not _is_number(value) or not math.isfinite(value):
            raise self.err(f"must be a number, got {_type_name(value)} {value!r}", spec, key, path)
        return float(value)

    def range(self, kind: str, spec: Mapping[str, Any], path: str, target: str) -> dict[str, Any]:
        integer = kind == "int"
        out: dict[str, Any] = {}
        for key in ("low", "high"):
            if key not in spec:
                raise self.err(f"a {kind} param needs 'low' and 'high'", spec, "type", f"{path}.{key}")
            out[key] = self.number(spec[key], integer, spec, key, f"{path}.{key}")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise self.err(f"must be true or false, got {_type_name(log)} {log!r}", spec, "log", f"{path}.log")
        out["log"] = log
        step = spec.get("step")
        if step is not None:
            step = self.number(step, integer, spec, "step", f"{path}.step")
            if step <= 0:
                raise self.err(f"must be > 0, got {step!r}", spec, "step", f"{path}.step")
            if log:
                raise self.err(
                    "cannot be combined with log: true (Optuna samples a log range without steps)",
                    spec,
                    "step",
                    f"{path}.step",
                )
        out["step"] = step
        low, high = out["low"], out["high"]
        if low > high:
            raise self.err(f"must be <= high ({high!r}), got low={low!r}", spec, "low", f"{path}.low")
        if log and low <= 0:
            raise self.err(f"must be > 0 with log: true, got {low!r}", spec, "low", f"{path}.low")
        if step is not None:
            k = (high - low) / step
            if not math.isclose(k, round(k), abs_tol=1e-8):
                raise self.err(
                    f"high - low ({high - low!r}) must be a multiple of step ({step!r})", spec, "step", f"{path}.step"
                )
        for key in ("low", "high"):
            self.check_value(target, out[key], spec, key, f"{path}.{key}")
        return out

    def choices(self, spec: Mapping[str, Any], path: str, target: str) -> tuple[Any, ...]:
        if "choices" not in spec:
            raise self.err("a categorical param needs 'choices'", spec, "type", f"{path}.choices")
        raw = spec["choices"]
        if not isinstance(raw, list):
            raise self.err(f"must be a list, got {_type_name(raw)} {raw!r}", spec, "choices", f"{path}.choices")
        if not raw:
            raise self.err("must not be empty, got []", spec, "choices", f"{path}.choices")
        choices: list[Any] = []
        for c in raw:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise self.err(
                    f"each choice must be null, a bool, a number or a string, got {_type_name(c)} {c!r}",
                    spec,
                    "choices",
                    f"{path}.choices",
                )
            c = _coerce(c, target)
            if any(_same(c, d) for d in choices):
                raise self.err(f"{c!r} is listed twice", spec, "choices", f"{path}.choices")
            if target is not None:
                self.check_value(target, c, spec, "choices", f"{path}.choices")
            choices.append(c)
        return tuple(choices)

    def when(self, value: Any, spec: Mapping[str, Any], path: str, earlier: dict[str, Param]) -> Condition:
        path = f"{path}.when"
        when = self.mapping(value, spec, "when", path)
        self.known_keys(when, ("param", *CONDITION_OPS), path + ".", "a condition")
        ref = when.get("param")
        if ref not in earlier:
            raise self.err(
                f"names {ref!r}, which is not a param declared above; expected one of: {', '.join(earlier) or '(none)'}",
                when,
                "param",
                f"{path}.param",
            )
        ops = [op for op in CONDITION_OPS if op in when]
        if len(ops) != 1:
            raise self.err(f"needs exactly one of {', '.join(CONDITION_OPS)}, got {ops or 'none'}", spec, "when", path)
        op, parent = ops[0], earlier[ref]
        if op == "in":
            raw = when["in"]
            if not isinstance(raw, list) or not raw:
                raise self.err(f"must be a non-empty list, got {raw!r}", when, "in", f"{path}.in")
            values = tuple(_coerce(v, parent.target) for v in raw)
            for v in values:
                if parent.type == "fixed":
                    # A branch a fixed param does not take yet is fine: editing the value switches it on.
                    self.check_value(parent.target, v, when, "in", f"{path}.in")
                elif not parent.contains(v):
                    offered = list(parent.choices) if parent.type == "categorical" else parent.describe()
                    raise self.err(f"{v!r} is not a value {ref!r} can take ({offered})", when, "in", f"{path}.in")
            return Condition(ref, "in", values)
        return Condition(ref, op, self.number(when[op], False, when, op, f"{path}.{op}"))

    def check_targets(self, params: dict[str, Param], fixed: dict[str, Any], specs: Mapping[str, Any]) -> None:
        by_target: dict[str, Param] = {}
        for param in params.values():
            if param.target is None:
                continue
            if param.target in fixed and param.when is None:
                raise self.err(
                    f"sets {param.target}, which 'fixed' also sets; a param without 'when' always overrides it. "
                    "Remove one of them",
                    specs,
                    param.name,
                    f"params.{param.name}",
                )
            other = by_target.get(param.target)
            if other is not None and not _exclusive(param, other):
                raise self.err(
                    f"sets {param.target}, like param {other.name!r}; two params may share a target only when "
                    "their 'when: {param: X, in: [...]}' lists are disjoint",
                    specs,
                    param.name,
                    f"params.{param.name}",
                )
            by_target[param.target] = param

    # --- pruner, sampler, starting points --------------------------------------------------------------

    def pruner(self, value: Any, where: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        spec = self.mapping(value, where, key, path)
        kind = spec.get("type")
        if kind not in PRUNERS:
            raise self.err(
                f"unknown pruner {kind!r}; expected one of: {', '.join(PRUNERS)}",
                spec,
                "type" if "type" in spec else None,
                f"{path}.type",
            )
        cls = PRUNERS[kind]
        signature = _pruner_signature(cls)
        if cls is optuna.pruners.PatientPruner:
            signature.pop("wrapped_pruner")
            allowed = ("type", "wrapped", *signature)
        else:
            allowed = ("type", *signature)
        self.known_keys(spec, allowed, path + ".", f"a {kind} pruner")
        out: dict[str, Any] = {"type": kind}
        for name, param in signature.items():
            if name not in spec:
                if param.default is inspect.Parameter.empty:
                    raise self.err(f"a {kind} pruner needs {name!r}", spec, "type", f"{path}.{name}")
                continue
            out[name] = self.pruner_arg(spec[name], _annotation_types(param), spec, name, f"{path}.{name}")
        if "wrapped" in spec:
            out["wrapped"] = self.pruner(spec["wrapped"], spec, "wrapped", f"{path}.wrapped")
        try:
            _make_pruner(out)
        except (ValueError, TypeError) as exc:
            name = next((n for n in out if n != "type" and n in str(exc)), None)
            raise self.err(
                f"Optuna rejects this {kind} pruner: {exc}", spec, name or "type", f"{path}.{name}" if name else path
            ) from None
        return out

    def pruner_arg(self, value: Any, types: set[str], spec: Mapping[str, Any], key: str, path: str) -> Any:
        if not types:
            return _plain(value)
        if isinstance(value, str) and "float" in types and "str" not in types:
            try:
                value = float(value)
            except ValueError:
                pass
        ok = (
            (value is None and "None" in types)
            or (isinstance(value, bool) and "bool" in types)
            or (_is_number(value) and isinstance(value, int) and bool({"int", "float"} & types))
            or (isinstance(value, float) and "float" in types)
            or (isinstance(value, str) and "str" in types)
        )
        if not ok:
            expected = " or ".join(sorted("null" if t == "None" else t for t in types))
            raise self.err(f"must be {expected}, got {_type_name(value)} {value!r}", spec, key, path)
        if isinstance(value, int) and not isinstance(value, bool) and "int" not in types:
            value = float(value)
        return value

    def sampler(self, value: Any, top: Mapping[str, Any]) -> dict[str, Any]:
        spec = self.mapping(value, top, "sampler", "sampler")
        kind = spec.get("type")
        if kind not in SAMPLERS:
            raise self.err(
                f"unknown sampler {kind!r}; expected one of: {', '.join(SAMPLERS)}", spec, "type", "sampler.type"
            )
        self.known_keys(spec, ("type", *SAMPLERS[kind]), "sampler.", f"a {kind} sampler")
        out: dict[str, Any] = {"type": kind}
        if "n_startup_trials" in spec:
            n = spec["n_startup_trials"]
            if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
                raise self.err(f"must be an int >= 0, got {n!r}", spec, "n_startup_trials", "sampler.n_startup_trials")
            out["n_startup_trials"] = n
        return out

    def starting_points(self, value: Any, top: Mapping[str, Any], space: SearchSpace) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.err(
                f"must be a list of mappings, got {_type_name(value)}", top, "starting_points", "starting_points"
            )
        points = []
        for i, raw in enumerate(value):
            prefix = f"starting_points[{i}]"
            point = self.mapping(raw, top, "starting_points", prefix)
            for key in point:
                self.note(point, key, f"{prefix}.{key}")
                if key not in space.params:
                    raise self.err(
                        f"unknown param {key!r}; a starting point sets params by name: {', '.join(space.params)}",
                        point,
                        key,
                        f"{prefix}.{key}",
                    )
            values = {k: _coerce(_plain(v), space.params[k].target) for k, v in point.items()}
            self.check_point(values, point, prefix, space)
            points.append(values)
        return points

    def check_point(self, values: dict[str, Any], point: Mapping[str, Any], prefix: str, space: SearchSpace) -> None:
        known: dict[str, Any] = {}  # params whose value this point settles
        unknown: set[str] = set()  # params the sampler still decides
        for param in space.params.values():
            path = f"{prefix}.{param.name}"
            parent = param.when.param if param.when is not None else None
            if parent in unknown:
                if param.name in values:
                    raise self.err(
                        f"{param.name!r} depends on {parent!r}; set {parent!r} in this starting point too",
                        point,
                        param.name,
                        path,
                    )
                unknown.add(param.name)
                continue
            active = param.when is None or param.when.holds(known)
            if param.name not in values:
                if active and param.type == "fixed":
                    known[param.name] = param.value
                elif active:
                    unknown.add(param.name)
                continue
            value = values[param.name]
            if not active:
                has = f"has {parent}={known[parent]!r}" if parent in known else f"leaves {parent!r} inactive"
                raise self.err(
                    f"is only sampled when {parent} {_describe_condition(param.when)}, but this starting point {has}",
                    point,
                    param.name,
                    path,
                )
            if not param.contains(value):
                raise self.err(
                    f"{value!r} is outside the param's distribution {param.describe()}", point, param.name, path
                )
            known[param.name] = value


def _exclusive(a: Param, b: Param) -> bool:
    if a.when is None or b.when is None or a.when.param != b.when.param or a.when.op != "in" or b.when.op != "in":
        return False
    return not any(_same(x, y) for x in a.when.value for y in b.when.value)


def _describe_condition(cond: Condition) -> str:
    if cond.op == "in":
        return f"is in {list(cond.value)}"
    return {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[cond.op] + f" {cond.value}"
