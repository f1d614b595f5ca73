"""Server TLS credentials from PEM files, reread on demand (SIGHUP) without dropping
connections: gRPC asks for the current certificate at every new handshake, and the
connections already open keep theirs."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import grpc
import structlog

log = structlog.get_logger("trainyard.tls")

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` listens on a loopback address only."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerTLS:
    """The certificate, key and (mutual TLS) client CA of a server."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None):
        self.cert = Path(cert)
        self.key = Path(key)
        self.client_ca = Path(client_ca) if client_ca else None
        self._current = self._read()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.reloads = 0

    def _read(self) -> grpc.ServerCertificateConfiguration:
        chain = self.cert.read_bytes()
        key = self.key.read_bytes()
        roots = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current,
            self._fetch,
            require_client_authentication=self.client_ca is not None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC before each handshake: a new configuration once, after a
        # reload; None keeps the current one.
        pending, self._pending = self._pending, None
        return pending

    async def reload(self) -> bool:
        """Rereads the files (off the loop); a broken file keeps the current ones."""
        try:
            config = await asyncio.to_thread(self._read)
        except OSError as exc:
            log.error("TLS files not reloaded", error=str(exc))
            return False
        self._current = self._pending = config
        self.reloads += 1
        log.info("TLS certificate reloaded", cert=str(self.cert))
        return True
