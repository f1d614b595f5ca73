"""Delivery delay with many follow tailers on one execution.

    python -m bench.tailers_delay [--tailers 1000] [--rate 1000] [--seconds 10]

The server (this process) writes ``rate`` lines/s of 100 bytes through its log sink for
``seconds``; a client in another process follows the execution with ``tailers`` TailLogs
streams spread over a few channels. The delay of a line is the time the client receives
its message minus the line's own time (when the sink took it). Each message is
counted at the delay of its oldest line for all of its lines, so the percentiles are
upper bounds. Also printed: the server's resident memory and the broker's buffers.

Target (DESIGN.md): 1,000 tailers with p99 delay under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc

from bench._streams import bench_server, rss_mib, running_execution, spawn_client
from server.domain.models import LogStream, Status
from trainyard.v1 import log_service_pb2, log_service_pb2_grpc

TEXT = "y" * 100
CHANNELS = int(__import__("os").environ.get("BENCH_CHANNELS", "8"))
# The server takes at most this many open streams per client connection (its default
# --max-streams-per-client): the tailers are spread so that no connection exceeds it.
STREAMS_PER_CONNECTION = 100


# ----------------------------------------------------------------------- client


async def client(address: str, execution_id: str, tailers: int) -> None:
    delays: dict[int, int] = {}  # delay in 0.1 ms buckets -> lines
    lasts: list[int] = []
    counts: list[int] = []
    messages = [0]
    connections = max(CHANNELS, -(-tailers // STREAMS_PER_CONNECTION))
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    request = log_service_pb2.TailLogsRequest(execution_id=execution_id, follow=True)

    async def one(index: int) -> None:
        stub = log_service_pb2_grpc.LogServiceStub(channels[index % connections])
        call = stub.TailLogs(request, timeout=300)
        count = last = 0
        async for message in call:
            now_us = time.time_ns() // 1000
            first = message.lines[0].time
            delay = now_us - (first.seconds * 1_000_000 + first.nanos // 1000)
            bucket = delay // 100
            n = len(message.lines)
            delays[bucket] = delays.get(bucket, 0) + n
            count += n
            messages[0] += 1
            last = message.cursor
        lasts.append(last)
        counts.append(count)

    tasks = [asyncio.create_task(one(i)) for i in range(tailers)]
    print(json.dumps({"event": "ready"}), flush=True)
    cpu_began, began = time.process_time(), time.monotonic()
    await asyncio.gather(*tasks)
    cpu = (time.process_time() - cpu_began) / (time.monotonic() - began)
    for channel in channels:
        await channel.close()
    print(json.dumps({
        "event": "done", "delays": delays, "lasts": lasts, "counts": counts,
        "messages": messages[0], "cpu": cpu,
    }), flush=True)


# ----------------------------------------------------------------------- server


def percentile(histogram: dict[int, int], fraction: float) -> float:
    """The delay in ms below which ``fraction`` of the lines were delivered."""
    total = sum(histogram.values())
    wanted = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= wanted:
            return (bucket + 1) / 10
    return 0.0


async def run(tailers: int, rate: int, seconds: float, processes: int) -> int:
    async with bench_server() as running:
        execution_id = running_execution(running)
        sink = running.extra["log_sink"]
        broker = running.extra["broker"]
        tails = running.extra["tails"]
        loop = asyncio.get_running_loop()
        rss_before, _ = rss_mib()
        shares = [tailers // processes + (i < tailers % processes) for i in range(processes)]
        clients = [
            spawn_client("bench.tailers_delay", running.address, execution_id, str(share))
            for share in shares
        ]
        for process in clients:
            ready = json.loads(await loop.run_in_executor(None, process.stdout.readline))
            assert ready["event"] == "ready", ready

        deadline = time.monotonic() + 60
        while sum(s.live for s in broker._logs.get(execution_id, ())) < tailers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {tails.active} of {tailers} tailers started")
            await asyncio.sleep(0.05)
        rss_idle, _ = rss_mib()

        # Write ``rate`` lines/s in ticks of 10 ms, on schedule.
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        total = 0
        began = time.monotonic()
        peak_rss = 0.0
        cpu_began = time.process_time()
        while time.monotonic() - began < seconds:
            for _ in range(per_tick):
                sink.write(execution_id, "train", LogStream.STDOUT, TEXT)
            total += per_tick
            if total % (per_tick * 100) == 0:
                peak_rss = max(peak_rss, rss_mib()[0])
            next_at = began + (total // per_tick) * tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        sink.flush()
        elapsed = time.monotonic() - began
        server_cpu = (time.process_time() - cpu_began) / elapsed
        stats = broker.stats()
        running.plane.transition(execution_id, Status.COMPLETED, "bench")
        results = []
        for process in clients:
            line = await asyncio.wait_for(
                loop.run_in_executor(None, process.stdout.readline), 120
            )
            await loop.run_in_executor(None, process.wait)
            results.append(json.loads(line))

    histogram: dict[int, int] = {}
    result: dict = {"lasts": [], "counts": [], "messages": 0, "cpu": 0.0}
    for part in results:
        for bucket, n in part["delays"].items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + n
        for key in ("lasts", "counts", "messages", "cpu"):
            result[key] += part[key]
    complete = all(last == total for last in result["lasts"]) and all(
        count == total for count in result["counts"]
    )
    delivered = sum(histogram.values())
    print(f"{tailers} tailers, {total / elapsed:,.0f} lines/s for {elapsed:.1f} s "
          f"({total:,} lines; {delivered:,} deliveries; every tailer got every line: "
          f"{'yes' if complete else 'NO'}; {result['messages'] / elapsed:,.0f} messages/s)")
    print(f"delivery delay: p50 {percentile(histogram, 0.5):.1f} ms, "
          f"p99 {percentile(histogram, 0.99):.1f} ms, "
          f"max {max(histogram) / 10 if histogram else 0:.1f} ms")
    print(f"CPU while writing: server {server_cpu:.0%} of a core, {processes} client "
          f"process(es) {result['cpu']:.0%} of a core (over their whole run)")
    print(f"server RSS: {rss_before:.0f} MiB before, {rss_idle:.0f} MiB with the tailers "
          f"connected, {peak_rss:.0f} MiB peak while writing")
    print(f"broker: peak {stats.peak_buffered_lines} lines buffered by one tailer, "
          f"{stats.overflows} fall-backs to the store")
    print("target: p99 < 100 ms with 1,000 tailers")
    return 0 if complete else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tailers_delay")
    parser.add_argument("--tailers", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000, help="lines per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client-processes", type=int, default=1,
                        help="spread the tailers over this many client processes")
    parser.add_argument("--client", nargs=3, metavar=("ADDRESS", "EXECUTION_ID", "TAILERS"))
    args = parser.parse_args(argv)
    if args.client:
        address, execution_id, tailers = args.client
        asyncio.run(client(address, execution_id, int(tailers)))
        return 0
    return asyncio.run(run(args.tailers, args.rate, args.seconds, args.client_processes))


if __name__ == "__main__":
    sys.exit(main())
