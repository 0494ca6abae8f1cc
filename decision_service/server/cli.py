"""``decision-service`` command line: ``serve`` and ``health`` (the container's probe).

The server works on the active project (decision_service/project.py): its registry, logs and
online store are the defaults, below flags and DS_* variables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from decision_service import project as projects
from decision_service.config import ConfigError, ServiceConfig, describe
from decision_service.models.registry import RegistryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="decision-service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server (config: DS_* environment variables)")
    serve.add_argument("--host", help="listen address (DS_HOST)")
    serve.add_argument("--port", type=int, help="listen port, 0 = any free port (DS_PORT)")
    serve.add_argument("--data-dir", type=Path, help="data directory (DS_DATA_DIR)")
    serve.add_argument(
        "--registry-dir",
        type=lambda v: v if "://" in v else Path(v),
        help="model registry: a directory or s3://bucket/prefix (DS_REGISTRY_DIR)",
    )
    serve.add_argument("--redis-url", help="Redis URL (DS_REDIS_URL or REDIS_URL)")
    serve.add_argument(
        "--workers", type=int, help="server processes on one port (DS_WORKERS); 0 = one per CPU core"
    )
    show = sub.add_parser("config", help="show the effective configuration (secrets masked)")
    show.add_argument("--print", action="store_true", required=True, help="print it as YAML")
    show.add_argument("--config", type=Path, help="YAML config file (DS_CONFIG)")
    serve.add_argument("--config", type=Path, help="YAML config file (DS_CONFIG); env overrides it")
    for p in (serve, show):
        p.add_argument("--project", type=Path, help="project folder (DS_PROJECT; default: . if it has one)")
    health = sub.add_parser("health", help="exit 0 when the server reports SERVING, else 1")
    health.add_argument("--address", default="127.0.0.1:50051", help="host:port of the server")
    health.add_argument("--service", default="", help="service name; empty = the whole server")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)
    if args.command == "health":
        return check_health(args.address, args.service, args.timeout)
    if getattr(args, "project", None) is not None:
        os.environ[projects.ENV] = str(args.project.expanduser().resolve())

    flags = ("host", "port", "data_dir", "registry_dir", "redis_url", "workers")
    overrides = {k: getattr(args, k) for k in flags if getattr(args, k, None) is not None}
    try:
        env = project_env()
        if (
            args.command == "serve"
            and env.get(projects.ENV)
            and "redis_url" not in overrides
            and not (env.get("DS_REDIS_URL") or env.get("REDIS_URL"))
        ):
            raise ConfigError(
                f"project {env[projects.ENV]} names no online store: pass --redis-url, set DS_REDIS_URL, "
                "or set online_store in its project.yaml"
            )
        config = ServiceConfig.from_env(config_file=args.config, env=env, **overrides)
    except ConfigError as exc:
        print(f"decision-service: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        import yaml

        print(yaml.safe_dump(describe(config), sort_keys=False), end="")
        return 0
    try:  # the project's declarations and the use cases it serves, checked before any worker starts
        import decision_service.use_cases  # noqa: F401
    except (projects.ProjectError, ImportError) as exc:
        print(f"decision-service: cannot start: {exc}", file=sys.stderr)
        return 2
    from decision_service.server.workers import configure_logging, serve_workers, worker_count

    workers = worker_count(config)
    if workers > 1:
        configure_logging(config.log_level, "supervisor")
        return serve_workers(config, workers)
    config = replace(config, workers=1)  # alone on its port: no SO_REUSEPORT (server/listen.py)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from decision_service.server.app import serve as run
    from decision_service.server.listen import ListenError

    try:
        asyncio.run(run(config))
    except ListenError as exc:
        print(f"decision-service: cannot listen: {exc}", file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"decision-service: cannot start: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"decision-service: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


def project_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with the active project's locations as defaults (flags and DS_* win):
    its registry, its decision logs and its online store (decision_service/project.py). No
    project (no $DS_PROJECT, no project.yaml here): the environment as it is.

    On failure: ConfigError naming the project's problem."""
    env = dict(os.environ if env is None else env)
    if not env.get(projects.ENV) and not Path(projects.PROJECT_FILE).is_file():
        return env
    try:
        project = projects.load(projects.locate(env))
    except projects.ProjectError as exc:
        raise ConfigError(str(exc)) from None
    env[projects.ENV] = str(project.directory)
    env.setdefault("DS_REGISTRY_DIR", str(project.registry_dir))
    env.setdefault("DS_LOG_DIR", project.log_root)
    if project.online_store and not env.get("DS_REDIS_URL") and not env.get("REDIS_URL"):
        env["DS_REDIS_URL"] = project.online_store
    return env


def check_health(address: str, service: str, timeout_s: float) -> int:
    """The gRPC health check as a process exit code (Docker HEALTHCHECK, Kubernetes exec probe)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as err:
            print(f"unhealthy: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
