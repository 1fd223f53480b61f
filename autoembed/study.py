"""The study's storage: URLs (masked when shown), opening studies, and writing a trial's record.

Everything a trial leaves in the study goes through :class:`TrialRecorder`, whichever executor ran it,
so Ray and inline runs give the same records.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import re
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import optuna
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.trial import TrialState

from autoembed.errors import AutoembedError

STUDIES_DIR = Path("studies")
INTERRUPTED = "left RUNNING by a driver that stopped sending heartbeats (killed or lost); marked FAIL by a later driver"
# Every driver records a heartbeat for each trial it runs every HEARTBEAT_SECONDS; a RUNNING trial whose last
# heartbeat is older than GRACE_SECONDS has lost its driver, and any driver of the study may mark it FAIL. A live
# driver's trials are never touched, so any number of drivers can share one study.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60

log = logging.getLogger(__name__)
# Optuna warns that heartbeats are meant for Study.optimize; with ask/tell the driver records them itself (Heartbeat)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def default_storage(name: str) -> str:
    return f"sqlite:///{STUDIES_DIR / name}.db"


# user:password@ as SQLAlchemy's URL parser reads it: the password runs to the first "@" and may hold "/" or ":"
_CREDENTIALS = re.compile(r"(://[^:/]*:)([^@]*)@")


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; ``?password=`` too."""
    masked = _CREDENTIALS.sub(r"\1***@", url, count=1)
    return re.sub(r"(?i)\b(password|passwd|pwd)=[^&]*", r"\1=***", masked)


def mask_text(text: str, url: str | None) -> str:
    """Remove the password of ``url`` from any text (an exception message, a log line)."""
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    match = _CREDENTIALS.search(url)
    if match and match.group(2):
        # a driver's message may quote the password decoded (%40 -> @)
        for password in {match.group(2), unquote(match.group(2))}:
            text = text.replace(password, "***")
    return text


def validate_study_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
        raise AutoembedError(f"study name must be letters, digits, '_', '.', '-' (at most 128), got {name!r}", key="study")
    return name


def storage_folder(url: str) -> Path | None:
    """The folder an SQLite study file lives in; None for a server database."""
    return Path(url[len("sqlite:///") :]).parent if url.startswith("sqlite:///") else None


class StudyCache(_CachedStorage):
    """Optuna's cache of an RDB study, refreshed by what changed instead of by every unfinished trial in full.

    Optuna's ``_CachedStorage`` keeps finished trials, but each time the trials are listed it reads every unfinished
    trial again in full (params, values, user and system attributes, intermediate values). The pruner lists them at
    every report and TPE at every trial, so with 64 trials running each listing reloaded 64 trials and their configs:
    most of the driver's time (benchmarks/scale_sim.py). Here one narrow query gives each trial that is new or was
    unfinished its state and how many params and system attributes it holds; only the trials where one of these
    changed are read in full. What can lag in a listing is a *running* trial's intermediate values and user
    attributes: Optuna's samplers read a running trial's params only (TPE's constant liar), its pruners read the
    finished trials' curves, the rungs in system attributes (successive halving) and the pruned trial's own curve,
    which ``get_trial`` reads fresh; a trial that ends is read again in full.
    """

    def __init__(self, backend: optuna.storages.RDBStorage):
        super().__init__(backend)
        # study id -> trial id -> mark of each cached unfinished trial: (state, params, system attrs)
        self._marks: dict[int, dict[int, tuple[TrialState, int, int]]] = {}
        self._seen: dict[int, int] = {}  # study id -> highest trial id read

    @staticmethod
    def _mark(trial: optuna.trial.FrozenTrial) -> tuple[TrialState, int, int]:
        return trial.state, len(trial.params), len(trial.system_attrs)

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        import sqlalchemy
        from optuna.storages._rdb import models

        with self._lock:
            self._studies.setdefault(study_id, _StudyInfo())
            marks = self._marks.setdefault(study_id, {})
            # every trial below the oldest unfinished one is cached and finished, so it cannot change
            low = min(marks, default=self._seen.get(study_id, -1) + 1) - 1
            trial = models.TrialModel

            def count(model):
                return sqlalchemy.select(sqlalchemy.func.count()).where(model.trial_id == trial.trial_id).scalar_subquery()

            session = self._backend.scoped_session()
            try:
                rows = (
                    session.query(
                        trial.trial_id,
                        trial.state,
                        count(models.TrialParamModel),
                        count(models.TrialSystemAttributeModel),
                    )
                    .filter(trial.study_id == study_id, trial.trial_id > low)
                    .all()
                )
            finally:
                session.close()
            stale = set()
            for trial_id, state, *counts in rows:
                if trial_id in marks:
                    if marks[trial_id] != (state, *counts):
                        stale.add(trial_id)
                elif self._get_cached_trial(trial_id) is None:  # new, or cached only as created (ask)
                    stale.add(trial_id)
            if not stale:
                return
            # the trials in `stale`, and any created since the narrow query (the backend adds those above its max)
            trials = self._backend._get_trials(study_id, None, stale, max(stale))
            self._add_trials_to_cache(study_id, trials)
            for t in trials:
                self._seen[study_id] = max(self._seen.get(study_id, -1), t._trial_id)
                if t.state.is_finished():
                    marks.pop(t._trial_id, None)
                else:
                    marks[t._trial_id] = self._mark(t)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's SQLAlchemy storage on ``url`` under :class:`StudyCache`, with heartbeats; SQLite files get their
    folder created."""
    folder = storage_folder(url)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return StudyCache(
                    optuna.storages.RDBStorage(
                        url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
                    )
                )
        except Exception as exc:  # bad driver, unreachable server, bad credentials
            text = str(exc)
            # drivers started together on a new database race to create Optuna's tables; the loser finds them made
            if attempt < 5 and ("alembic_version" in text or "already exists" in text):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise AutoembedError(f"cannot open study storage {mask_url(url)}: {mask_text(text.splitlines()[0], url)}", key="storage") from None
    raise AssertionError("unreachable")


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # a reader (status, dashboard) must not make the search's writes fail: wait for the lock
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def load_existing(name: str, url: str) -> optuna.Study:
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise AutoembedError(f"no study {name!r}: storage {mask_url(url)} does not exist", key="study")
    storage = make_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise AutoembedError(f"no study {name!r} in {mask_url(url)}; it holds: {', '.join(names) or 'none'}", key="study") from None


def _rdb(study: optuna.Study):
    """The study's RDBStorage under Optuna's cache wrapper (None for other storages)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if hasattr(storage, "scoped_session") else None


def running_ages(study: optuna.Study) -> dict[int, float]:
    """Seconds since each RUNNING trial's last heartbeat (since its start, where it has none), by trial id.

    Ages are measured on the database's clock, which wrote the heartbeats, so drivers on other machines agree.
    """
    storage = _rdb(study)
    if storage is None:
        return {}
    import sqlalchemy
    from optuna.storages._rdb import models

    session = storage.scoped_session()
    try:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        # optuna 5 keeps the column as _datetime_start_utc behind a local-time property; optuna 4 names it datetime_start
        utc = hasattr(models.TrialModel, "_datetime_start_utc")
        start = models.TrialModel._datetime_start_utc if utc else models.TrialModel.datetime_start
        rows = (
            session.query(models.TrialModel.trial_id, start, models.TrialHeartbeatModel.heartbeat)
            .outerjoin(models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study._study_id, models.TrialModel.state == TrialState.RUNNING)
            .all()
        )
    finally:
        session.close()
    ages = {}
    for trial_id, started, beat in rows:
        last = beat or started
        # Optuna stores datetime_start as naive UTC from the driver's clock, heartbeats with the database's clock
        ref = now if beat else datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        ages[trial_id] = (ref - last.replace(tzinfo=None)).total_seconds() if last else float("inf")
    return ages


def fail_interrupted(study: optuna.Study, *, grace_seconds: float = GRACE_SECONDS) -> int:
    """Mark FAIL the RUNNING trials whose driver is gone, and say why; return how many.

    A trial is orphaned when its last heartbeat is older than the grace period (Optuna's ``fail_stale_trials``
    rule), or when it has no heartbeat and started longer ago than that (a run from before heartbeats, or a driver
    killed between asking for the trial and its first heartbeat). Trials of live drivers keep beating.
    """
    storage = study._storage
    n = 0
    for trial_id, age in running_ages(study).items():
        if age <= grace_seconds:
            continue
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", INTERRUPTED)  # a finished trial takes no attrs
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                n += 1
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # its driver, or another one, ended it meanwhile
    return n


def suspect_ids(study: optuna.Study, *, own: set[int]) -> set[int]:
    """Other drivers' RUNNING trials that missed a heartbeat or more: probably orphaned, not yet past the grace."""
    return {tid for tid, age in running_ages(study).items() if tid not in own and age > 1.5 * HEARTBEAT_SECONDS}


class Heartbeat:
    """A driver thread that records a heartbeat for each trial this driver runs, every HEARTBEAT_SECONDS."""

    def __init__(self, storage, interval: float = HEARTBEAT_SECONDS):
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="autoembed-heartbeat", daemon=True)
        self.thread.start()

    def add(self, trial_id: int) -> None:
        self.beat(trial_id)
        with self.lock:
            self.trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)

    def beat(self, trial_id: int) -> None:
        try:
            self.storage.record_heartbeat(trial_id)
        except Exception as exc:  # a missed beat is not fatal: the grace period is several beats long
            log.warning("could not record the heartbeat of trial id %s: %s", trial_id, str(exc).splitlines()[0])

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                self.beat(trial_id)

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


def count_trials(study: optuna.Study, states: tuple[TrialState, ...], *, below: int | None = None) -> int:
    """How many trials of the study are in ``states`` (numbered below ``below`` if given), counted in the database.

    One ``COUNT`` query rather than Optuna's ``get_trials``, which loads every trial with its params and
    attributes: the driver asks this before every trial, and at thousands of trials that load is what costs.
    """
    storage = _rdb(study)
    if storage is not None:
        from optuna.storages._rdb import models

        session = storage.scoped_session()
        try:
            query = session.query(models.TrialModel).filter(
                models.TrialModel.study_id == study._study_id, models.TrialModel.state.in_(states)
            )
            if below is not None:
                query = query.filter(models.TrialModel.number < below)
            return query.count()
        finally:
            session.close()
    trials = study.get_trials(deepcopy=False, states=states)
    return sum(1 for t in trials if below is None or t.number < below)


DECIDED = (TrialState.COMPLETE, TrialState.PRUNED)


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: those that reached a decision (complete or pruned)."""
    return count_trials(study, DECIDED)


def claimed_count(study: optuna.Study, *, below: int | None = None) -> int:
    """Trials finished or running in the whole study (every driver's), those numbered below ``below`` if given."""
    return count_trials(study, (*DECIDED, TrialState.RUNNING), below=below)


class TrialRecorder:
    """Writes one trial's life into the study: its config, its curve, its end.

    Once the pruner said prune, later reports are ignored, so a Ray trial that sends a few more results
    before it is stopped leaves the same record as an inline one.
    """

    def __init__(self, study: optuna.Study, trial: optuna.Trial, config, objective: str):
        self.study = study
        self.trial = trial
        self.config = config
        self.objective = objective
        self.history: list[tuple[int, dict[str, float]]] = []
        self.pruned = False
        self.done = False
        self.state = TrialState.RUNNING
        self.last_step: int | None = None  # the optimizer step of the last recorded evaluation
        self.started = datetime.datetime.now()
        trial.set_user_attr("config", config.to_dict())

    @property
    def number(self) -> int:
        return self.trial.number

    def report(self, key: int, metrics: dict[str, float], *, step: int | None = None) -> None:
        """Record one evaluation on the trial's curve at ``key`` (training pairs seen, or the optimizer step in an
        older study); ``step`` is the optimizer step it was taken at. Ignored once the trial was pruned or ended."""
        if self.pruned or self.done:
            return
        value = metrics.get(self.objective)
        if value is None or not math.isfinite(value):
            return
        self.history.append((key, dict(metrics)))
        self.last_step = key if step is None else step
        try:
            self.trial.report(float(value), key)
            self.trial.set_user_attr("last_metrics", {k: float(v) for k, v in metrics.items()})
        except optuna.exceptions.UpdateFinishedTrialError:
            self._lost()

    def _lost(self) -> None:
        """Another driver ended this trial (it judged this driver gone): stop writing to it, say so once."""
        if not self.done:
            log.warning("trial %d was ended by another driver of the study; this driver stops recording it", self.number)
        self.done = True
        self.state = TrialState.FAIL

    def _tell(self, *args, **kwargs) -> bool:
        try:
            self.study.tell(self.trial, *args, **kwargs)
            return True
        except optuna.exceptions.UpdateFinishedTrialError:
            self._lost()
            return False
        except ValueError as exc:  # Optuna says "already finished" this way for tell()
            if "finished" not in str(exc):
                raise
            self._lost()
            return False

    def should_prune(self) -> bool:
        """Ask the study's pruner; once it says prune, the answer stays."""
        if not self.pruned and not self.done and self.history:
            self.pruned = self.trial.should_prune()
        return self.pruned

    def finish(self, *, value: float | None, step: int | None, metrics: dict[str, float] | None, seconds: float, extra: dict[str, Any] | None = None) -> TrialState:
        """Tell the study how the trial ended: PRUNED, or COMPLETE with its value (see training.trial_value)."""
        if self.done:
            return self.state
        try:
            self.trial.set_user_attr("train_seconds", round(float(seconds), 3))
            for key, val in (extra or {}).items():
                self.trial.set_user_attr(key, val)
            if self.pruned:
                self.trial.set_user_attr("pruned_at_step", self.last_step)
                if self.history and self.last_step != self.history[-1][0]:
                    self.trial.set_user_attr("pruned_at_pairs", self.history[-1][0])
            elif value is not None and math.isfinite(value):
                self.trial.set_user_attr("value_step", step)
                self.trial.set_user_attr("final_metrics", {k: float(v) for k, v in (metrics or {}).items()})
        except optuna.exceptions.UpdateFinishedTrialError:
            self._lost()
            return self.state
        if not self.pruned and (value is None or not math.isfinite(value)):
            return self.fail(f"no finite {self.objective} was measured", seconds=seconds)
        self.done = True
        if self.pruned:
            self.state = TrialState.PRUNED
            self._tell(state=TrialState.PRUNED)
        else:
            self.state = TrialState.COMPLETE
            self._tell(value)
        return self.state

    def fail(self, reason: str, *, seconds: float | None = None) -> TrialState:
        if self.done:
            return self.state
        try:
            self.trial.set_user_attr("fail_reason", reason[:2000])
            if seconds is not None:
                self.trial.set_user_attr("train_seconds", round(float(seconds), 3))
        except optuna.exceptions.UpdateFinishedTrialError:
            self._lost()
            return self.state
        self.done = True
        self.state = TrialState.FAIL
        self._tell(state=TrialState.FAIL)
        return self.state


def read_trials(study: optuna.Study, *, user_attrs: Collection[str] | None = None) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the study, by number, as ``study.get_trials()`` gives them, read in six plain queries.

    Optuna builds an ORM object per row (each param, attribute and intermediate value) before each FrozenTrial; at
    10,000 trials that takes most of `autoembed status` and the dashboard (benchmarks/scale_sim.py). ``user_attrs``
    names the user attributes to read (default: all); the others are left out, and so not parsed.
    Other storages than an RDB are read through Optuna.
    """
    storage = _rdb(study)
    if storage is None:
        trials = study.get_trials(deepcopy=False)
        if user_attrs is None:
            return trials
        return [_with_user_attrs(t, {k: v for k, v in t.user_attrs.items() if k in user_attrs}) for t in trials]
    import sqlalchemy
    from optuna.storages._rdb import models

    trial = models.TrialModel
    utc = hasattr(trial, "_datetime_start_utc")  # optuna 5 stores naive UTC and shows local time; optuna 4 stores local
    start, complete = (trial._datetime_start_utc, trial._datetime_complete_utc) if utc else (trial.datetime_start, trial.datetime_complete)

    def local(when: datetime.datetime | None) -> datetime.datetime | None:
        if when is None or not utc:
            return when
        return when.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)

    def of_study(*columns, model):
        return sqlalchemy.select(*columns).join(trial, trial.trial_id == model.trial_id).where(trial.study_id == study._study_id)

    P, V, IV = models.TrialParamModel, models.TrialValueModel, models.TrialIntermediateValueModel
    U, S = models.TrialUserAttributeModel, models.TrialSystemAttributeModel
    with storage.engine.connect() as conn:
        heads = conn.execute(
            sqlalchemy.select(trial.trial_id, trial.number, trial.state, start, complete).where(trial.study_id == study._study_id)
        ).all()
        values = conn.execute(of_study(V.trial_id, V.objective, V.value, V.value_type, model=V)).all()
        params = conn.execute(
            of_study(P.trial_id, P.param_name, P.param_value, P.distribution_json, model=P).order_by(P.param_id)
        ).all()
        query = of_study(U.trial_id, U.key, U.value_json, model=U)
        if user_attrs is not None:
            query = query.where(U.key.in_(list(user_attrs)))
        users = conn.execute(query).all()
        systems = conn.execute(of_study(S.trial_id, S.key, S.value_json, model=S)).all()
        steps = conn.execute(
            of_study(IV.trial_id, IV.step, IV.intermediate_value, IV.intermediate_value_type, model=IV)
        ).all()

    # a trial created between the first query and the others (a search is running) is left out, as Optuna does
    none: dict[str, Any] = defaultdict(dict)
    by_id: dict[int, dict[str, Any]] = {
        tid: {"values": {}, "params": {}, "distributions": {}, "user_attrs": {}, "system_attrs": {}, "intermediate_values": {}}
        for tid, *_ in heads
    }
    for tid, objective, value, kind in values:
        by_id.get(tid, none)["values"][objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
    parsed: dict[str, optuna.distributions.BaseDistribution] = {}  # one parse per distinct distribution
    for tid, name, value, dist_json in params:
        dist = parsed.get(dist_json) or parsed.setdefault(dist_json, optuna.distributions.json_to_distribution(dist_json))
        by_id.get(tid, none)["params"][name] = dist.to_external_repr(value)
        by_id.get(tid, none)["distributions"][name] = dist
    for rows, key in ((users, "user_attrs"), (systems, "system_attrs")):
        for tid, name, value_json in rows:
            if tid in by_id:
                by_id[tid][key][name] = json.loads(value_json)
    for tid, step, value, kind in steps:
        by_id.get(tid, none)["intermediate_values"][step] = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)
    trials = []
    for tid, number, state, started, completed in sorted(heads, key=lambda h: h[1]):
        parts = by_id[tid]
        ordered = parts.pop("values")
        trials.append(
            optuna.trial.FrozenTrial(
                number=number, state=state, value=None, values=[ordered[i] for i in sorted(ordered)] if ordered else None,
                datetime_start=local(started), datetime_complete=local(completed), trial_id=tid, **parts,
            )
        )  # fmt: skip
    return trials


def _with_user_attrs(trial: optuna.trial.FrozenTrial, user_attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
    trial = copy.copy(trial)
    trial.user_attrs = user_attrs
    return trial


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One plain dict per trial for ``autoembed status`` (only the user attributes it shows are read)."""
    rows = []
    for t in read_trials(study, user_attrs=("train_seconds", "fail_reason")):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                "duration_s": duration,
                "train_seconds": t.user_attrs.get("train_seconds"),
                "last_step": t.last_step,
                "fail_reason": t.user_attrs.get("fail_reason"),
            }
        )
    return rows


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None
