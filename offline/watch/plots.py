"""The report's figures: one plotly Figure per function, from plain data (no I/O).

Every function returns a complete ``plotly.graph_objects.Figure`` with its own height; the
report (offline/watch/report.py) embeds them. Nothing here decides whether a figure is worth
drawing: callers pass non-empty data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from offline.watch.results import (
    CANARY,
    LIVE,
    ArmMetric,
    FeatureDrift,
    LabelHealth,
    ScoreDistribution,
    StatusShare,
)

TEMPLATE = "plotly_white"
ARM_COLORS = {LIVE: "#1f77b4", CANARY: "#ff7f0e"}
LEVEL_COLORS = {"ok": "#2ca02c", "moderate": "#ffbf00", "major": "#d62728"}
STATUS_COLORS = {
    "present": "#2ca02c",
    "default": "#1f77b4",
    "missing": "#7f7f7f",
    "stale": "#ff7f0e",
    "invalid": "#d62728",
    "unavailable": "#9467bd",
}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
MAX_DRIFT_FEATURES = 30


def _layout(fig: go.Figure, title: str, height: int, **kw: Any) -> go.Figure:
    """Title on the first line of the top margin, the legend on the second (both above any
    subplot titles), the height in pixels. The legend shows even for one trace (its name says
    which version), unless ``showlegend=False``."""
    kw.setdefault("showlegend", True)
    fig.update_layout(
        template=TEMPLATE,
        title={
            "text": title,
            "x": 0.01,
            "xanchor": "left",
            "yref": "container",
            "y": 1 - 10 / height,
            "yanchor": "top",
            "font": {"size": 15},
        },
        height=height,
        margin={"l": 70, "r": 30, "t": 92, "b": 50},
        legend={
            "orientation": "h",
            "yref": "container",
            "y": 1 - 36 / height,
            "yanchor": "top",
            "xanchor": "left",
            "x": 0,
        },
        **kw,
    )
    return fig


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, UTC)


def _grid(n: int, per_row: int) -> tuple[int, int]:
    cols = max(1, min(per_row, n))
    return math.ceil(n / cols), cols


def versions_over_time(
    versions: Sequence[tuple[str, int | None, str, Mapping[str, float]]],
    served: Sequence[tuple[str, int, int, int]] = (),
    max_metrics: int = 6,
) -> go.Figure:
    """Top: every version at its ``created_at`` (CURRENT a star, canary / shadow a diamond)
    and the span over which the decision logs show it served. Bottom (when any manifest has
    metrics): one small panel per published metric (quality metrics, i.e. non-integer ones,
    first; at most ``max_metrics``) over the versions in publishing order.

    ``versions``: (name, created_at_ms, role, metrics), oldest first, role e.g. "CURRENT",
    "CANARY 10%", "SHADOW" or ""; ``served``: (version, first_ms, last_ms, decisions)."""
    order = [v[0] for v in versions] + sorted({s[0] for s in served} - {v[0] for v in versions})
    counts: dict[str, int] = defaultdict(int)
    for v in versions:
        for k in v[3]:
            counts[k] += 1
    counts_only = {k for k in counts if all(float(v[3][k]).is_integer() for v in versions if k in v[3])}
    keys = sorted(counts, key=lambda k: (k in counts_only, -counts[k], k))[:max_metrics]
    metric_rows, ncols = (math.ceil(len(keys) / 3), 3) if keys else (0, 1)
    top_px, panel_px, gap_px = 60 + 34 * len(order), 170, 70
    total_px = top_px + metric_rows * (panel_px + gap_px)
    specs: list[list[dict[str, Any] | None]] = [[{"colspan": ncols}] + [None] * (ncols - 1)]
    for r in range(metric_rows):
        specs.append([{} if r * ncols + c < len(keys) else None for c in range(ncols)])
    fig = make_subplots(
        rows=1 + metric_rows,
        cols=ncols,
        specs=specs,
        vertical_spacing=gap_px / total_px if metric_rows else 0.0,
        horizontal_spacing=0.07,
        row_heights=[top_px] + [panel_px] * metric_rows,
        subplot_titles=["published (★ CURRENT, ◆ canary / shadow) and served (bands, decision logs)"]
        + [f"{k} (manifest)" for k in keys],
    )
    for i, (version, first, last, n) in enumerate(served):
        fig.add_trace(
            go.Scatter(
                x=[_time(first), _time(last)],
                y=[version, version],
                mode="lines",
                line={"width": 12, "color": "rgba(31,119,180,0.35)"},
                name="served (decision logs)",
                legendgroup="served",
                showlegend=i == 0,
                hovertemplate=f"{version}: {n:,} decisions<br>%{{x}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    dated = [v for v in versions if v[1] is not None]
    if dated:
        fig.add_trace(
            go.Scatter(
                x=[_time(v[1]) for v in dated],
                y=[v[0] for v in dated],
                mode="markers+text",
                text=[v[2] for v in dated],
                textposition="top center",
                textfont={"size": 11, "color": "#a33"},
                cliponaxis=False,
                marker={
                    "size": [17 if v[2] else 9 for v in dated],
                    "symbol": [
                        "star" if "CURRENT" in v[2] else "diamond" if v[2] else "circle" for v in dated
                    ],
                    "color": [
                        "#d62728" if "CURRENT" in v[2] else "#ff7f0e" if v[2] else "#444" for v in dated
                    ],
                },
                name="published (created_at)",
                hovertext=[
                    "<br>".join([f"{v[0]} {v[2]}".strip()] + [f"{k}: {x:.4g}" for k, x in v[3].items()])
                    for v in dated
                ],
                hoverinfo="text+x",
            ),
            row=1,
            col=1,
        )
    for j, key in enumerate(keys):
        pts = [(v[0], v[3][key]) for v in versions if key in v[3]]
        r, c = divmod(j, ncols)
        fig.add_trace(
            go.Scatter(
                x=[name for name, _ in pts],
                y=[y for _, y in pts],
                mode="lines+markers",
                name=key,
                showlegend=False,
                line={"color": PALETTE[(j + 2) % len(PALETTE)]},
            ),
            row=r + 2,
            col=c + 1,
        )
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, row=r + 2, col=c + 1)
    fig.update_yaxes(
        categoryorder="array",
        categoryarray=order,
        type="category",
        range=[-0.5, len(order) - 0.2],
        row=1,
        col=1,
    )
    return _layout(fig, "Model versions over time", 142 + total_px)


def arm_metrics(arms: Sequence[ArmMetric]) -> go.Figure:
    """One panel per metric: the estimate of every (version, arm) with its 95 % interval."""
    metrics = list(dict.fromkeys(a.metric for a in arms))
    nrows, ncols = _grid(len(metrics), 3)

    def title(m: str) -> str:
        first = next(a for a in arms if a.metric == m)
        better = "higher" if first.higher_is_better else "lower"
        windows = sorted({a.window_s for a in arms if a.metric == m and a.window_s is not None})
        window = f"; label window {', '.join(_duration(w) for w in windows)}" if windows else ""
        return f"{m} ({better} is better{window})"

    titles = [title(m) for m in metrics]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.08)
    shown: set[str] = set()
    for i, metric in enumerate(metrics):
        r, c = divmod(i, ncols)
        for arm in dict.fromkeys(a.arm for a in arms if a.metric == metric):
            pts = [a for a in arms if a.metric == metric and a.arm == arm]
            fig.add_trace(
                go.Scatter(
                    x=[f"{a.version} ({a.arm})<br>n={a.value.n:,}" for a in pts],
                    y=[a.value.estimate for a in pts],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [a.value.high - a.value.estimate for a in pts],
                        "arrayminus": [a.value.estimate - a.value.low for a in pts],
                        "thickness": 2,
                        "width": 8,
                    },
                    mode="markers",
                    marker={"size": 11, "color": ARM_COLORS.get(arm, PALETTE[4])},
                    name=arm,
                    legendgroup=arm,
                    showlegend=arm not in shown,
                    customdata=[[a.value.low, a.value.high, a.value.n] for a in pts],
                    hovertemplate="%{x}: %{y:.4g} [%{customdata[0]:.4g}, %{customdata[1]:.4g}]"
                    " over %{customdata[2]:,} decisions<extra></extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
            shown.add(arm)
    return _layout(fig, "Online metrics per version and arm (95 % intervals)", 140 + 280 * nrows)


def drift(features: Sequence[FeatureDrift], max_features: int = MAX_DRIFT_FEATURES) -> go.Figure:
    """PSI per feature (worst ``max_features``), one bar per version, with the 0.1 and 0.25
    thresholds."""
    worst: dict[str, float] = defaultdict(float)
    for f in features:
        key = f"{f.group}/{f.feature}"
        worst[key] = max(worst[key], f.psi)
    shown = sorted(worst, key=lambda k: worst[k], reverse=True)[:max_features]
    labels = list(reversed(shown))  # the worst on top
    versions = list(dict.fromkeys(f.version for f in features))
    fig = go.Figure()
    for i, version in enumerate(versions):
        by_key = {f"{f.group}/{f.feature}": f for f in features if f.version == version}
        pts = [by_key[k] for k in labels if k in by_key]
        fig.add_trace(
            go.Bar(
                y=[f"{f.group}/{f.feature}" for f in pts],
                x=[f.psi for f in pts],
                orientation="h",
                name=version,
                marker={
                    "color": [LEVEL_COLORS.get(f.level, "#888") for f in pts]
                    if len(versions) == 1
                    else PALETTE[i % len(PALETTE)],
                    "line": {"width": 0},
                },
                customdata=[[f.level, f.served, f.default_share] for f in pts],
                hovertemplate="%{y} (" + version + "): PSI %{x:.3f} %{customdata[0]}<br>"
                "%{customdata[1]:,} values, default share %{customdata[2]:.1%}<extra></extra>",
            )
        )
    top = max([PSI_MAJOR * 1.2] + [f.psi for f in features])
    for x, text in ((PSI_MODERATE, "0.1 moderate"), (PSI_MAJOR, "0.25 major")):
        fig.add_vline(
            x=x, line_dash="dash", line_color="#555", annotation_text=text, annotation_position="top"
        )
    hidden = len(worst) - len(shown)
    title = "Drift per feature: PSI served vs training" + (
        f" (worst {len(shown)}; {hidden} more)" if hidden else ""
    )
    fig.update_xaxes(range=[0, top * 1.05], title_text="PSI")
    fig.update_yaxes(automargin=True)
    return _layout(
        fig,
        title,
        160 + max(len(labels), 3) * (22 if len(versions) == 1 else 14 * len(versions)),
        barmode="group",
        showlegend=len(versions) > 1,
    )


def score_distributions(dists: Sequence[ScoreDistribution]) -> go.Figure:
    """The served score histogram of each version/arm as a density (share of scores per unit
    of score, so bins of unequal width, e.g. quantile edges, read right), a step line each;
    the legend has the mean and, with a training profile, the PSI against training."""
    fig = go.Figure()
    for i, d in enumerate(dists):
        total = sum(d.counts) or 1
        edges, counts = _merge_empty_bins(d.edges, d.counts)
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        density = [c / total / w for c, w in zip(counts, widths, strict=True)]
        name = f"{d.version} ({d.arm}): mean {d.mean:.3g}, n={total:,}"
        if getattr(d, "psi", None) is not None:
            name += f", PSI vs training {d.psi:.3f} ({d.level})"
        fig.add_trace(
            go.Scatter(
                x=list(edges),
                y=density + density[-1:],
                mode="lines",
                line={"shape": "hv", "width": 2, "color": PALETTE[i % len(PALETTE)]},
                name=name,
                customdata=[[c / total] for c in counts] + [[None]],
                hovertemplate="from %{x:.4g}: %{customdata[0]:.1%} of scores<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="score")
    fig.update_yaxes(title_text="density (share per unit of score)", rangemode="tozero")
    return _layout(fig, "Score distributions per version and arm", 380)


def _merge_empty_bins(edges: Sequence[float], counts: Sequence[int]) -> tuple[list[float], list[int]]:
    """The bins with zero width (equal edges, e.g. every score above the last quantile edge
    at one value) merged into their neighbour, so no count is drawn at an infinite or
    undefined density; a single point mass becomes one bin of width 1e-6."""
    out_e, out_c = [float(edges[0])], []
    for hi, c in zip(edges[1:], counts, strict=False):
        if float(hi) > out_e[-1] or not out_c:
            out_e.append(max(float(hi), out_e[-1]))
            out_c.append(int(c))
        else:
            out_c[-1] += int(c)
    while len(out_c) > 1 and out_e[1] <= out_e[0]:  # a zero-width first bin: into the next
        first = out_c.pop(0)
        out_c[0] += first
        out_e.pop(1)
    if out_e[-1] <= out_e[0]:
        out_e[-1] = out_e[0] + 1e-6
    return out_e, out_c


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def status_shares(statuses: Sequence[StatusShare]) -> go.Figure:
    """Per feature group, the share of served rows with each status (stacked)."""
    groups = list(dict.fromkeys(s.group for s in statuses))
    fig = go.Figure()
    for status in dict.fromkeys(s.status for s in statuses):
        pts = {s.group: s for s in statuses if s.status == status}
        fig.add_trace(
            go.Bar(
                x=groups,
                y=[pts[g].share if g in pts else 0.0 for g in groups],
                name=status,
                marker={"color": STATUS_COLORS.get(status)},
                customdata=[pts[g].rows if g in pts else 0 for g in groups],
                hovertemplate="%{x} " + status + ": %{y:.1%} (%{customdata:,} rows)<extra></extra>",
            )
        )
    fig.update_yaxes(tickformat=".0%", range=[0, 1.0])
    return _layout(fig, "Feature status shares per group", 340, barmode="stack")


def label_health(labels: LabelHealth, window: str = "") -> go.Figure:
    """Matured and labelled shares of the logged decisions, with the label delays in the title;
    ``window`` names the label window a decision had to clear to count as matured."""

    def secs(s: float | None) -> str:
        return "n/a" if s is None else f"{s:.3g} s"

    fig = go.Figure(
        go.Bar(
            y=[f"matured (older than {window})" if window else "matured", "with an outcome"],
            x=[labels.matured_share, labels.labelled_share],
            orientation="h",
            marker={"color": ["#1f77b4", "#2ca02c"]},
            text=[f"{labels.matured_share:.1%}", f"{labels.labelled_share:.1%}"],
            textposition="outside",
            cliponaxis=False,
        )
    )
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(automargin=True)
    return _layout(
        fig,
        f"Label health: {labels.decisions:,} decisions; outcome delay p50 {secs(labels.delay_p50_s)}, "
        f"p90 {secs(labels.delay_p90_s)}",
        230,
        showlegend=False,
    )


def flywheel_turns(
    turns: Sequence[int], columns: Mapping[str, Sequence[float | None]], title: str
) -> go.Figure:
    """One small panel per numeric column against the turn."""
    names = list(columns)
    nrows, ncols = _grid(len(names), 3)
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=names,
        horizontal_spacing=0.07,
        vertical_spacing=min(0.3, 0.6 / max(nrows, 1)),
    )
    for i, name in enumerate(names):
        r, c = divmod(i, ncols)
        fig.add_trace(
            go.Scatter(
                x=list(turns),
                y=list(columns[name]),
                mode="lines+markers",
                name=name,
                line={"color": PALETTE[i % len(PALETTE)]},
                showlegend=False,
            ),
            row=r + 1,
            col=c + 1,
        )
    fig.update_xaxes(dtick=1, title_text="turn")
    return _layout(fig, title, 120 + 240 * nrows)


def stage_latency(rows: Sequence[tuple[str, str, float, float, float, int]]) -> go.Figure:
    """Latency per stage and version: a bar at p90, whiskers from p50 to p99 (ms).

    ``rows``: (version, stage, p50, p90, p99, n)."""
    stages = list(dict.fromkeys(r[1] for r in rows))
    fig = go.Figure()
    for i, version in enumerate(dict.fromkeys(r[0] for r in rows)):
        by_stage = {r[1]: r for r in rows if r[0] == version}
        pts = [by_stage[s] for s in stages if s in by_stage]
        fig.add_trace(
            go.Bar(
                x=[p[1] for p in pts],
                y=[p[3] for p in pts],
                name=version,
                marker={"color": PALETTE[i % len(PALETTE)]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [p[4] - p[3] for p in pts],
                    "arrayminus": [p[3] - p[2] for p in pts],
                    "color": "#333",
                },
                customdata=[[p[2], p[4], p[5]] for p in pts],
                hovertemplate="%{x} (" + version + "): p50 %{customdata[0]:.3g} ms, p90 %{y:.3g} ms, "
                "p99 %{customdata[1]:.3g} ms over %{customdata[2]:,} decisions<extra></extra>",
            )
        )
    fig.update_yaxes(title_text="ms", rangemode="tozero")
    return _layout(fig, "Latency per stage (bar: p90; whiskers: p50 to p99)", 380, barmode="group")


def degraded(rows: Sequence[tuple[str, str, str, int]]) -> go.Figure:
    """Degraded decisions per stage:reason, one bar per version. ``rows``: (version, stage, reason, n)."""
    keys = list(dict.fromkeys(f"{r[1]}:{r[2]}" for r in rows))
    fig = go.Figure()
    for i, version in enumerate(dict.fromkeys(r[0] for r in rows)):
        counts = {f"{r[1]}:{r[2]}": r[3] for r in rows if r[0] == version}
        fig.add_trace(
            go.Bar(
                x=keys,
                y=[counts.get(k, 0) for k in keys],
                name=version,
                marker={"color": PALETTE[i % len(PALETTE)]},
            )
        )
    fig.update_yaxes(title_text="decisions", rangemode="tozero")
    fig.update_xaxes(automargin=True)
    return _layout(fig, "Degraded decisions per stage:reason and version", 360, barmode="group")


def dropped(rows: Sequence[tuple[str, str, float]]) -> go.Figure:
    """Log records the server's writers dropped, per log and cause. ``rows``: (log, cause, n)."""
    logs = list(dict.fromkeys(r[0] for r in rows))
    fig = go.Figure()
    for i, cause in enumerate(dict.fromkeys(r[1] for r in rows)):
        counts = {r[0]: r[2] for r in rows if r[1] == cause}
        fig.add_trace(
            go.Bar(
                x=logs,
                y=[counts.get(lg, 0) for lg in logs],
                name=cause,
                marker={"color": PALETTE[(i + 3) % len(PALETTE)]},
                text=[f"{counts[lg]:,.0f}" if counts.get(lg) else "" for lg in logs],
                textposition="outside",
            )
        )
    fig.update_yaxes(title_text="records", rangemode="tozero")
    return _layout(
        fig, "Log records dropped by the server's writers (per log and cause)", 340, barmode="group"
    )
