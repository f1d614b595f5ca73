"""A bare grpc.aio server: the baseline the Trainyard server is compared with.

`Echo` returns its request bytes; `Lines` streams N messages of M 100-byte lines.
Run as `python -m bench.echo_server PORT`.
"""

from __future__ import annotations

import asyncio
import sys

import grpc


async def echo(request: bytes, context) -> bytes:
    return request


async def lines(request: bytes, context):
    count, per_message = (int(x) for x in request.decode().split(","))
    line = b"x" * 100
    payload = line * per_message
    for _ in range(count):
        yield payload


async def main(port: int) -> None:
    server = grpc.aio.server()
    identity = dict(request_deserializer=None, response_serializer=None)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo, **identity),
            "Lines": grpc.unary_stream_rpc_method_handler(lines, **identity),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
