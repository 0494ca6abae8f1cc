"""The HTML report (offline/watch/report.py) on real inputs: a registry published with
``ModelRegistry.publish`` (feature profiles saved with offline.watch.profile), Parquet decision
logs in the service's schemas (arms, ``stage_ms``, feature vectors), an outcome log, a shadow
log, a flywheel summary and a Prometheus snapshot; the REAL watch modules (online, shadow,
drift) compute what the page draws; the page is checked in headless Chromium."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from plotly.offline import get_plotlyjs
from prometheus_client import CollectorRegistry, Counter, generate_latest

from decision_service.decision_log import conversion_log, fraud_log
from decision_service.domain.features import FeatureStatus
from decision_service.features.conversion import INPUT_COLUMNS
from decision_service.models.registry import ModelRegistry, Rollout
from offline.runs.flywheel import summary_json
from offline.use_cases import OFFLINE_USE_CASES
from offline.watch import drift, profile, report
from offline.watch.results import CANARY, LIVE, PROMOTE, WAIT
from tests.offline.watch_logs import outcomes, shadow, table_of, write

NOW_S = int(time.time()) // 60 * 60
T0 = (NOW_S + 60) * 1000  # ms: the decisions start a minute after the versions are published
STEP_MS = 100  # between decisions
N_OLD = 200  # decisions of v0001 (no profile) before the rollout, all live
N = 3200  # decisions in all; from N_OLD on the arms alternate (live v0002, canary v0003)
WINDOW_S = 60.0  # the (compressed) label window the tests give conversion
AS_OF = T0 + N * STEP_MS + 120_000  # every decision older than WINDOW_S
STAGES = ("features", "scoring", "total")
CHROMIUM = Path("/usr/bin/chromium")
FEATURES = ("u_events_7d", "c_cart_items")  # the profiled model inputs; c_cart_items shifts


# ------------------------------------------------------------------------------- inputs


def _publish(reg: ModelRegistry, use_case: str, auc: float, prof: profile.FeatureProfile | None) -> str:
    staging = reg.staging_dir(use_case)
    (staging / "model.txt").write_text(f"a {use_case} model, auc {auc}\n")
    if prof is not None:
        profile.save(staging, prof)
    manifest = {"metrics": {"candidate": {"auc": auc, "logloss": 1 - auc}, "current": {"auc": auc - 0.01}}}
    return reg.publish(use_case, staging, manifest).name


def _conversion_logs(log_root: Path, versions: list[str], rng: np.random.Generator) -> dict:
    """N conversion decisions with feature vectors, stage timings and degradations, their
    conversions (1 s after the decision), and a shadow log of ``versions[3]``: the live arm
    (versions[1]) serves a noisy probability, the canary (versions[2]) the true one; the shadow
    scores every decision of the rollout but those with i % 10 == 4 (all live: skipped).
    Returns what the tests expect."""
    old, live, canary, shadow_version = versions
    p_true = rng.beta(2, 6, N)
    converted = rng.random(N) < p_true
    i = np.arange(N)
    arm = np.where((i >= N_OLD) & (i % 2 == 1), CANARY, LIVE)
    version = np.where(i < N_OLD, old, np.where(arm == CANARY, canary, live))
    noise = np.where(arm == LIVE, 2.5, 0.0)
    served = 1 / (1 + np.exp(-(np.log(p_true / (1 - p_true)) + rng.normal(0, 1, N) * noise)))
    at = T0 + i * STEP_MS
    ids = [f"c{k}" for k in range(N)]
    vectors = np.zeros((N, len(INPUT_COLUMNS)), np.float32)
    vectors[:, INPUT_COLUMNS.index("u_events_7d")] = rng.poisson(3, N)
    vectors[:, INPUT_COLUMNS.index("c_cart_items")] = rng.poisson(2, N) + 4  # training: Poisson(2)
    times, degraded, stage_rows, deg_rows = {}, {}, [], []
    for k in range(N):
        stage_ms = {s: float(np.float32(rng.gamma(2.0, 1.5 if s != "total" else 5.0))) for s in STAGES}
        deg = ([{"stage": "features", "reason": "store_unavailable"}] if k % 7 == 0 else []) + (
            [{"stage": "scoring", "reason": "deadline_exceeded"}] if k % 11 == 0 else []
        )
        for d in deg:
            key = (str(version[k]), d["stage"], d["reason"])
            degraded[key] = degraded.get(key, 0) + 1
        for s, ms in stage_ms.items():
            times.setdefault((str(version[k]), s), []).append(ms)
        stage_rows.append(list(stage_ms.items()))
        deg_rows.append(deg)
    columns = {
        "decision_id": ids,
        "request_id": [f"r{k}" for k in range(N)],
        "decided_at": at.tolist(),
        "use_case": ["conversion"] * N,
        "user_id": [f"u{k}" for k in range(N)],
        "model_version": version.tolist(),
        "arm": arm.tolist(),
        "probability": served.tolist(),
        "scored": [True] * N,
        "action": ["NONE"] * N,
        "degraded": deg_rows,
        "stage_ms": stage_rows,
        "feature_names": [list(INPUT_COLUMNS)] * N,
        "features": vectors.tolist(),
        "profile_status": [
            int(FeatureStatus.STALE if k % 4 == 0 else FeatureStatus.PRESENT) for k in range(N)
        ],
    }
    half = N // 2  # two files
    for lo, hi in ((0, half), (half, N)):
        write(log_root, "decisions", "conversion",
              table_of(conversion_log.SCHEMA, hi - lo, {k: v[lo:hi] for k, v in columns.items()}))  # fmt: skip
    write(log_root, "outcomes", "conversion",
          outcomes([(ids[k], None, "converted", int(at[k]) + 1000, None) for k in np.flatnonzero(converted)],
                   "conversion"))  # fmt: skip
    scored = [k for k in range(N_OLD, N) if k % 10 != 4]
    shadow_scores = np.clip(p_true + rng.normal(0, 0.02, N), 0.001, 0.999)
    write(log_root, "shadow", "conversion", shadow(
        [{"decision_id": ids[k], "at_ms": int(at[k]), "version": str(version[k]), "arm": str(arm[k]),
          "shadow_version": shadow_version, "scores": [float(shadow_scores[k])]} for k in scored],
        "conversion"))  # fmt: skip
    live_n = int(((arm == LIVE) & (i >= N_OLD)).sum())
    return {
        "times": times,
        "degraded": degraded,
        "served": {old: N_OLD, live: live_n, canary: N - N_OLD - live_n},
        "shadow": {live: (live_n - len([k for k in range(N_OLD, N) if k % 10 == 4]),
                          len([k for k in range(N_OLD, N) if k % 10 == 4])),
                   canary: (N - N_OLD - live_n, 0)},  # version: (decisions, skipped)
        "converted_share": float(converted.mean()),
    }  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A registry (conversion: v0001 without a profile, v0002 CURRENT, v0003 the canary on 50 %,
    v0004 the shadow, all three with the same training profile; fraud: 2 versions), the logs
    above plus 30 fraud decisions in its schema minus stage_ms, a flywheel summary and a
    metrics snapshot."""
    tmp_path = tmp_path_factory.mktemp("report")
    registry_root, log_root = tmp_path / "registry", tmp_path / "logs"
    rng = np.random.default_rng(7)
    m = 4000
    train = np.column_stack([rng.poisson(3, m), rng.poisson(2, m)]).astype(np.float32)
    prof = profile.build_profile(train, FEATURES, rng.beta(2, 6, m), defaults={"c_cart_items": 0.0})
    reg = ModelRegistry(registry_root)
    conv = [
        _publish(reg, "conversion", a, None if k == 0 else prof)
        for k, a in enumerate((0.70, 0.72, 0.74, 0.75))
    ]
    reg.set_current("conversion", conv[1])
    reg.set_rollout("conversion", Rollout().with_canary(conv[2], 0.5).with_shadow(conv[3]))
    fraud = [_publish(reg, "fraud", a, None) for a in (0.90, 0.91)]
    expected = _conversion_logs(log_root, conv, rng)

    old = pa.schema([f for f in fraud_log.SCHEMA if f.name != "stage_ms"], metadata=fraud_log.SCHEMA.metadata)
    fraud_rows = [
        {"decision_id": f"f{i}", "decided_at": T0 + i * 500, "use_case": "fraud", "model_version": fraud[-1],
         "degraded": [], "action": "APPROVE", "fraud_probability": 0.01 + 0.01 * (i % 5)}
        for i in range(30)
    ]  # fmt: skip
    write(log_root, "decisions", "fraud", pa.Table.from_pylist(fraud_rows, schema=old))

    flywheel_rows = [
        {
            "turn": t,
            "model_version": "v0001",
            "decisions": 800,
            "outcomes": 300 + 10 * t,
            "training_rows": 1000 * (t + 1),
            "offline_metric": 0.30 + 0.01 * t,
            "ctr": 0.05 + 0.002 * t,
            "published": f"v000{t + 2}" if t % 2 else None,
            "fraud_caught": 0.5 + 0.05 * t,
            "fraud_model_version": fraud[0],
            "fraud_offline_metric": 0.9,
            "fraud_published": None,
            "conversion_model_version": conv[0],
            "conversion_auc": 0.70 + 0.01 * t,
            "conversion_candidate_metric": 0.71 + 0.01 * t,
            "conversion_published": conv[t] if t < 3 else None,
        }
        for t in range(4)
    ]
    flywheel = tmp_path / "flywheel.json"
    flywheel.write_text(summary_json(flywheel_rows, OFFLINE_USE_CASES) + "\n")

    prom = CollectorRegistry()
    dropped = Counter("decision_log_dropped", "records dropped", ["log", "cause", "worker"], registry=prom)
    dropped.labels("decisions", "queue_full", "0").inc(12)
    dropped.labels("decisions", "queue_full", "1").inc(3)
    dropped.labels("outcomes", "write_error", "0").inc(2)
    dropped.labels("shadow", "queue_full", "0").inc(0)
    metrics = tmp_path / "metrics.prom"
    metrics.write_bytes(generate_latest(prom))
    return {
        "registry": registry_root,
        "logs": log_root,
        "flywheel": flywheel,
        "metrics": metrics,
        "conversion": conv,
        "fraud": fraud,
        "expected": expected,
    }


@pytest.fixture(scope="module")
def data(inputs: dict) -> report.ReportData:
    """The report's data with conversion's label window compressed to WINDOW_S, as of AS_OF."""
    return report.gather(
        inputs["registry"], inputs["logs"], inputs["flywheel"], inputs["metrics"],
        now_ms=AS_OF, windows={"conversion": WINDOW_S},
    )  # fmt: skip


def _sections(html: str) -> dict[str, str]:
    parts = re.split(r'<section class="use-case" id="([^"]+)">', html)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _figures(sections: dict[str, str]) -> dict[str, int]:
    return {k: len(re.findall(r'class="plotly-graph-div"', v)) for k, v in sections.items()}


def _text(section: str) -> str:
    """The section's text: tags out, entities unescaped."""
    import html as h

    return h.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", "", section, flags=re.S)))


# ------------------------------------------------------------------------------- gather


def test_gather_runs_the_watch_modules_on_the_logs(inputs: dict, data: report.ReportData) -> None:
    fraud, conv = data.use_cases
    assert (fraud.name, conv.name) == ("fraud", "conversion")  # known order
    old, live, canary, shadow_version = inputs["conversion"]
    assert data.windows == {"conversion": WINDOW_S} and data.now_ms == AS_OF
    assert (conv.window_s, conv.as_of_ms, fraud.window_s, fraud.as_of_ms) == (WINDOW_S, AS_OF, None, AS_OF)

    # registry: versions, CURRENT, rollout, manifest metrics
    assert [v.name for v in conv.versions] == inputs["conversion"] and conv.current == live
    assert fraud.current == inputs["fraud"][-1]
    assert conv.rollout == report.RolloutInfo(canary, 0.5, shadow_version, conv.rollout.changed_at)
    assert fraud.rollout is None
    assert all(v.created_at_ms and abs(v.created_at_ms / 1000 - time.time()) < 600 for v in conv.versions)
    assert conv.versions[2].metrics == pytest.approx(
        {"candidate.auc": 0.74, "candidate.logloss": 0.26, "current.auc": 0.73}
    )

    # decision logs: served spans, degraded counts, stage latency (DuckDB) against numpy
    expected = inputs["expected"]
    assert {s.version: s.decisions for s in conv.served} == expected["served"]
    assert {(d.version, d.stage, d.reason): d.decisions for d in conv.degraded} == expected["degraded"]
    assert {(x.version, x.stage) for x in conv.latency} == set(expected["times"])
    for x in conv.latency:
        values = np.asarray(expected["times"][(x.version, x.stage)])
        assert x.decisions == len(values)
        assert (x.p50_ms, x.p90_ms, x.p99_ms) == pytest.approx(
            tuple(np.quantile(values, [0.5, 0.9, 0.99])), rel=1e-5
        )
    assert "latency" not in conv.notes
    assert fraud.notes["latency"] == "not available: the decision logs have no stage_ms column"
    assert fraud.latency == () and fraud.degraded == () and fraud.served[0].decisions == 30

    # online (offline.watch.online): auc and log-loss of every (arm, version), on the window
    arms = {(a.metric, a.arm, a.version): a for a in conv.arms}
    assert set(arms) == {(m, a, v) for m in ("auc", "log_loss", "unscored_share")
                         for a, v in ((LIVE, old), (LIVE, live), (CANARY, canary))}  # fmt: skip
    assert arms[("auc", CANARY, canary)].value.n == expected["served"][canary]  # every one matured
    assert arms[("auc", CANARY, canary)].value.estimate > arms[("auc", LIVE, live)].value.estimate + 0.05
    assert all(a.window_s == WINDOW_S for a in conv.arms)
    # the canary rule: the exact canary beats the noisy live version on both gated metrics
    (verdict,) = conv.verdicts
    assert (verdict.live_version, verdict.canary_version, verdict.action) == (live, canary, PROMOTE)
    assert [name for name, _ in verdict.checks] == ["auc", "log_loss", "unscored_share"]
    assert dict(verdict.checks)["log_loss"].high < 0 < dict(verdict.checks)["auc"].low

    # shadow (offline.watch.shadow): per served version, v0004's scores lined up with the log's
    shadows = {s.live_version: s for s in conv.shadows}
    assert set(shadows) == {live, canary}
    for version, (decisions, skipped) in expected["shadow"].items():
        s = shadows[version]
        assert (s.shadow_version, s.decisions, s.skipped, s.metric) == (
            shadow_version,
            decisions,
            skipped,
            "auc",
        )
        assert 0 < s.matured_decisions <= decisions and s.shadow_metric is not None
    assert shadows[canary].score_correlation > 0.9 > shadows[live].score_correlation
    assert shadows[live].shadow_metric > shadows[live].live_metric  # the shadow is not noisy

    # drift (offline.watch.drift): the cart grew, the activity did not; v0001 has no profile
    health = conv.health
    assert health is not None
    by = {(d.version, d.feature): d for d in health.drift}
    assert set(by) == {(v, f) for v in (live, canary) for f in FEATURES}
    assert by[(live, "c_cart_items")].level == "major" and by[(canary, "c_cart_items")].level == "major"
    assert by[(live, "u_events_7d")].level == "ok" and by[(live, "c_cart_items")].group == "conversion"
    assert any(old in n and "no feature profile" in n for n in health.notes)
    shares = {(s.group, s.status): s.share for s in health.statuses}
    assert shares[("user profile", "stale")] == pytest.approx(0.25)
    assert {(s.version, s.arm) for s in health.scores} == {(old, LIVE), (live, LIVE), (canary, CANARY)}
    # label health on the given window: every decision matured; the converted share labelled
    assert health.labels is not None and health.labels.decisions == N
    assert health.labels.matured_share == 1.0
    assert health.labels.labelled_share == pytest.approx(expected["converted_share"])
    assert health.labels.delay_p50_s == pytest.approx(1.0)

    # fraud: no window given, nothing matured; no canary, no shadow; the logs have no profile
    assert fraud.arms == () and fraud.verdicts == () and fraud.shadows == ()
    assert fraud.health is not None and fraud.health.labels is not None
    assert fraud.health.labels.matured_share == 0.0

    # flywheel rows and owners; dropped counts summed over workers
    assert data.flywheel is not None and len(data.flywheel) == 4
    assert data.flywheel_owners["ctr"] == "recommendation"
    assert data.flywheel_owners["conversion_auc"] == "conversion"
    assert {(d.log, d.cause): d.records for d in data.dropped} == {
        ("decisions", "queue_full"): 15.0,
        ("outcomes", "write_error"): 2.0,
        ("shadow", "queue_full"): 0.0,
    }


def test_the_declared_windows_have_not_closed(inputs: dict) -> None:
    """The same logs without the window: conversion's declared 7 days have not passed, so
    nothing has matured (the flywheel's report before --window)."""
    (conv,) = report.gather(
        inputs["registry"], inputs["logs"], use_cases=["conversion"], now_ms=AS_OF
    ).use_cases
    assert conv.window_s is None and conv.arms == ()
    (verdict,) = conv.verdicts
    assert verdict.action == WAIT and "too few matured decisions (live 0, canary 0" in verdict.reason
    assert all(s.matured_decisions == 0 and s.live_metric is None for s in conv.shadows)
    assert conv.health is not None and conv.health.labels is not None
    assert conv.health.labels.matured_share == 0.0
    text = _text(report.render(report.ReportData("p", 0, "r", "l", (conv,))))
    assert "online metrics: no matured decisions with a metric yet" in text
    assert "declared label windows (converted 7 d)" in text


def test_windows_are_checked() -> None:
    assert report.parse_windows(["conversion=2", "fraud=30m"]) == {"conversion": 2.0, "fraud": 1800.0}
    for bad, match in (
        (["conversion"], "NAME=SECONDS"),
        (["=2"], "NAME=SECONDS"),
        (["conversion=soon"], "not a duration"),
        (["payments=2"], "not a use case of this project"),
        (["conversion=0"], "seconds > 0"),
        (["conversion=2", "conversion=3"], "given twice"),
    ):
        with pytest.raises(ValueError, match=match):
            report.parse_windows(bad)
    assert report.label_windows("fraud", 2.0) == {"chargeback": 2.0, "confirmed_fraud": 2.0}
    assert report.label_windows("conversion", 5.0) == {"converted": 5.0}


# ------------------------------------------------------------------------------- render


def test_render_draws_every_section_and_figure(inputs: dict, data: report.ReportData) -> None:
    html = report.render(data)

    # one self-contained page: plotly.js inlined exactly once, nothing loaded from elsewhere
    assert html.count(get_plotlyjs()[:300]) == 1
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    sections = _sections(html)
    assert list(sections) == ["uc-fraud", "uc-conversion", "server"]

    # conversion: versions, online metrics, flywheel, drift, scores, statuses, labels,
    # latency, degraded = 9; fraud: versions, flywheel (its fraud_* columns), scores,
    # labels = 4 (no stage_ms, no degradation, no profile, nothing matured); server: dropped
    figures = _figures(sections)
    assert figures == {"uc-fraud": 4, "uc-conversion": 9, "server": 1}
    assert html.count("Plotly.newPlot(") == 14 and '<meta name="figures" content="14">' in html

    conv, fraud = _text(sections["uc-conversion"]), _text(sections["uc-fraud"])
    old, live, canary, shadow_version = inputs["conversion"]
    assert "matured as of " in conv and "label window 1 min (overriding the declared: converted 7 d)" in conv
    assert "declared label windows (chargeback 60 d, confirmed_fraud 60 d)" in fraud
    assert f"current: {live} (published" in conv
    assert f"rollout (registry, now): canary {canary} on 50% of units, shadow {shadow_version}" in conv
    assert "rollout (registry, now): CURRENT alone (no canary, no shadow)" in fraud
    assert f"canary (decision logs): {canary} vs live {live}: PROMOTE (auc canary-live +" in conv
    assert '<span class="promote">PROMOTE</span>' in sections["uc-conversion"]
    decisions, skipped = inputs["expected"]["shadow"][live]
    assert (
        f"shadow (shadow log): {shadow_version} vs live {live} on {decisions:,} decisions (skipped {skipped:,})"
        in conv
    )
    assert re.search(r"conversion/c_cart_items PSI \d+\.\d{3} \(major, v000[23]\)", conv)
    assert f"{old}: no feature profile" in conv
    assert f"labels: {N:,} decisions, 100.0% matured" in conv
    assert f"decision logs: {N:,} decisions by 3 versions; degraded" in conv
    assert "auc (higher is better; label window 1 min)" in sections["uc-conversion"]  # the panel title
    assert "log_loss (lower is better; label window 1 min)" in sections["uc-conversion"]
    assert "matured (older than 1 min)" in sections["uc-conversion"]  # the label health bar
    for stage in STAGES:
        assert f"<td>{stage}</td>" in sections["uc-conversion"]  # the latency table
    # fraud has decisions and no outcome log: said, not metrics on all-negative labels
    assert "online metrics: not available: NoOutcomesError: fraud: decisions but no outcome log" in fraud
    assert "latency: not available: the decision logs have no stage_ms column" in fraud
    assert "no degraded decision in the decision logs" in fraud
    assert "dropped in total" in sections["server"] and "17 log records" in sections["server"]
    # the header: paths, the project, the windows used
    head = _text(html.split("<nav>")[0])
    assert str(inputs["registry"]) in head and str(inputs["logs"]) in head and "synthetic" in head
    assert "conversion 1 min (overriding the declared windows); declared for fraud" in head


def test_a_failing_source_is_a_note_and_the_rest_draws(inputs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the real drift.loop_health raises; its sections say so in one line,
    every other source still draws; an unknown use case is notes, not an error."""

    def explode(*args, **kwargs):
        raise RuntimeError("health exploded\nsecond line")

    monkeypatch.setattr(drift, "loop_health", explode)
    data = report.gather(
        inputs["registry"], inputs["logs"], use_cases=["conversion", "payments"], now_ms=AS_OF,
        windows={"conversion": WINDOW_S},
    )  # fmt: skip
    conv, payments = data.use_cases
    assert conv.notes == {"drift": "not available: RuntimeError: health exploded"}
    assert conv.health is None and conv.arms and conv.verdicts[0].action == PROMOTE and conv.shadows
    assert payments.notes["registry"].startswith("not available: no published payments version")
    assert payments.notes["logs"].startswith("no decision log files under")
    assert payments.notes["online"].startswith("not available: ValueError:")

    sections = _sections(report.render(data))
    text = _text(sections["uc-conversion"])
    for what in ("drift", "scores", "feature statuses", "labels"):
        assert f"{what}: not available: RuntimeError: health exploded" in text
    assert "second line" not in text
    assert "flywheel: not given (--flywheel FILE)" in text
    assert "dropped log records: not collected" in _text(sections["server"])
    # conversion: versions, online metrics, latency, degraded; payments: nothing to draw
    assert _figures(sections) == {"uc-conversion": 4, "uc-payments": 0, "server": 0}


def test_main_exit_codes_and_atomic_write(
    inputs: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    base = ["--registry", str(inputs["registry"]), "--logs", str(inputs["logs"])]
    assert report.main(base) == 2  # no --out
    assert report.main(["--out", str(out)]) == 2  # no registry / logs
    for bad in ("conversion", "payments=2", "conversion=-1"):
        capsys.readouterr()
        assert report.main([*base, "--window", bad, "--out", str(out)]) == 2
        assert "report: --window: " in capsys.readouterr().err
    assert report.main([*base, "--now-ms", "soon", "--out", str(out)]) == 2
    capsys.readouterr()

    missing = tmp_path / "nowhere"
    assert report.main(["--registry", str(missing), "--logs", str(inputs["logs"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err

    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    assert report.main([*base, "--flywheel", str(bad), "--out", str(out)]) == 1
    assert str(bad) in capsys.readouterr().err
    assert report.main([*base, "--metrics", str(tmp_path / "none.prom"), "--out", str(out)]) == 1
    assert "none.prom" in capsys.readouterr().err
    assert not out.exists()

    # the flywheel's whole output (table lines, then the JSON line) is accepted too
    log = tmp_path / "flywheel.log"
    log.write_text("turn 0: published v0002\n  turn  ctr\n" + inputs["flywheel"].read_text())
    args = [*base, "--flywheel", str(log), "--metrics", str(inputs["metrics"]), "--use-cases", "fraud",
            "--window", "fraud=2", "--now-ms", str(AS_OF)]  # fmt: skip
    assert report.main([*args, "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert list(out.parent.iterdir()) == [out]  # no temp file left
    sections = _sections(page)
    assert list(sections) == ["uc-fraud", "server"]
    head = _text(page.split("<nav>")[0])
    assert "fraud 2 s (overriding the declared windows)" in head and f"(--now-ms {AS_OF})" in head
    fraud = _text(sections["uc-fraud"])
    assert "label window 2 s (overriding the declared: chargeback 60 d, confirmed_fraud 60 d)" in fraud
    assert "labels: 30 decisions, 100.0% matured" in fraud


def test_flywheel_columns_per_use_case(inputs: dict) -> None:
    rows = json.loads(inputs["flywheel"].read_text())["turns"]
    data = report.ReportData(
        project="p",
        generated_at_ms=T0,
        registry="r",
        logs="l",
        use_cases=(report.UseCaseReport("recommendation"), report.UseCaseReport("conversion")),
        flywheel=tuple(rows),
        flywheel_source="f.json",
        flywheel_owners=report.flywheel_owners(),
    )
    rec = report._flywheel_columns(data, "recommendation")
    assert list(rec) == ["decisions", "outcomes", "training_rows", "offline_metric", "ctr"]
    assert rec["ctr"] == pytest.approx([0.05, 0.052, 0.054, 0.056])
    assert list(report._flywheel_columns(data, "conversion")) == [
        "conversion_auc",
        "conversion_candidate_metric",
    ]
    assert report._published(data, "recommendation") == ["turn 1: v0003", "turn 3: v0005"]
    # with no declared owners (use cases not importable), columns go by their prefix
    bare = dataclasses.replace(data, flywheel_owners={})
    assert list(report._flywheel_columns(bare, "conversion")) == [
        "conversion_auc",
        "conversion_candidate_metric",
    ]
    assert "ctr" in report._flywheel_columns(bare, None)


# ------------------------------------------------------------------------------- the browser


class _Drawn(HTMLParser):
    """Per plotly figure div (id fig-N): its main-svg count and drawn marks (paths with a
    non-empty ``d`` inside a trace group, and bar / point / text marks)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None, bool]] = []  # (tag, figure id, in a trace)
        self.svgs: dict[str, int] = {}
        self.marks: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        fig, in_trace = (self.stack[-1][1], self.stack[-1][2]) if self.stack else (None, False)
        cls = a.get("class") or ""
        if tag == "div" and (a.get("id") or "").startswith("fig-"):
            fig = a["id"]
            self.svgs.setdefault(fig, 0)
            self.marks.setdefault(fig, 0)
        if fig and tag == "svg" and "main-svg" in cls:
            self.svgs[fig] += 1
        if tag == "g" and re.search(r"\btrace\b", cls):
            in_trace = True
        if fig and in_trace and tag == "path" and (a.get("d") or "").strip() not in ("", "M0,0Z"):
            self.marks[fig] += 1
        if tag not in ("path", "rect", "line", "circle", "br", "meta", "img", "input", "link"):
            self.stack.append((tag, fig, in_trace))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


def test_report_draws_in_headless_chromium(inputs: dict, tmp_path: Path) -> None:
    """The real-data report (the watch modules' results) in Chromium: every figure draws marks.
    ``DS_REPORT_SCREENSHOT=/path.png`` keeps the screenshot for a person to look at."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is not installed (`make browser-deps` installs Debian chromium when root with apt-get)"
        )
    page = tmp_path / "report.html"
    data = report.write_report(
        page, inputs["registry"], inputs["logs"], inputs["flywheel"], inputs["metrics"],
        now_ms=AS_OF, windows={"conversion": WINDOW_S},
    )  # fmt: skip
    assert [u.name for u in data.use_cases] == ["fraud", "conversion"]
    expected = len(re.findall(r'class="plotly-graph-div"', page.read_text()))
    assert expected == 14
    profile_dir = tmp_path / "chromium-profile"
    common = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        "--virtual-time-budget=15000",
    ]
    done = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    drawn = _Drawn()
    drawn.feed(done.stdout)
    assert sorted(drawn.svgs) == sorted(f"fig-{i}" for i in range(1, expected + 1))
    empty = [f for f in drawn.svgs if drawn.svgs[f] < 1 or drawn.marks[f] < 1]
    assert not empty, f"figures with no svg or no drawn marks: {empty} ({drawn.marks})"
    assert sum(drawn.marks.values()) >= expected

    shot = tmp_path / "report.png"
    done = subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1400,6000", "--hide-scrollbars", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("DS_REPORT_SCREENSHOT")  # e.g. /tmp/report.png, for a person to look at
    if keep:
        shutil.copy(shot, keep)


def test_dropped_counts_from_the_otel_prometheus_exporter_format(tmp_path: Path) -> None:
    """The text the server's /metrics serves (OpenTelemetry's Prometheus exporter: the counter
    ``decision.log.dropped`` as ``decision_log_dropped_total`` with scope labels)."""
    snapshot = tmp_path / "metrics.prom"
    snapshot.write_text(
        "# HELP decision_log_queue_depth \n# TYPE decision_log_queue_depth gauge\n"
        'decision_log_queue_depth{log="decisions",otel_scope_name="decision_service"} 7.0\n'
        "# HELP decision_log_dropped_total \n# TYPE decision_log_dropped_total counter\n"
        'decision_log_dropped_total{cause="queue_full",log="decisions",otel_scope_name="decision_service",'
        'otel_scope_schema_url="",otel_scope_version=""} 5.0\n'
        'decision_log_dropped_total{cause="write_error",log="outcomes",otel_scope_name="decision_service",'
        'otel_scope_schema_url="",otel_scope_version=""} 1.0\n'
    )
    assert report.read_dropped(snapshot) == (
        report.DroppedCount("decisions", "queue_full", 5.0),
        report.DroppedCount("outcomes", "write_error", 1.0),
    )
    snapshot.write_text("decision_log_dropped_total{cause=queue_full} five\n")
    with pytest.raises(report.ReportInputError, match="metrics.prom"):
        report.read_dropped(snapshot)
