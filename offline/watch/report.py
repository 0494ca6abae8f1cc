"""`decision-service report`: one self-contained HTML page on the loop, for people to look at.

    python -m offline.watch.report --registry DIR --logs DIR [--flywheel FILE] [--metrics FILE]
                                   [--use-cases a,b] [--project DIR] [--window NAME=SECONDS ...]
                                   [--now-ms MS] --out report.html

A header (project, generated at, registry, logs), then one section per use case: a short text
summary (CURRENT, canary and shadow with the promotion rule's verdict, the worst drifting
features, label health, degraded share) and the plots: model versions over time (registry
manifests' ``created_at`` and metrics; the decision logs' served spans), online metrics per
version and arm with 95 % intervals, canary verdicts and shadow comparisons (tables), flywheel
turns, drift per feature (PSI against 0.1 / 0.25), score distributions, feature status shares,
label health, latency per stage (the decision logs' ``stage_ms``), degraded decisions; then the
log records the server dropped (a Prometheus text snapshot, ``--metrics``).

plotly.js is inlined once in the page: it opens offline, nothing is fetched at view time.

The watch results come from offline.watch.online (``arm_metrics``, ``canary_verdicts``),
offline.watch.shadow (``compare_shadow``) and offline.watch.drift (``loop_health``), all on
matured decisions as of one time per use case (``--now-ms``, default the newest time in its
logs). Maturity uses the declared (production) label windows; ``--window NAME=SECONDS``
overrides them for a use case, e.g. for the flywheel's compressed time (its ``label_wait_s``).

Three steps: ``gather`` reads (each source through one small function; a source that fails
becomes a note in its section, e.g. "drift: not available: ValueError: ..."), ``render``
draws ``ReportData`` (no I/O), ``write_report`` writes atomically. Unreadable
inputs (a missing registry or log folder, a flywheel or metrics file that cannot be read or
parsed) raise ReportInputError naming the path; ``main`` exits 1 on them, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from offline.watch import drift, online, plots, shadow
from offline.watch.results import (
    ArmMetric,
    CanaryVerdict,
    LoopHealth,
    ShadowComparison,
)

KNOWN_ORDER = ("recommendation", "fraud", "conversion")
DROPPED_FAMILY = "decision_log_dropped"
WORST_DRIFT_SHOWN = 3


class ReportInputError(Exception):
    """An input of the report cannot be read: names the path and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)


@dataclass(frozen=True)
class VersionInfo:
    """A published version from the registry: its manifest's ``created_at`` and metrics."""

    name: str
    created_at_ms: int | None
    current: bool
    parent: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)  # manifest "metrics", flattened


@dataclass(frozen=True)
class ServedVersion:
    """What the decision logs show of a version: decisions, first and last decision time."""

    version: str
    decisions: int
    first_ms: int
    last_ms: int
    degraded_decisions: int = 0  # decisions with at least one degradation


@dataclass(frozen=True)
class StageLatency:
    version: str
    stage: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    decisions: int


@dataclass(frozen=True)
class DegradedCount:
    version: str
    stage: str
    reason: str
    decisions: int


@dataclass(frozen=True)
class DroppedCount:
    log: str
    cause: str
    records: float


@dataclass(frozen=True)
class RolloutInfo:
    """The registry's ROLLOUT of a use case: its canary (with its share) and shadow."""

    canary: str | None = None
    canary_share: float = 0.0
    shadow: str | None = None
    changed_at: str = ""


@dataclass(frozen=True)
class UseCaseReport:
    """Everything one use case's section draws. ``notes``: source -> why it is missing
    (sources: registry, rollout, logs, as_of, online, canary, shadow, drift, latency, degraded)."""

    name: str
    versions: tuple[VersionInfo, ...] = ()
    served: tuple[ServedVersion, ...] = ()
    arms: tuple[ArmMetric, ...] = ()
    verdicts: tuple[CanaryVerdict, ...] = ()
    shadows: tuple[ShadowComparison, ...] = ()
    health: LoopHealth | None = None
    latency: tuple[StageLatency, ...] = ()
    degraded: tuple[DegradedCount, ...] = ()
    rollout: RolloutInfo | None = None  # None: the registry has no rollout (or it failed: notes)
    notes: Mapping[str, str] = field(default_factory=dict)
    window_s: float | None = None  # the label window that overrode the declared ones (None: declared)
    as_of_ms: int | None = None  # the time maturity was judged at (None: no log time)

    @property
    def current(self) -> str | None:
        return next((v.name for v in self.versions if v.current), None)


@dataclass(frozen=True)
class ReportData:
    project: str
    generated_at_ms: int
    registry: str
    logs: str
    use_cases: tuple[UseCaseReport, ...]
    flywheel: tuple[Mapping[str, Any], ...] | None = None  # summary_json's "turns"; None: not given
    flywheel_source: str | None = None
    # flywheel column -> the use case that declares it (offline.use_cases' ``columns``); a column
    # not in it belongs to the use case it is prefixed with (``<name>_``), else to none
    flywheel_owners: Mapping[str, str] = field(default_factory=dict)
    dropped: tuple[DroppedCount, ...] | None = None  # None: not collected (no --metrics)
    metrics_source: str | None = None
    now_ms: int | None = None  # the given "as of" time (None: each use case's newest log time)
    windows: Mapping[str, float] = field(default_factory=dict)  # use case -> overriding window (s)
    rule: online.CanaryRule | None = None  # the canary rule's floors (None: its defaults)


# --------------------------------------------------------------------------------- gather


def gather(
    registry_root: str | os.PathLike[str],
    log_root: str | os.PathLike[str],
    flywheel_json: str | os.PathLike[str] | None = None,
    metrics_file: str | os.PathLike[str] | None = None,
    use_cases: Sequence[str] | None = None,
    project: str = "",
    now_ms: int | None = None,
    windows: Mapping[str, float] | None = None,
    rule: online.CanaryRule | None = None,
) -> ReportData:
    """Reads every source of the report. Unreadable inputs raise ReportInputError; a source
    that fails becomes a note of its use case.

    ``now_ms``: judge maturity as of this time (ms since the epoch); default per use case the
    newest time in its logs (its latest decision or received outcome), for every watch source
    alike. ``windows``: use case -> label window in seconds, overriding its declared
    (production) windows: every online metric's, the shadow metric's and every labelling
    outcome type's (the flywheel compresses time: its windows are seconds). ValueError for a
    window of a use case the project does not serve, or one that is not > 0.
    ``rule``: the canary rule the verdicts use (default ``CanaryRule()``)."""
    registry, logs = os.fspath(registry_root), os.fspath(log_root)
    overrides = check_windows(windows or {})
    for path, what in ((registry, "registry"), (logs, "log root")):
        if "://" not in path and not Path(path).is_dir():
            raise ReportInputError(path, f"the {what} is not a readable directory")
    flywheel = read_flywheel(flywheel_json) if flywheel_json is not None else None
    dropped = read_dropped(metrics_file) if metrics_file is not None else None
    names = list(use_cases) if use_cases else discover_use_cases(registry, logs)
    return ReportData(
        project=project or _project_name(),
        generated_at_ms=int(time.time() * 1000),
        registry=registry,
        logs=logs,
        use_cases=tuple(
            _gather_use_case(registry, logs, name, overrides.get(name), now_ms, rule) for name in names
        ),
        flywheel=flywheel,
        flywheel_source=None if flywheel_json is None else os.fspath(flywheel_json),
        flywheel_owners=flywheel_owners() if flywheel is not None else {},
        dropped=dropped,
        metrics_source=None if metrics_file is None else os.fspath(metrics_file),
        now_ms=now_ms,
        windows=overrides,
        rule=rule,
    )


def served_use_cases() -> dict[str, Any]:
    """Name -> the active project's served use case (decision_service.use_cases.USE_CASES)."""
    from decision_service.use_cases import USE_CASES

    return {u.name: u for u in USE_CASES}


def check_windows(windows: Mapping[str, float]) -> dict[str, float]:
    """``windows`` (use case -> seconds) checked: served use cases, finite seconds > 0."""
    served = served_use_cases()
    out = {}
    for name, seconds in windows.items():
        if name not in served:
            raise ValueError(
                f"label window for {name!r}: not a use case of this project "
                f"({', '.join(served) or 'none served'})"
            )
        value = float(seconds)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"label window for {name!r}: expected seconds > 0, got {seconds!r}")
        out[name] = value
    return out


def label_windows(use_case: str, window_s: float) -> dict[str, float]:
    """Outcome type -> ``window_s`` for every outcome type of ``use_case`` that declares a label
    window (the types ``drift.loop_health`` measures label health on)."""
    uc = served_use_cases().get(use_case)
    if uc is None:
        raise ValueError(f"{use_case!r} is not a use case of this project")
    return {t.name: float(window_s) for t in uc.outcome_types if t.label_window_s > 0}


def _gather_use_case(
    registry: str,
    logs: str,
    name: str,
    window_s: float | None = None,
    now_ms: int | None = None,
    rule: online.CanaryRule | None = None,
) -> UseCaseReport:
    notes: dict[str, str] = {}

    def source(key: str, fn: Callable[[], Any], default: Any = ()) -> Any:
        try:
            return fn()
        except _Missing as exc:
            notes[key] = f"not available: {exc}"
        except Exception as exc:  # any failure of one source is said in its section
            notes[key] = f"not available: {_one_line(exc)}"
        return default

    versions = source("registry", lambda: registry_versions(registry, name))
    rollout = source("rollout", lambda: registry_rollout(registry, name), None)
    files = source("logs", lambda: _decision_files(logs, name), [])
    if not files and "logs" not in notes:
        notes["logs"] = f"no decision log files under {logs}/decisions/use_case={name}"
    served = source("logs", lambda: served_versions(files)) if files else ()
    latency = source("latency", lambda: stage_latency(files)) if files else ()
    if files and not latency and "latency" not in notes:
        notes["latency"] = "no stage_ms values in the decision logs"
    degraded = source("degraded", lambda: degraded_counts(files)) if files else ()
    # one clock for every watch source: the given time, else the newest time in the logs
    as_of = now_ms if now_ms is not None else source("as_of", lambda: online.log_now_ms(logs, name), None)
    arms = source("online", lambda: online.arm_metrics(logs, name, as_of, window_s=window_s))
    verdicts = source(
        "canary",
        lambda: online.canary_verdicts(
            logs, registry, name, rule or online.CanaryRule(), now_ms=as_of, window_s=window_s
        ),
    )
    shadows = source("shadow", lambda: shadow.compare_shadow(logs, name, as_of, window_s=window_s))
    health = source(
        "drift",
        lambda: drift.loop_health(
            logs,
            registry,
            name,
            as_of,
            label_windows=None if window_s is None else label_windows(name, window_s),
        ),
        None,
    )
    return UseCaseReport(
        name=name,
        versions=tuple(versions),
        served=tuple(served),
        arms=tuple(arms),
        verdicts=tuple(verdicts),
        shadows=tuple(shadows),
        health=health,
        latency=tuple(latency),
        degraded=tuple(degraded),
        rollout=rollout,
        notes=notes,
        window_s=window_s,
        as_of_ms=as_of,
    )


class _Missing(Exception):
    """A source with nothing to read (no published version, no stage_ms column)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def discover_use_cases(registry: str, logs: str) -> list[str]:
    """Use cases with a version in a local registry or a decision log folder; known ones first."""
    found: set[str] = set()
    if "://" not in registry:
        found |= {p.name for p in Path(registry).iterdir() if (p / "versions").is_dir()}
    if "://" not in logs:
        found |= {
            p.name.partition("=")[2] for p in (Path(logs) / "decisions").glob("use_case=*") if p.is_dir()
        }
    rank = {n: i for i, n in enumerate(KNOWN_ORDER)}
    return sorted(found, key=lambda n: (rank.get(n, len(rank)), n))


def registry_versions(registry_root: str, use_case: str) -> tuple[VersionInfo, ...]:
    """Every complete version of ``use_case``, oldest first, with its manifest's created_at and
    numeric metrics (nested keys joined with '.'), and which one is CURRENT."""
    from decision_service.models.registry import ModelRegistry

    reg = ModelRegistry(registry_root)
    names = reg.versions(use_case)
    if not names:
        raise _Missing(f"no published {use_case} version under {registry_root}")
    current = reg.current_name(use_case) if reg.has_current(use_case) else None
    out = []
    for name in names:
        manifest = _manifest(reg, use_case, name)
        out.append(
            VersionInfo(
                name=name,
                created_at_ms=_parse_time_ms(manifest.get("created_at")),
                current=name == current,
                parent=manifest.get("parent_version"),
                metrics=dict(_flatten(manifest.get("metrics") or {})),
            )
        )
    return tuple(out)


def registry_rollout(registry_root: str, use_case: str) -> RolloutInfo | None:
    """The use case's ROLLOUT (canary, share, shadow); None when it has none."""
    from decision_service.models.registry import ModelRegistry

    r = ModelRegistry(registry_root).rollout(use_case)
    if getattr(r, "empty", False):
        return None
    return RolloutInfo(
        canary=r.canary,
        canary_share=float(r.canary_share),
        shadow=r.shadow,
        changed_at=str(r.changed_at or ""),
    )


def _manifest(reg: Any, use_case: str, name: str) -> dict[str, Any]:
    root = reg.root
    if isinstance(root, Path):  # local: read the manifest only (get() would not copy anything either)
        from decision_service.models.registry import MANIFEST

        return json.loads((root / use_case / "versions" / name / MANIFEST).read_text())
    return dict(reg.get(use_case, name).manifest)


def _parse_time_ms(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _flatten(value: Any, prefix: str = "") -> Iterable[tuple[str, float]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        yield prefix, float(value)


def _decision_files(log_root: str, use_case: str) -> list[Path]:
    """The use case's decision log files, each checked readable: an unreadable one is a
    LogFileError naming it (the note of every section that needs the logs)."""
    from offline.watch.logfiles import decision_files

    return decision_files(log_root, use_case)


def _query(files: Sequence[Path], sql: str) -> list[tuple[Any, ...]]:
    """``sql`` with ``{logs}`` = the files (union by name); one connection, UTC."""
    import duckdb

    from offline.engines.base import quote_paths

    con = duckdb.connect()
    try:
        con.execute("set threads to 2")
        con.execute("set TimeZone = 'UTC'")
        source = f"read_parquet({quote_paths(files)}, hive_partitioning = false, union_by_name = true)"
        return con.execute(sql.format(logs=source)).fetchall()
    finally:
        con.close()


def _columns(files: Sequence[Path]) -> dict[str, str]:
    return {r[0]: r[1] for r in _query(files, "describe select * from {logs}")}


def served_versions(files: Sequence[Path]) -> tuple[ServedVersion, ...]:
    rows = _query(
        files,
        """select coalesce(model_version, '(none)') as v, count(*), epoch_ms(min(decided_at)),
                  epoch_ms(max(decided_at)), count(*) filter (where len(degraded) > 0)
           from {logs} group by v order by min(decided_at)""",
    )
    return tuple(ServedVersion(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows)


def stage_latency(files: Sequence[Path]) -> tuple[StageLatency, ...]:
    """p50 / p90 / p99 of ``stage_ms`` (map stage -> ms) per version and stage."""
    kind = _columns(files).get("stage_ms")
    if kind is None:
        raise _Missing("the decision logs have no stage_ms column")
    if not kind.upper().startswith("MAP("):
        raise _Missing(f"stage_ms is {kind}, expected MAP(VARCHAR, FLOAT)")
    rows = _query(
        files,
        """select v, e.key as stage, quantile_cont(e.value, [0.5, 0.9, 0.99]) as q, count(*) as n
           from (select coalesce(model_version, '(none)') as v, unnest(map_entries(stage_ms)) as e
                 from {logs} where stage_ms is not null)
           where e.value is not null and isfinite(e.value)
           group by v, stage order by v, stage""",
    )
    return tuple(
        StageLatency(r[0], r[1], float(r[2][0]), float(r[2][1]), float(r[2][2]), int(r[3])) for r in rows
    )


def degraded_counts(files: Sequence[Path]) -> tuple[DegradedCount, ...]:
    """Decisions per version and stage:reason of the ``degraded`` list."""
    rows = _query(
        files,
        """select v, d.stage, d.reason, count(*) from (
               select coalesce(model_version, '(none)') as v, unnest(degraded) as d from {logs})
           group by all order by 4 desc, 1, 2, 3""",
    )
    return tuple(DegradedCount(r[0], r[1] or "", r[2] or "", int(r[3])) for r in rows)


def read_flywheel(path: str | os.PathLike[str]) -> tuple[Mapping[str, Any], ...]:
    """The per-turn rows of a ``summary_json`` file ({"turns": [...]}); also accepts the whole
    output of ``make flywheel`` (its last JSON line)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(path, f"cannot read the flywheel file ({_one_line(exc)})") from exc
    doc: Any = None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        for line in reversed(text.splitlines()):
            if line.strip().startswith("{"):
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue
                break
    turns = doc.get("turns") if isinstance(doc, dict) else None
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ReportInputError(path, 'not a flywheel summary: expected {"turns": [{...}, ...]}')
    return tuple(turns)


def flywheel_owners() -> dict[str, str]:
    """Flywheel column -> use case, from the offline use cases' declared columns ({} when they
    cannot be imported: columns are then matched by their ``<use case>_`` prefix)."""
    try:
        from offline.use_cases import OFFLINE_USE_CASES
    except Exception:  # the report still draws, by prefix
        return {}
    return {name: uc.name for uc in OFFLINE_USE_CASES for name, _ in uc.columns if name != "turn"}


def read_dropped(path: str | os.PathLike[str]) -> tuple[DroppedCount, ...]:
    """``decision_log_dropped`` (labels log, cause) of a Prometheus text snapshot, summed over
    any other labels (workers, instances)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(path, f"cannot read the metrics snapshot ({_one_line(exc)})") from exc
    totals: dict[tuple[str, str], float] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name not in (DROPPED_FAMILY, DROPPED_FAMILY + "_total"):
                continue
            for sample in family.samples:
                if sample.name.endswith(("_created", "_gcount", "_gsum")):
                    continue
                key = (sample.labels.get("log", ""), sample.labels.get("cause", ""))
                totals[key] = totals.get(key, 0.0) + float(sample.value)
    except ValueError as exc:
        raise ReportInputError(path, f"not a Prometheus text snapshot ({_one_line(exc)})") from exc
    return tuple(DroppedCount(lg, cause, n) for (lg, cause), n in sorted(totals.items()))


def _project_name() -> str:
    try:
        from decision_service import project as projects

        return projects.active().name
    except Exception:  # no project: the header says so
        return ""


# --------------------------------------------------------------------------------- render

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1320px; padding: 0 24px 48px; color: #222; }
header { border-bottom: 2px solid #ddd; padding: 12px 0 8px; }
header h1 { margin: 4px 0 8px; font-size: 24px; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 0; font-size: 14px; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; font-family: monospace; word-break: break-all; }
nav { margin: 10px 0; font-size: 14px; } nav a { margin-right: 14px; }
section.use-case { border-top: 1px solid #ccc; margin-top: 26px; }
h2 { margin: 18px 0 8px; } h3 { margin: 18px 0 4px; font-size: 16px; color: #333; }
ul.summary { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px 10px 10px 30px;
             margin: 8px 0; font-size: 14px; } ul.summary li { margin: 2px 0; }
p.note { color: #8a6d00; background: #fff8e1; border-left: 4px solid #ffcc33; padding: 6px 10px;
         margin: 6px 0; font-size: 14px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.promote { color: #1a7f37; font-weight: 600; } .rollback { color: #cf222e; font-weight: 600; }
.wait { color: #9a6700; font-weight: 600; }
div.figure { margin: 4px 0 14px; }
"""


class _Page:
    """Collects the page's parts; each figure a div ``fig-<n>`` (plotly.js is in the head)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: go.Figure) -> None:
        self.figures += 1
        height = int(fig.layout.height or 400)
        div = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            div_id=f"fig-{self.figures}",
            default_height=f"{height}px",
            config={"displaylogo": False, "responsive": True},
        )
        self.parts.append(f'<div class="figure">{div}</div>')

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{_e(text)}</p>')


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ts(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000.0))


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            out.append(f'<td class="num">{_e(cell)}</td>' if i in numeric else f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render(data: ReportData) -> str:
    """The report as one HTML page (plotly.js inlined once; no network at view time)."""
    page = _Page()
    for uc in data.use_cases:
        _use_case_section(page, uc, data)
    _server_section(page, data)
    nav = " ".join(f'<a href="#uc-{_e(uc.name)}">{_e(uc.name)}</a>' for uc in data.use_cases)
    flywheel = _e(data.flywheel_source) if data.flywheel_source else "not given"
    metrics = _e(data.metrics_source) if data.metrics_source else "not collected"
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="figures" content="{page.figures}">'
        f"<title>Decision service report: {_e(data.project or 'no project')}</title>"
        f"<style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<header><h1>Decision service report</h1><dl class="meta">'
        f"<dt>project</dt><dd>{_e(data.project or '(none)')}</dd>"
        f"<dt>generated at</dt><dd>{_e(_ts(data.generated_at_ms))}</dd>"
        f"<dt>registry</dt><dd>{_e(data.registry)}</dd>"
        f"<dt>logs</dt><dd>{_e(data.logs)}</dd>"
        f"<dt>flywheel</dt><dd>{flywheel}</dd>"
        f"<dt>metrics snapshot</dt><dd>{metrics}</dd>"
        f"<dt>use cases</dt><dd>{_e(', '.join(u.name for u in data.use_cases) or 'none')}</dd>"
        f"<dt>label windows</dt><dd>{_e(_windows_text(data))}</dd>"
        f"<dt>matured as of</dt><dd>{_e(_as_of_text(data))}</dd>"
        f"<dt>canary rule</dt><dd>{_e(_rule_text(data))}</dd>"
        f'</dl></header><nav>{nav} <a href="#server">server</a></nav>'
    )
    return head + "\n".join(page.parts) + "</body></html>\n"


_duration = plots._duration


def _rule_text(data: ReportData) -> str:
    rule = data.rule or online.CanaryRule()
    source = "given" if data.rule is not None else "the defaults"
    return (
        f"at least {rule.min_decisions} matured decisions and {rule.min_positives} positives per arm "
        f"({source}); 95 % intervals (offline/watch/online.py)"
    )


def _windows_text(data: ReportData) -> str:
    if not data.windows:
        return "declared (production) windows of each use case"
    given = ", ".join(f"{n} {_duration(w)}" for n, w in data.windows.items())
    rest = [u.name for u in data.use_cases if u.name not in data.windows]
    return f"{given} (overriding the declared windows)" + (
        f"; declared for {', '.join(rest)}" if rest else ""
    )


def _as_of_text(data: ReportData) -> str:
    if data.now_ms is not None:
        return f"{_ts(data.now_ms)} (--now-ms {data.now_ms})"
    return "each use case's newest log time (its latest decision or received outcome)"


def _declared_windows(name: str) -> dict[str, float]:
    try:
        uc = served_use_cases().get(name)
    except Exception:  # no project: nothing declared to show
        return {}
    return (
        {}
        if uc is None
        else {t.name: float(t.label_window_s) for t in uc.outcome_types if t.label_window_s > 0}
    )


def _longest_window(uc: UseCaseReport) -> str:
    if uc.window_s is not None:
        return _duration(uc.window_s)
    declared = _declared_windows(uc.name)
    return _duration(max(declared.values())) if declared else ""


def maturity_line(uc: UseCaseReport) -> str:
    """When a decision counts as matured in this section: the time and the label windows."""
    when = _ts(uc.as_of_ms) if uc.as_of_ms is not None else uc.notes.get("as_of", "no log time")
    declared = ", ".join(f"{t} {_duration(w)}" for t, w in _declared_windows(uc.name).items())
    if uc.window_s is not None:
        windows = f"label window {_duration(uc.window_s)} (overriding the declared: {declared or 'none'})"
    else:
        windows = f"declared label windows ({declared or 'none'})"
    return f"matured as of {when}; {windows}"


def summary_lines(uc: UseCaseReport) -> list[str]:
    """The section's text summary (plain text, one item a line)."""
    lines = [maturity_line(uc)]
    current = next((v for v in uc.versions if v.current), None)
    if current is not None:
        lines.append(
            f"current: {current.name} (published {_ts(current.created_at_ms)}); "
            f"{len(uc.versions)} version{'s' if len(uc.versions) != 1 else ''} in the registry"
        )
    elif uc.versions:
        lines.append(f"current: none of the {len(uc.versions)} published versions is CURRENT")
    else:
        lines.append(f"current: {uc.notes.get('registry', 'no published version')}")
    ro = uc.rollout
    if ro is not None:
        parts = ([f"canary {ro.canary} on {ro.canary_share:.0%} of units"] if ro.canary else []) + (
            [f"shadow {ro.shadow}"] if ro.shadow else []
        )
        lines.append(
            f"rollout (registry, now): {', '.join(parts)}"
            + (f" (since {ro.changed_at})" if ro.changed_at else "")
        )
    elif "rollout" in uc.notes:
        lines.append(f"rollout: {uc.notes['rollout']}")
    else:
        lines.append("rollout (registry, now): CURRENT alone (no canary, no shadow)")
    if uc.verdicts:
        for v in uc.verdicts:
            d = v.difference
            lines.append(
                f"canary (decision logs): {v.canary_version} vs live {v.live_version}: {v.action.upper()} "
                f"({v.reason}); {v.metric} difference {d.estimate:+.4g} [{d.low:+.4g}, {d.high:+.4g}], "
                f"n={d.n:,}"
            )
    elif "canary" in uc.notes:
        lines.append(f"canary: {uc.notes['canary']}")
    elif ro is not None and ro.canary:
        lines.append("canary verdict: none yet")
    if uc.shadows:
        for s in uc.shadows:
            metric = (
                f"; {s.metric} {_num(s.shadow_metric)} vs live {_num(s.live_metric)} "
                f"on {s.matured_decisions:,} matured decisions"
                if s.shadow_metric is not None or s.live_metric is not None
                else f"; {s.metric}: no matured decisions yet"
            )
            lines.append(
                f"shadow (shadow log): {s.shadow_version} vs live {s.live_version} "
                f"on {s.decisions:,} decisions "
                f"(skipped {s.skipped:,}): score correlation {s.score_correlation:.3f}, "
                f"rank agreement {s.rank_agreement:.3f}{metric}"
            )
    elif "shadow" in uc.notes:
        lines.append(f"shadow: {uc.notes['shadow']}")
    elif ro is not None and ro.shadow:
        lines.append("shadow comparison: none yet")
    if uc.health is not None and uc.health.drift:
        worst = sorted(uc.health.drift, key=lambda f: f.psi, reverse=True)[:WORST_DRIFT_SHOWN]
        lines.append(
            "worst drifting features: "
            + ", ".join(f"{f.group}/{f.feature} PSI {f.psi:.3f} ({f.level}, {f.version})" for f in worst)
        )
    elif "drift" in uc.notes:
        lines.append(f"drift: {uc.notes['drift']}")
    else:
        lines.append("drift: no feature compared")
    if uc.health is not None and uc.health.labels is not None:
        lb = uc.health.labels
        delay = "" if lb.delay_p50_s is None else f", outcome delay p50 {lb.delay_p50_s:.3g} s"
        lines.append(
            f"labels: {lb.decisions:,} decisions, {lb.matured_share:.1%} matured, "
            f"{lb.labelled_share:.1%} with an outcome{delay}"
        )
    if uc.served:
        total = sum(s.decisions for s in uc.served)
        bad = sum(s.degraded_decisions for s in uc.served)
        lines.append(
            f"decision logs: {total:,} decisions by {len(uc.served)} version"
            f"{'s' if len(uc.served) != 1 else ''}; degraded {bad:,} ({bad / total:.1%})"
        )
    return lines


def _owner(column: str, owners: Mapping[str, str], names: Iterable[str]) -> str | None:
    if column in owners:
        return owners[column]
    return next((n for n in names if column.startswith(f"{n}_")), None)


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flywheel_columns(data: ReportData, use_case: str | None) -> dict[str, list[float | None]]:
    """The numeric flywheel columns of ``use_case`` (None: of no use case); bools and strings
    (versions) are not plotted."""
    rows = data.flywheel or ()
    names = [uc.name for uc in data.use_cases]
    keys = [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if k != "turn" and _owner(k, data.flywheel_owners, names) == use_case
    ]
    return {
        k: [float(r[k]) if _numeric(r.get(k)) else None for r in rows]
        for k in keys
        if any(_numeric(r.get(k)) for r in rows)
    }


def _published(data: ReportData, use_case: str) -> list[str]:
    """ "turn 3: v0004" for every turn whose ``*published`` column of ``use_case`` names a version."""
    rows = data.flywheel or ()
    names = [uc.name for uc in data.use_cases]
    keys = [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if k.endswith("published") and _owner(k, data.flywheel_owners, names) == use_case
    ]
    found = [
        f"turn {t}: {r[k]}"
        for t, r in zip(_turns(rows), rows, strict=True)
        for k in keys
        if isinstance(r.get(k), str) and r[k]
    ]
    return list(dict.fromkeys(found))  # "published" and "<use case>_published" name the same


def _turns(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    return [int(r["turn"]) if isinstance(r.get("turn"), int) else i for i, r in enumerate(rows)]


def _role(name: str, current: bool, rollout: RolloutInfo | None) -> str:
    roles = ["CURRENT"] if current else []
    if rollout is not None and rollout.canary == name:
        roles.append(f"CANARY {rollout.canary_share:.0%}")
    if rollout is not None and rollout.shadow == name:
        roles.append("SHADOW")
    return ", ".join(roles)


def _use_case_section(page: _Page, uc: UseCaseReport, data: ReportData) -> None:
    notes = uc.notes
    page.add(f'<section class="use-case" id="uc-{_e(uc.name)}"><h2>{_e(uc.name)}</h2>')
    page.add('<ul class="summary">' + "".join(f"<li>{_e(x)}</li>" for x in summary_lines(uc)) + "</ul>")

    page.add("<h3>Model versions over time</h3>")
    if uc.versions or uc.served:
        page.figure(
            plots.versions_over_time(
                [
                    (v.name, v.created_at_ms, _role(v.name, v.current, uc.rollout), v.metrics)
                    for v in uc.versions
                ],
                [(s.version, s.first_ms, s.last_ms, s.decisions) for s in uc.served],
            )
        )
    for key in ("registry", "rollout", "logs"):
        if key in notes:
            page.note(f"{key}: {notes[key]}")

    page.add("<h3>Online metrics per version and arm</h3>")
    if uc.arms:
        page.figure(plots.arm_metrics(uc.arms))
    else:
        page.note(f"online metrics: {notes.get('online', 'no matured decisions with a metric yet')}")

    page.add("<h3>Canary verdicts and shadow comparisons</h3>")
    if uc.verdicts:
        page.add(
            _table(
                (
                    "canary",
                    "live",
                    "metric",
                    "difference (canary − live)",
                    "95 % interval",
                    "n",
                    "verdict",
                    "why",
                ),
                (
                    (
                        _e(v.canary_version),
                        _e(v.live_version),
                        _e(v.metric),
                        f"{v.difference.estimate:+.4g}",
                        f"[{v.difference.low:+.4g}, {v.difference.high:+.4g}]",
                        f"{v.difference.n:,}",
                        f'<span class="{_e(v.action.lower())}">{_e(v.action.upper())}</span>',
                        _e(v.reason),
                    )
                    for v in uc.verdicts
                ),
                numeric=(3, 5),
            )
        )
    else:
        page.note(f"canary: {notes.get('canary', 'no canary')}")
    if uc.shadows:
        page.add(
            _table(
                (
                    "shadow",
                    "live",
                    "decisions",
                    "skipped",
                    "score corr.",
                    "rank agreement",
                    "metric",
                    "live",
                    "shadow",
                    "matured",
                ),
                (
                    (
                        _e(s.shadow_version),
                        _e(s.live_version),
                        f"{s.decisions:,}",
                        f"{s.skipped:,}",
                        f"{s.score_correlation:.3f}",
                        f"{s.rank_agreement:.3f}",
                        _e(s.metric),
                        _num(s.live_metric),
                        _num(s.shadow_metric),
                        f"{s.matured_decisions:,}",
                    )
                    for s in uc.shadows
                ),
                numeric=(2, 3, 4, 5, 7, 8, 9),
            )
        )
    else:
        page.note(f"shadow: {notes.get('shadow', 'no shadow version')}")

    page.add("<h3>Flywheel turns</h3>")
    if data.flywheel:
        cols = _flywheel_columns(data, uc.name)
        if cols:
            page.figure(plots.flywheel_turns(_turns(data.flywheel), cols, f"Flywheel turns: {uc.name}"))
            page.add(
                f"<p>published by the turns: {_e('; '.join(_published(data, uc.name)) or 'nothing')}</p>"
            )
        else:
            page.note(f"flywheel: no numeric column of {uc.name} in {data.flywheel_source}")
    else:
        page.note("flywheel: not given (--flywheel FILE)")

    health = uc.health
    page.add("<h3>Drift per feature</h3>")
    if health is not None and health.drift:
        page.figure(plots.drift(health.drift))
    else:
        page.note(f"drift: {notes.get('drift', 'no feature compared')}")
    for text in health.notes if health is not None else ():
        page.note(f"drift: {text}")
    page.add("<h3>Score distributions per version and arm</h3>")
    if health is not None and health.scores:
        page.figure(plots.score_distributions(health.scores))
    else:
        page.note(f"scores: {notes.get('drift', 'no served scores')}")
    page.add("<h3>Feature status shares</h3>")
    if health is not None and health.statuses:
        page.figure(plots.status_shares(health.statuses))
    else:
        page.note(f"feature statuses: {notes.get('drift', 'none')}")
    page.add("<h3>Label health</h3>")
    if health is not None and health.labels is not None:
        page.figure(plots.label_health(health.labels, _longest_window(uc)))
    else:
        page.note(f"labels: {notes.get('drift', 'no label health')}")

    page.add("<h3>Latency per stage</h3>")
    if uc.latency:
        page.figure(
            plots.stage_latency(
                [(x.version, x.stage, x.p50_ms, x.p90_ms, x.p99_ms, x.decisions) for x in uc.latency]
            )
        )
        page.add(
            _table(
                ("version", "stage", "p50 ms", "p90 ms", "p99 ms", "decisions"),
                (
                    (
                        _e(x.version),
                        _e(x.stage),
                        f"{x.p50_ms:.3g}",
                        f"{x.p90_ms:.3g}",
                        f"{x.p99_ms:.3g}",
                        f"{x.decisions:,}",
                    )
                    for x in uc.latency
                ),
                numeric=(2, 3, 4, 5),
            )
        )
    else:
        page.note(f"latency: {notes.get('latency', notes.get('logs', 'no decision logs'))}")

    page.add("<h3>Degraded decisions</h3>")
    if uc.degraded:
        page.figure(plots.degraded([(d.version, d.stage, d.reason, d.decisions) for d in uc.degraded]))
    elif "degraded" in notes:
        page.note(f"degraded: {notes['degraded']}")
    elif uc.served:
        page.add("<p>no degraded decision in the decision logs</p>")
    else:
        page.note(f"degraded: {notes.get('logs', 'no decision logs')}")
    page.add("</section>")


def _server_section(page: _Page, data: ReportData) -> None:
    page.add('<section class="use-case" id="server"><h2>Server</h2>')
    if data.flywheel:
        rest = _flywheel_columns(data, None)
        if rest:
            page.add("<h3>Flywheel turns: other columns</h3>")
            page.figure(plots.flywheel_turns(_turns(data.flywheel), rest, "Flywheel turns: other columns"))
    page.add("<h3>Dropped log records</h3>")
    if data.dropped is None:
        page.note("dropped log records: not collected (no --metrics snapshot given)")
    elif not data.dropped:
        page.note(f"dropped log records: the snapshot {data.metrics_source} has no {DROPPED_FAMILY} samples")
    else:
        total = sum(d.records for d in data.dropped)
        page.add(f"<p>{total:,.0f} log records dropped in total ({_e(data.metrics_source)})</p>")
        page.figure(plots.dropped([(d.log, d.cause, d.records) for d in data.dropped]))
    page.add("</section>")


# --------------------------------------------------------------------------------- write / CLI


def write_report(
    out: str | os.PathLike[str],
    registry_root: str | os.PathLike[str],
    log_root: str | os.PathLike[str],
    flywheel_json: str | os.PathLike[str] | None = None,
    metrics_file: str | os.PathLike[str] | None = None,
    use_cases: Sequence[str] | None = None,
    project: str = "",
    now_ms: int | None = None,
    windows: Mapping[str, float] | None = None,
    rule: online.CanaryRule | None = None,
) -> ReportData:
    """gather + render, written atomically to ``out`` (a temp file renamed into place);
    ``now_ms`` / ``windows`` / ``rule``: as ``gather``."""
    data = gather(
        registry_root,
        log_root,
        flywheel_json,
        metrics_file,
        use_cases,
        project,
        now_ms,
        windows,
        rule,
    )
    write_atomic(out, render(data))
    return data


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="decision-service report", description=__doc__.splitlines()[0])
    ap.add_argument("--registry", help="model registry root (default: the --project's)")
    ap.add_argument("--logs", help="log root holding decisions/ and outcomes/ (default: the --project's)")
    ap.add_argument("--flywheel", help='a flywheel summary JSON file ({"turns": [...]}, `make flywheel`)')
    ap.add_argument(
        "--metrics", help="a Prometheus text snapshot of the server (/metrics) for dropped counts"
    )
    ap.add_argument("--use-cases", help="comma-separated use cases (default: those in the registry and logs)")
    ap.add_argument("--project", help="project folder: the header's name, default registry and logs")
    ap.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="label window of use case NAME in seconds (e.g. 2, 2s, 30m), overriding its declared "
        "(production) windows; repeatable (the flywheel's: its label_wait_s)",
    )
    ap.add_argument("--now-ms", type=int, help="judge maturity as of this time (ms since the epoch; "
                    "default: each use case's newest log time)")  # fmt: skip
    ap.add_argument(
        "--min-decisions", type=int, default=None, help="the canary rule's matured decisions per arm "
        "(default: offline.watch.online.CanaryRule's; the flywheel's: 100)"
    )  # fmt: skip
    ap.add_argument(
        "--min-positives", type=int, default=None, help="the canary rule's positive labels per arm "
        "(default: CanaryRule's, 20)"
    )  # fmt: skip
    ap.add_argument("--out", required=True, help="the HTML file to write")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    name = ""
    if args.project:
        from decision_service import project as projects

        try:
            proj = projects.load(args.project)
        except projects.ProjectError as exc:
            print(f"report: {exc}", file=sys.stderr)
            return 2
        name = proj.name
        args.registry = args.registry or os.fspath(proj.registry_dir)
        args.logs = args.logs or proj.log_root
    if not args.registry or not args.logs:
        ap.print_usage(sys.stderr)
        print("report: --registry and --logs are required (or --project)", file=sys.stderr)
        return 2
    use_cases = [n.strip() for n in args.use_cases.split(",") if n.strip()] if args.use_cases else None
    try:
        windows = parse_windows(args.window)
    except ValueError as exc:
        ap.print_usage(sys.stderr)
        print(f"report: --window: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"report: {out.parent}: the output folder does not exist", file=sys.stderr)
        return 1
    try:
        data = write_report(
            out,
            args.registry,
            args.logs,
            args.flywheel,
            args.metrics,
            use_cases,
            name,
            args.now_ms,
            windows,
            _rule_of(args),
        )
    except ReportInputError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"report: {getattr(exc, 'filename', None) or out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    missing = sum(len(uc.notes) for uc in data.use_cases)
    print(f"report: {out} ({len(data.use_cases)} use cases, {missing} sources not available)")
    return 0


def _rule_of(args: argparse.Namespace) -> online.CanaryRule | None:
    given = {k: getattr(args, k) for k in ("min_decisions", "min_positives") if getattr(args, k) is not None}
    return online.CanaryRule(**given) if given else None


def parse_windows(items: Sequence[str]) -> dict[str, float]:
    """``["recommendation=2", "fraud=30m"]`` -> {use case: seconds}, checked (``check_windows``);
    ValueError naming the bad item."""
    from offline.loop.training_set import parse_duration_s

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"expected NAME=SECONDS (e.g. recommendation=2), got {item!r}")
        if name.strip() in out:
            raise ValueError(f"{name.strip()!r} given twice")
        try:
            out[name.strip()] = parse_duration_s(value)
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
    return check_windows(out)


if __name__ == "__main__":
    raise SystemExit(main())
