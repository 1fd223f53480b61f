"""``autoembed search``: an Optuna study whose trials run as Ray Tune trials, pruned on validation recall.

Optuna samples and stores: every trial is asked from the study, its config sampled from the space and
stored on it. Ray Tune runs: each trial is a Tune trial on its own slice (CPUs or a GPU fraction). This module opens
the study, prepares the data once and picks an executor; the coordinator and the executors live below it
(:mod:`autoembed.trials`, :mod:`autoembed.raytune`).

All study writes happen in the driver, so workers need no database access and SQLite is safe.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.model import backbone_info
from autoembed.plan import Plan, make_plan
from autoembed.progress import SearchDisplay
from autoembed.provenance import data_provenance, device_description, model_provenance, versions
from autoembed.screening import Screening, screen_models
from autoembed.space import SearchSpace
from autoembed.study import (
    count_trials,
    fail_interrupted,
    finished_count,
    kept_model_path,
    make_storage,
    mask_url,
    storage_folder,
)
from autoembed.training import model_key, prepare
from autoembed.trials import Coordinator, Executor, InlineExecutor, SearchOptions

__all__ = ["SearchInterrupted", "SearchOptions", "SearchResult", "run_search"]


class SearchInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the search; its running trials are marked FAIL, the finished ones kept.

    A KeyboardInterrupt, so that no ``except Exception`` in training, Ray Tune or Optuna swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        self.failed = 0


# the signals the running search received (its handler's record: a library may turn SearchInterrupted into a plain
# KeyboardInterrupt on the way up)
_received: list[int] = []


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], None]]:
    """Turn the first SIGINT/SIGTERM into :class:`SearchInterrupted`; ignore repeats while the search cleans up.

    Yields ``arm``, which installs the handlers again: ``ray.init`` puts its own SIGTERM handler (a native stack
    dump, then abort) in place of ours, so the search re-arms once Ray has started.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    caught = (signal.SIGINT, signal.SIGTERM)

    def handler(signum, frame):
        for s in caught:
            signal.signal(s, signal.SIG_IGN)
        _received.append(signum)
        raise SearchInterrupted(signum)

    def arm() -> None:
        for s in caught:
            signal.signal(s, handler)

    previous = {s: signal.getsignal(s) for s in caught}
    arm()
    try:
        yield arm
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


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
    best_model: str | None = None  # where the search kept the best trial's model (autoembed export --model copies it)
    not_started: int = 0  # of the failed trials, those this driver did not start for the time left (--timeout)


def base_config(options: SearchOptions, metric: str | None = None) -> TrialConfig:
    data = {"model": options.model, **{k: dict(v) for k, v in options.base.items()}}
    section = data.setdefault("data", {})
    section.update({"train": options.train, "val": options.val, "corpus": options.corpus})
    data.setdefault("training", {}).setdefault("seed", options.seed)
    if metric:
        # every trial measures the space's metric; the default (recall@10) need not fit a base's evaluation.k
        data.setdefault("evaluation", {})["metric"] = metric
    return TrialConfig.from_dict(data, file=options.config_file)


def stored_plan(options: SearchOptions) -> Plan | None:
    """The plan of the study if it exists already (an empty one for a study made before plans), else None."""
    url = options.storage_url
    folder = storage_folder(url)
    if folder is not None and not Path(url[len("sqlite:///") :]).is_file():
        return None
    try:
        study = optuna.load_study(study_name=options.study, storage=make_storage(url))
    except KeyError:
        return None
    return Plan.from_dict(study.user_attrs.get("plan") or {})


def open_study(options: SearchOptions, space: SearchSpace, hidden_size: int | dict[str, int], plan: Plan) -> tuple[optuna.Study, bool]:
    # a starting point the backbone cannot take must fail before the study exists: a study created without
    # its starting points would be resumed without them
    starting = space.starting_params(hidden_size=hidden_size)
    storage = make_storage(options.storage_url)
    sampler = space.build_sampler(seed=options.seed, n_workers=options.workers)
    try:
        # exactly one of several drivers started together creates the study, and only it enqueues the starting points
        study = optuna.create_study(
            study_name=options.study, storage=storage, direction="maximize", sampler=sampler, pruner=space.build_pruner()
        )
        resumed = False
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=options.study, storage=storage, sampler=sampler, pruner=space.build_pruner())
        resumed = True
    objective = study.user_attrs.get("objective")
    if resumed and objective and objective != space.metric:
        raise AutoembedError(
            f"study {options.study!r} optimizes {objective}, but the space's metric is {space.metric}; use another --study",
            key="space",
        )
    if not resumed:
        study.set_user_attr("objective", space.metric)
        # intermediate values, pruning and the evaluation grid count training pairs seen: trials of any batch size or
        # schedule are compared at equal compute (a study made before this keeps its optimizer steps)
        study.set_user_attr("fidelity", "pairs")
        study.set_user_attr("plan", plan.to_dict())
        for params in starting:
            study.enqueue_trial(params, skip_if_exists=True)
    return study, resumed


def driver_provenance(
    options: SearchOptions, space: SearchSpace, base: TrialConfig, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What this driver searches with: base model and data hashes, space, seed, versions."""
    return {
        "model": options.model,
        "base_model": model_provenance(options.model),
        "data": data_provenance(base),
        "space": {"path": options.space, "name": space.name, "file": space.file},
        "storage": mask_url(options.storage_url),
        "seed": options.seed,
        "versions": versions(),
        "device": device_description("cuda" if options.gpus_per_trial > 0 else "cpu"),
        **(extra or {}),
    }


def record_provenance(study: optuna.Study, provenance: dict[str, Any], space: SearchSpace) -> None:
    """The study keeps its first driver's provenance; every trial keeps its own driver's (see Coordinator)."""
    if "provenance" not in study.user_attrs:
        study.set_user_attr("provenance", provenance)
        study.set_user_attr("space_summary", space.describe())


def executor(name: str) -> Executor:
    """The executor named by ``--executor``; Ray is imported only when it is used."""
    if name == "inline":
        return InlineExecutor()
    from autoembed.raytune import RayExecutor

    return RayExecutor()


def _scratch_trial() -> optuna.Trial:
    """A trial of a throwaway in-memory study, without Optuna's "A new study created" line for it."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study().ask()
    finally:
        optuna.logging.set_verbosity(verbosity)


def run_search(options: SearchOptions, *, console=None, live: bool = True) -> SearchResult:
    """Run (or join, or resume) the study until it holds ``options.trials`` finished trials or time runs out.

    SIGINT and SIGTERM raise :class:`SearchInterrupted` once this driver's running trials are marked FAIL.
    """
    _received.clear()
    with _stop_on_signals() as arm:
        return _run_search(options, console=console, live=live, arm=arm)


def _run_search(options: SearchOptions, *, console=None, live: bool = True, arm: Callable[[], None]) -> SearchResult:
    started = time.monotonic()
    space = SearchSpace.from_yaml_file(options.space)
    base = base_config(options, space.metric)
    info = backbone_info(options.model if space.model_param is None else space.model_param.choices[0])
    display = SearchDisplay(console, options, live=live, metric=space.metric)
    runner = executor(options.executor)
    # a resource request no node can meet, bad data and bad samples all surface before the study exists: a study
    # created by a failed start would be resumed later without its starting points
    runner.check(options, display)
    try:
        arm()  # after Ray's start, which replaces the SIGTERM handler
        plan = stored_plan(options)
        if plan is None:  # a new study: measure and plan (a study that exists keeps the plan its trials ran with)
            screening = None
            if space.model_param is not None:
                display.note(f"screening {len(space.model_param.choices)} base models untrained on a validation sample ...")
                screening = screen_models(space, base)
                info = backbone_info(screening.kept[0])
            if options.timeout:
                display.note("planning the budget: timing a few training steps and an encoding pass ...")
            plan_base = base if screening is None else base.replace(model=screening.kept[0])
            plan = make_plan(space, plan_base, info, timeout=options.timeout, base_sections=options.base)
            if screening is not None:
                plan.screen = screening.to_dict()
        elif space.model_param is not None and not plan.screen:
            raise AutoembedError(f"study {options.study!r} was made without a 'model' param; its space cannot search the base model now", key="space")
        base = plan.apply(base, space)
        if plan.screen:
            display.note(Screening.from_dict(plan.screen).line())
        if plan.line:
            display.note(plan.line)
        for warning in plan.warnings:
            display.note(f"warning: {warning}")
        # the hidden size of each base model the search may use (one, unless the space searches the model)
        models = list(space.model_param.choices) if space.model_param is not None else [base.model]
        sizes = {m: backbone_info(m).hidden_size for m in models}
        hidden: int | dict[str, int] = sizes if space.model_param is not None else sizes[base.model]
        display.note("reading data and tokenizing once for the whole study ...")
        probe = space.sample(_scratch_trial(), base, hidden_size=hidden)
        mine, pca = space.largest("data.hard_negatives") or 0, "pca" in space.possible("architecture.projection_init")
        # one preparation per base model (tokenizer, mined negatives and PCA are the model's own)
        each = {model_key(m): prepare(probe.replace(model=m), mine=mine, pca=pca) for m in models}
        prepared = each if space.model_param is not None else next(iter(each.values()))
        dataset = next(iter(each.values())).dataset
        extra = {"extra_train": {"rows": dataset.extra_rows, "dropped_as_validation_queries": dataset.extra_dropped}} if base.data.extra_train else None
        if space.model_param is not None:
            extra = {**(extra or {}), "models": {m: model_provenance(m) for m in models}}
        provenance = driver_provenance(options, space, base, extra)
        study, resumed = open_study(options, space, hidden, plan)
        n_failed = fail_interrupted(study)
        if resumed or n_failed:
            display.note(
                f"joining study {options.study!r}: {finished_count(study)} finished trials kept"
                + (f", {n_failed} interrupted trials marked FAIL (their driver is gone)" if n_failed else "")
            )
        record_provenance(study, provenance, space)
        coordinator = Coordinator(
            study, space, base, options, hidden, display, provenance=provenance, measured=plan.measured, started=started
        )
        display.begin(study)
        reason = "the search stopped before this trial ended"
        try:
            if finished_count(study) >= options.trials:
                display.note(f"study already has {finished_count(study)} finished trials (--trials {options.trials}); nothing to run")
            else:
                runner.run(coordinator, prepared)
        except SearchInterrupted as exc:
            reason = f"interrupted by {exc.name}; rerun the search to resume"
            exc.failed = coordinator.running()
            raise
        except KeyboardInterrupt:
            if not _received:
                reason = "interrupted by the user; rerun the search to resume"
                raise
            # our handler's SearchInterrupted came back as a plain KeyboardInterrupt (a library caught and re-raised it)
            interrupted = SearchInterrupted(_received[0])
            reason = f"interrupted by {interrupted.name}; rerun the search to resume"
            interrupted.failed = coordinator.running()
            raise interrupted from None
        finally:
            coordinator.close(reason)
            display.end()
    finally:
        runner.close()  # also when planning, reading the data or opening the study failed
    # COUNT queries: loading every trial of a study of thousands takes seconds
    counts = {state.name: count_trials(study, (state,)) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
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
        best_model=kept_model_path(best),
        not_started=coordinator.not_started,
    )
