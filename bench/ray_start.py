"""Create -> RUNNING on the Ray runtime beside a bare submit_job -> RUNNING of the same
entrypoint, and lines per second to a follow tailer from a Ray step printing 200,000
lines beside Ray's own tail_job_logs of the same job. Needs the `ray` extra; starts a
throwaway two-node Ray cluster on loopback (tests/services/ray_cluster.py).

    python -m bench.ray_start [--runs 15] [--lines 200000]

* Create -> RUNNING: server timestamps (the execution's create time to its RUNNING
  transition, which the Ray runner writes once Ray runs the job's entrypoint); the
  baseline is the same entrypoint submitted with JobSubmissionClient.submit_job,
  timed until get_job_status says RUNNING (polled every 20 ms, as the runner polls).
  Runs alternate, one at a time. Target: p50 ratio <= 1.1.
* Lines/s: one execution whose step prints N lines; a TailLogs follow tailer (the
  client's follow_logs) counts the step's stdout lines, and in another thread Ray's own
  tail_job_logs of the same job counts its lines; each rate is lines over the time from
  the job's start to the last line the reader got. The stored lines are compared with
  the job's full log: 0 lost and 0 duplicated is required. Target: >= 1.0x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time

from bench.common import median, trainyard_server, verdict
from client.client import TrainyardClient
from client.streams import follow_logs
from server.runtime.ray_runner import submission_id
from trainyard.v1 import execution_pb2

SLEEPER = "import time; time.sleep(0.3)"
FINAL = {
    execution_pb2.EXECUTION_STATUS_COMPLETED,
    execution_pb2.EXECUTION_STATUS_DEAD,
    execution_pb2.EXECUTION_STATUS_STOPPED,
    execution_pb2.EXECUTION_STATUS_UNKNOWN,
}


def template(name: str, code: str) -> str:
    return json.dumps(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {
                "name": name,
                "labels": {"scenarios.ai.sap.com/id": "bench", "ai.sap.com/version": "1.0.0"},
            },
            "spec": {
                "entrypoint": "main",
                "templates": [
                    {
                        "name": "main",
                        "container": {"image": "python", "command": ["python3", "-c", code]},
                    }
                ],
            },
        }
    )


def wait_final(ty: TrainyardClient, execution_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    execution = ty.get_execution(execution_id)
    while execution.status not in FINAL:
        if time.monotonic() > deadline:
            raise SystemExit(f"execution {execution_id} did not end")
        time.sleep(0.02)
        execution = ty.get_execution(execution_id)
    return execution


def ours_once(ty: TrainyardClient, config_id: str) -> float:
    execution = wait_final(ty, ty.create_execution(config_id).id)
    running = [
        t for t in execution.history if t.to_status == execution_pb2.EXECUTION_STATUS_RUNNING
    ]
    if not running:
        raise SystemExit(f"execution {execution.id} never ran: {execution.status_message}")
    return (running[0].time.ToNanoseconds() - execution.create_time.ToNanoseconds()) / 1e9


def bare_once(jobs, root: str) -> float:
    from ray.job_submission import JobStatus

    entrypoint = f"cd {root} && exec python3 -c '{SLEEPER}'"
    began = time.perf_counter()
    job = jobs.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": {"A": "1"}})
    while jobs.get_job_status(job) == JobStatus.PENDING:
        time.sleep(0.02)
    elapsed = time.perf_counter() - began
    while not jobs.get_job_status(job).is_terminal():
        time.sleep(0.02)
    return elapsed


def ray_tail(address: str, job: str, result: dict) -> None:
    """Ray's own tail of the job (in a thread with a loop of its own)."""
    from ray.job_submission import JobSubmissionClient

    async def run():
        client = JobSubmissionClient(address)
        lines, partial, last = 0, "", None
        async for chunk in client.tail_job_logs(job):
            text = partial + chunk
            lines += text.count("\n")
            partial = text[text.rfind("\n") + 1 :]
            last = time.time()
        result.update(lines=lines, last=last)

    asyncio.run(run())


def throughput(ty: TrainyardClient, address: str, jobs, lines: int) -> None:
    code = f"import sys\nw = sys.stdout.write\nfor i in range({lines}): w(f'line {{i}}\\n')"
    ty.create_executable(template("bench-ray-lines", code))
    config = ty.create_configuration("lines", "bench-ray-lines", "bench")
    execution = ty.create_execution(config.id)
    job = submission_id(execution.id, "main")
    ray_result: dict = {}
    tail_thread = None
    got, last = [], None
    for line in follow_logs(ty, execution.id, steps=["main"], streams=[1]):
        if tail_thread is None:  # the job runs: Ray's own tail starts beside ours
            tail_thread = threading.Thread(target=ray_tail, args=(address, job, ray_result))
            tail_thread.start()
        got.append(line.text)
        last = time.time()
    tail_thread.join(120)
    done = ty.get_execution(execution.id)
    info = jobs.get_job_info(job)
    start = info.start_time / 1000  # Ray's start of the job, in seconds
    full = jobs.get_job_logs(job).splitlines()
    printed = [x for x in got if x.startswith("line ")]
    expected = [f"line {i}" for i in range(lines)]
    lost = len(set(expected) - set(printed))
    duplicated = len(printed) - len(set(printed))
    ours = len(got) / (last - start)
    ray = ray_result["lines"] / (ray_result["last"] - start)
    print(
        f"follow tailer      {ours:10,.0f} lines/s   ({len(got):,} lines, "
        f"{lost} lost, {duplicated} duplicated, as Ray's full log: {got == full}; "
        f"{done.status_message or 'COMPLETED'})"
    )
    print(
        f"Ray tail_job_logs  {ray:10,.0f} lines/s   ({ray_result['lines']:,} lines)   (baseline)"
    )
    ratio = ours / ray
    ok = ratio >= 1.0 and lost == 0 and duplicated == 0 and got == full
    print(f"  ratio {ratio:.2f}x; target >= 1.0x, 0 lost, 0 duplicated: {verdict(ok)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        print("ray is not installed (pip install '.[ray]'): skipped")
        return
    sys.path.insert(0, ".")
    from tests.services.ray_cluster import RayCluster

    with RayCluster(head_cpus=1, worker_cpus=1) as cluster:
        jobs = JobSubmissionClient(cluster.address)
        shared = cluster.base_dir / "shared"
        with trainyard_server(
            "--no-console", "--runtime", "ray", "--ray-address", cluster.address,
            "--artifact-root", str(shared),
        ) as (address, _process):
            with TrainyardClient(address) as ty:
                ty.create_executable(template("bench-ray-sleep", SLEEPER))
                config = ty.create_configuration("sleep", "bench-ray-sleep", "bench")
                ours_once(ty, config.id)  # warm both paths: the first job sets Ray up
                bare_once(jobs, str(shared))
                ours, bare = [], []
                for _ in range(args.runs):
                    ours.append(ours_once(ty, config.id))
                    bare.append(bare_once(jobs, str(shared)))
                p50, base = median(ours) * 1000, median(bare) * 1000
                print(f"Create -> RUNNING on Ray     p50 {p50:8.1f} ms   ({args.runs} runs)")
                print(f"submit_job -> RUNNING (bare) p50 {base:8.1f} ms   (baseline)")
                ratio = p50 / base
                print(f"  ratio {ratio:.2f}; target <= 1.1: {verdict(ratio <= 1.1)}")
                throughput(ty, cluster.address, jobs, args.lines)


if __name__ == "__main__":
    main()
