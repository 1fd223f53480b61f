"""The study's storage: URLs (masked when shown), opening studies, and writing a trial's record.

Everything a trial leaves in the study goes through :class:`TrialRecorder`, whichever executor ran it,
so Ray and inline runs give the same records.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import math
import queue
import re
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Collection, Iterator
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
        self._owned: dict[int, _Owned] = {}  # trial id -> a trial this process runs (see deferred)
        self._held: dict[int, bool] = {}  # study id -> listing already read once while a trial's writes are deferred
        self._bulk = backend.engine.name in ("postgresql", "sqlite")
        # Seconds a listing may lag behind *other* processes' writes (0: never). This process's own writes are in the
        # listing at once (owned trials, trials it ended, and a trial it enqueues resets the clock), so a driver can
        # set a second: the pruner and TPE list the study at every evaluation and every trial.
        self.max_staleness = 0.0
        self._refreshed: dict[int, float] = {}  # study id -> when its listing was last read
        # Write-behind (see start_writer): the held writes of owned trials go to the database from a writer thread
        self._writes: queue.Queue | None = None
        self._writer: threading.Thread | None = None
        self._write_error: BaseException | None = None  # the first write that failed; raised at the next sync point
        self._lost: set[int] = set()  # owned trials another process ended (a write found them finished)

    # --- the trials this process runs: one record in memory, writes sent together ----------------------------
    #
    # A driver is the only writer of the trials it runs (another driver only ends them, once their heartbeats stop),
    # so it keeps each one's record in memory, as written: ``get_trial`` (Optuna's Trial, the pruner, tell) reads it
    # there instead of reading the trial back in full. Inside ``deferred(trial_id)`` the trial's params, attributes
    # and intermediate values are held and sent in one transaction at the end, and listing the study's trials reads
    # the database once: sampling a trial took ~15 transactions and ~10 listings (benchmarks/scale_sim.py).
    # Ending the trial (``set_trial_state_values``) sends what is held first, so nothing is lost or reordered.

    def _own(self, trial_id: int, trial: optuna.trial.FrozenTrial) -> None:
        with self._lock:
            self._owned[trial_id] = _Owned(trial)

    def create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        with self._lock:
            number = self._trial_id_to_study_id_and_number[trial_id][1]
            frozen = self._studies[study_id].trials[number]
            if frozen.state != TrialState.RUNNING:
                self._refreshed.pop(study_id, None)  # the next listing reads it (an enqueued trial must be asked next)
        if frozen.state == TrialState.RUNNING:
            self._own(trial_id, copy.deepcopy(frozen))
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        owned = self._owned.get(trial_id)
        if self._writes is not None and owned is not None and state.is_finished():
            return self._end_behind(trial_id, owned, state, values)
        try:
            self.flush(trial_id)
            self.drain()  # the trial's queued writes (the flush's last) go before its end
            changed = self._backend.set_trial_state_values(trial_id, state=state, values=values)
        except Exception:
            with self._lock:
                self._owned.pop(trial_id, None)
            raise
        if changed and state == TrialState.RUNNING:  # a waiting (enqueued) trial this process now runs
            self._own(trial_id, self._backend.get_trial(trial_id))
            with self._lock:  # listed as running at once, as a trial this process creates is
                study_id, number = self._trial_id_to_study_id_and_number[trial_id]
                record = self._owned[trial_id].trial
                if study_id in self._studies:
                    self._studies[study_id].trials[number] = record
                    if trial_id in self._marks.get(study_id, {}):
                        self._marks[study_id][trial_id] = self._mark(record)
        elif state.is_finished():
            with self._lock:
                owned = self._owned.pop(trial_id, None)
                if changed and owned is not None:
                    self._cache_finished(trial_id, owned.trial, state, values)
        return changed

    def _cache_finished(self, trial_id: int, record: optuna.trial.FrozenTrial, state: TrialState, values) -> None:
        """A trial this process ended goes into the listing as the record it wrote, not read back in full (at 64
        trials at once that read was most of the driver's time); only its end time, which the storage set, is read."""
        study_id, number = self._trial_id_to_study_id_and_number[trial_id]
        if study_id not in self._seen:  # never listed: the first listing reads everything anyway
            return
        record = copy.deepcopy(record)
        record.state = state
        record.values = list(values) if values is not None else None
        record.datetime_complete = self._stored_end_time(trial_id)
        self._marks.get(study_id, {}).pop(trial_id, None)
        self._studies[study_id].trials[number] = record

    def _stored_end_time(self, trial_id: int) -> datetime.datetime | None:
        """The end time the storage set for a trial (Optuna's RDB sets it when the trial ends)."""
        from optuna.storages._rdb import models

        session = self._backend.scoped_session()
        try:
            return models.TrialModel.find_or_raise_by_id(trial_id, session).datetime_complete
        finally:
            session.close()

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        with self._lock:
            owned = self._owned.get(trial_id)
            if owned is not None:
                return copy.deepcopy(owned.trial)
        return super().get_trial(trial_id)

    def set_trial_param(self, trial_id, param_name, param_value_internal, distribution) -> None:
        owned = self._owned.get(trial_id)
        if owned is None:
            return super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        with self._lock:
            study_id = self._trial_id_to_study_id_and_number[trial_id][0]
            known = self._studies[study_id].param_distribution.get(param_name)
            if known is not None:
                optuna.distributions.check_distribution_compatibility(known, distribution)
            owned.params.append((param_name, param_value_internal, distribution, known))
            owned.trial.distributions[param_name] = distribution
            owned.trial.params[param_name] = distribution.to_external_repr(param_value_internal)
        self._send_unless_deferred(trial_id, owned)
        with self._lock:
            self._studies[study_id].param_distribution.setdefault(param_name, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(trial_id, "user", key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(trial_id, "system", key, value)

    def _set_attr(self, trial_id: int, kind: str, key: str, value: Any) -> None:
        owned = self._owned.get(trial_id)
        if owned is None:
            setter = super().set_trial_user_attr if kind == "user" else super().set_trial_system_attr
            return setter(trial_id, key, value)
        text = json.dumps(value)  # not serializable: the error comes here, as from Optuna
        with self._lock:
            (owned.user if kind == "user" else owned.system)[key] = text
            (owned.trial.user_attrs if kind == "user" else owned.trial.system_attrs)[key] = json.loads(text)
        self._send_unless_deferred(trial_id, owned)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        owned = self._owned.get(trial_id)
        if owned is None:
            return super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        with self._lock:
            owned.values[step] = intermediate_value
            owned.trial.intermediate_values[step] = intermediate_value
        self._send_unless_deferred(trial_id, owned)

    def _send_unless_deferred(self, trial_id: int, owned: _Owned) -> None:
        if not owned.deferred:
            self.flush(trial_id)

    @contextlib.contextmanager
    def deferred(self, trial_id: int) -> Iterator[None]:
        """Hold this process's writes to ``trial_id`` and send them in one transaction when the block ends; the
        study's trial listing reads the database at most once meanwhile. A block that raises sends nothing: what it
        held goes with the trial's next write or its end."""
        owned = self._owned.get(trial_id)
        if owned is None:
            yield
            return
        with self._lock:
            study_id = self._trial_id_to_study_id_and_number[trial_id][0]
            outer = study_id in self._held
            if not outer:
                self._held[study_id] = False
            owned.deferred += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._lock:
                owned.deferred -= 1
                if not outer:
                    self._held.pop(study_id, None)
            if ok and not owned.deferred:
                self.flush(trial_id)

    def flush(self, trial_id: int) -> None:
        """Send the writes held for ``trial_id`` (one transaction), or hand them to the writer thread if it runs."""
        with self._lock:
            owned = self._owned.get(trial_id)
            if owned is None or not owned.pending:
                return
            self._refuse_lost(trial_id)
            batch = owned.take()
        if self._writes is not None:
            self._raise_write_error()
            self._writes.put((trial_id, owned, batch, None))
            return
        self._write_and_mark(trial_id, owned, batch)

    def _write_and_mark(self, trial_id: int, owned: _Owned, batch: tuple[list, dict, dict, dict]) -> None:
        self._write(trial_id, *batch)
        with self._lock:
            # the listing shows the record as now stored, and its mark follows, so it is not read back for this
            study_id, number = self._trial_id_to_study_id_and_number[trial_id]
            marks = self._marks.get(study_id, {})
            if trial_id in marks and owned.trial.state == marks[trial_id][0]:
                marks[trial_id] = self._mark(owned.trial)
                self._studies[study_id].trials[number] = owned.trial

    # --- write-behind ------------------------------------------------------------------------------------------
    #
    # A trial's evaluations and its sampled params are written while the driver goes on: each held batch is one
    # transaction, sent in order by one writer thread, so the driver's thread does not wait for the database at every
    # evaluation (under load most of its bookkeeping time: benchmarks/scale_sim.py). This process reads its own
    # trials from memory, so it never sees the lag; other processes see a trial's evaluations a few milliseconds
    # late. Ending a trial (``set_trial_state_values``) first waits for every queued write, so a finished trial's
    # record is whole and in order. A write that fails is raised at the next write or end; a write to a trial another
    # driver ended marks that trial lost (its next write raises UpdateFinishedTrialError, as a direct write would).
    # If the process dies (kill -9), the writes still queued are lost with it; the trial they belong to is RUNNING
    # and is marked FAIL once its heartbeats stop, as before.

    def start_writer(self) -> None:
        """Send owned trials' writes from a writer thread from now on (see above); ``stop_writer`` ends it."""
        if self._writer is not None:
            return
        self._writes = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="autoembed-study-writer", daemon=True)
        self._writer.start()

    def _end_behind(self, trial_id: int, owned: _Owned, state: TrialState, values) -> bool:
        """End an owned trial through the writer: the listing and ``get_trial`` show it ended at once, the database
        once its queued writes and then its end are sent (see _write_loop)."""
        self._raise_write_error()
        with self._lock:
            self._refuse_lost(trial_id)
            batch = owned.take()
            record = owned.trial
            record.state = state
            record.values = list(values) if values is not None else None
            record.datetime_complete = datetime.datetime.now()  # the stored one is read back after the write
            study_id, number = self._trial_id_to_study_id_and_number[trial_id]
            self._marks.get(study_id, {}).pop(trial_id, None)
            self._studies[study_id].trials[number] = record
        self._writes.put((trial_id, owned, batch, (state, values)))
        return True

    def _write_loop(self) -> None:
        writes = self._writes
        assert writes is not None
        while True:
            item = writes.get()
            try:
                if item is None:
                    return
                trial_id, owned, batch, end = item
                if trial_id in self._lost or self._write_error is not None:
                    continue
                try:
                    if end is None:
                        self._write_and_mark(trial_id, owned, batch)
                    else:
                        self._write_end(trial_id, owned, batch, *end)
                except optuna.exceptions.UpdateFinishedTrialError:
                    with self._lock:
                        self._lost.add(trial_id)
                        if end is not None:  # ended by another driver first: the listing reads its record back
                            self._owned.pop(trial_id, None)
                            study_id = self._trial_id_to_study_id_and_number[trial_id][0]
                            self._marks.setdefault(study_id, {})[trial_id] = (TrialState.RUNNING, -1, -1)
                            self._refreshed.pop(study_id, None)
                except Exception as exc:  # raised in the driver's thread at its next write or end
                    self._write_error = exc
            finally:
                writes.task_done()

    def _write_end(self, trial_id: int, owned: _Owned, batch: tuple, state: TrialState, values) -> None:
        if any(batch):
            self._write(trial_id, *batch)
        self._backend.set_trial_state_values(trial_id, state=state, values=values)
        stored = self._stored_end_time(trial_id)
        with self._lock:
            owned.trial.datetime_complete = stored
            self._owned.pop(trial_id, None)

    def drain(self) -> None:
        """Wait until the writer thread sent every queued write; raise the first write that failed."""
        if self._writes is not None and threading.current_thread() is not self._writer:
            self._writes.join()
        self._raise_write_error()

    def _refuse_lost(self, trial_id: int) -> None:
        if trial_id in self._lost:  # as a direct write to a trial another process ended fails
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial_id} was ended by another process")

    def _raise_write_error(self) -> None:
        if self._write_error is not None:
            raise self._write_error

    def stop_writer(self) -> None:
        """Send what is queued, then write directly again (the search's end)."""
        writes, writer = self._writes, self._writer
        if writes is None or writer is None:
            return
        writes.put(None)
        writer.join()
        self._writes, self._writer = None, None
        self._raise_write_error()

    def _write(self, trial_id: int, params: list, user: dict, system: dict, values: dict) -> None:
        backend = self._backend
        if not self._bulk:  # another database: Optuna's own writes, one transaction each
            for name, internal, distribution, known in params:
                backend._set_trial_param(trial_id, name, internal, distribution, known)
            for key, text in user.items():
                backend.set_trial_user_attr(trial_id, key, json.loads(text))
            for key, text in system.items():
                backend.set_trial_system_attr(trial_id, key, json.loads(text))
            for step, value in values.items():
                backend.set_trial_intermediate_value(trial_id, step, value)
            return
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        if backend.engine.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert

        def upsert(model, rows: list[dict], keys: list, update: list[str]):
            stmt = insert(model).values(rows)
            return stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})

        with _create_scoped_session(backend.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            backend.check_trial_is_updatable(trial_id, trial.state)
            for name, _, distribution, known in params:
                if known is None:  # the first time this process writes the param: check the study's earlier trials
                    earlier = (
                        session.query(models.TrialParamModel.distribution_json)
                        .join(models.TrialModel)
                        .filter(models.TrialModel.study_id == trial.study_id, models.TrialParamModel.param_name == name)
                        .first()
                    )
                    if earlier is not None:
                        optuna.distributions.check_distribution_compatibility(
                            optuna.distributions.json_to_distribution(earlier[0]), distribution
                        )
            if params:
                rows = [
                    {"trial_id": trial_id, "param_name": name, "param_value": internal,
                     "distribution_json": optuna.distributions.distribution_to_json(distribution)}
                    for name, internal, distribution, _ in params
                ]  # fmt: skip
                session.execute(models.TrialParamModel.__table__.insert(), rows)
            for model, attrs in ((models.TrialUserAttributeModel, user), (models.TrialSystemAttributeModel, system)):
                if attrs:
                    rows = [{"trial_id": trial_id, "key": k, "value_json": v} for k, v in attrs.items()]
                    session.execute(upsert(model, rows, ["trial_id", "key"], ["value_json"]))
            if values:
                rows = []
                for step, value in values.items():
                    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                    rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
                cols = ["intermediate_value", "intermediate_value_type"]
                session.execute(upsert(models.TrialIntermediateValueModel, rows, ["trial_id", "step"], cols))

    @staticmethod
    def _mark(trial: optuna.trial.FrozenTrial) -> tuple[TrialState, int, int]:
        return trial.state, len(trial.params), len(trial.system_attrs)

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        import sqlalchemy
        from optuna.storages._rdb import models

        with self._lock:
            if self._held.get(study_id):
                return  # read once already while a trial's writes are deferred (see deferred)
            if study_id in self._held:
                self._held[study_id] = True
            now = time.monotonic()
            if now - self._refreshed.get(study_id, -math.inf) < self.max_staleness:
                return  # what this process wrote is in the cache already; other processes' changes may lag this long
            self._refreshed[study_id] = now
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
                owned = self._owned.get(t._trial_id)
                if t.state.is_finished():
                    marks.pop(t._trial_id, None)
                    self._owned.pop(t._trial_id, None)  # another driver ended it: writes to it now fail
                else:
                    if owned is not None:
                        # this process's record holds what it has not sent yet; the database's catches up at the flush
                        self._studies[study_id].trials[t.number] = owned.trial
                    marks[t._trial_id] = self._mark(t)


class _Owned:
    """A trial this process runs: its record (as written, held writes included) and the writes not sent yet."""

    def __init__(self, trial: optuna.trial.FrozenTrial):
        self.trial = trial
        self.deferred = 0
        self.params: list[tuple] = []  # (name, internal value, distribution, the distribution known before)
        self.user: dict[str, str] = {}  # key -> JSON text
        self.system: dict[str, str] = {}
        self.values: dict[int, float] = {}

    @property
    def pending(self) -> bool:
        return bool(self.params or self.user or self.system or self.values)

    def take(self) -> tuple[list, dict, dict, dict]:
        batch = (self.params, self.user, self.system, self.values)
        self.params, self.user, self.system, self.values = [], {}, {}, {}
        return batch


def deferred(study: optuna.Study, trial_id: int):
    """``StudyCache.deferred`` for the study's storage (a no-op for another storage)."""
    storage = study._storage
    return storage.deferred(trial_id) if isinstance(storage, StudyCache) else contextlib.nullcontext()


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
        self.fresh: list[int] = []  # trials added since the thread last ran: beaten at once, by the thread
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="autoembed-heartbeat", daemon=True)
        self.thread.start()

    def add(self, trial_id: int) -> None:
        """Beat for ``trial_id`` from now on; the first beat is sent by the thread at once (a trial with no beat yet
        counts as orphaned only GRACE_SECONDS after it started: see fail_interrupted)."""
        with self.lock:
            self.trial_ids.add(trial_id)
            self.fresh.append(trial_id)
        self.wake.set()

    def discard(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)

    def beat(self, trial_id: int) -> None:
        try:
            self.storage.record_heartbeat(trial_id)
        except Exception as exc:  # a missed beat is not fatal: the grace period is several beats long
            log.warning("could not record the heartbeat of trial id %s: %s", trial_id, str(exc).splitlines()[0])

    def _run(self) -> None:
        due = time.monotonic() + self.interval
        while True:
            self.wake.wait(timeout=max(0.0, due - time.monotonic()))
            self.wake.clear()
            if self.stop_event.is_set():
                return
            with self.lock:
                fresh, self.fresh = [t for t in self.fresh if t in self.trial_ids], []
            for trial_id in fresh:
                self.beat(trial_id)
            if time.monotonic() >= due:
                due = time.monotonic() + self.interval
                with self.lock:
                    ids = list(self.trial_ids)
                for trial_id in ids:
                    self.beat(trial_id)

    def close(self) -> None:
        self.stop_event.set()
        self.wake.set()
        self.thread.join(timeout=5)


def count_trials(study: optuna.Study, states: tuple[TrialState, ...], *, below: int | None = None) -> int:
    """How many trials of the study are in ``states`` (numbered below ``below`` if given), counted in the database.

    One ``COUNT`` query rather than Optuna's ``get_trials``, which loads every trial with its params and
    attributes: the driver asks this before every trial, and at thousands of trials that load is what costs.
    """
    storage = _rdb(study)
    if storage is not None:
        from optuna.storages._rdb import models

        if isinstance(study._storage, StudyCache):
            # this driver's own ends may still sit in the writer's queue: the database must hold them before it counts
            # (else a trial that just failed counts as running, and the study refuses the trial that replaces it)
            study._storage.drain()
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
        self.keep: dict[str, str] | None = None  # where the trial's model is kept if it completes (Coordinator.keep_target)
        self.predicted: float | None = None  # how long the driver expects it to run (Coordinator.predicted)
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
            with deferred(self.study, self.trial._trial_id):  # one transaction
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
            with deferred(self.study, self.trial._trial_id):  # one transaction
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


def kept_model(trial: optuna.trial.FrozenTrial | None) -> tuple[Path | None, str | None]:
    """The folder where the search kept ``trial``'s model (``autoembed export --model`` copies it) and None, or None
    and why this machine holds no such folder for it."""
    import socket

    attr = (trial.user_attrs.get("model") if trial is not None else None) or {}
    if not isinstance(attr, dict) or not attr.get("path"):
        return None, "the search kept no model for it (it keeps the models of the best --keep-models complete trials, default 1)"
    if attr.get("node") != socket.gethostname():
        return None, f"it was kept on {attr.get('node')}, where the trial trained, not on this machine"
    folder = Path(attr["path"])
    marker = folder / "trial.json"
    if not marker.is_file():
        return None, f"{folder} is gone (a better trial's model replaced it, or it was deleted)"
    try:
        token = json.loads(marker.read_text(encoding="utf-8")).get("token")
    except (OSError, ValueError, AttributeError):
        token = None
    if token != attr.get("token"):
        return None, f"{folder} holds another trial's model (was the study deleted and made again?)"
    return folder, None


def kept_model_path(trial: optuna.trial.FrozenTrial | None) -> str | None:
    """The folder of ``trial``'s kept model (:func:`kept_model`) as a string, or None."""
    folder, _ = kept_model(trial)
    return None if folder is None else str(folder)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None
