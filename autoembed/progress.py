"""The live terminal view of a search: one row per trial, best so far, elapsed and ETA."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from rich.live import Live
from rich.table import Table

KEY_PARAMS = ("loss", "output_dim", "attention_heads", "adapter_depth", "batch_size", "backbone_lr")


class SearchDisplay:
    """Collects trial events and redraws a table on stderr (plain lines when not a terminal)."""

    def __init__(self, console, options, *, live: bool = True, max_rows: int = 15, metric: str | None = None):
        self.console = console
        self.options = options
        self.metric = metric or "value"  # the column header: the space's metric (recall@10, mrr@10, ...)
        self.rows: dict[int, dict[str, Any]] = {}
        self.best_value: float | None = None
        self.best_number: int | None = None
        self.t_start = time.monotonic()
        self.finished_runs = 0
        self.max_rows = max_rows
        self.live: Live | None = None
        self.use_live = bool(live and console is not None and console.is_terminal)

    def note(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False)

    def begin(self, study) -> None:
        self.best(study)
        if self.use_live:
            self.live = Live(self._table(), console=self.console, refresh_per_second=2, transient=False)
            self.live.start()

    def end(self) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()
            self.live = None

    def started(self, number: int, params: dict[str, Any]) -> None:
        self.rows[number] = {"params": params, "state": "RUNNING", "step": 0, "total": None, "value": None, "t0": time.monotonic()}
        self._line(f"trial {number} started: {_short(params)}")

    def progress(self, number: int, step: int, total: int, value: float | None) -> None:
        row = self.rows.get(number)
        if row is None:
            return
        row.update(step=step, total=total, value=value)
        self._refresh()

    def finished(self, number: int, state: str, value: float | None, reason: str | None) -> None:
        row = self.rows.setdefault(number, {"params": {}, "step": 0, "total": None, "value": None, "t0": time.monotonic()})
        row["state"] = state
        if value is not None and state == "COMPLETE":
            row["value"] = value
        self.finished_runs += 1
        seconds = time.monotonic() - row["t0"]
        # a trial that did not complete has no value: its last evaluation (with evaluation.interim_*, on the interim
        # sub-sample, whose figures run higher than the whole sample's and are not comparable with values)
        label = "value" if state == "COMPLETE" else "last evaluation"
        tail = f" {label} {row['value']:.4f}" if row["value"] is not None else ""
        tail += f" ({reason[:160]})" if reason else ""
        self._line(f"trial {number} {state} after {seconds:.0f}s at step {row['step']}{tail}")

    def best(self, study) -> None:
        # from the driver's listing of the study (memory, at most a second behind other drivers), not a query per trial
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
        if not complete:
            return
        trial = max(complete, key=lambda t: (t.value, -t.number))  # the study maximizes; the first of equals
        self.best_value, self.best_number = trial.value, trial.number
        self._refresh()

    def _line(self, text: str) -> None:
        if self.console is None:
            return
        if self.live is not None:
            self.live.console.print(text, highlight=False)
            self._refresh()
        else:
            self.console.print(text, highlight=False)

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())

    def _eta(self) -> str:
        elapsed = time.monotonic() - self.t_start
        if self.options.timeout:
            return f"{max(0.0, self.options.timeout - elapsed):.0f}s (timeout)"
        if not self.finished_runs:
            return "?"
        left = max(0, self.options.trials - len([r for r in self.rows.values() if r["state"] in ("COMPLETE", "PRUNED")]))
        return f"~{elapsed / self.finished_runs * left / max(1, self.options.workers):.0f}s"

    def _table(self) -> Table:
        elapsed = time.monotonic() - self.t_start
        best = f"best {self.best_value:.4f} (trial {self.best_number})" if self.best_value is not None else "no complete trial yet"
        table = Table(title=f"study {self.options.study}: {best} | elapsed {elapsed:.0f}s | ETA {self._eta()}", title_justify="left")
        for col in ("trial", "state", "step", self.metric, "params"):
            table.add_column(col)
        for number in sorted(self.rows)[-self.max_rows :]:
            row = self.rows[number]
            step = f"{row['step']}/{row['total']}" if row["total"] else str(row["step"])
            value = f"{row['value']:.4f}" if row["value"] is not None else "-"
            table.add_row(str(number), row["state"], step, value, _short(row["params"]))
        return table


def _short(params: dict[str, Any]) -> str:
    keys = [k for k in KEY_PARAMS if k in params] + [k for k in params if k.startswith(("temperature", "margin"))]
    parts = []
    if isinstance(params.get("model"), str):  # a searched base model: its folder's name (or the package's)
        parts.append(f"model={Path(params['model']).name or params['model']}")
    for k in keys:
        v = params[k]
        parts.append(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)
