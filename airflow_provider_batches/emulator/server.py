"""Serving the emulator with uvicorn: in a background thread (:func:`run_emulator`) or in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from airflow_provider_batches.emulator.admin import EmulatorAdmin
from airflow_provider_batches.emulator.faults import client_key
from airflow_provider_batches.emulator.settings import EmulatorSettings

Transports = dict[tuple[str, int], asyncio.Transport]


def _protocol_class(transports: Transports) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, registering each connection so that a fault can cut it."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class EmulatorProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        _emulator_transport: asyncio.Transport | None = None
        _emulator_key: tuple[str, int] | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._emulator_key = client_key(transport.get_extra_info("peername"))
            if self._emulator_key is not None:
                self._emulator_transport = transports[self._emulator_key] = transport
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            key = self._emulator_key
            if key is not None and transports.get(key) is self._emulator_transport:
                del transports[key]
            super().connection_lost(exc)

    return EmulatorProtocol


class EmulatorServer:
    """One emulator: its data directory, its listening socket and its uvicorn server.

    :param settings: how the emulator behaves.
    :param log_config: uvicorn's logging config; None leaves the host process's logging alone.
    :param on_ready: called (in the server's thread) once the server accepts connections.
    """

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        log_config: dict[str, Any] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        try:
            import uvicorn

            from airflow_provider_batches.emulator.app import create_app
            from airflow_provider_batches.emulator.store import Store
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "The MKA1 emulator needs FastAPI, uvicorn and python-multipart: "
                "pip install 'airflow-provider-batches[emulator]'"
            ) from exc

        self.settings = settings
        self._temp_dir = None if settings.data_dir is not None else tempfile.mkdtemp(prefix="mka1-emulator-")
        self.data_dir = Path(settings.data_dir or self._temp_dir or ".")
        try:
            store = Store(self.data_dir, settings.time_scale)
            family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
            self.socket = socket.create_server((settings.host, settings.port), family=family, backlog=8192)
        except BaseException:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            raise
        self.port: int = self.socket.getsockname()[1]
        self.ready = threading.Event()
        transports: Transports = {}
        app = create_app(settings, store, transports=transports)
        config = uvicorn.Config(
            app,
            http=_protocol_class(transports),
            backlog=8192,
            limit_concurrency=None,
            timeout_keep_alive=300,
            timeout_graceful_shutdown=3,
            log_level="warning",
            access_log=False,
            log_config=log_config,
            lifespan="on",
        )
        ready = self.ready

        class _Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if not self.should_exit:
                    ready.set()
                    if on_ready is not None:
                        on_ready()

        self.uvicorn = _Server(config)

    @property
    def base_url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.port}"

    def serve(self) -> None:
        """Serve until :meth:`stop` (or, in the main thread, SIGTERM/SIGINT)."""
        self.uvicorn.run(sockets=[self.socket])

    def stop(self) -> None:
        self.uvicorn.should_exit = True

    def close(self) -> None:
        """Release the socket and remove the data directory if it was a temporary one."""
        self.socket.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


class EmulatorHandle(EmulatorAdmin):
    """What :func:`run_emulator` yields: the URLs, the settings, and the admin methods."""

    def __init__(self, server: EmulatorServer) -> None:
        super().__init__(server.base_url)
        self.settings = server.settings
        self.data_dir = server.data_dir
        self.port = server.port
        self.api_keys = server.settings.api_keys
        self.api_key = server.settings.api_keys[0]

    @property
    def admin(self) -> EmulatorAdmin:
        return self


@contextlib.contextmanager
def run_emulator(
    api_keys: Iterable[str] = ("test-key",),
    data_dir: str | Path | None = None,
    **options: Any,
) -> Iterator[EmulatorHandle]:
    """Run an emulator in a background thread of this process, on a free port of 127.0.0.1.

    :param api_keys: the accepted API keys.
    :param data_dir: where state is kept (kept after exit); a temporary directory (removed on exit) when None.
    :param options: any other :class:`EmulatorSettings` field: validation_seconds, lines_per_second,
        finalizing_seconds, completion_window_seconds, time_scale, latency, rate_limit,
        default_line_concurrency, max_line_concurrency, host, port.
    """
    settings = EmulatorSettings(api_keys=tuple(api_keys), data_dir=data_dir, **options)
    server = EmulatorServer(settings)
    thread = threading.Thread(target=server.serve, name=f"mka1-emulator-{server.port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.ready.wait(0.02):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The MKA1 emulator did not start")
        yield EmulatorHandle(server)
    finally:
        server.stop()
        thread.join(timeout=30)
        server.close()
