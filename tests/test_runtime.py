"""The local runtime, end to end: real servers, real step processes, no mocks.

Every test waits on state (bounded polls with deadlines), never on a fixed sleep.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from workflow_helpers import (
    PHASE_NAME,
    STATUS_NAME,
    Runner,
    container,
    dag,
    inputs,
    live_members,
    python,
    script,
    steps,
    wait_for,
    workflow,
)

from trainyard.v1 import artifact_pb2

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "samples" / "data" / "iris.csv"


def url_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def phases(execution) -> list[tuple[str, str]]:
    return [(s.name, PHASE_NAME[s.phase]) for s in execution.step_details]


@pytest.fixture
def runner(server):
    r = Runner(server.address)
    yield r
    r.close()


def step_pgid(server, execution_id: str, step: str) -> int:
    """The process group of a running step, as the runtime holds it."""

    def find():
        info = server.run_sync(server.plane.runtime.inspect, execution_id)
        if info is None:
            return None
        return next((p.process_group for p in info.processes if p.step == step), None)

    return wait_for(find, 30, f"step {step} of {execution_id} to run")


# ------------------------------------------------------------------- samples


def test_iris_training_registers_its_model_and_inference_scores_with_it(server, runner):
    data = runner.dataset(IRIS.as_uri(), name="iris", scenario="iris")
    train = runner.configure(
        "iris-train", {"learning_rate": "0.1", "epochs": "20"}, {"iris-data": data}, scenario="iris"
    )
    trained = runner.wait(runner.start(train), timeout=60)

    assert STATUS_NAME[trained.status] == "COMPLETED", trained.status_message
    assert [(s.name, PHASE_NAME[s.phase], s.exit_code) for s in trained.step_details] == [
        ("train", "SUCCEEDED", 0)
    ]
    assert [cause for _, cause, _ in runner.history(trained.id)] == [
        "created", "step_started", "steps_succeeded"
    ]
    [model] = trained.output_artifacts
    assert (model.name, model.kind, model.execution_id) == (
        "iris-model", artifact_pb2.ARTIFACT_KIND_MODEL, trained.id
    )
    weights = json.loads(url_path(model.url).read_text())
    assert weights["parameters"] == {"learning_rate": 0.1, "epochs": 20, "seed": 0}
    assert any(line.startswith("final accuracy=") for line in runner.output(trained.id))

    infer = runner.configure(
        "iris-infer", {}, {"iris-model": model.id, "iris-data": data}, scenario="iris"
    )
    scored = runner.wait(runner.start(infer), timeout=60)
    assert STATUS_NAME[scored.status] == "COMPLETED", scored.status_message
    assert phases(scored) == [("prepare", "SUCCEEDED"), ("score", "SUCCEEDED")]
    [predictions] = scored.output_artifacts
    assert predictions.kind == artifact_pb2.ARTIFACT_KIND_RESULTSET
    with url_path(predictions.url).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 150 and {"predicted_species", "probability"} <= set(rows[0])
    [scored_metrics] = runner.client.list_metrics([scored.id])
    recorded = {m.name: m.value for m in scored_metrics.metrics}
    assert recorded["rows_scored"] == 150 and 0.5 < recorded["accuracy"] <= 1, recorded

    # The model outlives the execution that made it; the working directory does not.
    work_dir = server.running.settings.work_dir / trained.id
    assert work_dir.is_dir()
    runner.client.delete_execution(trained.id)
    wait_for(lambda: not work_dir.exists(), 10, "the working directory to be removed")
    assert runner.client.get_artifact(model.id).url == model.url
    assert url_path(model.url).is_file()


def test_meta_reports_the_local_runtime(runner):
    assert runner.client.get_meta().runtime == "local"


# ------------------------------------------------------------------- failures


def test_failing_step_makes_execution_dead_and_later_steps_never_start(runner, tmp_path):
    ready, later = tmp_path / "slow-is-running", tmp_path / "later-ran"
    runner.register(
        workflow(
            "fails",
            [
                steps(
                    "main",
                    [("prepare", "ok")],
                    [("boom", "fail"), ("slow", "sleeper")],
                    [("later", "touch")],
                ),
                python("ok", "print('prepared')"),
                python(
                    "fail",
                    "import os, sys, time\n"
                    f"while not os.path.exists({str(ready)!r}): time.sleep(0.01)\n"
                    "print('going down', file=sys.stderr)\n"
                    "sys.exit(3)",
                ),
                python(
                    "sleeper",
                    f"import time; open({str(ready)!r}, 'w').close(); time.sleep(60)",
                ),
                python("touch", f"open({str(later)!r}, 'w').close()"),
            ],
        )
    )
    started = time.monotonic()
    execution = runner.wait(runner.start(runner.configure("fails")))

    assert STATUS_NAME[execution.status] == "DEAD"
    assert execution.status_message == "step boom exited with code 3"
    assert phases(execution) == [
        ("prepare", "SUCCEEDED"), ("boom", "FAILED"), ("slow", "STOPPED"), ("later", "SKIPPED")
    ]
    details = runner.steps(execution.id)
    assert details["boom"].exit_code == 3
    assert "step boom failed" in details["slow"].message
    assert not details["later"].HasField("start_time")
    assert not later.exists()
    assert time.monotonic() - started < 20  # the sleeper was terminated, not waited for
    assert runner.history(execution.id)[-1] == (
        "DEAD", "step_failed", "step boom exited with code 3"
    )
    assert ("boom", "stderr", "going down") in runner.logs(execution.id)


def test_a_command_that_cannot_start_makes_execution_dead(runner):
    runner.register(workflow("missing", [container("main", "no-such-program-here", "x")]))
    execution = runner.wait(runner.start(runner.configure("missing")))
    assert STATUS_NAME[execution.status] == "DEAD"
    assert execution.status_message.startswith("step main could not start")
    assert "No such file" in execution.status_message


def test_a_step_that_leaves_its_declared_output_missing_fails(runner):
    runner.register(
        workflow(
            "no-output",
            [
                python(
                    "main",
                    "print('forgot to write it')",
                    outputs={"artifacts": [{"name": "m", "globalName": "m", "path": "/out/m"}]},
                )
            ],
        )
    )
    execution = runner.wait(runner.start(runner.configure("no-output")))
    assert STATUS_NAME[execution.status] == "DEAD"
    assert execution.status_message.startswith("step main did not write its output artifact m")
    assert not execution.output_artifacts


# ----------------------------------------------------------------------- stop


def test_stop_during_a_long_step_ends_stopped_and_leaves_no_process(server, runner):
    runner.register(
        workflow(
            "long",
            [container("main", "sh", "-c", "sleep 60 & sleep 60 & echo ready; wait")],
        )
    )
    execution_id = runner.start(runner.configure("long"))
    runner.wait_output(execution_id, "ready")
    pgid = step_pgid(server, execution_id, "main")
    assert len(live_members(pgid)) == 3  # sh and both sleeps

    started = time.monotonic()
    assert STATUS_NAME[runner.client.stop_execution(execution_id).status] == "STOPPING"
    execution = runner.wait(execution_id, "STOPPED", timeout=10)

    assert time.monotonic() - started < server.running.settings.stop_grace_seconds
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert phases(execution) == [("main", "STOPPED")]
    assert [h[:2] for h in runner.history(execution_id)][-2:] == [
        ("STOPPING", "stop_requested"), ("STOPPED", "processes_exited")
    ]
    assert any("SIGTERM" in text for _, stream, text in runner.logs(execution_id)
               if stream == "system")


def test_stop_escalates_to_sigkill_after_the_grace_period(server_factory):
    server = server_factory(stop_grace_seconds=1.0)
    runner = Runner(server.address)
    runner.register(
        workflow(
            "stubborn",
            [
                python(
                    "main",
                    "import signal, time\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "print('ready', flush=True)\n"
                    "time.sleep(60)",
                )
            ],
        )
    )
    execution_id = runner.start(runner.configure("stubborn"))
    runner.wait_output(execution_id, "ready")
    pgid = step_pgid(server, execution_id, "main")

    started = time.monotonic()
    runner.client.stop_execution(execution_id)
    execution = runner.wait(execution_id, "STOPPED", timeout=10)

    assert 1.0 <= time.monotonic() - started < 6.0
    assert runner.steps(execution_id)["main"].exit_code == 137  # 128 + SIGKILL
    assert phases(execution) == [("main", "STOPPED")]
    assert any("SIGKILL" in text for _, _, text in runner.logs(execution_id))
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    runner.close()


def test_stop_of_a_pending_execution_queued_behind_the_limit_never_starts_it(
    server_factory, tmp_path
):
    server = server_factory(max_concurrent_executions=1)
    runner = Runner(server.address)
    runner.register(
        workflow(
            "marks",
            [
                python(
                    "main",
                    "import pathlib, time\n"
                    f"pathlib.Path({str(tmp_path)!r}, '{{{{workflow.name}}}}').touch()\n"
                    "print('ready', flush=True)\n"
                    "time.sleep(float('{{inputs.parameters.seconds}}'))",
                    inputs=inputs("seconds"),
                )
            ],
            entrypoint="main",
            parameters={"seconds": "0"},
        )
    )
    long = runner.configure("marks", {"seconds": "60"})
    short = runner.configure("marks", {"seconds": "0"})
    first = runner.start(long)
    runner.wait_output(first, "ready")
    second = runner.start(short)
    assert runner.status(second) == "PENDING"
    info = server.run_sync(server.plane.runtime.inspect, second)
    assert (info.state, info.queue_position) == ("queued", 0)

    runner.client.stop_execution(second)
    stopped = runner.wait(second, "STOPPED", timeout=5)
    assert [h[0] for h in runner.history(second)] == ["PENDING", "STOPPING", "STOPPED"]
    assert not stopped.HasField("start_time")
    assert phases(stopped) == [("main", "SKIPPED")]

    runner.client.stop_execution(first)
    runner.wait(first, "STOPPED", timeout=10)
    third = runner.start(short)  # the queue goes on without the stopped one
    assert STATUS_NAME[runner.wait(third).status] == "COMPLETED"
    assert (tmp_path / third).exists() and (tmp_path / first).exists()
    assert not (tmp_path / second).exists()
    runner.close()


# ----------------------------------------------------------------- scheduling


def test_concurrency_limit_holds_with_twenty_executions_created_at_once(
    server_factory, tmp_path
):
    limit = 3
    server = server_factory(max_concurrent_executions=limit)
    runner = Runner(server.address)
    spans = tmp_path / "spans"
    code = (
        "import time\n"
        f"f = open({str(spans)!r}, 'a')\n"
        "f.write('%r 1\\n' % time.time()); f.flush()\n"
        "time.sleep(0.05)\n"
        "f.write('%r -1\\n' % time.time()); f.flush()\n"
    )
    runner.register(workflow("brief", [python("main", code)]))
    configuration = runner.configure("brief")
    ids = [runner.start(configuration) for _ in range(20)]
    executions = [runner.wait(i, timeout=60) for i in ids]
    assert {STATUS_NAME[e.status] for e in executions} == {"COMPLETED"}

    def most_at_once(events):
        running = peak = 0
        for _, delta in sorted(events):
            running += delta
            peak = max(peak, running)
        return peak

    steps_seen = [
        (float(t), int(d)) for t, d in (line.split() for line in spans.read_text().splitlines())
    ]
    assert len(steps_seen) == 40
    assert most_at_once(steps_seen) <= limit
    windows = []
    for e in executions:
        windows += [(e.start_time.ToNanoseconds(), 1), (e.complete_time.ToNanoseconds(), -1)]
    assert most_at_once(windows) <= limit
    # Handed to the runtime in creation order.
    submitted = sorted(executions, key=lambda e: e.submit_time.ToNanoseconds())
    assert [e.id for e in submitted] == ids
    runner.close()


def test_dag_runs_in_dependency_order(runner, tmp_path):
    events = tmp_path / "events"

    def task(name: str, **waits) -> dict:
        return {"name": name, "template": "record", **waits,
                "arguments": {"parameters": [{"name": "who", "value": name}]}}

    record = python(
        "record",
        "import time\n"
        f"f = open({str(events)!r}, 'a')\n"
        "f.write('%r {{inputs.parameters.who}} start\\n' % time.time()); f.flush()\n"
        "time.sleep(0.05)\n"
        "f.write('%r {{inputs.parameters.who}} end\\n' % time.time()); f.flush()\n",
        inputs=inputs("who"),
    )
    runner.register(
        workflow(
            "diamond",
            [
                dag(
                    "main",
                    task("D", depends="B && C.Succeeded"),
                    task("B", dependencies=["A"]),
                    task("C", depends="A"),
                    task("A"),
                ),
                record,
            ],
        )
    )
    created = runner.client.create_execution(runner.configure("diamond"))
    assert phases(created) == [("A", "PENDING"), ("B", "PENDING"), ("C", "PENDING"),
                               ("D", "PENDING")]
    execution = runner.wait(created.id)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message

    at = {}
    for line in events.read_text().splitlines():
        t, who, what = line.split()
        at[who, what] = float(t)
    assert at["A", "end"] <= at["B", "start"] and at["A", "end"] <= at["C", "start"]
    assert at["B", "end"] <= at["D", "start"] and at["C", "end"] <= at["D", "start"]


# -------------------------------------------------- placeholders and artifacts


SHOW = """
import json, os, pathlib, sys
greeting, count, name, data_file, data_dir, out = sys.argv[1:]
pathlib.Path(out).mkdir(parents=True)
pathlib.Path(out, "summary.txt").write_text(greeting + " x" + count)
import client
print(json.dumps({
    "greeting": greeting, "count": count, "name": name,
    "data_file": data_file, "file": open(data_file).read(),
    "dir": sorted(os.listdir(data_dir)), "cwd": os.getcwd(), "client": client.__file__,
    "env": {k: os.environ.get(k) for k in (
        "TRAINYARD_EXECUTION_ID", "TRAINYARD_RESOURCE_GROUP", "TRAINYARD_ADDRESS",
        "TRAINYARD_STEP", "PYTHONUNBUFFERED")},
}))
"""


def test_placeholders_artifact_staging_and_step_environment(server, tmp_path):
    team = "team-a"
    runner = Runner(server.address, resource_group=team)
    data_file = tmp_path / "in.csv"
    data_file.write_text("a,b\n1,2\n")
    data_dir = tmp_path / "many"
    data_dir.mkdir()
    (data_dir / "one.txt").write_text("1")
    (data_dir / "two.txt").write_text("2")

    show = container(
        "show",
        "python3", "-c", SHOW,
        "{{inputs.parameters.greeting}}",
        "{{workflow.parameters.count}}",
        "{{ workflow.name }}",
        "{{inputs.artifacts.data-file.path}}",
        "{{inputs.artifacts.data-dir.path}}",
        "{{outputs.artifacts.report.path}}",
        inputs=inputs("greeting", artifacts={"data-file": "/data/in.csv", "data-dir": "/data/dir"}),
        outputs={"artifacts": [{"name": "report", "globalName": "report", "path": "/out/report"}]},
    )
    consume = script(
        "consume",
        "import pathlib\n"
        "print(pathlib.Path('{{inputs.artifacts.report.path}}', 'summary.txt').read_text())\n",
        inputs=inputs(artifacts={"report": "/in/report"}),
    )
    main = {
        "name": "main",
        "steps": [
            [{"name": "show", "template": "show", "arguments": {"parameters": [
                {"name": "greeting", "value": "{{workflow.parameters.greeting}}"}]}}],
            [{"name": "consume", "template": "consume", "arguments": {"artifacts": [
                {"name": "report", "from": "{{steps.show.outputs.artifacts.report}}"}]}}],
        ],
    }
    runner.register(
        workflow(
            "staging",
            [main, show, consume],
            parameters={"greeting": "hello", "count": "1"},
            annotations={"artifacts.ai.sap.com/report.kind": "resultset"},
        )
    )
    configuration = runner.configure(
        "staging",
        {"greeting": "hello world", "count": "3"},
        {
            "data-file": runner.dataset(data_file.as_uri(), name="file"),
            "data-dir": runner.dataset(str(data_dir), name="dir"),
        },
    )
    execution = runner.wait(runner.start(configuration))
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message

    [shown] = [json.loads(line) for line in runner.output(execution.id, "show")]
    work_dir = server.running.settings.work_dir.resolve() / execution.id
    assert shown["greeting"] == "hello world" and shown["count"] == "3"
    assert shown["name"] == execution.id
    assert shown["data_file"] == str(work_dir / "steps" / "show" / "data" / "in.csv")
    assert shown["file"] == "a,b\n1,2\n"
    assert shown["dir"] == ["one.txt", "two.txt"]
    assert shown["cwd"] == str(work_dir / "steps" / "show")
    assert Path(shown["client"]).is_relative_to(ROOT)
    assert shown["env"] == {
        "TRAINYARD_EXECUTION_ID": execution.id,
        "TRAINYARD_RESOURCE_GROUP": team,
        "TRAINYARD_ADDRESS": server.address,
        "TRAINYARD_STEP": "show",
        "PYTHONUNBUFFERED": "1",
    }
    assert runner.output(execution.id, "consume") == ["hello world x3"]

    [report] = execution.output_artifacts
    assert (report.name, report.kind) == ("report", artifact_pb2.ARTIFACT_KIND_RESULTSET)
    assert (url_path(report.url) / "summary.txt").read_text() == "hello world x3"
    system = [text for _, stream, text in runner.logs(execution.id) if stream == "system"]
    assert any(t.startswith("staged input artifact data-dir for step show") for t in system)
    runner.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/iris.csv", "unsupported URL scheme 's3'"),
        ("file:///no/such/file.csv", "no such file or directory"),
    ],
)
def test_an_input_that_cannot_be_staged_makes_execution_dead_before_any_step(
    runner, tmp_path, url, message
):
    marker = tmp_path / "ran"
    runner.register(
        workflow(
            "reads",
            [
                python(
                    "main",
                    f"open({str(marker)!r}, 'w').close()",
                    inputs=inputs(artifacts={"data": "/data/x"}),
                )
            ],
        )
    )
    configuration = runner.configure("reads", artifacts={"data": runner.dataset(url)})
    execution = runner.wait(runner.start(configuration))

    assert STATUS_NAME[execution.status] == "DEAD"
    assert message in execution.status_message
    assert execution.status_message.startswith("cannot start: ")
    assert [h[:2] for h in runner.history(execution.id)] == [
        ("PENDING", "created"), ("DEAD", "start_failed")
    ]
    assert phases(execution) == [("main", "SKIPPED")]
    assert not marker.exists()


def test_long_lines_and_undecodable_bytes_reach_the_log(runner):
    code = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'x' * 200000 + b'\\n')\n"
        "out.write(b'bad \\xff\\xfe bytes\\r\\n')\n"
        "out.write(b'no newline at the end')\n"
    )
    runner.register(workflow("noisy", [python("main", code)]))
    execution = runner.wait(runner.start(runner.configure("noisy")))
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message

    lines = runner.output(execution.id)
    pieces = [line for line in lines if set(line) == {"x"}]
    assert sum(map(len, pieces)) == 200000 and max(map(len, pieces)) <= 64 * 1024
    assert lines[-2:] == ["bad \ufffd\ufffd bytes", "no newline at the end"]
