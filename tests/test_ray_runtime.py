"""The Ray runtime, end to end: real servers whose steps run as jobs on a real local Ray
cluster (tests/services/ray_cluster.py: a head and a worker node of 1 CPU each, on
loopback), through Ray's own job submission API. No mocks.

Every test waits on state (bounded polls with deadlines), never on a fixed sleep.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import psycopg
import pytest
from workflow_helpers import (
    PHASE_NAME,
    STATUS_NAME,
    Runner,
    ServerProcess,
    python,
    replica_process,
    steps,
    wait_for,
    workflow,
)

from server.runtime.ray_runner import MARK_META, submission_id
from trainyard.v1 import artifact_pb2

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "samples" / "data" / "iris.csv"

pytestmark = pytest.mark.timeout(600)


def url_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


@pytest.fixture
def jobs(ray_cluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(ray_cluster.address)


@pytest.fixture
def ray_server(server_factory, ray_cluster, tmp_path):
    return server_factory(
        runtime="ray", ray_address=ray_cluster.address, artifact_root=tmp_path / "shared"
    )


@pytest.fixture
def runner(ray_server):
    r = Runner(ray_server.address)
    yield r
    r.close()


def job_lines(jobs, execution_id: str, step: str) -> list[tuple[str, str]]:
    """(stream, text) of each line of the step's job log, as Ray has it: a line that
    starts with the job's stderr mark (in its metadata) is the step's stderr."""
    job = submission_id(execution_id, step)
    mark = jobs.get_job_info(job).metadata[MARK_META]
    assert mark
    text = jobs.get_job_logs(job)
    return [
        ("stderr", line[len(mark):]) if line.startswith(mark) else ("stdout", line)
        for line in text.removesuffix("\n").split("\n")
    ]


def job_rows(jobs, execution_id: str, step: str) -> list[str]:
    """The stdout lines of the step's job log."""
    return [text for stream, text in job_lines(jobs, execution_id, step) if stream == "stdout"]


def stored_lines(runner: Runner, execution_id: str, step: str) -> list[tuple[str, str]]:
    """(stream, text) of the step's stored stdout and stderr lines, in order."""
    return [(s, t) for st, s, t in runner.logs(execution_id) if st == step and s != "system"]


def test_iris_samples_train_then_infer_on_ray(runner, jobs, ray_server, tmp_path):
    data = runner.dataset(IRIS.as_uri(), name="iris", scenario="iris")
    train = runner.configure(
        "iris-train", {"learning_rate": "0.1", "epochs": "20"}, {"iris-data": data},
        scenario="iris",
    )
    trained = runner.wait(runner.start(train), timeout=180)

    assert STATUS_NAME[trained.status] == "COMPLETED", trained.status_message
    assert [(s.name, PHASE_NAME[s.phase], s.exit_code) for s in trained.step_details] == [
        ("train", "SUCCEEDED", 0)
    ]
    [model] = trained.output_artifacts
    assert (model.name, model.kind) == ("iris-model", artifact_pb2.ARTIFACT_KIND_MODEL)
    assert url_path(model.url).is_relative_to(tmp_path / "shared")
    weights = json.loads(url_path(model.url).read_text())
    assert weights["parameters"] == {"learning_rate": 0.1, "epochs": 20, "seed": 0}

    # Every line of Ray's job log is stored once, in order, and nothing else as stdout.
    stored = runner.output(trained.id, "train")
    assert stored == job_rows(jobs, trained.id, "train")
    epochs = [line.split()[0] for line in stored if line.startswith("epoch=")]
    assert epochs == [f"epoch={n}" for n in range(1, 21)]
    assert any(line.startswith("final accuracy=") for line in stored)

    # Metrics reached the server from the Ray job.
    (entry,) = runner.client.list_metrics([trained.id], series=True)
    names = {m.name for m in entry.metrics}
    assert {"loss", "accuracy"} <= names
    assert [m.value for m in entry.metrics if m.name == "accuracy"] == [
        weights["metrics"]["accuracy"]
    ]

    infer = runner.configure(
        "iris-infer", {}, {"iris-model": model.id, "iris-data": data}, scenario="iris"
    )
    scored = runner.wait(runner.start(infer), timeout=180)
    assert STATUS_NAME[scored.status] == "COMPLETED", scored.status_message
    assert [(s.name, PHASE_NAME[s.phase]) for s in scored.step_details] == [
        ("prepare", "SUCCEEDED"), ("score", "SUCCEEDED")
    ]
    for step in ("prepare", "score"):
        assert runner.output(scored.id, step) == job_rows(jobs, scored.id, step)
    [predictions] = scored.output_artifacts
    assert predictions.kind == artifact_pb2.ARTIFACT_KIND_RESULTSET
    with url_path(predictions.url).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 150 and {"predicted_species", "probability"} <= set(rows[0])

    meta = runner.client.get_meta()
    assert meta.runtime == "ray"
    assert meta.runtime_address == ray_server.running.settings.ray_address
    assert (meta.cluster_resources.nodes, meta.cluster_resources.cpus) == (2, 2)
    assert meta.cluster_resources.largest_node_cpus == 1


BOTH_STREAMS = (
    "import sys, time\n"
    "for i in range(40):\n"
    "    print(f'out {i}', flush=True)\n"
    "    print(f'  err {i} \\\\ \\x1e', file=sys.stderr, flush=True)\n"
    "    time.sleep(0.005)\n"
    "print('x' * 70000, file=sys.stderr, flush=True)\n"
    "sys.stdout.write('last out, no newline')\n"
    "sys.stderr.write('last err, no newline')\n"
)


def test_a_ray_step_keeps_its_stdout_and_stderr_apart(runner, jobs):
    runner.register(
        workflow("ray-streams", [steps("main", [("both", "both")]), python("both", BOTH_STREAMS)])
    )
    eid = runner.start(runner.configure("ray-streams"))
    done = runner.wait(eid, timeout=120)
    assert STATUS_NAME[done.status] == "COMPLETED", done.status_message

    stored = stored_lines(runner, eid, "both")
    # Every line of the job's log once, in order, each with its own stream.
    assert stored == job_lines(jobs, eid, "both")
    out = [t for s, t in stored if s == "stdout"]
    err = [t for s, t in stored if s == "stderr"]
    assert [t for t in out if t.startswith("out ")] == [f"out {i}" for i in range(40)]
    assert out[-1] == "last out, no newline"
    assert err == [
        *(f"  err {i} \\ \x1e" for i in range(40)),
        "x" * 65536, "x" * (70000 - 65536),  # the log sink's pieces of a long line
        "last err, no newline",
    ]
    # Ray's own lines are stdout; nothing of the wrapper or its mark is stored.
    assert out[0].endswith("Runtime env is setting up.")
    mark = jobs.get_job_info(submission_id(eid, "both")).metadata[MARK_META]
    assert not [t for _, t in stored if mark in t]


def test_stop_during_a_run_stops_the_ray_job(runner, jobs):
    runner.register(
        workflow(
            "ray-sleeper",
            [
                steps("main", [("nap", "nap")]),
                python("nap", "import time; print('napping', flush=True); time.sleep(300)"),
            ],
        )
    )
    eid = runner.start(runner.configure("ray-sleeper"))
    runner.wait_output(eid, "napping", timeout=120)
    runner.client.stop_execution(eid)
    stopped = runner.wait(eid, timeout=60)
    assert STATUS_NAME[stopped.status] == "STOPPED", stopped.status_message
    assert PHASE_NAME[stopped.step_details[0].phase] == "STOPPED"
    assert jobs.get_job_status(submission_id(eid, "nap")).value == "STOPPED"
    assert runner.output(eid).count("napping") == 1


def test_failing_step_is_dead_with_rays_error(runner):
    runner.register(
        workflow(
            "ray-fails",
            [
                steps("main", [("boom", "boom")], [("later", "later")]),
                python("boom", "import sys; print('going down'); sys.exit(3)"),
                python("later", "print('never')"),
            ],
        )
    )
    eid = runner.start(runner.configure("ray-fails"))
    dead = runner.wait(eid, timeout=120)
    assert STATUS_NAME[dead.status] == "DEAD"
    assert "step boom exited with code 3" in dead.status_message
    assert "Job entrypoint command failed with exit code 3" in dead.status_message
    assert {s.name: PHASE_NAME[s.phase] for s in dead.step_details} == {
        "boom": "FAILED", "later": "SKIPPED"
    }
    assert runner.output(eid, "boom").count("going down") == 1


def test_step_needing_more_cpus_than_any_node_stays_pending_saying_so(runner, jobs):
    runner.register(
        workflow(
            "ray-too-big",
            [
                steps("main", [("big", "big")]),
                python(
                    "big", "print('ran')",
                    metadata={"labels": {"ai.sap.com/resourcePlan": "basic"}},  # 3 CPUs
                ),
            ],
        )
    )
    eid = runner.start(runner.configure("ray-too-big"))

    def waiting():
        execution = runner.get(eid)
        return "needs 3 CPUs" in execution.status_message and execution

    execution = wait_for(waiting, 60, "the step to say why it waits")
    assert STATUS_NAME[execution.status] == "PENDING"
    assert "the largest node of the Ray cluster has 1 (2 in all on 2 nodes)" in (
        execution.status_message
    )
    assert "needs 3 CPUs" in execution.step_details[0].message
    assert not [j for j in jobs.list_jobs() if j.submission_id == submission_id(eid, "big")]
    runner.client.stop_execution(eid)
    assert STATUS_NAME[runner.wait(eid, timeout=60).status] == "STOPPED"


def counting(lines: int) -> str:
    """A step that prints ``lines`` numbered lines, 50 a second."""
    return (
        "import time\n"
        f"for i in range({lines}):\n"
        "    print(f'line {i}', flush=True)\n"
        "    time.sleep(0.02)\n"
    )


def _counter(runner: Runner, lines: int = 300) -> str:
    runner.register(
        workflow(
            "ray-counter",
            [steps("main", [("count", "count")], [("after", "after")]),
             python("count", counting(lines)), python("after", "print('after ran')")],
        )
    )
    return runner.configure("ray-counter")


def test_server_killed_during_a_run_reattaches_and_completes(ray_cluster, jobs, tmp_path):
    shared = tmp_path / "shared"
    options = ("--runtime", "ray", "--ray-address", ray_cluster.address,
               "--artifact-root", str(shared), "--executables-dir", str(ROOT / "samples"
               / "executables"))
    server = ServerProcess(tmp_path).start(*options)
    runner = Runner(server.address)
    try:
        eid = runner.start(_counter(runner))
        wait_for(lambda: "line 40" in runner.output(eid), 120, "the job to print")
        server.kill()  # kill -9: no shutdown code runs; the Ray job goes on
        runner.close()

        server.start(*options)
        runner = Runner(server.address)
        done = runner.wait(eid, timeout=180)
        assert STATUS_NAME[done.status] == "COMPLETED", done.status_message
        lines = runner.output(eid, "count")
        assert lines == job_rows(jobs, eid, "count")
        assert [x for x in lines if x.startswith("line ")] == [f"line {i}" for i in range(300)]
        assert runner.output(eid, "after") == job_rows(jobs, eid, "after")
        system = [t for _, s, t in runner.logs(eid) if s == "system"]
        assert any("step count still runs (Ray job" in t for t in system), system
    finally:
        runner.close()
        server.terminate()


def test_a_replica_killed_during_a_run_has_another_reattach_and_complete(
    ray_cluster, jobs, postgres_url, tmp_path
):
    """Two replicas on one database and one artifact root (the executions' working
    directories, state.json included): the owner dies, the other takes the execution
    over once its lease lapses and follows the same Ray job on."""
    lease = 2.0
    options = ("--runtime", "ray", "--ray-address", ray_cluster.address,
               "--artifact-root", str(tmp_path / "shared"), "--database-url", postgres_url,
               "--lease-seconds", str(lease))
    servers = {name: replica_process(tmp_path, name) for name in "ab"}
    a, b = servers["a"].start(*options, "--replica-id", "a"), servers["b"]
    runner_a = Runner(a.address)
    runner_b = None
    try:
        eid = runner_a.start(_counter(runner_a, 500))  # 10 s of lines
        wait_for(lambda: "line 10" in runner_a.output(eid), 120, "the job to print")
        runner_a.close()
        b.start(*options, "--replica-id", "b")
        runner_b = Runner(b.address)
        assert runner_b.status(eid) == "RUNNING"  # a's lease is alive: b leaves it
        job = submission_id(eid, "count")
        assert not jobs.get_job_status(job).is_terminal()
        a.kill()  # kill -9: no shutdown code runs; the Ray job goes on

        def reattached():
            return any(
                s == "system"
                and t.startswith(f"replica a was lost: step count still runs (Ray job {job}")
                for _, s, t in runner_b.logs(eid)
            )

        wait_for(reattached, lease + 10, "b to take the execution over")
        assert not jobs.get_job_status(job).is_terminal()  # b follows the running job
        done = runner_b.wait(eid, timeout=60)
        assert STATUS_NAME[done.status] == "COMPLETED", done.status_message
        lines = runner_b.output(eid, "count")
        assert lines == job_rows(jobs, eid, "count")  # each line once, none lost
        assert [x for x in lines if x.startswith("line ")] == [f"line {i}" for i in range(500)]
        assert runner_b.output(eid, "after") == job_rows(jobs, eid, "after")
        # The take-over keeps the status; its history entry says who went on with what.
        assert runner_b.history(eid) == [
            ("PENDING", "created", "execution created"),
            ("RUNNING", "step_started", "step count started"),
            ("RUNNING", "replica_lost",
             "replica a was lost; replica b took the execution over: count watched again"),
            ("COMPLETED", "steps_succeeded", "every step succeeded"),
        ]
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute(
                "SELECT owner FROM execution WHERE execution_id = %s", (eid,)
            ).fetchone() == ("b",)
    finally:
        if runner_b is not None:
            runner_b.close()
        for server in servers.values():
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait(10)


def forget(jobs, job: str) -> None:
    """Delete a final job until Ray keeps it deleted: its monitor may write the job's
    end again just after a delete."""
    import time

    gone_since = None
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"Ray still knows {job}"
        try:
            jobs.get_job_info(job)
        except RuntimeError as exc:
            assert "does not exist" in str(exc)
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > 3:
                return
        else:
            gone_since = None
            jobs.delete_job(job)
        time.sleep(0.1)


def test_a_job_ray_no_longer_knows_is_unknown_after_a_restart(ray_cluster, jobs, tmp_path):
    options = ("--runtime", "ray", "--ray-address", ray_cluster.address,
               "--artifact-root", str(tmp_path / "shared"))
    server = ServerProcess(tmp_path).start(*options)
    runner = Runner(server.address)
    try:
        eid = runner.start(_counter(runner))
        wait_for(lambda: "line 5" in runner.output(eid), 120, "the job to print")
        server.kill()
        runner.close()
        job = submission_id(eid, "count")
        jobs.stop_job(job)
        wait_for(lambda: jobs.get_job_status(job).is_terminal(), 60, "the job to stop")
        forget(jobs, job)

        server.start(*options)
        runner = Runner(server.address)
        gone = runner.wait(eid, timeout=60)
        assert STATUS_NAME[gone.status] == "UNKNOWN", (gone.status_message, runner.logs(eid)[-8:])
        assert f"no longer knows job {job}" in gone.status_message
        assert runner.history(eid)[-1][1] == "server_restart"
    finally:
        runner.close()
        server.terminate()


def test_a_retried_submit_does_not_start_the_step_twice(ray_cluster, jobs, tmp_path):
    """The same attempt of the same step submitted twice (a retry after a timeout, a
    server that restarted between submit and record) is one Ray job, followed twice."""
    import asyncio

    from server.domain.models import LogStream
    from server.domain.ports import StepLaunch
    from server.runtime.ray_runner import RayRunner

    class Lines:
        def __init__(self):
            self.lines: list[str] = []
            self.notes: list[str] = []

        def write(self, stream: LogStream, lines: list[str]) -> None:
            self.lines.extend(lines)

        async def room(self) -> None:
            return None

        def backlog(self) -> bool:
            return False

        def note(self, text: str) -> None:
            self.notes.append(text)

    launch = StepLaunch(
        execution_id=f"retry{tmp_path.name[-8:]}", resource_group="default", step="once",
        template="once", attempt=1, image="", command=("python3", "-c", "print('ran')"),
        args=(), env={}, api_address="127.0.0.1:1", root=str(tmp_path),
    )

    async def twice():
        runner = RayRunner(ray_cluster.address, stop_grace=2)
        await runner.open()
        first, second = Lines(), Lines()
        handles = [await runner.start(launch, first), await runner.start(launch, second)]
        ends = [await h.wait() for h in handles]
        return ends, first, second

    ends, first, second = asyncio.run(twice())
    assert [e.exit_code for e in ends] == [0, 0]
    job = submission_id(launch.execution_id, "once")
    assert [j.submission_id for j in jobs.list_jobs()].count(job) == 1
    assert first.lines.count("ran") == 1 and second.lines.count("ran") == 1
    assert any("already submitted" in n for n in second.notes)


class HeldSubmits:
    """A loopback HTTP proxy in front of Ray's job server that passes every call on,
    except that it never answers a job submission: with ``forward`` it hands the
    submission to Ray first (the job starts, the caller never learns it), else it keeps
    it from Ray. ``held`` is set once it holds one."""

    def __init__(self, target: str, forward: bool):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.held = threading.Event()
        self.release = threading.Event()
        proxy = self
        upstream = urlparse(target)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                submit = self.command == "POST" and self.path.rstrip("/") == "/api/jobs"
                if submit and not forward:
                    proxy.held.set()
                    proxy.release.wait(120)
                    return
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                if submit:
                    proxy.held.set()
                    proxy.release.wait(120)
                    return
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("reached_ray", [True, False], ids=["submitted", "not-submitted"])
def test_a_server_killed_while_submitting_a_step_runs_it_once_after_the_restart(
    ray_cluster, jobs, tmp_path, reached_ray
):
    """Killed after it recorded that the step starts and before Ray answered the
    submission: the restart follows the job Ray started (submitted), or submits it
    (not submitted); either way the step runs once, as one Ray job."""
    proxy = HeldSubmits(ray_cluster.address, forward=reached_ray)
    options = ("--runtime", "ray", "--artifact-root", str(tmp_path / "shared"))
    server = ServerProcess(tmp_path).start(*options, "--ray-address", proxy.address)
    runner = Runner(server.address)
    try:
        runner.register(workflow("ray-once", [python("main", "print('ran once')")]))
        eid = runner.start(runner.configure("ray-once"))
        assert proxy.held.wait(120), "the submission never reached the proxy"
        job = submission_id(eid, "main")
        assert reached_ray == any(j.submission_id == job for j in jobs.list_jobs())
        server.kill()  # kill -9 while the submission waits for its answer
        runner.close()
        proxy.close()

        server.start(*options, "--ray-address", ray_cluster.address)
        runner = Runner(server.address)
        done = runner.wait(eid, timeout=180)
        assert STATUS_NAME[done.status] == "COMPLETED", done.status_message
        lines = runner.output(eid, "main")
        assert lines == job_rows(jobs, eid, "main") and lines.count("ran once") == 1, lines
        assert [j.submission_id for j in jobs.list_jobs()].count(job) == 1
        system = [t for _, s, t in runner.logs(eid) if s == "system"]
        followed = any(f"{job} was submitted before the restart; following it" in t
                       for t in system)
        assert followed == reached_ray, system
    finally:
        proxy.close()
        runner.close()
        server.terminate()


def test_the_stream_wrapper_ends_as_its_command_did(tmp_path):
    """The wrapper a Ray step runs under (as the node's shell starts it): the command's
    exit code, or its signal, is the wrapper's; a command that cannot start is 127."""
    import os
    import signal
    import subprocess

    from server.runtime.ray_runner import MARK_ENV, STREAMS_ENV, STREAMS_SOURCE, WRAPPER

    env = {**os.environ, STREAMS_ENV: STREAMS_SOURCE, MARK_ENV: "<e> "}

    def wrapped(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*WRAPPER, *argv], env=env, capture_output=True, timeout=30, cwd=tmp_path
        )

    # The command sees none of the wrapper's variables.
    code = "import os, sys; print([k for k in os.environ if 'TRAINYARD_RAY' in k]); sys.exit(7)"
    ended = wrapped("python3", "-c", code)
    assert (ended.returncode, ended.stdout, ended.stderr) == (7, b"[]\n", b"")
    killed = wrapped("sh", "-c", "echo bye >&2; kill -TERM $$")
    assert (killed.returncode, killed.stdout) == (-signal.SIGTERM, b"<e> bye\n")
    missing = wrapped("no-such-command-here")
    assert missing.returncode == 127
    assert missing.stdout.startswith(b"<e> no-such-command-here: ")
