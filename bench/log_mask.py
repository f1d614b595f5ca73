"""Log lines stored per second from a step whose secret values are masked, beside the
same step with nothing to mask, on one server in the same run.

    python -m bench.log_mask [--lines 500000] [--runs 3] [--every 100]

A real server runs two executables that differ only in where the step's ``TOKEN``
comes from: a secret of the resource group (``env.valueFrom.secretKeyRef``: its value,
and those of the secret's other keys, are masked in the stored lines) or a plain
``value`` with the same text (nothing to mask). The step prints ``--lines`` numbered
lines of 100 bytes; every ``--every``-th line holds the token, the others none (a
step prints its credentials rarely; every line is still searched). The figure of each
is the lines of a run divided by the time from RUNNING to COMPLETED (every line is
stored before COMPLETED); the runs alternate (plain, masked, plain, ...) and the ratio
is the median of the pairs' ratios. Each masked run is checked: no stored line holds
the token, and the lines that held it show ``***``.

Budget (this benchmark's own): masked >= 0.9 x plain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from bench.common import median, trainyard_server, verdict
from client.client import TrainyardClient
from trainyard.v1 import execution_pb2, log_pb2

BUDGET = 0.9
TOKEN = "tok-8a1f6c2e9b7d4350"

PRINTER = r"""
import os, sys
n, every = int(sys.argv[1]), int(sys.argv[2])
token = os.environ["TOKEN"]
pad = "x" * 90
marked = f"token={token} " + "x" * (90 - len(token) - 7)
write = sys.stdout.write
block = 10_000
for start in range(0, n, block):
    write("".join([
        f"{i:09d} {marked if i % every == 0 else pad}\n"
        for i in range(start, min(n, start + block))
    ]))
sys.stdout.flush()
"""

FINAL = {
    execution_pb2.EXECUTION_STATUS_COMPLETED,
    execution_pb2.EXECUTION_STATUS_DEAD,
    execution_pb2.EXECUTION_STATUS_STOPPED,
    execution_pb2.EXECUTION_STATUS_UNKNOWN,
}


def executable(name: str, token_env: dict) -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {
            "name": name,
            "labels": {"scenarios.ai.sap.com/id": "bench", "ai.sap.com/version": "1.0.0"},
        },
        "spec": {
            "entrypoint": "main",
            "arguments": {
                "parameters": [
                    {"name": "lines", "type": "int", "default": "1000"},
                    {"name": "every", "type": "int", "default": "100"},
                ]
            },
            "templates": [
                {
                    "name": "main",
                    "inputs": {"parameters": [{"name": "lines"}, {"name": "every"}]},
                    "container": {
                        "image": "python:3",
                        "command": [sys.executable, "-c", PRINTER],
                        "args": ["{{inputs.parameters.lines}}", "{{inputs.parameters.every}}"],
                        "env": [{"name": "TOKEN", **token_env}],
                    },
                }
            ],
        },
    }


def one_run(client: TrainyardClient, configuration_id: str, lines: int, masked: bool) -> float:
    execution = client.create_execution(configuration_id)
    deadline = time.monotonic() + 600
    while execution.status not in FINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {execution.id} did not finish")
        time.sleep(0.05)
        execution = client.get_execution(execution.id)
    if execution.status != execution_pb2.EXECUTION_STATUS_COMPLETED:
        raise RuntimeError(f"execution {execution.id}: {execution.status_message}")
    times = {t.to_status: t.time.ToNanoseconds() for t in execution.history}
    seconds = (
        times[execution_pb2.EXECUTION_STATUS_COMPLETED]
        - times[execution_pb2.EXECUTION_STATUS_RUNNING]
    ) / 1e9
    first = next(client.list_logs(execution.id, limit=1, streams=[log_pb2.LOG_STREAM_STDOUT]))
    last = next(
        client.list_logs(
            execution.id, limit=1, streams=[log_pb2.LOG_STREAM_STDOUT], descending=True
        )
    )
    if int(last.text.split()[0]) != lines - 1:
        raise RuntimeError(f"last stored line is {last.text[:20]!r}, not line {lines - 1}")
    if masked and (TOKEN in first.text or "token=***" not in first.text):
        raise RuntimeError(f"line 0 was not masked: {first.text[:40]!r}")
    if not masked and TOKEN not in first.text:
        raise RuntimeError("the plain run's line 0 does not hold the token")
    client.delete_execution(execution.id)
    return lines / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.log_mask", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--lines", type=int, default=500_000, help="lines per run (500000)")
    parser.add_argument("--runs", type=int, default=3, help="pairs of runs (3)")
    parser.add_argument("--every", type=int, default=100, help="one line in N holds the token")
    args = parser.parse_args(argv)

    plain_rates: list[float] = []
    masked_rates: list[float] = []
    with trainyard_server() as (address, _process):
        with TrainyardClient(address, timeout=60) as client:
            client.create_secret("bench", {"token": TOKEN, "user": "bench-user-1"})
            configurations = {}
            for masked, env in (
                (False, {"value": TOKEN}),
                (True, {"valueFrom": {"secretKeyRef": {"name": "bench", "key": "token"}}}),
            ):
                name = "bench-masked" if masked else "bench-plain"
                client.create_executable(json.dumps(executable(name, env)))
                configurations[masked] = client.create_configuration(
                    name, name, "bench", parameters={"lines": args.lines, "every": args.every}
                ).id
            for _ in range(args.runs):
                plain_rates.append(one_run(client, configurations[False], args.lines, False))
                masked_rates.append(one_run(client, configurations[True], args.lines, True))

    plain, masked = median(plain_rates), median(masked_rates)
    ratio = statistics.median(m / p for m, p in zip(masked_rates, plain_rates, strict=True))
    print(f"lines per run: {args.lines:,} of 100 bytes, one in {args.every} with the token")
    print(f"plain (nothing to mask), lines/s stored: {plain:12,.0f}   (baseline, same run)")
    print(f"masked (secret values -> ***), lines/s:  {masked:12,.0f}   "
          f"ratio {ratio:.2f} x plain   budget >= {BUDGET} x   {verdict(ratio >= BUDGET)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
