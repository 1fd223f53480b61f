"""The study's storage and records: masked URLs, interrupted trials, and one trial's record from report to end."""

from __future__ import annotations

import json
import math
import os
import uuid
from contextlib import nullcontext

import optuna
import pytest
from optuna.trial import TrialState

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.study import (
    INTERRUPTED,
    TrialRecorder,
    best_trial,
    fail_interrupted,
    finished_count,
    load_existing,
    make_storage,
    mask_text,
    mask_url,
    trial_rows,
    validate_study_name,
)

CONFIG = TrialConfig.from_dict({"model": "m", "data": {"train": "train.jsonl"}})


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql+psycopg://user:s3cret@db.internal:5432/studies?sslmode=require",
            "postgresql+psycopg://user:***@db.internal:5432/studies?sslmode=require",
        ),
        # SQLAlchemy reads the password up to the first "@": a "/" or ":" in it is still the password
        ("postgresql://u:a/b+c@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:a:b@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:secret@h/db", "postgresql://:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        ("sqlite:///studies/s.db", "sqlite:///studies/s.db"),
        ("sqlite:////tmp/a:b@c/s.db", "sqlite:////tmp/a:b@c/s.db"),
    ],
)
def test_mask_url_hides_the_password_sqlalchemy_would_use(url, masked):
    assert mask_url(url) == masked
    password = _sqlalchemy_password(url)
    if password:
        assert password not in mask_url(url).replace("***", "")


def _sqlalchemy_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).password


@pytest.mark.parametrize(
    ("url", "text"),
    [
        (
            "postgresql://u:secret@h/db",
            'connection to "h" failed for postgresql://u:secret@h/db: password "secret" rejected',
        ),
        ("postgresql://u:a/b@h/db", "FATAL: password authentication failed (password a/b)"),
        ("postgresql://u:p%40ss@h/db", "password p@ss rejected; url postgresql://u:p%40ss@h/db"),
    ],
)
def test_mask_text_removes_the_password_from_an_error_message(url, text):
    masked = mask_text(text, url)
    password = _sqlalchemy_password(url)
    assert password not in masked and "***" in masked
    assert mask_text(text, None) == text


@pytest.mark.parametrize(
    ("name", "expectation"),
    [
        ("tiny-1", nullcontext()),
        ("a.b_c", nullcontext()),
        ("", pytest.raises(AutoembedError, match="study name")),
        ("../x", pytest.raises(AutoembedError, match=r"got '\.\./x'")),
        ("has space", pytest.raises(AutoembedError, match="study name")),
        ("x" * 129, pytest.raises(AutoembedError, match="at most 128")),
    ],
)
def test_validate_study_name(name, expectation):
    with expectation:
        assert validate_study_name(name) == name


def test_bad_storage_is_one_masked_error():
    with pytest.raises(AutoembedError) as info:
        make_storage("nosuchdriver://u:secret@h/db")
    assert "secret" not in str(info.value) and "u:***@h" in str(info.value) and info.value.key == "storage"


def test_load_existing_names_what_is_missing(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(AutoembedError, match="does not exist"):
        load_existing("s", url)
    assert not (tmp_path / "s.db").exists()
    optuna.create_study(study_name="other", storage=make_storage(url))
    with pytest.raises(AutoembedError, match="it holds: other"):
        load_existing("s", url)
    assert load_existing("other", url).study_name == "other"


def test_fail_interrupted_marks_running_trials_and_only_them(tmp_path):
    study = optuna.create_study(
        study_name="s", storage=make_storage(f"sqlite:///{tmp_path}/s.db"), direction="maximize"
    )
    done = study.ask()
    study.tell(done, 0.5)
    study.ask()  # left RUNNING, as by a killed run
    study.enqueue_trial({})  # WAITING: a starting point not yet run is kept
    assert fail_interrupted(study) == 0  # it might be another live driver's: not before its grace period
    assert fail_interrupted(study, grace_seconds=0) == 1
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs["fail_reason"] == INTERRUPTED
    assert fail_interrupted(study) == 0


def _recorder(pruner: optuna.pruners.BasePruner | None = None) -> TrialRecorder:
    study = optuna.create_study(direction="maximize", pruner=pruner or optuna.pruners.NopPruner())
    return TrialRecorder(study, study.ask(), CONFIG, "recall@1")


def test_completed_trial_records_its_curve_value_and_metrics():
    rec = _recorder()
    rec.report(2, {"recall@1": 0.25, "mrr@10": 0.4})
    rec.report(4, {"recall@1": 0.5, "mrr@10": 0.6})
    assert not rec.should_prune()
    assert (
        rec.finish(value=0.5, step=4, metrics={"recall@1": 0.5}, seconds=1.23456, extra={"steps": 4})
        == TrialState.COMPLETE
    )
    t = rec.study.trials[0]
    assert t.state == TrialState.COMPLETE and t.value == 0.5
    assert t.intermediate_values == {2: 0.25, 4: 0.5}
    assert t.user_attrs["config"] == CONFIG.to_dict()
    assert t.user_attrs["value_step"] == 4 and t.user_attrs["train_seconds"] == 1.235 and t.user_attrs["steps"] == 4
    assert t.user_attrs["last_metrics"] == {"recall@1": 0.5, "mrr@10": 0.6}


def test_pruned_trial_keeps_its_curve_and_ignores_later_reports():
    rec = _recorder(optuna.pruners.ThresholdPruner(lower=0.9))
    rec.report(2, {"recall@1": 0.5})
    assert rec.should_prune()
    rec.report(4, {"recall@1": 0.95})  # a Ray trial may send one more result before it stops
    assert rec.should_prune()  # the decision stays
    assert rec.finish(value=None, step=None, metrics=None, seconds=0.5) == TrialState.PRUNED
    t = rec.study.trials[0]
    assert t.state == TrialState.PRUNED and t.intermediate_values == {2: 0.5} and t.user_attrs["pruned_at_step"] == 2


@pytest.mark.parametrize("value", [None, math.nan, math.inf])
def test_a_trial_without_a_finite_value_fails_with_a_reason(value):
    rec = _recorder()
    rec.report(2, {"recall@1": math.nan})  # not put on the curve
    assert rec.finish(value=value, step=2, metrics={}, seconds=0.1) == TrialState.FAIL
    t = rec.study.trials[0]
    assert t.intermediate_values == {} and t.user_attrs["fail_reason"] == "no finite recall@1 was measured"


def test_an_ended_trial_keeps_its_state():
    rec = _recorder()
    rec.report(2, {"recall@1": 0.5})
    rec.finish(value=0.5, step=2, metrics={}, seconds=0.1)
    assert rec.fail("the search stopped before this trial ended") == TrialState.COMPLETE  # Coordinator.abandon
    failed = _recorder()
    assert failed.fail("TrialFailed: loss is nan at step 1", seconds=0.2) == TrialState.FAIL
    assert failed.finish(value=0.5, step=2, metrics={}, seconds=0.1) == TrialState.FAIL
    assert failed.study.trials[0].user_attrs["fail_reason"] == "TrialFailed: loss is nan at step 1"


def test_rows_counts_and_best():
    study = optuna.create_study(direction="maximize")
    assert best_trial(study) is None
    for value in (0.2, 0.7):
        trial = study.ask()
        trial.suggest_float("lr", 0.0, 1.0)
        trial.report(value, 1)
        study.tell(trial, value)
    pruned = study.ask()
    pruned.report(0.1, 1)
    study.tell(pruned, state=TrialState.PRUNED)
    failed = study.ask()
    study._storage.set_trial_user_attr(failed._trial_id, "fail_reason", "boom")
    study.tell(failed, state=TrialState.FAIL)
    assert finished_count(study) == 3
    assert best_trial(study).number == 1
    rows = trial_rows(study)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert rows[3]["fail_reason"] == "boom" and rows[2]["last_step"] == 1 and rows[0]["duration_s"] >= 0


POSTGRES_URL = os.environ.get("AUTOEMBED_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def study_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cache.db"
    if POSTGRES_URL is None:
        pytest.skip("no PostgreSQL (AUTOEMBED_TEST_POSTGRES_URL unset)")
    return POSTGRES_URL


def _listing(trials) -> list[tuple]:
    return [
        # a running trial's curve and user attrs may lag in the driver's listing (see StudyCache); its params may not
        (t.number, t.state, t.params, t.values, t.system_attrs, *((t.intermediate_values, t.user_attrs) if t.state.is_finished() else ()))
        for t in trials
    ]


def test_study_cache_lists_what_the_database_holds(study_url):
    """The driver's cache (StudyCache) lists the same trials as an uncached read, while two drivers ask, suggest,
    report and end trials in turn: each listing is compared with a fresh read of the database."""
    name = f"cache-{uuid.uuid4().hex[:8]}"
    one = optuna.create_study(study_name=name, storage=make_storage(study_url), direction="maximize")
    two = optuna.load_study(study_name=name, storage=make_storage(study_url))
    fresh = optuna.storages.RDBStorage(study_url)

    def check(study):
        assert _listing(study.get_trials(deepcopy=False)) == _listing(fresh.get_all_trials(fresh.get_study_id_from_name(name)))

    one.enqueue_trial({"x": 0.5})
    check(one)
    a = one.ask()  # the enqueued trial: WAITING -> RUNNING
    check(one)
    a.suggest_float("x", 0, 1)
    a.report(0.1, 1)
    check(one)
    b = two.ask()
    b.suggest_float("x", 0, 1)
    b.suggest_categorical("c", ["p", "q"])
    check(one)
    a.report(0.2, 2)
    b.report(0.3, 1)
    b.set_user_attr("config", {"k": 1})
    check(one)
    two.tell(b, 0.3)  # another driver's trial ends: its value and user attrs reach this driver's listing
    check(one)
    c = one.ask()
    check(one)
    c.suggest_float("x", 0, 1)  # params set after the trial was first listed
    check(one)
    one.tell(a, state=TrialState.PRUNED)
    two._storage.set_trial_state_values(c._trial_id, TrialState.FAIL)  # failed by another driver (heartbeat sweep)
    check(one)
    check(two)
    assert [t.state for t in one.get_trials(deepcopy=False)] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL]


def _canonical(trials) -> list[str]:
    """FrozenTrials as comparable text (NaN != NaN, so == on FrozenTrials cannot compare NaN values)."""
    return [json.dumps(vars(t), sort_keys=True, default=repr) for t in trials]


def _old_trial_rows(study) -> list[dict]:
    """`trial_rows` as it read the study through Optuna's get_trials, before read_trials."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params, "duration_s": duration,
                     "train_seconds": t.user_attrs.get("train_seconds"), "last_step": t.last_step,
                     "fail_reason": t.user_attrs.get("fail_reason")})  # fmt: skip
    return rows


def test_read_trials_gives_what_optuna_gives(study_url):
    """read_trials (status and the dashboard) returns the FrozenTrials of study.get_trials(): every state, every kind
    of param (log float, int, categorical with None), infinite and NaN values, user and system attributes; status rows
    match the rows Optuna's read gave; the dashboard's read-only study reads the same."""
    from autoembed.dashboard.data import load_study_readonly
    from autoembed.study import read_trials

    name = f"read-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=make_storage(study_url), direction="maximize")
    study.enqueue_trial({"lr": 1e-4, "n": 2, "dim": None})
    for i in range(7):
        trial = study.ask()
        trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        trial.suggest_int("n", 1, 4)
        trial.suggest_categorical("dim", [None, 128, 256])
        if i % 2:
            trial.suggest_float("margin", 0.0, 1.0)
        trial.set_user_attr("config", {"training": {"lr": 0.1 * i}, "list": [1, 2]})
        trial.set_user_attr("train_seconds", 1.5 * i)
        for step in (1, 2):
            trial.report([0.1 * i, float("inf"), float("nan"), float("-inf")][(i + step) % 4] if i > 3 else 0.1 * i + step, step)
        if i == 6:
            continue  # left RUNNING
        if i == 5:
            trial.set_user_attr("fail_reason", "out of memory")
            study.tell(trial, state=TrialState.FAIL)
        elif i == 4:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, float("inf") if i == 3 else 0.5 + i / 10)
    study.enqueue_trial({"lr": 2e-4})  # WAITING
    expected = study.get_trials(deepcopy=False)
    assert len(expected) == 8
    assert any(math.isnan(v) for t in expected for v in t.intermediate_values.values())
    assert _canonical(read_trials(study)) == _canonical(expected)
    assert json.dumps(trial_rows(study)) == json.dumps(_old_trial_rows(study))
    readonly = load_study_readonly(study_url, name)
    assert _canonical(read_trials(readonly)) == _canonical(readonly.get_trials(deepcopy=False)) == _canonical(expected)
    subset = read_trials(study, user_attrs=("train_seconds",))
    assert [t.user_attrs for t in subset] == [{k: v for k, v in t.user_attrs.items() if k == "train_seconds"} for t in expected]


class _Statements:
    """Counts the SQL statements and commits an engine runs (SQLAlchemy's events), to see what reaches the database."""

    def __init__(self, engine):
        import sqlalchemy

        self.statements, self.commits = [], 0
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._statement)
        sqlalchemy.event.listen(engine, "commit", self._commit)

    def _statement(self, conn, cursor, statement, *args):
        self.statements.append(statement)

    def _commit(self, conn):
        self.commits += 1

    def reset(self):
        self.statements, self.commits = [], 0

    def writes(self) -> list[str]:
        return [s for s in self.statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def test_deferred_writes_go_in_one_transaction_and_match_optuna(study_url):
    """Inside StudyCache.deferred a trial's params, attributes and curve reach the database in one transaction at the
    end of the block, not before; what is then stored is what Optuna's own writes store (a fresh, uncached read equals
    the same trial written through a plain RDBStorage), and the driver reads its running trial from memory."""
    from autoembed.study import deferred

    name = f"defer-{uuid.uuid4().hex[:8]}"
    cached, plain = (
        optuna.create_study(study_name=n, storage=s, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        for n, s in ((name, make_storage(study_url)), (name + "-plain", optuna.storages.RDBStorage(study_url)))
    )
    fresh = optuna.storages.RDBStorage(study_url)
    counter = _Statements(cached._storage._backend.engine)
    for study in (plain, cached):
        trial = study.ask()
        counter.reset()
        with deferred(study, trial._trial_id):
            trial.suggest_float("lr", 1e-5, 1e-3, log=True)
            trial.suggest_int("n", 1, 4)
            trial.suggest_categorical("dim", [None, 128])
            trial.set_user_attr("config", {"training": {"lr": 0.1}, "list": [1, 2]})
            trial.set_user_attr("config", {"training": {"lr": 0.2}})  # set twice: the last value is stored
            trial.report(0.25, 100)
            trial.report(float("nan"), 200)
            if study is cached:
                assert not counter.writes() and fresh.get_trial(trial._trial_id).params == {}  # nothing sent yet
                counter.reset()
        if study is cached:
            assert counter.writes() and counter.commits == 1, counter.statements  # the flush: one transaction
            counter.reset()
            assert cached._storage.get_trial(trial._trial_id).params == trial.params
            assert counter.statements == []  # the running trial is read from memory
            assert trial.should_prune() is False
        study.tell(trial, 0.5)
    a, b = (fresh.get_all_trials(fresh.get_study_id_from_name(n))[0] for n in (name, name + "-plain"))
    for field in ("params", "distributions", "user_attrs", "system_attrs", "state", "values"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.intermediate_values[100] == 0.25 and math.isnan(a.intermediate_values[200])
    assert _canonical(cached.get_trials(deepcopy=False)) == _canonical(fresh.get_all_trials(cached._study_id))


def test_deferred_block_that_raises_sends_its_writes_with_the_next(study_url):
    """A block that raises sends nothing; its held writes go with the trial's next write (here its FAIL), so a
    refused trial still shows what was sampled."""
    from autoembed.study import deferred

    name = f"defer-raise-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=make_storage(study_url), direction="maximize")
    fresh = optuna.storages.RDBStorage(study_url)
    trial = study.ask()
    with pytest.raises(RuntimeError), deferred(study, trial._trial_id):
        trial.suggest_float("x", 0, 1)
        raise RuntimeError("bad config")
    assert fresh.get_trial(trial._trial_id).params == {}
    trial.set_user_attr("fail_reason", "bad config")
    study.tell(trial, state=TrialState.FAIL)
    stored = fresh.get_trial(trial._trial_id)
    assert stored.state == TrialState.FAIL and set(stored.params) == {"x"} and stored.user_attrs == {"fail_reason": "bad config"}


def test_a_trial_another_driver_ended_refuses_deferred_writes(study_url):
    """Another driver ends this driver's trial (its heartbeats looked stale): the held writes fail at the flush with
    Optuna's UpdateFinishedTrialError, which the recorder turns into 'lost' (it stops writing), and nothing of them
    is stored."""
    name = f"defer-lost-{uuid.uuid4().hex[:8]}"
    one = optuna.create_study(study_name=name, storage=make_storage(study_url), direction="maximize")
    two = optuna.load_study(study_name=name, storage=make_storage(study_url))
    trial = one.ask()
    recorder = TrialRecorder(one, trial, CONFIG, "recall@10")
    two._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    recorder.report(100, {"recall@10": 0.5})
    assert recorder.done and recorder.state == TrialState.FAIL
    stored = optuna.storages.RDBStorage(study_url).get_trial(trial._trial_id)
    assert stored.state == TrialState.FAIL and stored.intermediate_values == {} and "last_metrics" not in stored.user_attrs


def test_a_listing_may_lag_other_drivers_but_never_this_one(study_url):
    """With max_staleness, the listing skips the database for that long: another driver's new trial shows up late,
    while this driver's own writes (a trial it creates or enqueues, its params, a trial it ends) show at once."""
    name = f"stale-{uuid.uuid4().hex[:8]}"
    one = optuna.create_study(study_name=name, storage=make_storage(study_url), direction="maximize")
    two = optuna.load_study(study_name=name, storage=make_storage(study_url))
    one._storage.max_staleness = 3600.0
    assert one.get_trials(deepcopy=False) == []
    other = two.ask()  # another driver's trial: not read again within the hour
    assert one.get_trials(deepcopy=False) == []
    one.enqueue_trial({"x": 0.25})  # this driver's own: listed, and asked next
    assert [t.state for t in one.get_trials(deepcopy=False)] == [TrialState.RUNNING, TrialState.WAITING]
    mine = one.ask()
    assert {t.number: t.state for t in one.get_trials(deepcopy=False)}[mine.number] == TrialState.RUNNING  # at once
    assert mine.suggest_float("x", 0, 1) == 0.25
    one.tell(mine, 0.5)
    listed = {t.number: t for t in one.get_trials(deepcopy=False)}
    assert listed[mine.number].state == TrialState.COMPLETE and listed[mine.number].params == {"x": 0.25}
    two.tell(other, 0.1)
    assert {t.number: t.state for t in one.get_trials(deepcopy=False)}[other.number] == TrialState.RUNNING  # lags
    one._storage.max_staleness = 0.0
    assert {t.number: t.state for t in one.get_trials(deepcopy=False)}[other.number] == TrialState.COMPLETE


def _write_behind_study(url: str, name: str) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=make_storage(url), direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study._storage.start_writer()
    return study


def test_write_behind_sends_every_write_in_order_before_the_end(study_url):
    """With the writer thread on, the driver's writes to its running trial and its end go to the database from that
    thread, in order (the driver reads its trial from memory meanwhile, and lists it as ended at once); the finished
    record is what Optuna's own writes give, curve and attributes included."""
    import threading

    name = f"behind-{uuid.uuid4().hex[:8]}"
    study = _write_behind_study(study_url, name)
    plain = optuna.create_study(study_name=name + "-plain", storage=optuna.storages.RDBStorage(study_url), direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    fresh = optuna.storages.RDBStorage(study_url)
    writer = study._storage._writer
    sent_from: set[str] = set()
    write = study._storage._write

    def spying(*args):
        sent_from.add(threading.current_thread().name)
        return write(*args)

    study._storage._write = spying
    for s in (plain, study):
        trial = s.ask()
        recorder = TrialRecorder(s, trial, CONFIG, "recall@10")
        trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        for step, value in ((100, 0.2), (200, 0.4), (300, 0.3)):
            recorder.report(step, {"recall@10": value, "mrr@10": value / 2})
        assert s.get_trials(deepcopy=False)[0].intermediate_values == {100: 0.2, 200: 0.4, 300: 0.3}
        recorder.finish(value=0.3, step=300, metrics={"recall@10": 0.3}, seconds=1.0)
        listed = s.get_trials(deepcopy=False)[0]  # the driver's listing has the end at once
        assert listed.state == TrialState.COMPLETE and listed.value == 0.3 and listed.user_attrs["value_step"] == 300
    study._storage.drain()
    assert sent_from == {writer.name}
    a, b = (fresh.get_all_trials(fresh.get_study_id_from_name(n))[0] for n in (name, name + "-plain"))
    for field in ("params", "distributions", "user_attrs", "state", "values", "intermediate_values"):
        assert getattr(a, field) == getattr(b, field), field
    assert study.get_trials(deepcopy=False)[0].datetime_complete == a.datetime_complete  # read back once stored
    study._storage.stop_writer()
    assert study._storage._writer is None and not writer.is_alive()


def test_write_behind_a_failed_write_is_raised_at_the_next_one(study_url):
    """A write the database refuses (here: its table is gone) fails in the writer thread; the driver gets that error
    at its next write to the study, as it would have from a direct write, and stopping the writer raises it too."""
    import sqlalchemy

    name = f"behind-err-{uuid.uuid4().hex[:8]}"
    study = _write_behind_study(study_url, name)
    trial = study.ask()
    recorder = TrialRecorder(study, trial, CONFIG, "recall@10")
    recorder.report(100, {"recall@10": 0.5})
    study._storage.drain()
    engine = study._storage._backend.engine
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("ALTER TABLE trial_intermediate_values RENAME TO trial_intermediate_values_gone"))
    try:
        recorder.report(200, {"recall@10": 0.6})  # queued: the driver goes on
        with pytest.raises(optuna.exceptions.StorageInternalError) as failed:
            study._storage.drain()
        assert "trial_intermediate_values" in str(failed.value.__cause__)
        with pytest.raises(optuna.exceptions.StorageInternalError):
            recorder.report(300, {"recall@10": 0.7})
        with pytest.raises(optuna.exceptions.StorageInternalError):
            study._storage.stop_writer()
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("ALTER TABLE trial_intermediate_values_gone RENAME TO trial_intermediate_values"))


def test_write_behind_a_trial_another_driver_ended_is_lost_at_the_next_write(study_url):
    """Another driver ends this driver's trial while its evaluation is queued: the writer finds the trial finished,
    and the recorder stops writing at its next report, as with direct writes; nothing more is stored."""
    name = f"behind-lost-{uuid.uuid4().hex[:8]}"
    one = _write_behind_study(study_url, name)
    two = optuna.load_study(study_name=name, storage=make_storage(study_url))
    trial = one.ask()
    recorder = TrialRecorder(one, trial, CONFIG, "recall@10")
    one._storage.drain()
    two._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    recorder.report(100, {"recall@10": 0.5})  # queued; the writer finds the trial FAIL
    one._storage.drain()
    assert not recorder.done
    recorder.report(200, {"recall@10": 0.6})
    assert recorder.done and recorder.state == TrialState.FAIL
    stored = optuna.storages.RDBStorage(study_url).get_trial(trial._trial_id)
    assert stored.state == TrialState.FAIL and stored.intermediate_values == {}
    one._storage.stop_writer()


def test_write_behind_an_end_another_driver_came_first_to_is_read_back(study_url):
    """Another driver ends this driver's trial (FAIL) just before this driver's queued end is sent: the database
    keeps the first end, and this driver's listing, which showed its own end at once, reads the stored one back."""
    name = f"behind-end-{uuid.uuid4().hex[:8]}"
    one = _write_behind_study(study_url, name)
    two = optuna.load_study(study_name=name, storage=make_storage(study_url))
    trial = one.ask()
    one._storage.drain()
    two._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    one.tell(trial, 0.9)
    assert one.get_trials(deepcopy=False)[0].state == TrialState.COMPLETE  # this driver's end, shown at once
    one._storage.drain()
    assert one.get_trials(deepcopy=False)[0].state == TrialState.FAIL  # the stored end, read back
    assert optuna.storages.RDBStorage(study_url).get_trial(trial._trial_id).state == TrialState.FAIL
    one._storage.stop_writer()
