"""TLS and mutual TLS with certificates made at test time: handshakes, a plaintext
client refused, client certificates mapped to principals, a certificate reload on
SIGHUP while a stream stays open, and no plaintext beyond loopback."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import sys
import threading

import grpc
import pytest

from client.client import TrainyardClient, TrainyardError
from server.config import Settings
from server.security.tokens import TokenFile
from tests.authkit import GROUP
from tests.certs import CA
from tests.conftest import ROOT, ServerThread, make_settings
from tests.helpers import details, wait_for
from tests.workflow_helpers import ServerProcess
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import execution_service_pb2_grpc, meta_service_pb2, meta_service_pb2_grpc


def _tls_channel(address: str, ca, client=None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.pem.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(address, creds)


def _meta(channel: grpc.Channel, timeout: float = 10) -> meta_service_pb2.GetMetaResponse:
    stub = meta_service_pb2_grpc.MetaServiceStub(channel)
    return stub.GetMeta(meta_service_pb2.GetMetaRequest(), timeout=timeout)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CA(tmp_path_factory.mktemp("pki"))


def test_tls_handshake_and_plaintext_refused(tmp_path, ca):
    issued = ca.issue("server", server=True)
    server = ServerThread(
        make_settings(tmp_path, tls_cert=issued.cert, tls_key=issued.key, runtime="none")
    ).start()
    try:
        with _tls_channel(server.address, ca) as channel:
            answer = _meta(channel)
            assert answer.tls_enabled and not answer.auth_enabled
        with grpc.insecure_channel(server.address) as plain:
            with pytest.raises(grpc.RpcError) as caught:
                _meta(plain, timeout=3)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # A client trusting another CA does not accept the server.
        other = CA(tmp_path / "other", "other-ca")
        with _tls_channel(server.address, other) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                _meta(channel, timeout=3)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # The Python client with --ca.
        with TrainyardClient(server.address, ca=str(ca.pem)) as client:
            assert client.get_meta().tls_enabled
    finally:
        server.stop()


def test_mutual_tls_maps_subjects_to_principals(tmp_path, ca):
    issued = ca.issue("server", server=True)
    known = ca.issue("ci", server=False)
    stranger = ca.issue("stranger", server=False)
    tokens = TokenFile(tmp_path / "tokens.json")
    tokens.add("ci-bot", {GROUP: "viewer"}, None, subject="CN=ci,O=acme")
    settings = make_settings(
        tmp_path,
        tls_cert=issued.cert,
        tls_key=issued.key,
        tls_client_ca=ca.pem,
        auth_tokens=tokens.path,
        default_resource_group=GROUP,
        runtime="none",
    )
    server = ServerThread(settings).start()
    try:
        md = (("ai-resource-group", GROUP),)
        with _tls_channel(server.address, ca, known) as channel:
            assert _meta(channel).auth_enabled
            executions = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            executions.ListExecutions(ex.ListExecutionsRequest(), metadata=md, timeout=10)
            # Viewer only: a stop is refused.
            with pytest.raises(grpc.RpcError) as caught:
                executions.BatchStopExecutions(
                    ex.BatchStopExecutionsRequest(execution_ids=["f" * 32]), metadata=md, timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A certificate of the CA whose subject the token file does not map.
        with _tls_channel(server.address, ca, stranger) as channel:
            executions = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                executions.ListExecutions(ex.ListExecutionsRequest(), metadata=md, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details(caught.value)["reason"] == "UNAUTHENTICATED"
        # No client certificate: the handshake fails.
        with _tls_channel(server.address, ca) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                _meta(channel, timeout=3)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # The Python client with --ca --cert --key.
        with TrainyardClient(
            server.address,
            resource_group=GROUP,
            ca=str(ca.pem),
            cert=str(known.cert),
            key=str(known.key),
        ) as client:
            assert list(client.list_executions()) == []
            with pytest.raises(TrainyardError) as refused:
                client.stop_execution("f" * 32)
            assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        server.stop()


def test_sighup_reloads_the_certificate_and_keeps_streams(tmp_path, ca):
    """The server's certificate files are replaced by ones of another CA and the
    server gets SIGHUP: new connections get the new certificate, a stream opened
    before goes on receiving."""
    first = ca.issue("server", server=True)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    process = ServerProcess(tmp_path).start(
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--executables-dir",
        str(ROOT / "samples" / "executables"),
        "--runtime",
        "none",
        "--no-console",
    )
    try:
        old = _tls_channel(process.address, ca)
        watch = execution_service_pb2_grpc.ExecutionServiceStub(old).WatchExecutions(
            ex.WatchExecutionsRequest(), timeout=60
        )
        events: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                for item in watch:
                    events.put(item)
            except grpc.RpcError as error:
                events.put(error)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        _meta(old)
        newer = CA(tmp_path / "newer", "newer-ca")
        second = newer.issue("server2", server=True)
        shutil.copy(second.cert, cert)
        shutil.copy(second.key, key)
        process.process.send_signal(signal.SIGHUP)

        def new_certificate_served():
            with _tls_channel(process.address, newer) as channel:
                try:
                    return _meta(channel, timeout=2).tls_enabled
                except grpc.RpcError:
                    return False

        wait_for(new_certificate_served, timeout=20, interval=0.1)
        # The stream opened before the reload still delivers: a create made through a
        # connection with the new certificate reaches it.
        with TrainyardClient(process.address, ca=str(newer.pem)) as client:
            from tests.helpers import iris_configuration, register_iris

            class _Stubs:
                artifacts = client.artifacts
                configurations = client.configurations

            md = (("ai-resource-group", "default"),)
            configuration = iris_configuration(_Stubs, register_iris(_Stubs, md), md)
            created = client.executions.CreateExecution(
                ex.CreateExecutionRequest(configuration_id=configuration), metadata=md, timeout=10
            ).execution.id
        while True:
            item = events.get(timeout=20)
            assert not isinstance(item, grpc.RpcError), item
            if item.execution.id == created:
                break
        watch.cancel()
        old.close()
        assert process.process.poll() is None
    finally:
        process.terminate()


def test_no_plaintext_beyond_loopback(tmp_path):
    exposed = Settings(address="0.0.0.0:0", data_dir=tmp_path)
    with pytest.raises(ValueError, match="plaintext"):
        exposed.check_exposure()
    Settings(address="0.0.0.0:0", data_dir=tmp_path, insecure=True).check_exposure()
    Settings(address="127.0.0.1:0", data_dir=tmp_path).check_exposure()
    Settings(address="[::1]:0", data_dir=tmp_path).check_exposure()
    # TLS without authentication is refused there too.
    with pytest.raises(ValueError, match="authentication"):
        Settings(
            address="0.0.0.0:0", data_dir=tmp_path, tls_cert=tmp_path / "c", tls_key=tmp_path / "k"
        ).check_exposure()
    # The command line refuses before binding anything.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "--address",
            "0.0.0.0:0",
            "--data-dir",
            str(tmp_path),
            "--no-console",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "refusing plaintext" in run.stderr
