"""The study's storage: URLs (masked when shown), opening studies, and writing a trial's record.

Everything a trial leaves in the study goes through :class:`TrialRecorder`, whichever executor ran it,
so Ray and inline runs give the same records.
"""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import optuna
from optuna.trial import TrialState

from autoembed.errors import AutoembedError

STUDIES_DIR = Path("studies")
INTERRUPTED = "left RUNNING by an interrupted run; marked FAIL when the study resumed"


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


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's SQLAlchemy storage on ``url``; SQLite files get their folder created."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as exc:  # bad driver, unreachable server, bad credentials
        raise AutoembedError(f"cannot open study storage {mask_url(url)}: {mask_text(str(exc).splitlines()[0], url)}", key="storage") from None


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


def fail_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a run that was killed can never finish: mark them FAIL, say why."""
    n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        n += 1
    return n


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: those that reached a decision (complete or pruned)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


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
        self.started = datetime.datetime.now()
        trial.set_user_attr("config", config.to_dict())

    @property
    def number(self) -> int:
        return self.trial.number

    def report(self, step: int, metrics: dict[str, float]) -> None:
        """Record one evaluation on the trial's curve (ignored once the trial was pruned or ended)."""
        if self.pruned or self.done:
            return
        value = metrics.get(self.objective)
        if value is None or not math.isfinite(value):
            return
        self.history.append((step, dict(metrics)))
        self.trial.report(float(value), step)
        self.trial.set_user_attr("last_metrics", {k: float(v) for k, v in metrics.items()})

    def should_prune(self) -> bool:
        """Ask the study's pruner; once it says prune, the answer stays."""
        if not self.pruned and not self.done and self.history:
            self.pruned = self.trial.should_prune()
        return self.pruned

    def finish(self, *, value: float | None, step: int | None, metrics: dict[str, float] | None, seconds: float, extra: dict[str, Any] | None = None) -> TrialState:
        """Tell the study how the trial ended: PRUNED, or COMPLETE with its value (see training.trial_value)."""
        if self.done:
            return self.state
        self.done = True
        self.trial.set_user_attr("train_seconds", round(float(seconds), 3))
        for key, val in (extra or {}).items():
            self.trial.set_user_attr(key, val)
        if self.pruned:
            last_step = self.history[-1][0] if self.history else None
            self.trial.set_user_attr("pruned_at_step", last_step)
            self.state = TrialState.PRUNED
            self.study.tell(self.trial, state=TrialState.PRUNED)
        elif value is None or not math.isfinite(value):
            return self.fail(f"no finite {self.objective} was measured", seconds=seconds)
        else:
            self.trial.set_user_attr("best_step", step)
            self.trial.set_user_attr("value_step", step)
            self.trial.set_user_attr("final_metrics", {k: float(v) for k, v in (metrics or {}).items()})
            self.state = TrialState.COMPLETE
            self.study.tell(self.trial, value)
        return self.state

    def fail(self, reason: str, *, seconds: float | None = None) -> TrialState:
        if self.done and getattr(self, "state", None) is not None and self.state != TrialState.FAIL:
            return self.state
        self.done = True
        self.trial.set_user_attr("fail_reason", reason[:2000])
        if seconds is not None:
            self.trial.set_user_attr("train_seconds", round(float(seconds), 3))
        self.state = TrialState.FAIL
        self.study.tell(self.trial, state=TrialState.FAIL)
        return self.state


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One plain dict per trial for ``autoembed status``."""
    rows = []
    for t in study.get_trials(deepcopy=False):
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
