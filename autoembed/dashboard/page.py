"""The dashboard page: reads the study once, builds every info and figure, and renders them into
`templates/dashboard.html.j2`, one HTML file with plotly.js inlined once, so the page works offline."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import plotly.graph_objects as go
from markupsafe import Markup
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from autoembed.dashboard.data import (
    _MISSING,
    _ComputeInfo,
    _format_seconds,
    _get_compute_info,
    _get_history_info,
    _get_importance_info,
    _get_intermediate_info,
    _get_parallel_info,
    _get_pareto_info,
    _get_slice_info,
    _get_summary_info,
    _get_top_trials_info,
    _label,
    _SummaryInfo,
    load_study_readonly,
)
from autoembed.dashboard.figures import (
    _get_compute_plot,
    _get_history_plot,
    _get_importance_plot,
    _get_intermediate_plot,
    _get_parallel_plot,
    _get_pareto_plot,
    _get_slice_plot,
)
from autoembed.fileio import atomic_write_text
from autoembed.study import mask_url, read_trials

TEMPLATE = "dashboard.html.j2"


@dataclasses.dataclass(frozen=True)
class _Section:
    anchor: str
    title: str
    note: str  # markup when built with Markup, else escaped
    figure_id: str | None = None
    figure_html: Markup | None = None
    empty: str | None = None  # why there is nothing to show
    table: str | None = None  # the template's table macro: "top", "provenance" or "failures"


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("autoembed.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(duration=_format_seconds, label=_label, json_block=_json_block)
    return env


def _json_block(value: Any) -> Markup:
    return Markup(f"<pre>{html.escape(json.dumps(value, indent=2, default=str, ensure_ascii=False), quote=True)}</pre>")


def _codes(names: Sequence[str]) -> Markup:
    return Markup(", ").join(Markup("<code>{}</code>").format(n) for n in names)


def _figure(anchor: str, title: str, note: str, fig_id: str, fig: go.Figure | None, empty: str) -> _Section:
    """A figure's section; without a figure (`fig` is None), the reason there is none."""
    if fig is None:
        return _Section(anchor, title, note, empty=empty)
    body = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"{fig_id}-plot",
        default_height=f"{fig.layout.height or 450}px",
        config={"displaylogo": False, "responsive": True},
    )
    return _Section(anchor, title, note, figure_id=fig_id, figure_html=Markup(body))


def _provenance_view(summary: _SummaryInfo) -> dict[str, Any] | None:
    p = summary.provenance
    if not p:
        return None
    space = p.get("space") if isinstance(p.get("space"), dict) else {}
    extras = [  # whatever else the search recorded: base model hashes, versions, device...
        (key.replace("_", " "), value, isinstance(value, (dict, list)))
        for key, value in p.items()
        if key not in ("model", "space", "storage", "data")
    ]
    return {
        "model": p.get("model", "unknown"),
        "space_name": space.get("name", ""),
        "space_path": space.get("path", ""),
        "storage": mask_url(str(p.get("storage") or summary.storage)),
        "extras": extras,
        "data": p["data"] if isinstance(p.get("data"), dict) else None,
        "space_summary": summary.space_summary,
    }


def _stats(summary: _SummaryInfo, total_seconds: float) -> list[tuple[str, str]]:
    stats = [(str(summary.n_trials), "trials")]
    stats += [
        (str(summary.counts.get(s, 0)), s) for s in ("completed", "pruned", "failed", "running") if summary.counts.get(s)
    ]
    if summary.best_value is not None:
        stats.append((f"{summary.best_value:.4f}", f"best {summary.objective} (trial {summary.best_number})"))
    if total_seconds:
        stats.append((_format_seconds(total_seconds), "compute spent"))
    return stats


def _notice(summary: _SummaryInfo) -> str | None:
    if summary.n_trials == 0:
        return "This study has no trials yet: there is nothing to plot. The figures appear as trials complete."
    if summary.n_completed == 0 and summary.counts.get("failed", 0) == summary.n_trials:
        return (
            f"All {summary.n_trials} trials of this study failed: no trial has a result to plot. "
            "Why they failed is listed under Failed trials below."
        )
    if summary.n_completed == 0:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
        return f"No trial has completed yet ({parts}); the figures that need a completed trial appear once one does."
    return None


def _figure_sections(
    summary: _SummaryInfo, trials: Sequence[FrozenTrial], direction: StudyDirection, compute: _ComputeInfo
) -> list[_Section]:
    objective = summary.objective
    sections = []

    history = _get_history_info(trials, direction)
    sections.append(
        _figure(
            "history",
            "Optimization history",
            f"{objective} of each completed trial, and the best so far ({summary.direction}).",
            "fig-history",
            _get_history_plot(history, objective) if history.numbers else None,
            "No completed trials yet.",
        )
    )

    intermediate = _get_intermediate_info(trials, summary.fidelity)
    sections.append(
        _figure(
            "curves",
            f"Intermediate {objective} curves",
            f"{objective} at each evaluation, one line per trial: completed trials in blue, pruned in red, "
            "running in green.",
            "fig-intermediate",
            _get_intermediate_plot(intermediate, objective) if intermediate.curves else None,
            "No trial has reported an evaluation yet.",
        )
    )

    compute_note = "Compute seconds each trial spent training and evaluating (train_seconds), summed by outcome."
    if compute.saved_seconds is not None and compute.counts.get("pruned"):
        compute_note += (
            f" Pruning saved about {_format_seconds(compute.saved_seconds)}: each pruned trial's cost, "
            f"extrapolated at its own rate to step {compute.full_steps} (the median last step of the completed "
            "trials), minus what it spent."
        )
    sections.append(
        _figure(
            "compute",
            "Compute: completed vs pruned trials",
            compute_note,
            "fig-compute",
            _get_compute_plot(compute) if compute.total_seconds > 0 else None,
            "No trial has recorded compute time yet.",
        )
    )

    pareto = _get_pareto_info(trials, direction, objective)
    sections.append(
        _figure(
            "pareto",
            f"{objective} against embedding dimension",
            "Smaller embeddings cost less to store and search. The front joins the trials that no trial with a "
            "smaller or equal dimension beats; crosses are trials' models after their export's PCA (export.pca_variance).",
            "fig-pareto",
            _get_pareto_plot(pareto, objective) if pareto.numbers else None,
            "No completed trial records its embedding dimension yet.",
        )
    )

    slices = _get_slice_info(trials)
    sections.append(
        _figure(
            "slices",
            "Architecture choices",
            f"{objective} of the completed trials for each architecture choice the study searched over.",
            "fig-slices",
            _get_slice_plot(slices, objective) if slices.slices else None,
            "No completed trial has an architecture parameter (output_dim, attention_heads, ...).",
        )
    )

    importance = _get_importance_info(trials, direction)
    note = Markup(
        "fANOVA on the completed trials (fixed seed): how much of the variance of {} each parameter explains."
    ).format(objective)
    if importance.left_out:
        note += Markup(" Conditional parameters, which not every trial has, are left out: {}.").format(
            _codes(importance.left_out)
        )
    sections.append(
        _figure(
            "importance",
            "Hyperparameter importances",
            note,
            "fig-importance",
            _get_importance_plot(importance) if importance.importances else None,
            importance.message or "No importances.",
        )
    )

    parallel = _get_parallel_info(trials, objective, first=list(importance.importances))
    note = Markup(
        "Each line is a completed trial, coloured by its objective; the most important parameters come first. "
        "Drag along an axis to filter. Trials without a conditional parameter sit on its {} tick; "
        "log-scale parameters show log10."
    ).format(_MISSING)
    if parallel.left_out:
        note += Markup(" Left out, for room: {}.").format(_codes(parallel.left_out))
    sections.append(
        _figure(
            "parallel",
            "Parallel coordinates",
            note,
            "fig-parallel",
            _get_parallel_plot(parallel) if parallel.numbers else None,
            "No completed trials yet.",
        )
    )
    return sections


def _render_page(
    title: str, summary: _SummaryInfo, trials: Sequence[FrozenTrial], direction: StudyDirection, now: datetime.datetime
) -> str:
    compute = _get_compute_info(trials)
    sections = _figure_sections(summary, trials, direction, compute)
    top = _get_top_trials_info(trials, direction)
    sections.append(
        _Section("top", f"Top {len(top)} trials", "Best first; open a row's config for the full trial config.", table="top")
    )
    sections.append(_Section("provenance", "Provenance", "What the study was run on.", table="provenance"))
    if summary.failures:
        sections.append(
            _Section("failures", "Failed trials", "Why trials failed, commonest reason first.", table="failures")
        )
    if summary.n_completed == 0:  # keep what there is to show: curves and compute of pruned trials, the record
        sections = [s for s in sections if s.figure_id or s.anchor in ("provenance", "failures")]
    return _environment().get_template(TEMPLATE).render(
        title=title,
        summary=summary,
        written=now.strftime("%Y-%m-%d %H:%M:%S"),
        sections=sections,
        stats=_stats(summary, compute.total_seconds),
        notice=_notice(summary),
        top=top,
        provenance_view=_provenance_view(summary),
        plotly_js=Markup(_plotly_js()),
    )


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def write_dashboard(storage_url: str, study_name: str, out_path: str | Path, *, title: str | None = None) -> Path:
    """Write one self-contained HTML page showing the study, and return its path.

    The study is read once, read-only (see `load_study_readonly`), so this is safe while trials run.
    The file is replaced atomically: a browser reloading it never sees half a page.

    Raises:
        AutoembedError: the study cannot be read (missing database file or study, not an Optuna database).
    """
    study = load_study_readonly(storage_url, study_name)
    trials = read_trials(study)  # what study.get_trials() gives, read without Optuna's ORM (10,000 trials: see read_trials)
    direction = study.directions[0]
    now = datetime.datetime.now()
    summary = _get_summary_info(study_name, storage_url, study.user_attrs, trials, direction)
    page = _render_page(title or f"autoembed study {study_name}", summary, trials, direction, now)
    out_path = Path(out_path)
    atomic_write_text(out_path, page)
    return out_path
