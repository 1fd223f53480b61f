"""The dashboard's drawing half: one plotly figure from each info of `data.py`, and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autoembed.dashboard.data import (
    _Axis,
    _ComputeInfo,
    _Curve,
    _format_seconds,
    _HistoryInfo,
    _ImportanceInfo,
    _IntermediateInfo,
    _ParallelInfo,
    _ParetoInfo,
    _SliceInfo,
)

_COLORS = {
    "completed": "#1f77b4",
    "pruned": "#d62728",
    "failed": "#7f7f7f",
    "running": "#2ca02c",
    "waiting": "#bcbd22",
    "saved": "#ff9896",
    "best": "#ff7f0e",
    "pca": "#9467bd",
}


def _layout(fig: go.Figure, *, height: int, margin: dict[str, int] | None = None, **kwargs: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin=margin or {"l": 60, "r": 30, "t": 30, "b": 50},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        **kwargs,
    )
    return fig


def _get_history_plot(info: _HistoryInfo, objective: str) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=info.numbers,
            y=info.values,
            mode="markers",
            name=f"{objective} of a completed trial",
            marker={"color": _COLORS["completed"], "size": 6, "opacity": 0.6},
            hovertemplate="trial %{x}<br>%{y:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=info.numbers,
            y=info.best_so_far,
            mode="lines",
            line={"shape": "hv", "color": _COLORS["best"], "width": 2},
            name="best so far",
            hovertemplate="after trial %{x}: best %{y:.4f}<extra></extra>",
        )
    )
    return _layout(fig, height=420, xaxis_title="trial", yaxis_title=objective)


def _joined(curves: Sequence[_Curve]) -> tuple[list, list, list]:
    """All curves of one state as one trace, separated by gaps: fast to draw with 1,000 trials."""
    xs: list = []
    ys: list = []
    numbers: list = []
    for curve in curves:
        xs += [*curve.steps, None]
        ys += [*curve.values, None]
        numbers += [curve.number] * len(curve.steps) + [None]
    return xs, ys, numbers


def _get_intermediate_plot(info: _IntermediateInfo, objective: str) -> go.Figure:
    fig = go.Figure()
    # Pruned curves go over the completed ones: they end early, where the completed ones are dense.
    for state, width, opacity in (("completed", 1.5, 0.5), ("pruned", 1, 0.45), ("running", 2, 0.9)):
        curves = [c for c in info.curves if c.state == state]
        if not curves:
            continue
        xs, ys, numbers = _joined(curves)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                customdata=numbers,
                mode="lines+markers" if state == "running" else "lines",
                line={"color": _COLORS[state], "width": width},
                marker={"size": 4},
                opacity=opacity,
                name=f"{state} ({len(curves)})",
                connectgaps=False,
                hovertemplate=f"{state} trial %{{customdata}}<br>{'pairs' if info.unit == 'pairs' else 'step'} %{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )
    return _layout(fig, height=420, xaxis_title=info.unit_label, yaxis_title=objective)


def _get_compute_plot(info: _ComputeInfo) -> go.Figure:
    labels, hours, colors, texts = [], [], [], []
    for state in ("completed", "pruned", "failed", "running"):
        if state in info.seconds:
            labels.append(f"{state} ({info.counts.get(state, 0)} trials)")
            hours.append(info.seconds[state] / 3600)
            colors.append(_COLORS[state])
            texts.append(_format_seconds(info.seconds[state]))
    if info.saved_seconds is not None and info.counts.get("pruned"):
        labels.append("saved by pruning (estimate)")
        hours.append(info.saved_seconds / 3600)
        colors.append(_COLORS["saved"])
        texts.append(_format_seconds(info.saved_seconds))
    fig = go.Figure(
        go.Bar(
            x=hours,
            y=labels,
            orientation="h",
            marker={"color": colors},
            text=texts,
            textposition="auto",
            hovertemplate="%{y}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(
        fig, height=120 + 45 * len(labels), xaxis_title="compute (hours)", margin={"l": 220, "r": 30, "t": 20, "b": 50}
    )


def _get_pareto_plot(info: _ParetoInfo, objective: str) -> go.Figure:
    by_number = {n: (d, v) for n, d, v in zip(info.numbers, info.dims, info.values, strict=True)}
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=info.dims,
            y=info.values,
            customdata=info.numbers,
            mode="markers",
            name="completed trial",
            marker={"color": _COLORS["completed"], "size": 7, "opacity": 0.45},
            hovertemplate="trial %{customdata}<br>dimension %{x}<br>%{y:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[by_number[n][0] for n in info.front],
            y=[by_number[n][1] for n in info.front],
            customdata=info.front,
            mode="lines+markers",
            line={"shape": "hv", "color": _COLORS["best"], "width": 2},
            marker={"size": 10, "symbol": "diamond"},
            name="Pareto front (no smaller dimension does as well)",
            hovertemplate="trial %{customdata}<br>dimension %{x}<br>%{y:.4f}<extra></extra>",
        )
    )
    if info.pca:
        fig.add_trace(
            go.Scatter(
                x=[d for d, _, _, _ in info.pca],
                y=[v for _, v, _, _ in info.pca],
                customdata=[[n, f"{var:.3f}"] for _, _, n, var in info.pca],
                mode="markers",
                name="PCA at export (the trial's model, projected)",
                marker={"color": _COLORS["pca"], "size": 9, "symbol": "x"},
                hovertemplate="trial %{customdata[0]} after PCA (variance %{customdata[1]})<br>dimension %{x}<br>"
                "%{y:.4f}<extra></extra>",
            )
        )
    dims = sorted(set(info.dims) | {d for d, _, _, _ in info.pca})
    fig.update_xaxes(type="log", tickvals=dims, ticktext=[str(d) for d in dims])
    return _layout(fig, height=420, xaxis_title="embedding dimension (log scale)", yaxis_title=objective)


def _get_slice_plot(info: _SliceInfo, objective: str) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=len(info.slices),
        shared_yaxes=True,
        subplot_titles=[s.title for s in info.slices],
        horizontal_spacing=0.03,
    )
    for col, piece in enumerate(info.slices, start=1):
        fig.add_trace(
            go.Box(
                x=piece.x,
                y=piece.values,
                customdata=piece.numbers,
                name=piece.title,
                boxpoints="all",
                jitter=0.5,
                pointpos=0,
                marker={"size": 4, "opacity": 0.5, "color": _COLORS["completed"]},
                line={"color": "#444", "width": 1},
                fillcolor="rgba(0,0,0,0)",
                showlegend=False,
                hovertemplate="trial %{customdata}<br>%{x}: %{y:.4f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=piece.categories, row=1, col=col)
    fig.update_yaxes(title_text=objective, row=1, col=1)
    return _layout(fig, height=420, margin={"l": 60, "r": 30, "t": 40, "b": 60})


def _get_parallel_plot(info: _ParallelInfo) -> go.Figure:
    def dimension(axis: _Axis) -> dict[str, Any]:
        d: dict[str, Any] = {"label": axis.label, "values": axis.values, "range": list(axis.range)}
        if axis.tickvals is not None:
            d.update(tickvals=axis.tickvals, ticktext=axis.ticktext)
        return d

    fig = go.Figure(
        go.Parcoords(
            line={
                "color": info.objective.values,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": info.objective.label}},
            },
            dimensions=[dimension(info.objective), *(dimension(a) for a in info.axes)],
            labelangle=-30,
            labelside="top",
        )
    )
    return _layout(fig, height=520, margin={"l": 70, "r": 70, "t": 110, "b": 40})


def _get_importance_plot(info: _ImportanceInfo) -> go.Figure:
    names = list(info.importances)[::-1]  # most important on top
    fig = go.Figure(
        go.Bar(
            x=[info.importances[n] for n in names],
            y=names,
            orientation="h",
            marker={"color": _COLORS["completed"]},
            text=[f"{info.importances[n]:.2f}" for n in names],
            textposition="auto",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    return _layout(
        fig,
        height=120 + 28 * len(names),
        xaxis_title="fANOVA importance (sums to 1)",
        margin={"l": 160, "r": 30, "t": 20, "b": 50},
    )
