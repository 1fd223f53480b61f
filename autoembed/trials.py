"""Running a study's trials: the coordinator in the driver, the trial outcome, and the executors' interface.

:class:`Coordinator` is the driver's view of the running trials: it asks Optuna for each trial, samples its
config, records every evaluation through a :class:`~autoembed.study.TrialRecorder` and asks the pruner. An
:class:`Executor` decides where trials run: :class:`InlineExecutor` here (one after another, in this process),
``RayExecutor`` in :mod:`autoembed.raytune` (Ray Tune trials on resource slices). Both feed the same
coordinator, so both leave the same records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import statistics
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from autoembed.config import TrialConfig, embedding_dim
from autoembed.errors import AutoembedError
from autoembed.export import export_model
from autoembed.fileio import atomic_write_json, follow_umask
from autoembed.plan import predict_seconds
from autoembed.progress import SearchDisplay
from autoembed.provenance import device_description
from autoembed.runs import metrics_record, save_model, staged_folder
from autoembed.space import SearchSpace
from autoembed.study import (
    DECIDED,
    HEARTBEAT_SECONDS,
    STUDIES_DIR,
    Heartbeat,
    StudyCache,
    TrialRecorder,
    claimed_count,
    default_storage,
    deferred,
    fail_interrupted,
    mask_text,
    storage_folder,
    suspect_ids,
    validate_study_name,
)
from autoembed.training import Prepared, prepared_for, train
from autoembed.yamlio import load_yaml

# the executors run_search can pick; each is an :class:`Executor` (``inline`` here, ``ray`` in raytune.py)
EXECUTORS = ("ray", "inline")
log = logging.getLogger(__name__)

# how late other drivers' trials may show in this driver's listings of the study (see StudyCache.max_staleness)
LISTING_STALENESS_SECONDS = 1.0

# how far past --timeout, as a share of it, a trial may be predicted to end and still start (Coordinator.late): about
# the prediction's error (session 13 measured 12% long), so a trial that fits in all likelihood is not refused for it
LATE_ALLOWANCE = 0.1


@dataclass
class SearchOptions:
    """Everything ``autoembed search`` takes; a study YAML may set the same keys as the flags."""

    study: str
    model: str | None = None
    train: str | None = None
    val: str | None = None
    corpus: str | None = None
    space: str = "default"  # a shipped space's name or a YAML path (autoembed.space.resolve_space)
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
    # where the study's own files go (Ray's scratch space); default: beside an SQLite study file, else ./studies
    workdir: str | None = None
    # the models of the study's best N complete trials stay on disk (under workdir/STUDY/models), so
    # `autoembed export --model` can hand over the best one without training it again; 0 keeps none
    keep_models: int = 1
    # with --timeout, a trial predicted to end over LATE_ALLOWANCE of it after it is not started (once the study has a
    # complete trial), so the search ends about within its time; True starts trials until the timeout whatever their
    # length (Optuna's timeout)
    start_late_trials: bool = False
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
        where = {"file": self.config_file} if self.config_file else {}
        # a study YAML can hold any type: check it before a comparison or a path join raises a TypeError
        kinds = {"study": str, "model": str, "train": str, "val": str, "corpus": str, "space": str, "storage": str, "ray_address": str,
                 "executor": str, "seed": int, "trials": int, "workers": int, "max_failures": int, "timeout": (int, float),
                 "keep_models": int,
                 "gpus_per_trial": (int, float), "cpus_per_trial": (int, float)}
        for name, kind in kinds.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                expected = "a number" if kind == (int, float) else ("an integer" if kind is int else "a string")
                raise AutoembedError(f"must be {expected}, got {value!r}", key=name, **where)
        validate_study_name(self.study)
        for name in ("model", "train"):
            if not getattr(self, name):
                raise AutoembedError(f"--{name} is required (or {name}: in the study YAML)", key=name, **where)
        if not isinstance(self.trials, int) or self.trials < 1:
            raise AutoembedError(f"must be an integer >= 1, got {self.trials!r}", key="trials", **where)
        if self.keep_models < 0:
            raise AutoembedError(f"must be an integer >= 0, got {self.keep_models!r}", key="keep_models", **where)
        if not isinstance(self.workers, int) or self.workers < 1:
            raise AutoembedError(f"must be an integer >= 1, got {self.workers!r}", key="workers", **where)
        if self.executor not in EXECUTORS:
            raise AutoembedError(f"must be one of {', '.join(EXECUTORS)}, got {self.executor!r}", key="executor", **where)
        if self.timeout is not None and self.timeout <= 0:
            raise AutoembedError(f"must be > 0 seconds, got {self.timeout!r}", key="timeout", **where)
        for name in ("gpus_per_trial", "cpus_per_trial", "timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise AutoembedError(f"must be a number, got {value!r}", key=name, **where)
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise AutoembedError(
                f"must be a fraction of one GPU (<= 1) or a whole number of GPUs, got {self.gpus_per_trial!r}",
                key="gpus_per_trial",
                **where,
            )
        if self.gpus_per_trial < 0 or (self.cpus_per_trial is not None and self.cpus_per_trial <= 0):
            raise AutoembedError("--gpus-per-trial must be >= 0 and --cpus-per-trial > 0", key="resources", **where)
        if not isinstance(self.base, dict):
            raise AutoembedError("must be a mapping of config sections", key="base", **where)
        if not isinstance(self.start_late_trials, bool):
            raise AutoembedError(f"must be true or false, got {self.start_late_trials!r}", key="start_late_trials", **where)

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.study)

    @property
    def workdir_path(self) -> Path:
        if self.workdir:
            return Path(self.workdir)
        return storage_folder(self.storage_url) or STUDIES_DIR

    @property
    def models_dir(self) -> Path:
        """Where the kept trial models go: ``trial-N`` folders under ``workdir/STUDY/models``."""
        return self.workdir_path / self.study / "models"

    def cpus(self) -> float:
        if self.cpus_per_trial is not None:
            return self.cpus_per_trial
        return max(1, (os.cpu_count() or 1) // self.workers)



class Coordinator:
    """The driver's view of the running trials: Optuna trials, their recorders and the display."""

    def __init__(
        self,
        study: optuna.Study,
        space: SearchSpace,
        base: TrialConfig,
        options: SearchOptions,
        hidden_size: int | dict[str, int],
        display: SearchDisplay,
        *,
        provenance: dict[str, Any] | None = None,
        measured: dict[str, float] | None = None,
        started: float | None = None,
    ):
        self.study, self.space, self.base, self.options = study, space, base, options
        self.hidden_size = hidden_size
        self.display = display
        # what this driver trains on (data and model hashes, versions): kept on each of its trials, since drivers
        # and resumed runs of one study may differ
        self.provenance = provenance
        self.heartbeat = Heartbeat(study._storage)
        if isinstance(study._storage, StudyCache):
            # other drivers' trials may show up to a second late in the pruner's and TPE's listings; this driver's own
            # are there at once (see StudyCache.max_staleness)
            study._storage.max_staleness = LISTING_STALENESS_SECONDS
            # evaluations and samples are written by a writer thread while the driver goes on (StudyCache.start_writer)
            study._storage.start_writer()
        self.fidelity = study.user_attrs.get("fidelity", "steps")
        self.last_sweep = -float("inf")
        self.suspects = False
        self.recorders: dict[str, TrialRecorder] = {}
        # --timeout counts from the search's start (set-up included), as the user's clock does
        self.started = time.monotonic() if started is None else started
        # the budget plan's measurements (Plan.measured), for a trial's predicted length (late); what this driver's
        # complete trials took over their predictions, which scales the next prediction
        self.measured = measured or {}
        self.overruns: list[float] = []
        self.closing = False  # a trial was not started for the time left: start no more
        self.not_started = 0  # trials refused so (FAIL in the study, with the reason)
        self.failures = 0
        self.trial_seconds = 0.0
        self.target = options.trials
        self.max_failures = options.max_failures if options.max_failures is not None else max(5, options.trials)

    def hidden_for(self, config: TrialConfig) -> int:
        """The hidden size of ``config``'s base model (``hidden_size`` maps each model when the space searches it)."""
        return self.hidden_size[config.model] if isinstance(self.hidden_size, dict) else self.hidden_size

    def threads(self) -> int:
        return max(1, int(self.options.cpus()))

    def out_of_time(self) -> bool:
        if self.closing:
            return True
        if self.options.timeout is None or time.monotonic() - self.started < self.options.timeout:
            return False
        # past the timeout, which counts the set-up (Ray, the plan, mining): this driver still starts one trial while the
        # study has no complete one, so a search ends with a model (until session 12 the clock began after the set-up)
        return bool(self.recorders) or bool(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def predicted(self, config: TrialConfig) -> float | None:
        """How long a trial of ``config`` should take (predict_seconds), scaled by the median of what this driver's
        complete trials took over their predictions; None without the plan's measurements."""
        raw = predict_seconds(config, self.measured)
        if raw is None:
            return None
        return raw * (statistics.median(self.overruns) if self.overruns else 1.0)

    def late(self, seconds: float | None) -> str | None:
        """Why a trial predicted to take ``seconds`` (:meth:`predicted`) must not start: with --timeout, it would end
        more than LATE_ALLOWANCE of it after it. Only once the study has a complete trial (a search ends with a model),
        and not with --start-late-trials."""
        if self.options.timeout is None or self.options.start_late_trials:
            return None
        if seconds is None or not self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return None
        left = self.options.timeout - (time.monotonic() - self.started)
        allowance = LATE_ALLOWANCE * self.options.timeout
        if seconds <= left + allowance:
            return None
        return (
            f"not started: it would take ~{seconds / 60:.1f} min and {max(0.0, left) / 60:.1f} min of --timeout are left, "
            f"with {allowance / 60:.1f} min allowed past it (--start-late-trials starts it)"
        )

    def running(self) -> int:
        return sum(not r.done for r in self.recorders.values())

    def wants_more(self) -> bool:
        """Whether the study (every driver's trials, finished or running) holds fewer than ``--trials``."""
        # from the driver's listing (memory; other drivers' trials at most a second late): a trial started on a stale
        # count is refused by start_trial's exact check, so the study never holds more than --trials
        listed = self.study.get_trials(deepcopy=False, states=(*DECIDED, TrialState.RUNNING))
        return len(listed) < self.target

    def should_finish(self) -> bool:
        if self.out_of_time() or self.failures >= self.max_failures:
            return True
        if self.wants_more() or self.running():
            return False
        # the study is full, but trials of a driver that died (killed, say, just before this run) count as running
        # until their heartbeats go stale: wait for them to be failed, then replace them
        return not self.sweep()

    def sweep(self) -> bool:
        """Fail orphaned trials (every HEARTBEAT_SECONDS at most); True while other drivers' trials look orphaned."""
        now = time.monotonic()
        if now - self.last_sweep >= HEARTBEAT_SECONDS:
            self.last_sweep = now
            n = fail_interrupted(self.study)
            if n:
                self.display.note(f"{n} trial(s) whose driver is gone marked FAIL; they will be replaced")
            self.suspects = bool(suspect_ids(self.study, own=self.heartbeat.trial_ids))
        return self.suspects

    def start_trial(self, key: str) -> tuple[TrialRecorder, TrialConfig] | None:
        """Ask Optuna for a trial and sample its config; a config that cannot be built fails that trial alone."""
        with warnings.catch_warnings():
            # Optuna says heartbeats are meant for Study.optimize; with ask/tell the Heartbeat thread records them
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask()
        self.heartbeat.add(trial._trial_id)
        # trial numbers count every trial created before, so a number below --trials cannot be over it: only the last
        # trials of the study need the database's exact count
        if trial.number >= self.target and claimed_count(self.study, below=trial.number) >= self.target:
            # another driver asked for the last trial at the same moment: the lower number keeps it
            self._refuse(trial, f"not run: the study already had --trials {self.target} trials finished or running")
            return None
        # the sampler's seed follows --seed and the trial's number, so drivers sharing the study sample apart
        # and a trial's sample can be traced (TPE samples lazily, so the seed set after ask() applies)
        seed = trial_seed(self.options.seed, trial.number)
        self.study.sampler = self.space.build_sampler(seed=seed, n_workers=self.options.workers)
        try:
            # the seed, provenance, sampled params and config go in one transaction, and TPE's listings of the
            # study read the database once for this trial (see StudyCache.deferred)
            with deferred(self.study, trial._trial_id):
                trial.set_user_attr("sampler_seed", seed)
                if self.provenance is not None:
                    trial.set_user_attr("provenance", self.provenance)
                # sample() ends in config.finalize: what is stored on the trial is exactly what trains
                config = self.space.sample(
                    trial, self.base, hidden_size=self.hidden_size, threads=self.threads(), gpus=self.options.gpus_per_trial
                )
                recorder = TrialRecorder(self.study, trial, config, self.space.metric)
        except AutoembedError as exc:
            self.failures += 1
            self._refuse(trial, str(exc))
            return None
        predicted = self.predicted(config)
        reason = self.late(predicted)
        if reason is not None:
            # the search ends with the trials that run; a starting point goes back in the queue, so a resumed search
            # (a longer --timeout) starts it first
            self.closing = True
            self.not_started += 1
            fixed = self.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
            self._refuse(trial, reason, show=False)
            if fixed:
                self.study.enqueue_trial(fixed)
            self.display.note(f"trial {trial.number} {reason}; the search ends when its running trials do")
            return None
        recorder.started_at = time.monotonic()
        recorder.predicted = predicted
        recorder.keep = self.keep_target(trial.number)
        self.recorders[key] = recorder
        self.display.started(trial.number, trial.params)
        return recorder, config

    def keep_target(self, number: int) -> dict[str, str] | None:
        """Where trial ``number``'s worker saves its model if the trial completes (see :func:`keep_model`): a folder on
        this driver's node, and a token that ties the folder to this trial (a study deleted and made again reuses
        trial numbers). None when --keep-models is 0."""
        if self.options.keep_models <= 0:
            return None
        folder = (self.options.models_dir / f"trial-{number}").resolve()
        return {"path": str(folder), "node": socket.gethostname(), "token": uuid.uuid4().hex}

    def drop_surplus_models(self) -> None:
        """Delete the kept models of this node's complete trials beyond the study's best --keep-models."""
        root = self.options.models_dir.resolve()
        here = socket.gethostname()
        kept = [
            t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and isinstance(t.user_attrs.get("model"), dict) and t.user_attrs["model"].get("node") == here
        ]
        sign = -1.0 if self.study.direction == StudyDirection.MAXIMIZE else 1.0
        kept.sort(key=lambda t: (sign * t.value, t.number))  # the best first; the earlier of equal values
        for t in kept[self.options.keep_models:]:
            folder = Path(t.user_attrs["model"].get("path", ""))
            if folder.parent == root and folder.name == f"trial-{t.number}":  # never anything outside the models folder
                shutil.rmtree(folder, ignore_errors=True)

    def _refuse(self, trial: optuna.Trial, reason: str, *, show: bool = True) -> None:
        self.study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self.heartbeat.discard(trial._trial_id)
        if show:
            self.display.finished(trial.number, "FAIL", None, reason)

    def on_result(self, key: str, step: int, metrics: dict[str, float], total_steps: int, pairs: int | None = None) -> bool:
        """Record an evaluation; True means stop the trial now.

        The trial's curve (and so the pruner) is keyed by training pairs seen in a study whose ``fidelity`` is
        ``pairs`` (every study created since), by optimizer step in an older one.
        """
        recorder = self.recorders[key]
        if recorder.pruned or recorder.done:
            return True
        recorder.report(pairs if self.fidelity == "pairs" and pairs is not None else step, metrics, step=step)
        self.display.progress(recorder.number, step, total_steps, metrics.get(self.space.metric))
        # the last evaluation is the trial's value: it completes, whatever the pruner would say
        return step < total_steps and recorder.should_prune()

    def on_end(self, key: str, outcome: dict[str, Any]) -> None:
        recorder = self.recorders.get(key)
        if recorder is None or recorder.done:
            return
        seconds = float(outcome.get("train_seconds") or (time.monotonic() - recorder.started_at))
        self.trial_seconds += seconds
        keys = ("embedding_dim", "steps", "total_steps", "where", "merge_alpha", "merge_scores", "value_pairs", "export")
        extra = {k: outcome[k] for k in keys if outcome.get(k) is not None}
        if outcome.get("where", {}).get("device"):
            extra["device"] = outcome["where"]["device"]  # where it really ran, as the worker saw it
        keep = recorder.keep
        kept = keep is not None and outcome.get("kept_model") == keep["path"]
        if kept and not recorder.pruned:
            extra["model"] = keep  # what `autoembed export --model` copies (a pruned trial's is deleted below)
        if outcome.get("keep_error"):
            self.display.note(f"trial {recorder.number}'s model was not kept: {outcome['keep_error']}")
        if outcome.get("fail_reason"):
            for name, val in extra.items():
                recorder.trial.set_user_attr(name, val)
            self.failures += 1
            state = recorder.fail(mask_text(str(outcome["fail_reason"]), self.options.storage_url), seconds=seconds)
        else:
            state = recorder.finish(
                value=outcome.get("value"), step=outcome.get("value_step"), metrics=outcome.get("metrics"), seconds=seconds, extra=extra
            )
        self.heartbeat.discard(recorder.trial._trial_id)
        if state == TrialState.COMPLETE and recorder.predicted:
            self.overruns.append((time.monotonic() - recorder.started_at) / recorder.predicted)
        if kept and state != TrialState.COMPLETE:
            shutil.rmtree(keep["path"], ignore_errors=True)
        if kept:
            self.drop_surplus_models()
        self.display.finished(recorder.number, state.name, outcome.get("value"), outcome.get("fail_reason"))
        self.display.best(self.study)

    def abandon(self, reason: str) -> None:
        for recorder in self.recorders.values():
            if not recorder.done:
                recorder.fail(reason)
            self.heartbeat.discard(recorder.trial._trial_id)

    def close(self, reason: str) -> None:
        """Fail what still runs, with ``reason``; send every queued write; stop the heartbeats."""
        with contextlib.ExitStack() as stack:  # each step runs even if one before it raised
            stack.callback(self.heartbeat.close)
            if isinstance(self.study._storage, StudyCache):
                stack.callback(self.study._storage.stop_writer)  # every queued write sent, or its failure raised
            self.abandon(reason)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed for trial ``number`` of a study searched with ``--seed seed``."""
    return (seed * 1_000_003 + number) % 2**32


def trial_outcome(result, config: TrialConfig, hidden_size: int) -> dict[str, Any]:
    """What a finished training run sends back to the driver (from a Ray worker, or inline).

    A config with an ``export`` section (PCA, fp16) has it measured here too, on the trained model (which is not
    kept): the study then records what the export would give (the dashboard's PCA points) beside the trained value.
    """
    exported = export_model(result.model, config, result.prepared, result.metrics) if result.model is not None else {}
    return {
        **({"export": exported} if exported else {}),
        "value": result.value,
        "value_step": result.value_step,
        "value_pairs": result.value_pairs,
        "metrics": result.metrics,
        "train_seconds": result.seconds,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "embedding_dim": embedding_dim(config.architecture, hidden_size),
        **({"merge_alpha": result.merge_alpha, "merge_scores": result.merge_scores} if result.merge_alpha is not None else {}),
    }


def keep_model(result, config: TrialConfig, outcome: dict[str, Any], target: dict[str, str] | None) -> dict[str, Any]:
    """Save a completed trial's model where the driver asked (``Coordinator.keep_target``), as ``autoembed train``
    would write it; returns what to add to the trial's outcome. A pruned trial, a trial on another node than the
    driver's (its disk is not the driver's) and a failed save keep nothing; the trial itself stands either way."""
    if not target or result.stopped or result.model is None or target.get("node") != socket.gethostname():
        return {}
    folder = Path(target["path"])
    try:
        # an older folder there (a study deleted and made again under the same name) is replaced once this one is whole
        with staged_folder(folder) as staged:
            record = metrics_record(result, config)
            if outcome.get("export"):
                record["export"] = outcome["export"]
            save_model(result.model, staged, metrics=record)
            atomic_write_json(staged / "trial.json", {"token": target["token"]})
            follow_umask(staged)
    except Exception as exc:  # a full disk, say: the trial's value stands, only the shortcut is lost
        log.warning("could not keep the model in %s: %s", folder, exc)
        return {"keep_error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"kept_model": str(folder)}


def trial_failure(exc: BaseException) -> str:
    """A failed trial's reason, as the study records it."""
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        text = "out of memory: " + text
    return text


class Executor(ABC):
    """Runs the coordinator's trials somewhere until it says the search should finish."""

    name: ClassVar[str]

    def check(self, options: SearchOptions, display: SearchDisplay) -> None:  # noqa: B027 - optional hook
        """Before any data is read or the study exists: refuse what this executor cannot run (one line, exit 2)."""

    @abstractmethod
    def run(self, coordinator: Coordinator, prepared: Prepared) -> None:
        """Start trials through ``coordinator.start_trial``, feed it results and ends, until ``should_finish``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the executor started (after the search, also when it was interrupted)."""


class _CallbackReporter:
    """Training's reporter for the inline executor: evaluations go straight to the coordinator."""

    def __init__(self, coordinator: Coordinator, key: str):
        self.coordinator, self.key = coordinator, key
        self.total = 0
        self.stop = False

    def start(self, total_steps: int) -> None:
        self.total = total_steps

    def report(self, step: int, metrics: dict[str, float], *, pairs: int) -> None:
        self.stop = self.coordinator.on_result(self.key, step, metrics, self.total, pairs)

    def should_stop(self) -> bool:
        return self.stop


class InlineExecutor(Executor):
    """Trials one after another in this process: for debugging, and as the reference the Ray run matches."""

    name = "inline"

    def run(self, coordinator: Coordinator, prepared: Prepared) -> None:
        n = 0
        while not coordinator.should_finish():
            if not coordinator.wants_more():
                time.sleep(1)  # the study is full but may hold orphaned trials: should_finish sweeps them
                continue
            key = f"inline-{n}"
            n += 1
            started = coordinator.start_trial(key)
            if started is None:
                continue
            recorder, config = started
            reporter = _CallbackReporter(coordinator, key)
            where = {"node": socket.gethostname(), "slice": coordinator.options.gpus_per_trial}
            where["device"] = device_description(config.training.device)
            t0 = time.perf_counter()
            try:
                result = train(config, prepared=prepared_for(prepared, config), reporter=reporter)
                outcome = trial_outcome(result, config, coordinator.hidden_for(config))
                outcome.update(keep_model(result, config, outcome, recorder.keep))
            except Exception as exc:  # a failing trial fails alone (an interruption ends the search: see run_search)
                failed = {"fail_reason": trial_failure(exc), "train_seconds": time.perf_counter() - t0, "where": where}
                coordinator.on_end(key, failed)
                continue
            coordinator.on_end(key, {**outcome, "where": where})
