"""``autoembed search``: an Optuna study whose trials run as Ray Tune trials, pruned on validation recall.

Optuna samples and stores: every trial is asked from the study, its config sampled from the space and
stored on it. Ray Tune runs: each trial is a Tune trial on its own slice (CPUs or a GPU fraction). This module opens
the study, prepares the data once and picks an executor; the coordinator and the executors live below it
(:mod:`autoembed.trials`, :mod:`autoembed.raytune`).

All study writes happen in the driver, so workers need no database access and SQLite is safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.model import backbone_info
from autoembed.progress import SearchDisplay
from autoembed.provenance import data_provenance, device_description, model_provenance, versions
from autoembed.space import SearchSpace
from autoembed.study import fail_interrupted, finished_count, make_storage, mask_url
from autoembed.training import prepare
from autoembed.trials import Coordinator, Executor, InlineExecutor, SearchOptions

__all__ = ["SearchOptions", "SearchResult", "run_search"]


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


def record_provenance(study: optuna.Study, options: SearchOptions, space: SearchSpace, base: TrialConfig, extra: dict[str, Any] | None = None) -> None:
    study.set_user_attr(
        "provenance",
        {
            "model": options.model,
            "base_model": model_provenance(options.model),
            "data": data_provenance(base),
            "space": {"path": options.space, "name": space.name, "file": space.file},
            "storage": mask_url(options.storage_url),
            "seed": options.seed,
            "versions": versions(),
            "device": device_description("cuda" if options.gpus_per_trial > 0 else "cpu"),
            **(extra or {}),
        },
    )
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
    prepared = prepare(probe, mine=space.largest("data.hard_negatives") or 0, pca="pca" in space.possible("architecture.projection_init"))
    study, resumed = open_study(options, space, info.hidden_size)
    if resumed:
        n_failed = fail_interrupted(study)
        display.note(f"resuming study {options.study!r}: {finished_count(study)} finished trials kept" + (f", {n_failed} interrupted trials marked FAIL" if n_failed else ""))
    dataset = prepared.dataset
    extra = {"extra_train": {"rows": dataset.extra_rows, "dropped_as_validation_queries": dataset.extra_dropped}} if base.data.extra_train else None
    record_provenance(study, options, space, base, extra)
    coordinator = Coordinator(study, space, base, options, info.hidden_size, display)
    display.begin(study)
    try:
        if finished_count(study) >= options.trials:
            display.note(f"study already has {finished_count(study)} finished trials (--trials {options.trials}); nothing to run")
        else:
            executor(options.executor).run(coordinator, prepared)
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
