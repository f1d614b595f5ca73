"""The browser console: its built assets (static/, made by `make console` from
console/) and the trainyard.v1 services over the Connect protocol, on one HTTP port
beside the gRPC server, in the same process and event loop."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import structlog
from google.protobuf import message_factory
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from server.api.connect import Bridge

log = structlog.get_logger("trainyard.console")

STATIC_DIR = Path(__file__).resolve().parent / "static"


def connect_apps(bridge: Bridge, modules) -> list:
    """One generated Connect ASGI application per service of ``modules`` (the
    generated ``*_connect`` modules), each answered by the bridge."""
    apps = []
    for module, pb2 in modules:
        for service in pb2.DESCRIPTOR.services_by_name.values():
            outputs = {}
            for method in service.methods:
                outputs[method.name] = _message_class(method.output_type)
            implementation = bridge.service(
                service.full_name, [m.name for m in service.methods], outputs
            )
            application = getattr(module, f"{service.name}ASGIApplication")
            apps.append(application(implementation))
    return apps


def _message_class(descriptor):
    return message_factory.GetMessageClass(descriptor)


def build_app(apps: list, static_dir: Path = STATIC_DIR) -> Starlette:
    routes: list = [Mount(app.path, app=app) for app in apps]
    if (static_dir / "index.html").is_file():
        routes.append(Mount("/", app=StaticFiles(directory=static_dir, html=True)))
    else:

        async def missing(request):
            return PlainTextResponse(
                "the console's assets are not built: run `make console`", status_code=503
            )

        routes.append(Route("/", missing))
    return Starlette(routes=routes)


class ConsoleServer:
    """Serves the console's ASGI application with Hypercorn on the running loop."""

    def __init__(
        self,
        app,
        address: str,
        tls: tuple[Path, Path] | None = None,
        bridge: Bridge | None = None,
    ):
        self.app = app
        self.bridge = bridge
        self.address = address
        self.tls = tls  # (certificate chain, key): HTTPS
        self.port = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            # Listening now: a connection made before Hypercorn accepts waits in the
            # backlog instead of being refused.
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot listen on {self.address} (console): {exc}") from exc
        self.port = sock.getsockname()[1]
        shown = host if family == socket.AF_INET else f"[{host}]"
        self.address = f"{shown}:{self.port}"
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = None
        if self.tls is not None:
            config.certfile, config.keyfile = (str(path) for path in self.tls)
        config.graceful_timeout = 1.0
        config.keep_alive_timeout = 30.0
        self._task = asyncio.create_task(
            serve(self.app, config, shutdown_trigger=self._stop.wait, mode="asgi")
        )
        log.info("console serving", address=self.address)

    async def stop(self) -> None:
        if self._task is None:
            return
        if self.bridge is not None:
            self.bridge.close()  # open streams end first, with UNAVAILABLE
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, 5.0)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        except Exception as exc:  # noqa: BLE001 - logged, shutdown goes on
            log.warning("console stopped with an error", error=str(exc))
        self._task = None
