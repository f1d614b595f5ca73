"""Load generator, run in its own process: N calls in flight for a fixed time.

    python -m bench.load ADDRESS KIND SECONDS CONCURRENCY [ARG]

KIND: echo (bare bytes, ARG = payload size), get (GetExecution of ARG), get-each
(GetExecution of the ids in the file ARG, one after the other, round and round),
create (CreateExecution of configuration ARG), list (ListExecutions, ARG = page token
or empty). Prints one JSON line: calls, seconds, calls_per_s, p50_ms, p99_ms, errors,
cpu_s (this process's CPU time during the timed calls). With TRAINYARD_TOKEN set every
call carries it as a bearer token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
import uuid

import grpc

from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import execution_service_pb2_grpc


def _callable(channel: grpc.aio.Channel, kind: str, arg: str):
    token = os.environ.get("TRAINYARD_TOKEN")
    if token:
        call = _plain_callable(channel, kind, arg)
        metadata = (("authorization", f"Bearer {token}"),)
        return lambda: call(metadata)
    call = _plain_callable(channel, kind, arg)
    return lambda: call(None)


def _plain_callable(channel: grpc.aio.Channel, kind: str, arg: str):
    if kind == "echo":
        method = channel.unary_unary("/bench.Echo/Echo")
        payload = b"x" * int(arg or 200)
        return lambda md: method(payload, metadata=md)
    stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
    if kind == "get":
        request = ex.GetExecutionRequest(execution_id=arg)
        return lambda md: stub.GetExecution(request, metadata=md)
    if kind == "get-each":
        with open(arg) as f:
            requests = itertools.cycle(
                [ex.GetExecutionRequest(execution_id=line.strip()) for line in f if line.strip()]
            )
        return lambda md: stub.GetExecution(next(requests), metadata=md)
    if kind == "create":
        return lambda md: stub.CreateExecution(
            ex.CreateExecutionRequest(configuration_id=arg, request_id=uuid.uuid4().hex),
            metadata=md,
        )
    if kind == "list":
        request = ex.ListExecutionsRequest(page_size=50, page_token=arg)
        return lambda md: stub.ListExecutions(request, metadata=md)
    raise SystemExit(f"unknown kind {kind}")


async def run(address: str, kind: str, seconds: float, concurrency: int, arg: str) -> dict:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = _callable(channel, kind, arg)
        await call()  # warm up the connection
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    await call()
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        began, cpu_began = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
    latencies.sort()
    n = len(latencies)
    return {
        "calls": n,
        "seconds": round(elapsed, 3),
        "calls_per_s": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 3) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3) if n else None,
        "errors": errors,
        "cpu_s": round(cpu, 3),
    }


if __name__ == "__main__":
    address, kind, seconds, concurrency = (
        sys.argv[1],
        sys.argv[2],
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    arg = sys.argv[5] if len(sys.argv) > 5 else ""
    print(json.dumps(asyncio.run(run(address, kind, seconds, concurrency, arg))))
