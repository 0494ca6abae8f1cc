"""Starts moto's S3-compatible server in this process, on a free loopback port.

The object-storage tests run the registry, the log writer and the offline readers against
it through the same clients as production (pyarrow's S3FileSystem, boto3), pointed at it
by ``AWS_ENDPOINT_URL``. Needs moto with its server extra (the ``dev`` extra).

Requests are served one at a time: moto checks ``If-Match`` / ``If-None-Match`` and then
writes in two steps, where S3 does both atomically; serialising requests gives moto the
atomicity of S3, so a race test measures the registry, not moto.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from decision_service.devtools.local_redis import free_port

REGION = "us-east-1"
_PORT_ATTEMPTS = 20


class LocalS3:
    """A moto S3 server thread. Use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self.port = 0
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables that point pyarrow and boto3 at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> LocalS3:
        """Binds a free port (another one when a concurrent process took it first).

        On failure: OSError when no port could be bound."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request
        last: OSError | None = None
        for _ in range(_PORT_ATTEMPTS):
            port = free_port()
            server = _SerialMotoServer(port)
            try:
                server.start()
            except OSError as exc:  # lost the port to another process between probe and bind
                if exc.errno != errno.EADDRINUSE:
                    raise
                last = exc
                continue
            self.port, self._server = port, server
            return self
        raise OSError(f"no free loopback port for the S3 server after {_PORT_ATTEMPTS} attempts: {last}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3

        e = self.env
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
        )

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serial(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            body = app(environ, start_response)
            try:
                return list(body)
            finally:
                if hasattr(body, "close"):
                    body.close()

    return handle


def _make_server_class() -> type:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class SerialMotoServer(ThreadedMotoServer):
        """ThreadedMotoServer with requests serialised, and a failed bind raised by start()."""

        def __init__(self, port: int) -> None:
            super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
            self._error: BaseException | None = None

        def _server_entry(self) -> None:
            try:
                self._server = make_server(
                    self._ip_address,
                    self._port,
                    _serial(DomainDispatcherApplication(create_backend_app)),
                    True,
                    request_handler=MotoRequestHandler,
                )
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                self._error = exc
                self._server_ready_event.set()
                return
            self._server_ready_event.set()
            self._server.serve_forever()

        def start(self) -> None:
            super().start()
            if self._error is not None:
                raise self._error

    return SerialMotoServer


def _SerialMotoServer(port: int) -> Any:  # noqa: N802 - a class factory: moto is imported lazily
    return _make_server_class()(port)
