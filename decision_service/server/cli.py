"""``decision-service`` command line: ``serve`` (and later operational subcommands)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from decision_service.config import ConfigError, ServiceConfig
from decision_service.models.registry import RegistryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="decision-service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server (config: DS_* environment variables)")
    serve.add_argument("--host", help="listen address (DS_HOST)")
    serve.add_argument("--port", type=int, help="listen port, 0 = any free port (DS_PORT)")
    serve.add_argument("--data-dir", type=Path, help="data directory (DS_DATA_DIR)")
    serve.add_argument("--registry-dir", type=Path, help="model registry (DS_REGISTRY_DIR)")
    serve.add_argument("--redis-url", help="Redis URL (DS_REDIS_URL or REDIS_URL)")
    args = parser.parse_args(argv)

    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "data_dir": args.data_dir,
            "registry_dir": args.registry_dir,
            "redis_url": args.redis_url,
        }.items()
        if v is not None
    }
    try:
        config = ServiceConfig.from_env(**overrides)
    except ConfigError as exc:
        print(f"decision-service: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from decision_service.server.app import serve as run

    try:
        asyncio.run(run(config))
    except RegistryError as exc:
        print(f"decision-service: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
