"""``autoembed search``: an Optuna study whose trials run as Ray Tune trials, pruned on validation recall.

Optuna samples and stores: every trial is asked from the study, its config sampled from the space and
stored on it. Ray Tune runs: each trial is a Tune trial on its own slice (CPUs or a GPU fraction). The two
meet in :class:`StudySearcher` (Tune asks it for the next config; it asks Optuna) and
:class:`PrunerScheduler` (Tune hands it every result; it reports it to the Optuna trial and returns STOP
when Optuna's pruner says prune). Ray's stock ``OptunaSearch`` fixes a ``NopPruner``; this does not.

All study writes happen in the driver, so workers need no database access and SQLite is safe.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.model import backbone_info
from autoembed.progress import SearchDisplay
from autoembed.recipe import data_provenance, device_description, model_provenance, versions
from autoembed.space import SearchSpace
from autoembed.study import (
    TrialRecorder,
    default_storage,
    fail_interrupted,
    finished_count,
    make_storage,
    mask_text,
    mask_url,
    validate_study_name,
)
from autoembed.training import Prepared, prepare, train
from autoembed.yamlio import load_yaml

EXECUTORS = ("ray", "inline")


@dataclass
class SearchOptions:
    """Everything ``autoembed search`` takes; a study YAML may set the same keys as the flags."""

    study: str
    model: str | None = None
    train: str | None = None
    val: str | None = None
    corpus: str | None = None
    space: str = "search_spaces/default.yaml"
    trials: int = 20
    timeout: float | None = None
    storage: str | None = None
    workers: int = 1
    gpus_per_trial: float = 0.0
    cpus_per_trial: float | None = None
    ray_address: str | None = None
    executor: str = "ray"
    seed: int = 0
    base: dict[str, Any] = field(default_factory=dict)  # extra config keys, e.g. {"data": {"max_seq_length": 64}}
    max_failures: int | None = None
    config_file: str | None = None

    @classmethod
    def from_sources(cls, study_file: str | None, **flags: Any) -> SearchOptions:
        """A study YAML (if given) overlaid by the command-line flags that were set."""
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "config_file"}
        if study_file:
            data = load_yaml(study_file)
            for key, value in data.items():
                name = key.replace("-", "_")
                if name == "name":
                    name = "study"
                if name not in fields:
                    raise AutoembedError(
                        f"unknown key {key!r}; expected one of: {', '.join(['name', *fields])}", file=study_file, line=data.line_of(key), key=key
                    )
                values[name] = value
            values["config_file"] = study_file
        values.update({k: v for k, v in flags.items() if v is not None})
        if not values.get("study"):
            if study_file:
                values["study"] = Path(study_file).stem
            else:
                raise AutoembedError("name the study: --study NAME (or a study YAML with a name)", key="study")
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        validate_study_name(self.study)
        where = {"file": self.config_file} if self.config_file else {}
        for name in ("model", "train"):
            if not getattr(self, name):
                raise AutoembedError(f"--{name} is required (or {name}: in the study YAML)", key=name, **where)
        if not isinstance(self.trials, int) or self.trials < 1:
            raise AutoembedError(f"must be an integer >= 1, got {self.trials!r}", key="trials", **where)
        if not isinstance(self.workers, int) or self.workers < 1:
            raise AutoembedError(f"must be an integer >= 1, got {self.workers!r}", key="workers", **where)
        if self.executor not in EXECUTORS:
            raise AutoembedError(f"must be one of {', '.join(EXECUTORS)}, got {self.executor!r}", key="executor", **where)
        if self.timeout is not None and self.timeout <= 0:
            raise AutoembedError(f"must be > 0 seconds, got {self.timeout!r}", key="timeout", **where)
        if self.gpus_per_trial < 0 or (self.cpus_per_trial is not None and self.cpus_per_trial <= 0):
            raise AutoembedError("--gpus-per-trial must be >= 0 and --cpus-per-trial > 0", key="resources", **where)
        if not isinstance(self.base, dict):
            raise AutoembedError("must be a mapping of config sections", key="base", **where)

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.study)

    def cpus(self) -> float:
        if self.cpus_per_trial is not None:
            return self.cpus_per_trial
        return max(1, (os.cpu_count() or 1) // self.workers)


@dataclass
class SearchResult:
    study_name: str
    storage: str  # masked
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    counts: dict[str, int]
    seconds: float
    trial_seconds: float


def base_config(options: SearchOptions, metric: str | None = None) -> TrialConfig:
    data = {"model": options.model, **{k: dict(v) for k, v in options.base.items()}}
    section = data.setdefault("data", {})
    section.update({"train": options.train, "val": options.val, "corpus": options.corpus})
    data.setdefault("training", {}).setdefault("seed", options.seed)
    if metric:
        # every trial measures the space's metric; the default (recall@10) need not fit a base's evaluation.k
        data.setdefault("evaluation", {})["metric"] = metric
    return TrialConfig.from_dict(data, file=options.config_file)


def open_study(options: SearchOptions, space: SearchSpace, hidden_size: int) -> tuple[optuna.Study, bool]:
    # a starting point the backbone cannot take must fail before the study exists: a study created without
    # its starting points would be resumed without them
    starting = space.starting_params(hidden_size=hidden_size)
    storage = make_storage(options.storage_url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    resumed = options.study in existing
    study = optuna.create_study(
        study_name=options.study,
        storage=storage,
        direction="maximize",
        sampler=space.build_sampler(seed=options.seed, n_workers=options.workers),
        pruner=space.build_pruner(),
        load_if_exists=True,
    )
    objective = study.user_attrs.get("objective")
    if resumed and objective and objective != space.metric:
        raise AutoembedError(
            f"study {options.study!r} optimizes {objective}, but the space's metric is {space.metric}; use another --study",
            key="space",
        )
    if not resumed:
        study.set_user_attr("objective", space.metric)
        for params in starting:
            study.enqueue_trial(params, skip_if_exists=True)
    return study, resumed


def record_provenance(study: optuna.Study, options: SearchOptions, space: SearchSpace, base: TrialConfig) -> None:
    study.set_user_attr(
        "provenance",
        {
            "model": options.model,
            "base_model": model_provenance(options.model),
            "data": data_provenance(base),
            "space": {"path": options.space, "name": space.name},
            "storage": mask_url(options.storage_url),
            "seed": options.seed,
            "versions": versions(),
            "device": device_description("cuda" if options.gpus_per_trial > 0 else "cpu"),
        },
    )
    study.set_user_attr("space_summary", space.describe())


class Coordinator:
    """The driver's view of the running trials: Optuna trials, their recorders and the display."""

    def __init__(self, study: optuna.Study, space: SearchSpace, base: TrialConfig, options: SearchOptions, hidden_size: int, display: SearchDisplay):
        self.study, self.space, self.base, self.options = study, space, base, options
        self.hidden_size = hidden_size
        self.display = display
        self.recorders: dict[str, TrialRecorder] = {}
        self.started = time.monotonic()
        self.failures = 0
        self.trial_seconds = 0.0
        self.target = options.trials
        self.max_failures = options.max_failures if options.max_failures is not None else max(5, options.trials)

    def threads(self) -> int:
        return max(1, int(self.options.cpus()))

    def out_of_time(self) -> bool:
        return self.options.timeout is not None and time.monotonic() - self.started >= self.options.timeout

    def running(self) -> int:
        return sum(not r.done for r in self.recorders.values())

    def wants_more(self) -> bool:
        return finished_count(self.study) + self.running() < self.target

    def should_finish(self) -> bool:
        return self.out_of_time() or self.failures >= self.max_failures or (not self.wants_more() and self.running() == 0)

    def start_trial(self, key: str) -> tuple[TrialRecorder, TrialConfig] | None:
        """Ask Optuna for a trial and sample its config; a config that cannot be built fails that trial alone."""
        trial = self.study.ask()
        try:
            config = self.space.sample(trial, self.base, hidden_size=self.hidden_size)
            config = config.replace(**{"training.threads": self.threads()})
        except AutoembedError as exc:
            self.study.tell(trial, state=TrialState.FAIL)
            self.study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", str(exc))
            self.failures += 1
            self.display.finished(trial.number, "FAIL", None, str(exc))
            return None
        recorder = TrialRecorder(self.study, trial, config, self.space.metric)
        recorder.started_at = time.monotonic()
        self.recorders[key] = recorder
        self.display.started(trial.number, trial.params)
        return recorder, config

    def on_result(self, key: str, step: int, metrics: dict[str, float], total_steps: int) -> bool:
        """Record an evaluation; True means stop the trial now."""
        recorder = self.recorders[key]
        if recorder.pruned or recorder.done:
            return True
        recorder.report(step, metrics)
        self.display.progress(recorder.number, step, total_steps, metrics.get(self.space.metric))
        # the last evaluation is the trial's value: it completes, whatever the pruner would say
        return step < total_steps and recorder.should_prune()

    def on_end(self, key: str, outcome: dict[str, Any]) -> None:
        recorder = self.recorders.get(key)
        if recorder is None or recorder.done:
            return
        seconds = float(outcome.get("train_seconds") or (time.monotonic() - recorder.started_at))
        self.trial_seconds += seconds
        extra = {k: outcome[k] for k in ("embedding_dim", "steps", "total_steps") if k in outcome}
        if outcome.get("fail_reason"):
            self.failures += 1
            state = recorder.fail(mask_text(str(outcome["fail_reason"]), self.options.storage_url), seconds=seconds)
        else:
            state = recorder.finish(
                value=outcome.get("value"), step=outcome.get("value_step"), metrics=outcome.get("metrics"), seconds=seconds, extra=extra
            )
        self.display.finished(recorder.number, state.name, outcome.get("value"), outcome.get("fail_reason"))
        self.display.best(self.study)

    def abandon(self, reason: str) -> None:
        for recorder in self.recorders.values():
            if not recorder.done:
                recorder.fail(reason)


def _outcome(result, config: TrialConfig, hidden_size: int) -> dict[str, Any]:
    from autoembed.model import output_dim

    return {
        "value": result.value,
        "value_step": result.value_step,
        "metrics": result.metrics,
        "train_seconds": result.seconds,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "embedding_dim": output_dim(config, hidden_size),
    }


def _failure(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        text = "out of memory: " + text
    return text


class _CallbackReporter:
    """Training's reporter for the inline executor: evaluations go straight to the coordinator."""

    def __init__(self, coordinator: Coordinator, key: str):
        self.coordinator, self.key = coordinator, key
        self.total = 0
        self.stop = False

    def start(self, total_steps: int) -> None:
        self.total = total_steps

    def report(self, step: int, metrics: dict[str, float]) -> None:
        self.stop = self.coordinator.on_result(self.key, step, metrics, self.total)

    def should_stop(self) -> bool:
        return self.stop


def run_inline(coordinator: Coordinator, prepared: Prepared) -> None:
    """Trials one after another in this process: for debugging, and as the reference the Ray run matches."""
    n = 0
    while not coordinator.should_finish():
        key = f"inline-{n}"
        n += 1
        started = coordinator.start_trial(key)
        if started is None:
            continue
        recorder, config = started
        reporter = _CallbackReporter(coordinator, key)
        t0 = time.perf_counter()
        try:
            result = train(config, prepared=prepared, reporter=reporter)
        except KeyboardInterrupt:
            coordinator.abandon("interrupted by the user")
            raise
        except Exception as exc:  # a failing trial fails alone
            coordinator.on_end(key, {"fail_reason": _failure(exc), "train_seconds": time.perf_counter() - t0})
            continue
        coordinator.on_end(key, _outcome(result, config, coordinator.hidden_size))


def _scratch_trial() -> optuna.Trial:
    """A trial of a throwaway in-memory study, without Optuna's "A new study created" line for it."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study().ask()
    finally:
        optuna.logging.set_verbosity(verbosity)


def run_search(options: SearchOptions, *, console=None, live: bool = True) -> SearchResult:
    """Run (or resume) the study until it holds ``options.trials`` finished trials or time runs out."""
    started = time.monotonic()
    space = SearchSpace.from_yaml_file(options.space)
    base = base_config(options, space.metric)
    info = backbone_info(options.model)
    display = SearchDisplay(console, options, live=live)
    # data and sampling errors surface before the study exists: a study created by a failed start would be
    # resumed later without its starting points
    display.note("reading data and tokenizing once for the whole study ...")
    probe = space.sample(_scratch_trial(), base, hidden_size=info.hidden_size)
    prepared = prepare(probe, mine=space.largest("data.hard_negatives") or 0)
    study, resumed = open_study(options, space, info.hidden_size)
    if resumed:
        n_failed = fail_interrupted(study)
        display.note(f"resuming study {options.study!r}: {finished_count(study)} finished trials kept" + (f", {n_failed} interrupted trials marked FAIL" if n_failed else ""))
    record_provenance(study, options, space, base)
    coordinator = Coordinator(study, space, base, options, info.hidden_size, display)
    display.begin(study)
    try:
        if finished_count(study) >= options.trials:
            display.note(f"study already has {finished_count(study)} finished trials (--trials {options.trials}); nothing to run")
        elif options.executor == "inline":
            run_inline(coordinator, prepared)
        else:
            from autoembed.raytune import run_ray

            run_ray(coordinator, prepared)
    except KeyboardInterrupt:
        coordinator.abandon("interrupted by the user")
        raise
    finally:
        coordinator.abandon("the search stopped before this trial ended")
        display.end()
    counts = {state.name: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in study.get_trials(deepcopy=False):
        if t.state.name in counts:
            counts[t.state.name] += 1
    best = None
    try:
        best = study.best_trial
    except ValueError:
        pass
    return SearchResult(
        study_name=options.study,
        storage=mask_url(options.storage_url),
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=best.params if best else {},
        counts=counts,
        seconds=time.monotonic() - started,
        trial_seconds=coordinator.trial_seconds,
    )
