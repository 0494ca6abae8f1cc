"""``decision-service``: a project's commands (init, validate, bootstrap, materialize, ...) and the server's.

The project commands follow Feast's init / apply / materialize habits; serve, config and
health are the server's (decision_service/server/cli.py).

  decision-service init DIR [--template payments] a commented example project with sample data
  decision-service validate   --project DIR      the sources against their declarations, and
                                                 every feature group's query run on the
                                                 offline engine (--engine duckdb|spark)
  decision-service bootstrap  --project DIR      validate, then per use case (recommendation:
                                                 embeddings, features, index, ranker; fraud:
                                                 profiles, neighbours, model), publish;
                                                 --redis-url also materializes
  decision-service materialize --project DIR --redis-url URL
  decision-service training-set --project DIR    decision logs + outcomes -> a training set
  decision-service retrain    --project DIR      train on it, gate, publish
  decision-service rollout {status,shadow,canary,promote,rollback,decide} --use-case U
                                                 safe rollout of a version (offline/rollout.py)
  decision-service report     --project DIR --out report.html
                                                 the HTML report (offline/watch/report.py)
  decision-service serve      --project DIR      the gRPC server on the project's registry

``--project`` defaults to $DS_PROJECT, else the current folder when it holds project.yaml.
Exit codes: 0 done, 1 the command failed (the message says why), 2 bad usage or project,
3 retrain trained a candidate that the gate did not publish (not better than CURRENT).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from decision_service import project as projects

SERVER_COMMANDS = ("serve", "config", "health")
SHARE_SLOTS_WARNING = 128
"""validate warns about a Share vector wider than this (973 slots: ~4 GB and 75 s to snapshot
400 users in a review; 272: 615 MB)."""


def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", type=Path, default=None, help="project folder (default: $DS_PROJECT or .)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SERVER_COMMANDS:
        return _server(argv)
    ap = argparse.ArgumentParser(prog="decision-service", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="scaffold a commented example project with sample data")
    init.add_argument("directory", type=Path)
    init.add_argument(
        "--template",
        choices=("shop", "payments"),
        default="shop",
        help="shop: recommendations over users, items and events; "
        "payments: fraud verdicts over a payments table",
    )
    for name, text in (
        ("validate", "check the project's sources against their declarations"),
        ("bootstrap", "validate, then train and publish the recommendation and fraud models"),
        ("materialize", "write the bootstrapped serving state into the online store"),
        ("training-set", "join the decision logs with outcomes into a training set"),
        ("retrain", "retrain on a training set, gate against CURRENT, publish"),
    ):
        cmd = sub.add_parser(name, help=text)
        _project_arg(cmd)
        if name in ("bootstrap", "materialize"):
            cmd.add_argument(
                "--redis-url", default=None, help="online store (default: project.yaml online_store)"
            )
        if name == "bootstrap":
            cmd.add_argument("--threads", type=int, default=2, help="CPU threads for training and FAISS")
        if name in ("training-set", "retrain"):
            cmd.add_argument(
                "--use-case",
                default=None,
                help="a use case the project serves (default: its only one, else recommendation)",
            )
            cmd.add_argument(
                "--out", default=None, help="training set path (default: <project>/.ds/training/)"
            )
        if name == "training-set":
            cmd.add_argument(
                "--as-of-ms", type=int, default=None, help="label as of this time (ms; default: now)"
            )
        if name in ("training-set", "validate", "bootstrap", "materialize"):
            cmd.add_argument(
                "--engine",
                choices=("duckdb", "spark"),
                default="duckdb",
                help="offline engine: duckdb (embedded, default) or spark (local[2] unless "
                "SPARK_MASTER / spark-defaults / --conf spark.master=... name a cluster); "
                "validate, bootstrap, materialize: where the declared feature groups are computed",
            )
            cmd.add_argument(
                "--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting; repeatable"
            )
        if name == "retrain":
            cmd.add_argument("--force", action="store_true", help="publish even if not better than CURRENT")
    _rollout_parser(sub)
    report = sub.add_parser("report", help="write the HTML report: versions, arms, drift, latency, flywheel")
    _project_arg(report)
    report.add_argument(
        "--out", type=Path, default=Path("report.html"), help="the HTML file (default: %(default)s)"
    )
    report.add_argument("--registry", default=None, help="registry root (default: the project's)")
    report.add_argument("--logs", default=None, help="log root (default: the project's)")
    report.add_argument("--flywheel", type=Path, default=None, help="a flywheel summary JSON (make flywheel)")
    report.add_argument("--metrics", type=Path, default=None, help="a Prometheus text snapshot of /metrics")
    report.add_argument("--use-cases", default=None, help="comma-separated (default: every served one)")
    report.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="USE_CASE=SECONDS",
        help="judge maturity with this label window for the use case (repeatable)",
    )
    report.add_argument("--now-ms", type=int, default=None, help="matured as of this time (ms)")
    sub.add_parser("serve", help="run the gRPC server (see `decision-service serve --help`)")
    sub.add_parser("config", help="show the effective server configuration")
    sub.add_parser("health", help="exit 0 when a server reports SERVING")
    args = ap.parse_args(argv)
    if args.command == "init":
        from offline.scaffold import scaffold

        try:
            written = scaffold(args.directory, args.template)
        except OSError as exc:  # an existing project, a path through a file, no permission
            print(f"decision-service init: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} files into {args.directory}:")
        for path in written:
            print(f"  {path}")
        print(f"next: decision-service validate --project {args.directory}")
        return 0
    try:
        project = _activate(args.project)
    except projects.ProjectError as exc:
        print(f"decision-service: {exc}", file=sys.stderr)
        return 2
    import duckdb
    import lightgbm
    import redis

    from offline.engines import EngineUnavailable
    from offline.features.compiler import CompileError, SourceError

    try:
        return COMMANDS[args.command](project, args)
    except ImportError as exc:  # a name the project's features.py does not declare
        print(f"decision-service {args.command}: {exc}", file=sys.stderr)
        return 2
    except (
        projects.ProjectError,
        SourceError,
        CompileError,
        ValueError,
        OSError,  # a missing training set, an unwritable --out
        duckdb.Error,
        EngineUnavailable,  # --engine spark without PySpark / Java: says how to install them
        redis.RedisError,
        redis.exceptions.RedisClusterException,  # a redis+cluster:// URL naming no cluster
        lightgbm.basic.LightGBMError,
    ) as exc:
        # ValueError: a job's documented refusal (e.g. no labelled rows yet), said in one line
        print(f"decision-service {args.command}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1


def _activate(directory: Path | None) -> projects.Project:
    """Makes the project active (before anything imports the feature definitions)."""
    path = directory if directory is not None else projects.locate()
    project = projects.use(path)
    import decision_service.features.definitions  # noqa: F401 -- its errors surface here, named

    return project


def _server(argv: list[str]) -> int:
    """serve / config / health: the server's own command line (it takes ``--project`` too)."""
    from decision_service.server import cli as server_cli

    return server_cli.main(argv)


# --- commands ------------------------------------------------------------------------------


def validate(project: projects.Project, args: argparse.Namespace) -> int:
    report = _validate(project)
    print(report.summary())
    if report.errors:
        print(f"{len(report.errors)} error(s): fix the sources or the declarations", file=sys.stderr)
        return 1
    if project.serves("fraud"):
        _required(
            "FRAUD",
            "fraud project declares PAYMENTS = Payments(...) and FRAUD = fraud_features(PAYMENTS) "
            "(decision_service/features/payments.py): without them its payments are not checked or trained",
            project,
        )
        # the payments against settings.fraud (span, label delay), as bootstrap checks them first
        from offline.features.payments import load_payments

        world, _ = load_payments(_declared("FRAUD"), project.data_dir, project.name)  # type: ignore[arg-type]
        fraud_config(project, world)
    print(f"ok: {project.name} ({project.directory})")
    return 0


def _declared(name: str) -> object | None:
    """The active project's declaration ``name``, None when features.py has none."""
    from decision_service.features import definitions

    return vars(definitions).get(name)


def _validate(project: projects.Project):  # -> offline.features.validate.ValidationReport
    """The sources against their declarations, then every group's compiled query (an Expr
    naming an unknown feature, a cycle, bad SQL) against the sources' schemas, run (over no
    rows) on the engine of ``--engine`` (compiler.using; DuckDB by default): on Spark, a
    construct the translation cannot carry is an error naming the group and the declaration."""
    from decision_service.features import definitions
    from decision_service.features.declarative import Share
    from offline.features import compiler
    from offline.features.validate import Problem, validate_sources

    groups = [g for g in definitions.REGISTRY.groups if g.source is not None]
    extra_tables, extra_events = [], []
    interactions = _declared("INTERACTIONS") if project.serves("recommendation") else None
    if interactions is not None:
        extra_tables = [interactions.users, interactions.items]
        extra_events = [interactions.events]
    report = validate_sources(groups, project.data_dir, tables=extra_tables, events=extra_events)
    fraud = _declared("FRAUD") if project.serves("fraud") else None
    if fraud is not None:  # the payments contract's own checks: ids, amounts, labels, currencies
        from offline.features.validate_payments import validate_payments

        report.problems.extend(validate_payments(fraud, project.data_dir))
    for group in groups:
        for f in group.features:
            if isinstance(f.compute, Share) and f.size > SHARE_SLOTS_WARNING:
                src = group.source
                path = (src.events or src.table).path if src is not None else ""
                report.problems.append(
                    Problem(
                        "warning",
                        path,
                        f.compute.of,
                        f"feature {f.name!r} of group {group.name!r}: {f.size:,} Share slots per entity; "
                        "the snapshot's memory and every stored vector grow with them: keep the most "
                        f"frequent few dozen (vocabulary=tuple(range({SHARE_SLOTS_WARNING // 4})))",
                        source=group.name,
                    )
                )
    if report.errors:
        return report  # a query over sources that do not match would only repeat their errors
    for group in groups:
        try:
            compiler.point_in_time(group, [], [], project.data_dir)
        except Exception as exc:  # CompileError, SourceError, duckdb.Error: said as a problem
            src = group.source
            path = (src.events or src.table).path if src is not None else ""
            message = f"group {group.name!r}: its features do not compile: {str(exc).splitlines()[0]}"
            report.problems.append(Problem("error", path, None, message, source=group.name))
    return report


BOOTSTRAPPED = ("recommendation", "fraud")
"""The use cases ``bootstrap`` trains from a project's own data (INTERACTIONS, PAYMENTS)."""


def _on_engine(command):  # (project, args) -> int, the same with the feature compiler on --engine
    """Runs ``command`` with the declared feature groups computed on ``--engine`` (with
    ``--conf``): the compiler's queries of every step inside it (offline/features/compiler.py
    ``using``); reading the sources, training and publishing are the same either way."""
    import functools

    @functools.wraps(command)
    def run(project: projects.Project, args: argparse.Namespace) -> int:
        from offline.engines import open_engine, parse_conf
        from offline.features import compiler

        if args.engine == "duckdb":  # each query on its own connection, every core (as always)
            return command(project, args)
        with open_engine(args.engine, parse_conf(args.conf)) as engine, compiler.using(engine):
            return command(project, args)

    return run


def bootstrap(project: projects.Project, args: argparse.Namespace) -> int:
    use_cases = [u for u in BOOTSTRAPPED if project.serves(u)]
    if not use_cases:
        print(
            f"bootstrap: project {project.name} serves {', '.join(project.use_cases)}; bootstrap trains "
            f"{' and '.join(BOOTSTRAPPED)} from a project's data (the others with offline/runs/)",
            file=sys.stderr,
        )
        return 1
    t0 = time.perf_counter()
    print(f"validating the sources of {project.name} ...", flush=True)
    report = _validate(project)
    if report.errors:
        print(report.summary(), file=sys.stderr)
        print("bootstrap: the sources fail validation; nothing was written", file=sys.stderr)
        return 1
    if report.warnings:
        print(report.summary())  # said once, before the long steps
    redis_url = args.redis_url or project.online_store
    if redis_url:
        _check_redis(redis_url)  # before anything is trained or published
    from offline.features.vocabulary import persist_learned

    # every use case's data and settings are read and checked before anything is written:
    # a bad fraud setting never leaves a recommendation version published behind it
    fraud_run = _prepare_fraud(project, args) if "fraud" in use_cases else None
    persist_learned()  # the vocabularies the declarations learned: only from valid sources
    if "recommendation" in use_cases:
        _bootstrap_recommendation(project, args, redis_url)
    if fraud_run is not None:
        fraud_run(redis_url)
    print(f"bootstrap of {project.name} finished in {time.perf_counter() - t0:.0f} s")
    return 0


def _required(name: str, what: str, project: projects.Project) -> object:
    value = _declared(name)
    if value is None:
        raise projects.ProjectError(f"{project.features_file}: a {what}")
    return value


def _bootstrap_recommendation(
    project: projects.Project, args: argparse.Namespace, redis_url: str | None
) -> None:
    from offline.features.interactions import load_interactions
    from offline.runs.bootstrap import bootstrap_world

    interactions = _required(
        "INTERACTIONS",
        "recommendation project declares INTERACTIONS = Interactions(...) "
        "(decision_service/features/interactions.py): which events, users and items the jobs train on",
        project,
    )
    print("[recommendation] loading interactions ...", flush=True)
    world, loaded = load_interactions(interactions, project.data_dir, project.name)
    print(
        f"      {loaded.users:,} users (+{loaded.users_from_events} only in events), {loaded.items:,} items, "
        f"{loaded.events:,} events ({loaded.positives:,} positive), "
        f"{loaded.events_on_unknown_items:,} events on unknown items dropped",
        flush=True,
    )
    if loaded.users_from_events:
        print(
            f"      warning: {loaded.users_from_events:,} user ids of the events are not in "
            f"{interactions.users.path}: check that both id columns are written alike "
            "(e.g. 24 vs '00024'); their attributes take the declared defaults"
        )
    uncategorised = int((world.item_category < 0).sum())
    if uncategorised:
        print(
            f"      note: {uncategorised:,} items have no category of the vocabulary (NULL, or new since "
            f"it was learned: delete {project.state_dir / 'vocabularies'} and bootstrap again to "
            "learn new ones); they are served, never through a category allow-list"
        )
    print("[recommendation] features, embeddings, index, ranker, publish ...", flush=True)
    cfg = ranker_config(project, world, args.threads)
    bootstrap_world(
        world,
        project.state_dir,
        project.registry_dir,
        redis_url,
        cfg,
        threads=args.threads,
        verbose=True,
        project=project.name,
    )


def _prepare_fraud(project: projects.Project, args: argparse.Namespace):  # -> Callable[[str | None], None]
    """Loads the payments and checks settings.fraud against them (nothing written); returns
    the step that trains, publishes and materializes."""
    from decision_service.features.payments import FraudFeatures
    from offline.features.payments import load_payments
    from offline.runs.bootstrap_fraud import bootstrap_fraud

    fraud = _required(
        "FRAUD",
        "fraud project declares PAYMENTS = Payments(...) and FRAUD = fraud_features(PAYMENTS) "
        "(decision_service/features/payments.py): its payments table and the standard fraud features",
        project,
    )
    assert isinstance(fraud, FraudFeatures)
    print("[fraud] loading payments ...", flush=True)
    world, loaded = load_payments(fraud, project.data_dir, project.name)
    print(f"      {loaded.summary()}", flush=True)
    note = fraud.note()
    if note:
        print("      " + note.replace("\n", "\n      "))
    cfg = fraud_config(project, world, args.threads)

    def run(redis_url: str | None) -> None:
        print(
            "[fraud] profiles, velocity, neighbours, model, publish "
            f"(train from day {cfg.train_start_day:g}, evaluate the last {cfg.eval_days:g} days, "
            f"labels mature after {cfg.maturity_days:g} days) ...",
            flush=True,
        )
        version = bootstrap_fraud(world, project.registry_dir, redis_url, cfg, verbose=True)
        m = version.manifest["metrics"]
        if not (
            m["model_auc"] > m["rules_auc"] and m["model_average_precision"] > m["rules_average_precision"]
        ):
            print(
                f"      warning: the model does not beat the rules-only baseline on the held-out days "
                f"(ROC AUC {m['model_auc']} vs {m['rules_auc']}, average precision "
                f"{m['model_average_precision']} vs {m['rules_average_precision']}): check the labels "
                "(are they fraud?) and their times before serving it"
            )

    return run


def fraud_config(project: projects.Project, world, threads: int = 2):  # -> FraudTrainConfig
    """The fraud model's time split from project.yaml ``settings.fraud``: ``train_start_day``
    (days after the first payment's day; earlier payments only build history), ``eval_days``
    (the held-out last days), ``maturity_days`` (how long a label takes to arrive: training
    rows are at least that old at the split). ProjectError naming the settings when the
    payments span too few days for them."""
    from decision_service.features import definitions
    from decision_service.features.declarative import seconds
    from offline.training.train_fraud import FraudTrainConfig, fraud_split

    s = lambda key, default: project.setting("fraud", key, default)  # noqa: E731
    d = FraudTrainConfig()
    where = f"{project.directory / projects.PROJECT_FILE}: settings.fraud"

    def number(key: str, default: float, cast: type = float):  # -> float | int
        value = s(key, default)
        try:
            return cast(value)
        except (TypeError, ValueError):
            raise projects.ProjectError(f"{where}: {key} must be a number, got {value!r}") from None

    cfg = FraudTrainConfig(
        train_start_day=number("train_start_day", d.train_start_day),
        eval_days=number("eval_days", d.eval_days),
        maturity_days=number("maturity_days", d.maturity_days),
        k_neighbours=number("k_neighbours", d.k_neighbours, int),
        threads=threads,
    )
    for key, value, low in (
        ("train_start_day", cfg.train_start_day, 0.0),
        ("maturity_days", cfg.maturity_days, 0.0),
        ("eval_days", cfg.eval_days, 1.0),
        ("k_neighbours", cfg.k_neighbours, 1),
    ):
        if not value >= low:
            raise projects.ProjectError(f"{where}: {key} must be >= {low:g}, got {value:g}")
    payments = definitions.FRAUD.payments
    if payments.label_time is None and seconds(payments.label_delay) > cfg.maturity_days * 86_400:
        raise projects.ProjectError(
            f"{where}: maturity_days {cfg.maturity_days:g} is shorter than the payments' label_delay "
            f"{payments.label_delay!r}: no training label would have arrived by the split; "
            "raise maturity_days"
        )
    days = (world.now_ms - world.start_ms) / 86_400_000
    need = cfg.train_start_day + cfg.maturity_days + cfg.eval_days
    if need >= days:
        raise projects.ProjectError(
            f"{project.directory / projects.PROJECT_FILE}: the payments span {days:.1f} days, fewer than "
            f"settings.fraud train_start_day + maturity_days + eval_days = {cfg.train_start_day:g} + "
            f"{cfg.maturity_days:g} + {cfg.eval_days:g}: lower them (or bring more history)"
        )
    try:
        fraud_split(world, cfg)  # enough labels on both sides, enough neighbours: before any write
    except ValueError as exc:
        raise projects.ProjectError(f"{project.directory / projects.PROJECT_FILE}: {exc}") from None
    return cfg


LIGHTGBM_SETTINGS = (
    "num_leaves",
    "min_data_in_leaf",
    "learning_rate",
    "feature_fraction",
    "num_boost_round",
    "early_stopping_rounds",
)
"""LightGBM knobs settings.recommendation may set (offline/training/lightgbm_params.py)."""


def ranker_config(project: projects.Project, world=None, threads: int = 2):  # -> RankerConfig
    """The ranker's time-ordered split and sizes from project.yaml ``settings.recommendation``:
    ``train_from_share`` / ``test_from_share`` (the points by which that share of the events
    has happened: the split follows the data, however unevenly it is spread over time; needs
    ``world``), else ``train_from_day`` / ``test_from_day`` (days after the first event's day).
    Features and embeddings are taken at train_from; the ranker learns from the positives of
    [train_from, test_from) and is evaluated on those after test_from. Training options:
    ``train_relevance`` (``all`` events graded, or ``positive`` only), ``extra_train_windows``
    (earlier windows of the same length, each with its own state: RankerConfig), the
    LightGBM knobs of LIGHTGBM_SETTINGS, ``k_random`` sampled negatives, ``train_candidates``
    (``augmented``: retrieval + missed positives + sampled negatives, or ``served`` only), ``seed``.

    On failure: ProjectError naming the setting."""
    import numpy as np

    from offline.training.train_ranker import RankerConfig

    s = lambda key, default: project.setting("recommendation", key, default)  # noqa: E731
    d = RankerConfig()
    t1, t2 = float(s("train_from_day", d.t1_day)), float(s("test_from_day", d.t2_day))
    shares = s("train_from_share", None), s("test_from_share", None)
    if any(v is not None for v in shares):
        try:
            a, b = (float(v) for v in shares)
        except (TypeError, ValueError):
            raise projects.ProjectError(
                f"{project.directory / projects.PROJECT_FILE}: settings.recommendation needs both "
                f"train_from_share and test_from_share as numbers, got {shares}"
            ) from None
        if not 0 < a < b < 1:
            raise projects.ProjectError(
                f"{project.directory / projects.PROJECT_FILE}: settings.recommendation: expected "
                f"0 < train_from_share < test_from_share < 1, got {a} and {b}"
            )
        assert world is not None, "a split by event share needs the loaded events"
        t1, t2 = ((float(np.quantile(world.event_ms, q)) - world.start_ms) / 86_400_000 for q in (a, b))
    where = f"{project.directory / projects.PROJECT_FILE}: settings.recommendation"
    lgbm = d.lgbm
    try:
        knobs = {k: type(getattr(lgbm, k))(s(k, None)) for k in LIGHTGBM_SETTINGS if s(k, None) is not None}
        extra_windows, k_random, seed = (
            int(s("extra_train_windows", d.extra_train_windows)),
            int(s("k_random", d.k_random)),
            int(s("seed", d.seed)),
        )
    except (TypeError, ValueError) as exc:
        raise projects.ProjectError(f"{where}: {exc}") from None
    choices = {"train_relevance": ("all", "positive"), "train_candidates": ("augmented", "served")}
    for key, allowed in choices.items():
        if str(s(key, allowed[0])) not in allowed:
            raise projects.ProjectError(
                f"{where}: {key} must be one of {', '.join(allowed)}, got {s(key, None)!r}"
            )
    if extra_windows < 0 or k_random < 0 or any(v <= 0 for v in knobs.values()):
        raise projects.ProjectError(
            f"{where}: extra_train_windows, k_random and the LightGBM knobs must be > 0"
        )
    return RankerConfig(
        train_served_only=str(s("train_candidates", "augmented")) == "served",
        train_positive_only=str(s("train_relevance", "all")) == "positive",
        k_random=k_random,
        seed=seed,
        extra_train_windows=extra_windows,
        lgbm=dataclasses.replace(lgbm, **knobs),
        t1_day=round(t1, 3),
        t2_day=round(t2, 3),
        eval_at=int(s("eval_at", d.eval_at)),
        max_train_users=int(s("max_train_users", d.max_train_users)),
        max_eval_users=int(s("max_eval_users", d.max_eval_users)),
        eval_as_of_t2=True,  # a project's model is judged as served: features as of T2
        eval_positive_only=True,  # against its goal events (INTERACTIONS.positive)
        threads=threads,
    )


def materialize(project: projects.Project, args: argparse.Namespace) -> int:
    redis_url = args.redis_url or project.online_store
    if not redis_url:
        print(
            "materialize: no online store: pass --redis-url or set online_store in project.yaml",
            file=sys.stderr,
        )
        return 2

    from decision_service.features import definitions
    from offline.features.feature_history import HISTORY_DIR

    _check_redis(redis_url)
    stats: dict[str, int] = {}
    if project.serves("recommendation") and _declared("INTERACTIONS") is not None:
        from decision_service.features import redis_store
        from offline.features.interactions import load_interactions
        from offline.features.materialize import load_serving_state, materialize_snapshot

        try:
            snapshot, emb = load_serving_state(project.state_dir)
        except FileNotFoundError:
            print(
                f"materialize: {project.state_dir}/serving is missing: run bootstrap first", file=sys.stderr
            )
            return 1
        world, _ = load_interactions(definitions.INTERACTIONS, project.data_dir, project.name)
        client = redis_store.connect(redis_url)
        try:
            stats |= materialize_snapshot(
                client, world, snapshot, emb, history_root=project.state_dir / HISTORY_DIR
            )
        finally:
            client.close()
    if project.serves("fraud") and _declared("FRAUD") is not None:
        from offline.features.fraud_features import FraudHistory
        from offline.features.payments import load_payments
        from offline.runs.bootstrap_fraud import materialize_fraud

        payments, _ = load_payments(definitions.FRAUD, project.data_dir, project.name)
        stats |= materialize_fraud(FraudHistory(payments), redis_url)
    if not stats:
        print(f"materialize: project {project.name} declares neither INTERACTIONS nor FRAUD", file=sys.stderr)
        return 1
    print("materialized " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


def _use_case(project: projects.Project, args: argparse.Namespace) -> str:
    """``--use-case``, else the project's only use case, else recommendation when served."""
    if args.use_case is None:
        if len(project.use_cases) == 1:
            args.use_case = project.use_cases[0]
        elif project.serves("recommendation"):
            args.use_case = "recommendation"
        else:
            raise projects.ProjectError(
                f"project {project.name!r} serves {', '.join(project.use_cases)}: pass --use-case"
            )
    _served(project, args.use_case)
    return args.use_case


def _served(project: projects.Project, use_case: str) -> None:
    if not project.serves(use_case):
        raise ImportError(f"project {project.name!r} serves {', '.join(project.use_cases)}, not {use_case!r}")


def training_set(project: projects.Project, args: argparse.Namespace) -> int:
    _use_case(project, args)
    from offline.loop import training_set as ts

    out = args.out or str(project.state_dir / "training" / f"{args.use_case}.parquet")
    as_of = ["--as-of-ms", str(args.as_of_ms)] if args.as_of_ms is not None else []
    engine = ["--engine", args.engine, *(x for c in args.conf for x in ("--conf", c))]
    return ts.main(["--logs", project.log_root, "--use-case", args.use_case, "--out", out, *as_of, *engine])


def retrain(project: projects.Project, args: argparse.Namespace) -> int:
    _use_case(project, args)
    from offline.loop import retrain as rt

    path = args.out or str(project.state_dir / "training" / f"{args.use_case}.parquet")
    argv = ["--training-set", path, "--use-case", args.use_case, "--registry", str(project.registry_dir)]
    if args.use_case == "recommendation":
        from offline.loop.training_set import recommendation_labels

        labels = [label.name for label in recommendation_labels()]
        target = str(project.setting("recommendation", "target", labels[0]))
        if target not in labels:
            raise projects.ProjectError(
                f"settings.recommendation.target {target!r} is not one of the labelled outcomes {labels}"
            )
        argv += ["--target", target, "--gain-labels", ",".join(labels)]
        argv += ["--k", str(int(project.setting("recommendation", "eval_at", 10)))]  # the gate's NDCG@k
    return rt.main(argv + (["--force"] if args.force else []))


def _check_redis(url: str) -> None:
    """A PING within 3 s from the online store (every primary of a ``redis+cluster://`` one);
    ProjectError naming the URL (password masked) otherwise, or when a plain redis:// URL
    names a Redis Cluster node (redis_store.CLUSTER_UNSUPPORTED)."""
    import redis

    from decision_service.config import _mask_url
    from decision_service.features import redis_store

    cluster_url = url.startswith("redis+cluster://")
    try:
        client = redis_store.connect(url, socket_connect_timeout=3, socket_timeout=3)
    except (redis.RedisError, redis.exceptions.RedisClusterException, ValueError) as exc:
        raise projects.ProjectError(f"the online store {_mask_url(url)} does not answer: {exc}") from None
    try:
        if cluster_url:
            answers = client.ping(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
            if answers is not True and not all(dict(answers).values()):
                raise redis.ConnectionError(f"primaries not answering PING: {answers}")
            redis_store.layout_of(client)  # a recorded layout this release cannot read is refused
            cluster = False
        else:
            client.ping()
            cluster = redis_store.is_cluster_node(client.info("cluster"))
    except redis_store.LayoutError as exc:
        if "no key layout" not in str(exc):  # none yet: materialization records it
            raise projects.ProjectError(f"the online store {_mask_url(url)}: {exc}") from None
        cluster = False
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise projects.ProjectError(f"the online store {_mask_url(url)} does not answer: {exc}") from None
    finally:
        client.close()
    if cluster:  # materialization's pipelines would fail half-way through (CROSSSLOT)
        raise projects.ProjectError(f"the online store {_mask_url(url)} {redis_store.CLUSTER_UNSUPPORTED}")


def _rollout_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rollout = sub.add_parser("rollout", help="shadow, canary, promote, roll back (see offline/rollout.py)")
    actions = rollout.add_subparsers(dest="action", required=True)
    for name, text in (
        ("status", "CURRENT, canary and shadow of every use case"),
        ("shadow", "score every decision with VERSION off the answer path (--off: stop)"),
        ("canary", "serve VERSION to --share of the users (--off: stop)"),
        ("promote", "the canary (or VERSION) becomes CURRENT, if the promotion rule says so"),
        ("rollback", "stop the canary; CURRENT unchanged"),
        ("decide", "apply the promotion rule: promote, roll back or wait"),
    ):
        cmd = actions.add_parser(name, help=text)
        _project_arg(cmd)
        cmd.add_argument("--registry", default=None, help="registry root (default: the project's)")
        if name != "status":
            cmd.add_argument("--use-case", required=True, help="the use case")
        else:
            cmd.add_argument("--use-case", default=None, help="only this use case")
        if name in ("shadow", "canary", "promote"):
            cmd.add_argument("version", nargs="?", default=None, help="a published version, e.g. v0004")
        if name in ("shadow", "canary"):
            cmd.add_argument("--off", action="store_true", help="clear it")
        if name == "canary":
            cmd.add_argument(
                "--share", type=float, default=0.1, help="share of users, in (0, 1) (default 0.1)"
            )
        if name in ("promote", "decide"):
            cmd.add_argument("--logs", default=None, help="log root (default: the project's)")
            cmd.add_argument("--now-ms", type=int, default=None, help="judge maturity as of this time (ms)")
            cmd.add_argument(
                "--window-s", type=float, default=None, help="label window in seconds (default: the declared)"
            )
            cmd.add_argument(
                "--min-decisions",
                type=int,
                default=None,
                help="matured decisions each arm needs (default 500)",
            )
            cmd.add_argument(
                "--min-positives", type=int, default=None, help="positive labels each arm needs (default 20)"
            )
        if name == "promote":
            cmd.add_argument("--force", action="store_true", help="skip the promotion rule")
        if name == "decide":
            cmd.add_argument(
                "--final", action="store_true", help="the canary period is over: roll back if undecided"
            )


def rollout(project: projects.Project, args: argparse.Namespace) -> int:
    """Exit 0 when done (decide: promoted or rolled back), 3 when decide says WAIT, 1 refused."""
    from decision_service.config import ServiceConfig
    from decision_service.models.registry import ModelRegistry
    from offline import rollout as ops

    registry = ModelRegistry(args.registry or project.registry_dir)
    config = ServiceConfig.from_env()
    logs = getattr(args, "logs", None) or project.log_root
    try:
        if args.action == "status":
            lines, readable = ops.status(registry, [args.use_case] if args.use_case else None)
            for line in lines:
                print(line)
            return 0 if readable else 1
        if args.action in ("shadow", "canary"):
            if args.off == (args.version is not None):
                print(
                    f"decision-service rollout {args.action}: name a VERSION or pass --off", file=sys.stderr
                )
                return 2
            version = None if args.off else args.version
            if args.action == "shadow":
                done = ops.set_shadow(registry, config, args.use_case, version)
            else:
                done = ops.set_canary(registry, config, args.use_case, version, args.share)
            print(f"{args.use_case}: {done.describe()}")
            return 0
        if args.action == "promote":
            applied = ops.promote(
                registry,
                config,
                args.use_case,
                logs,
                args.version,
                args.force,
                args.now_ms,
                args.window_s,
                _canary_rule(args),
            )
        elif args.action == "rollback":
            applied = ops.rollback(registry, args.use_case)
        else:
            applied = ops.decide(
                registry,
                config,
                args.use_case,
                logs,
                args.final,
                args.now_ms,
                args.window_s,
                _canary_rule(args),
            )
    except ops.RolloutRefused as exc:
        print(f"decision-service rollout {args.action}: {exc}", file=sys.stderr)
        return 1
    if applied.verdict is not None:
        print(_verdict_line(applied.verdict))
    print(applied.message)
    return 3 if applied.action == "wait" else 0


def _canary_rule(args: argparse.Namespace) -> object:
    """The canary rule with the floors given on the command line (the others: its defaults)."""
    from offline.watch.online import CanaryRule

    given = {k: getattr(args, k) for k in ("min_decisions", "min_positives") if getattr(args, k) is not None}
    return CanaryRule(**given)


def _verdict_line(v: object) -> str:
    from offline.watch.results import CanaryVerdict

    assert isinstance(v, CanaryVerdict)
    d = v.difference
    return (
        f"{v.use_case} {v.metric}: canary {v.canary_version} - live {v.live_version} = {d.estimate:+.4f} "
        f"[{d.low:+.4f}, {d.high:+.4f}] (95 %, n={d.n}) -> {v.action.upper()}: {v.reason}"
    )


def report(project: projects.Project, args: argparse.Namespace) -> int:
    from offline.watch import report as html

    argv = [
        "--registry",
        str(args.registry or project.registry_dir),
        "--logs",
        str(args.logs or project.log_root),
        "--out",
        str(args.out),
    ]
    if args.flywheel is not None:
        argv += ["--flywheel", str(args.flywheel)]
    if args.metrics is not None:
        argv += ["--metrics", str(args.metrics)]
    if args.use_cases:
        argv += ["--use-cases", args.use_cases]
    for window in args.window:
        argv += ["--window", window]
    if args.now_ms is not None:
        argv += ["--now-ms", str(args.now_ms)]
    return html.main(argv)


COMMANDS = {
    "validate": _on_engine(validate),
    "bootstrap": _on_engine(bootstrap),
    "materialize": _on_engine(materialize),
    "training-set": training_set,
    "retrain": retrain,
    "rollout": rollout,
    "report": report,
}

if __name__ == "__main__":
    raise SystemExit(main())
