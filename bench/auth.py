"""What security costs: GetExecution with authentication on (a bearer token checked
on every call: keyed hash, role table, rate limit) against the same server with it off,
and a TailLogs follow over TLS against the same over plaintext, measured in one run.

    python -m bench.auth [--seconds 3] [--runs 5] [--concurrency 64] [--lines 300000]

GetExecution: two server processes (`python -m server`, runtime none, logs at warning),
one with --auth-tokens (its per-principal rate limit off, as a load test's would be), one
without; one execution in each, read over and over by a client process with 64 calls in
flight (bench/load.py; with the token in every call's metadata against the first). Runs
alternate, off then on; the ratio printed is the median of the pairs' ratios (budget
0.9).

TailLogs: a server in this process (runtime none) with N stored lines of a finished
execution, read from the start by a follow tailer in a client process until the stream
ends; once with a plaintext server, once with TLS (a certificate made for the run with
`cryptography`, the client trusting its CA). Runs alternate; the ratio is the median of
the pairs' (budget 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.common import median, trainyard_server, verdict
from bench.unary import load
from client.client import TrainyardClient
from server.security.tokens import TokenFile
from trainyard.v1 import log_service_pb2, log_service_pb2_grpc

GET_BUDGET = 0.9
TAIL_BUDGET = 0.8
TEXT = "epoch 12 step 340 loss 0.23817 accuracy 0.9123 lr 0.001 " + "x" * 40


def _execution(address: str, token: str | None) -> str:
    with TrainyardClient(address, token=token) as ty:
        dataset = ty.create_artifact(
            name="iris",
            url=(Path(__file__).resolve().parent.parent / "samples" / "data" / "iris.csv").as_uri(),
            scenario_id="iris",
        ).id
        configuration = ty.create_configuration(
            name="bench",
            executable_id="iris-train",
            scenario_id="iris",
            parameters={"learning_rate": "0.1", "epochs": "1"},
            artifacts={"iris-data": dataset},
        ).id
        return ty.create_execution(configuration).id


def get_figures(args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-auth-") as tmp:
        tokens = TokenFile(Path(tmp) / "tokens.json")
        _, token = tokens.add("bench", {"*": "admin"}, None)
        with (
            trainyard_server("--runtime", "none", "--no-console") as (plain_address, plain),
            trainyard_server(
                "--runtime",
                "none",
                "--no-console",
                "--auth-tokens",
                str(tokens.path),
                "--max-requests-per-second",
                "0",
            ) as (auth_address, secured),
        ):
            plain_id = _execution(plain_address, None)
            auth_id = _execution(auth_address, token)
            offs, ons, ratios = [], [], []
            for _ in range(args.runs):
                off = load(
                    plain_address, "get", args.seconds, args.concurrency, 1, plain_id, plain.pid
                )
                os.environ["TRAINYARD_TOKEN"] = token
                try:
                    on = load(
                        auth_address, "get", args.seconds, args.concurrency, 1, auth_id, secured.pid
                    )
                finally:
                    del os.environ["TRAINYARD_TOKEN"]
                assert off["errors"] == 0 and on["errors"] == 0, (off, on)
                offs.append(off["rate"])
                ons.append(on["rate"])
                ratios.append(on["rate"] / off["rate"])
    ratio = median(ratios)
    print(
        f"GetExecution, {args.concurrency} in flight, medians of {args.runs} runs of "
        f"{args.seconds:g} s"
    )
    print(f"  auth off (baseline):            {median(offs):>10,.0f} calls/s")
    print(
        f"  auth on (token on every call):  {median(ons):>10,.0f} calls/s"
        f"   ratio {ratio:.2f} x auth off (pairs: "
        f"{', '.join(f'{r:.2f}' for r in ratios)})  budget >= {GET_BUDGET}: "
        f"{verdict(ratio >= GET_BUDGET)}"
    )
    return ratio >= GET_BUDGET


# ------------------------------------------------------------------ TailLogs / TLS


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """CA, server certificate and key for 127.0.0.1, made for this run."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def _tail_run(lines: int, tls: tuple[Path, Path, Path] | None) -> float:
    from server.app import start_server
    from server.config import Settings
    from server.domain.models import ArtifactKind, LogStream, Status
    from server.log_setup import configure_logging

    configure_logging("console", "error")
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-tail-") as tmp:
        settings = Settings(
            address="127.0.0.1:0",
            data_dir=Path(tmp),
            executables_dir=Path(__file__).resolve().parent.parent / "samples" / "executables",
            log_format="console",
            log_level="error",
            runtime="none",
            tls_cert=tls[1] if tls else None,
            tls_key=tls[2] if tls else None,
        )
        running = await start_server(settings)
        try:
            plane = running.plane
            artifact = await plane.create_artifact(
                "default",
                name="iris",
                kind=ArtifactKind.DATASET,
                url="file:///tmp/iris.csv",
                scenario_id="iris",
            )
            configuration = await plane.create_configuration(
                "default",
                name="bench",
                executable_id="iris-train",
                scenario_id="iris",
                parameters=[],
                artifact_bindings=[("iris-data", artifact.id)],
            )
            execution = await plane.create_execution("default", configuration.id)
            await plane.transition(execution.id, Status.RUNNING, "bench")
            sink = running.extra["log_sink"]
            for start in range(0, lines, 5000):
                sink.write_lines(
                    execution.id, "train", LogStream.STDOUT, [TEXT] * min(5000, lines - start)
                )
                await sink.wait_for_room(execution.id)
                await asyncio.sleep(0)
            await sink.flush()
            await plane.transition(execution.id, Status.COMPLETED, "bench")
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.auth",
                "--tail-client",
                running.address,
                execution.id,
                str(tls[0]) if tls else "",
                stdout=asyncio.subprocess.PIPE,
                cwd=Path(__file__).resolve().parent.parent,
            )
            out, _ = await client.communicate()
            result = json.loads(out.decode().strip().splitlines()[-1])
        finally:
            await running.stop(grace=0.5)
    assert result["lines"] == lines, result
    return result["lines"] / result["seconds"]


def tail_client(address: str, execution_id: str, ca: str) -> None:
    if ca:
        creds = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        channel = grpc.secure_channel(address, creds)
    else:
        channel = grpc.insecure_channel(address)
    stub = log_service_pb2_grpc.LogServiceStub(channel)
    request = log_service_pb2.TailLogsRequest(execution_id=execution_id, follow=True)
    grpc.channel_ready_future(channel).result(timeout=30)
    count = 0
    began = time.perf_counter()
    for response in stub.TailLogs(request, timeout=600):
        count += len(response.lines)
    seconds = time.perf_counter() - began
    channel.close()
    print(json.dumps({"lines": count, "seconds": seconds}))


def tail_figures(args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-pki-") as tmp:
        pki = _certificates(Path(tmp))
        plains, tlss, ratios = [], [], []
        for _ in range(args.runs):
            plain = asyncio.run(_tail_run(args.lines, None))
            secure = asyncio.run(_tail_run(args.lines, pki))
            plains.append(plain)
            tlss.append(secure)
            ratios.append(secure / plain)
    ratio = median(ratios)
    print(f"TailLogs follow of {args.lines:,} stored lines, medians of {args.runs} runs")
    print(f"  plaintext (baseline):           {median(plains):>10,.0f} lines/s")
    print(
        f"  TLS:                            {median(tlss):>10,.0f} lines/s"
        f"   ratio {ratio:.2f} x plaintext (pairs: "
        f"{', '.join(f'{r:.2f}' for r in ratios)})  budget >= {TAIL_BUDGET}: "
        f"{verdict(ratio >= TAIL_BUDGET)}"
    )
    return ratio >= TAIL_BUDGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--tail-client", nargs=3, metavar=("ADDRESS", "EXECUTION_ID", "CA"))
    args = parser.parse_args(argv)
    if args.tail_client:
        tail_client(*args.tail_client)
        return 0
    before = os.getloadavg()[0]
    ok = get_figures(args)
    ok = tail_figures(args) and ok
    load_now = max(before, os.getloadavg()[0])
    cores = os.cpu_count() or 1
    print(
        f"machine load average {load_now:.1f} on {cores} cores"
        + (
            "  (OTHER WORK SHARED THE MACHINE: the pairs' ratios scatter; rerun idle)"
            if load_now > cores
            else ""
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
