"""The container runtime end to end: SAP AI Core style templates whose code lives in
their image run in containers through Podman (a private store, an image built at test
time from busybox-static), with their data mounted, their model collected, a metric
reported from inside, stop, and a kill -9 of the server mid-run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from server.domain.models import LogStream, Status
from tests.services.podman import IMAGE
from tests.workflow_helpers import (
    PHASE_NAME,
    STATUS_NAME,
    Runner,
    ServerProcess,
)

SAP_STYLE = f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: house-price-ct
  annotations:
    scenarios.ai.sap.com/name: "House prices"
    executables.ai.sap.com/name: "Train in a container"
    artifacts.ai.sap.com/housedataset.kind: "dataset"
    artifacts.ai.sap.com/housemodel.kind: "model"
    artifacts.ai.sap.com/housemodel.labels: '{{"ext.ai.sap.com/step": "train"}}'
  labels:
    scenarios.ai.sap.com/id: "house-ct"
    ai.sap.com/version: "1.0"
spec:
  entrypoint: mypipeline
  arguments:
    parameters:
      - name: epochs
        default: "3"
  templates:
    - name: mypipeline
      steps:
        - - name: mypredictor
            template: mycodeblock1
    - name: mycodeblock1
      inputs:
        artifacts:
          - name: housedataset
            path: /app/data/
      outputs:
        artifacts:
          - name: housepricemodel
            globalName: housemodel
            path: /app/model
            archive:
              none: {{}}
      container:
        image: {IMAGE}
        command: ["/bin/sh", "-c"]
        args: ["sh /app/src/train.sh {{{{workflow.parameters.epochs}}}}"]
        env:
          - name: GREETING
            value: "hello from the template"
"""


def one_step(name: str, container: str) -> str:
    return f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: {name}
  annotations:
    scenarios.ai.sap.com/name: "Container tests"
  labels:
    scenarios.ai.sap.com/id: "container-tests"
    ai.sap.com/version: "1.0"
spec:
  entrypoint: main
  templates:
    - name: main
      container:
{container}
"""


@pytest.fixture
def container_server(server_factory, podman):
    return server_factory(
        runtime="container", console_address="127.0.0.1:0", stop_grace_seconds=2.0
    )


@pytest.fixture
def runner(container_server):
    r = Runner(container_server.address)
    yield r
    r.close()


def dataset(runner: Runner, tmp_path: Path, rows: int = 4) -> str:
    data = tmp_path / "house"
    data.mkdir()
    (data / "prices.csv").write_text("".join(f"{i},{i * 1000}\n" for i in range(rows)))
    return runner.client.create_artifact(
        name="houses", url=data.as_uri(), scenario_id="house-ct", kind="dataset"
    ).id


def files_holding(root: Path, data: bytes) -> list[Path]:
    """The files under ``root`` whose bytes contain ``data``."""
    return [path for path in root.rglob("*") if path.is_file() and data in path.read_bytes()]


def wrapped_engine(tmp_path: Path, engine, name: str, before: str) -> str:
    """An engine command of the test's own, ``name``: the shell lines ``before`` (the
    engine's arguments in ``$@``), then ``engine``'s command with those arguments."""
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\n{before}\nexec "{engine.binary}" "$@"\n')
    script.chmod(0o755)
    return str(script)


# An engine whose `rm` takes 3 s: a finished container stays a while after its step.
HOLD_RM = 'if [ "$1" = rm ]; then sleep 3; fi'


def secret_left_while_rm_held(
    server_factory, engine, tmp_path: Path, scanned: Path | None = None, **server_options
) -> list[Path]:
    """Run a step that prints a secret on an engine whose `rm` is held (HOLD_RM), and
    return the files under ``scanned`` (default: the server's data directory) that hold
    the value once the execution ended, while its container is still being removed."""
    command = wrapped_engine(tmp_path, engine, f"{engine.name}-slow-rm", HOLD_RM)
    server = server_factory(runtime="container", container_engine=command, **server_options)
    runner = Runner(server.address)
    try:
        value = "pw-slow-rm-41f0"
        runner.client.create_secret("db", {"password": value})
        runner.register(VOLUMES.replace("name: volumes", "name: volumes-slow", 1))
        execution_id = runner.start(runner.configure("volumes-slow", scenario="container-tests"))
        execution = runner.wait(execution_id, timeout=60)
        assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
        assert runner.output(execution_id)[-1] == "***"
        assert engine.ours(), "the container is still being removed"
        holding = files_holding(scanned or server.settings.data_dir, value.encode())
        engine.wait_empty("the finished container to be removed")
        return holding
    finally:
        runner.close()


def test_a_sap_style_template_runs_in_its_image(runner, podman, tmp_path):
    runner.register(SAP_STYLE)
    data = dataset(runner, tmp_path)
    configuration = runner.configure(
        "house-price-ct", {"epochs": "3"}, {"housedataset": data}, scenario="house-ct"
    )
    execution_id = runner.start(configuration)
    execution = runner.wait(execution_id, timeout=120)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message

    out = runner.output(execution_id)
    assert out[:5] == [
        "training on 4 rows as 65534",  # the data at /app/data, an unprivileged user
        "greeting: hello from the template",
        "epoch 1",
        "epoch 2",
        "epoch 3",
    ]
    assert "metric reported" in out  # through the API, from inside the container
    stderr = [t for _, s, t in runner.logs(execution_id) if s == "stderr"]
    assert stderr == ["warning: to stderr"]
    assert Counter(out).most_common(1)[0][1] == 1  # every line once

    [model] = execution.output_artifacts
    assert model.name == "housemodel"
    stored = runner.client.get_artifact(model.id)
    assert dict(stored.labels) == {"ext.ai.sap.com/step": "train"}
    assert (Path(model.url.removeprefix("file://")) / "model.txt").read_text() == "weights\n"
    metrics = runner.client.latest_metrics(execution_id)
    assert metrics["accuracy"].value == pytest.approx(0.93)
    podman.wait_empty("the step's container to be removed")


def test_a_missing_image_is_dead_at_start_naming_it(runner, podman):
    runner.register(
        one_step("no-image", '        image: localhost/not-there:9\n        command: ["true"]')
    )
    execution_id = runner.start(runner.configure("no-image", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=60)
    assert STATUS_NAME[execution.status] == "DEAD"
    assert "localhost/not-there:9" in execution.status_message
    assert podman.missing_image in execution.status_message  # the engine's own words
    assert podman.ours() == []  # the engine refused it: nothing was created


def test_a_container_without_command_runs_the_image_entrypoint(runner, podman):
    runner.register(one_step("entry", f'        image: {IMAGE}\n        args: ["hi", "there"]'))
    execution_id = runner.start(runner.configure("entry", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=60)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
    assert runner.output(execution_id) == ["from the entrypoint: hi there"]


def test_a_container_with_only_an_image_runs_the_image_entrypoint(runner, podman):
    runner.register(one_step("bare", f"        image: {IMAGE}"))
    execution_id = runner.start(runner.configure("bare", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=60)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
    assert runner.output(execution_id) == ["from the entrypoint:"]


def test_stop_ends_the_container_within_the_grace_period(runner, podman):
    # PID 1 of a container ignores SIGTERM unless it handles it: the grace period ends
    # in SIGKILL.
    runner.register(
        one_step(
            "sleeper",
            f"        image: {IMAGE}\n"
            '        command: ["/bin/sh", "-c", "echo started; sleep 300"]',
        )
    )
    execution_id = runner.start(runner.configure("sleeper", scenario="container-tests"))
    runner.wait_output(execution_id, "started", timeout=60)
    assert podman.ours(), "the step runs in a container"
    runner.client.stop_execution(execution_id)
    execution = runner.wait(execution_id, "STOPPED", timeout=2.0 + 20)
    assert [h[0] for h in runner.history(execution_id)][-2:] == ["STOPPING", "STOPPED"]
    assert PHASE_NAME[execution.step_details[0].phase] == "STOPPED"
    podman.wait_empty("the stopped container to be removed")


VOLUMES = f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: volumes
  labels:
    scenarios.ai.sap.com/id: "container-tests"
    ai.sap.com/version: "1.0"
spec:
  entrypoint: main
  volumes:
    - name: creds
      secret:
        secretName: db
        items: [{{key: password, path: conf/pw}}]
  templates:
    - name: main
      volumes:
        - name: cache
          emptyDir: {{}}
      container:
        image: {IMAGE}
        command: ["/bin/sh", "-c"]
        args:
          - >-
            ls -A /cache; echo cached > /cache/x && cat /cache/x;
            ls /etc/creds/conf; wc -c < /etc/creds/conf/pw;
            (echo changed > /etc/creds/conf/pw) 2>/dev/null && echo writable || echo read-only;
            cat /etc/creds/conf/pw; echo
        volumeMounts:
          - {{name: cache, mountPath: /cache}}
          - {{name: creds, mountPath: /etc/creds}}
"""


def test_empty_dir_and_secret_volumes_are_mounted(runner, podman, container_server):
    """An emptyDir starts empty and is writable; a secret volume holds the keys as
    files, read-only, masked when printed, and gone from this machine once the step
    ended."""
    value = "pw-volume-5e1d"
    runner.client.create_secret("db", {"password": value, "user": "unused"})
    runner.register(VOLUMES)
    execution_id = runner.start(runner.configure("volumes", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=60)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
    assert runner.output(execution_id) == [
        "cached", "pw", str(len(value)), "read-only", "***"
    ]
    # Gone when the execution ends, not later with the container's removal.
    assert files_holding(container_server.settings.data_dir, value.encode()) == []
    podman.wait_empty("the finished container to be removed")


def test_a_secret_printed_by_a_step_is_gone_while_the_engine_removes_the_container(
    server_factory, podman, tmp_path
):
    """The engine's log file of the container holds the value unmasked: it is deleted
    once read, before the execution ends, however long the engine takes to remove the
    container (its `rm` held here 3 s)."""
    assert secret_left_while_rm_held(server_factory, podman, tmp_path) == []


RETRIED = f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: retried-ct
  labels:
    scenarios.ai.sap.com/id: "container-tests"
    ai.sap.com/version: "1.0"
spec:
  entrypoint: main
  templates:
    - name: main
      retryStrategy:
        limit: 1
      outputs:
        artifacts:
          - name: state
            path: /state
      container:
        image: {IMAGE}
        command: [/bin/sh, -c]
        args:
          - n=$(( $(cat /state/tries 2>/dev/null || echo 0) + 1 )); echo $n > /state/tries;
            if [ $n -lt 2 ]; then echo "try 1"; exit 1; fi; sleep 1; echo "try 2"
"""


def test_a_retry_keeps_its_log_while_the_failed_attempt_is_removed(
    server_factory, podman, tmp_path
):
    """A retried step's attempts share the runner folder and its log file's name: the
    removal of the failed attempt's container, finishing after the retry started (here
    the engine's rm waits for the retry's run), leaves the retry's log file alone."""
    marks = tmp_path / "runs"
    marks.mkdir()
    engine = wrapped_engine(
        tmp_path,
        podman,
        "podman-late-rm",
        f'if [ "$1" = run ] && [ "$2" = -d ]; then "{podman.binary}" "$@"; code=$?; '
        f'touch "{marks}/run.$$"; exit $code; fi\n'
        'if [ "$1" = rm ]; then i=0; '
        f'while [ "$(ls {marks} | wc -l)" -lt 2 ] && [ $i -lt 100 ]; do '
        "sleep 0.1; i=$((i + 1)); done; fi",
    )
    server = server_factory(runtime="container", container_engine=engine)
    runner = Runner(server.address)
    try:
        runner.register(RETRIED)
        execution_id = runner.start(runner.configure("retried-ct", scenario="container-tests"))
        execution = runner.wait(execution_id, timeout=60)
        assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
        assert len(list(marks.iterdir())) == 2  # the retry ran while the rm waited
        assert runner.output(execution_id) == ["try 1", "try 2"]
        podman.wait_empty("both attempts' containers to be removed")
    finally:
        runner.close()


def test_the_local_runtime_refuses_at_start_a_volume_mount(server_factory):
    server = server_factory()
    runner = Runner(server.address)
    try:
        runner.register(VOLUMES.replace("name: volumes", "name: volumes-local", 1))
        runner.client.create_secret("db", {"password": "pw-local-1"})
        execution_id = runner.start(runner.configure("volumes-local", scenario="container-tests"))
        execution = runner.wait(execution_id, timeout=60)
        assert STATUS_NAME[execution.status] == "DEAD"
        assert "only the container runtime (--runtime container) mounts volumes" in (
            execution.status_message
        )
    finally:
        runner.close()


@pytest.mark.parametrize("end", ["kill -9", "SIGTERM"])
def test_a_server_ended_mid_run_reattaches_its_running_container(podman, tmp_path, end):
    """Whether the server dies (kill -9) or shuts down (SIGTERM, as for an upgrade), the
    container goes on, and the next start re-attaches it."""
    count = 30
    template = one_step(
        "counter",
        f"        image: {IMAGE}\n"
        '        command: ["/bin/sh", "-c"]\n'
        f'        args: ["i=1; while [ $i -le {count} ]; do echo line $i; i=$((i+1)); '
        'sleep 0.2; done"]',
    )
    server = ServerProcess(tmp_path).start(
        "--runtime", "container", "--no-console", "--stop-grace-seconds", "2"
    )
    runner = Runner(server.address)
    try:
        runner.register(template)
        execution_id = runner.start(runner.configure("counter", scenario="container-tests"))
        runner.wait_output(execution_id, "line 3", timeout=60)
        if end == "kill -9":
            server.kill()
        else:
            server.terminate()
        assert podman.ours(), "the container outlives the server"
        runner.close()

        server.start("--runtime", "container", "--no-console", "--stop-grace-seconds", "2")
        runner = Runner(server.address)
        execution = runner.wait(execution_id, timeout=120)
        assert STATUS_NAME[execution.status] == "COMPLETED", runner.logs(execution_id)
        assert runner.output(execution_id) == [f"line {i}" for i in range(1, count + 1)]
        assert any("watching it again" in t for _, _, t in runner.logs(execution_id))
        history = runner.history(execution_id)
        assert [h[1] for h in history].count("step_started") == 1
        assert history[-2] == (
            "RUNNING", "server_restart",
            "server restarted; the execution goes on: main watched again",
        )
        podman.wait_empty("the container to be removed")
    finally:
        runner.close()
        if server.process.poll() is None:
            server.terminate()


def test_after_a_restart_containers_of_deleted_executions_are_removed(
    podman, server_factory, tmp_path
):
    template = one_step(
        "forever",
        f'        image: {IMAGE}\n        command: ["/bin/sh", "-c", "echo up; sleep 300"]',
    )
    server = ServerProcess(tmp_path).start("--runtime", "container", "--no-console")
    runner = Runner(server.address)
    try:
        runner.register(template)
        execution_id = runner.start(runner.configure("forever", scenario="container-tests"))
        runner.wait_output(execution_id, "up", timeout=60)
        server.kill()
        runner.close()
        # The execution goes while no server watches: a server of the same data
        # directory that runs nothing ends and deletes it.
        other = server_factory(data_dir=server.data_dir, runtime="none", executables_dir=None)
        other.run_sync(other.plane.store.force_status, execution_id, Status.DEAD)
        runner = Runner(other.address)
        runner.client.delete_execution(execution_id)
        runner.close()
        other.stop()
        assert podman.ours(), "nobody removed the container yet"

        server.start("--runtime", "container", "--no-console")
        runner = Runner(server.address)
        podman.wait_empty("the orphaned container to go", 60)
    finally:
        runner.close()
        if server.process.poll() is None:
            server.terminate()


def test_the_local_runtime_says_a_declared_image_was_not_used(server_factory):
    server = server_factory()
    runner = Runner(server.address)
    try:
        runner.register(
            one_step("host", '        image: house-price:03\n        command: ["true"]')
        )
        execution_id = runner.start(runner.configure("host", scenario="container-tests"))
        execution = runner.wait(execution_id, timeout=60)
        assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
        [step] = execution.step_details
        assert step.message == "image house-price:03 was not used: the command ran on the host"
    finally:
        runner.close()


def test_the_local_runtime_refuses_at_start_a_container_with_nothing_to_run(server_factory):
    """Registration takes a container with only an image (the container runtime runs the
    image's entrypoint); the local runtime has no image, so the start says why it is DEAD."""
    server = server_factory()
    runner = Runner(server.address)
    try:
        runner.register(one_step("imageonly", "        image: house-price:03"))
        execution_id = runner.start(runner.configure("imageonly", scenario="container-tests"))
        execution = runner.wait(execution_id, timeout=60)
        assert STATUS_NAME[execution.status] == "DEAD"
        assert "no command and no args" in execution.status_message
        assert "--runtime container" in execution.status_message
    finally:
        runner.close()


COMBINED = f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: combined-ct
  annotations:
    scenarios.ai.sap.com/name: "Container tests"
  labels:
    scenarios.ai.sap.com/id: "container-tests"
    ai.sap.com/version: "1.0"
spec:
  entrypoint: main
  onExit: bye
  templates:
    - name: main
      steps:
        - - name: gen
            template: gen
        - - name: each
            template: echo
            withItems: [a, b]
            arguments:
              parameters: [{{name: word, value: "item {{{{item}}}}"}}]
        - - name: big
            template: echo
            when: "{{{{steps.gen.outputs.parameters.n}}}} > 2"
            arguments:
              parameters: [{{name: word, value: "n={{{{steps.gen.outputs.parameters.n}}}}"}}]
          - name: small
            template: echo
            when: "{{{{steps.gen.outputs.parameters.n}}}} < 2"
            arguments:
              parameters: [{{name: word, value: small}}]
    - name: gen
      retryStrategy:
        limit: 2
      outputs:
        parameters:
          - name: n
            valueFrom:
              path: /tmp/n
      container:
        image: {IMAGE}
        command: ["/bin/sh", "-c", "echo 3 > /tmp/n"]
    - name: echo
      inputs:
        parameters:
          - name: word
      container:
        image: {IMAGE}
        command: ["echo", "{{{{inputs.parameters.word}}}}"]
    - name: bye
      container:
        image: {IMAGE}
        command: ["echo", "exit {{{{workflow.status}}}}"]
"""


def test_loops_when_output_parameters_and_exit_handler_in_containers(runner, podman):
    runner.register(COMBINED)
    execution_id = runner.start(runner.configure("combined-ct", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=120)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
    phases = {s.name: PHASE_NAME[s.phase] for s in execution.step_details}
    assert phases["gen"] == "SUCCEEDED" and phases["small"] == "SKIPPED"
    assert {s.name: s.output_parameters["n"] for s in execution.step_details if s.name == "gen"}
    assert runner.output(execution_id, "big") == ["n=3"]  # read out of gen's container
    logs = runner.logs(execution_id)
    loop = sorted(t for s, st, t in logs if s.startswith("each") and st == "stdout")
    assert loop == ["item a", "item b"], "\n".join(map(str, logs))
    assert runner.output(execution_id, "onExit") == ["exit Succeeded"]
    podman.wait_empty("every container to be removed")


def test_the_log_reader_takes_whole_stdout_chunks_at_once_and_the_rest_line_by_line(
    tmp_path,
):
    """A k8s-file log read by offset: a chunk of whole stdout records (read in one pass)
    gives the same lines as records of both streams and pieces (read line by line)."""
    from server.runtime.container_runner import LogFile

    ts = "2026-12-02T19:05:56.564872401+00:00"
    records = [f"{ts} stdout F line {i}" for i in range(5)]
    records += [f"{ts} stdout F", f"{ts} stdout F cr\r", f"{ts} stdout F  two  spaces"]
    mixed = [f"{ts} stderr F err stdout F no", f"{ts} stdout P part", f"{ts} stdout F ial"]
    path = tmp_path / "container.log"
    path.write_text("\n".join(records) + "\n")
    log = LogFile(path, "podman")
    expected = ["line 0", "line 1", "line 2", "line 3", "line 4", "", "cr", " two  spaces"]
    assert log.read() == [(LogStream.STDOUT, expected)]
    with path.open("a") as f:
        f.write("\n".join(mixed) + "\n")
    assert log.read() == [(LogStream.STDERR, ["err stdout F no"]), (LogStream.STDOUT, ["partial"])]
    assert log.read() == [] and log.flush() == []


@pytest.mark.parametrize("chunk", [61, 4096, 1024 * 1024])
def test_the_log_reader_keeps_every_line_of_pieces_and_streams_mixed_in_any_chunking(
    tmp_path, monkeypatch, chunk
):
    """Whole stdout stretches (one pass each) between pieces, stderr records and text
    that looks like a header give, whatever the read size, the lines a plain reading of
    one record after the other gives."""
    import random

    from server.runtime import container_runner
    from server.runtime.container_runner import LogFile

    monkeypatch.setattr(container_runner, "READ_CHUNK", chunk)
    rng = random.Random(7)
    ts = "2026-12-02T19:05:56.564872401+00:00"
    texts = ["a", "", "x stderr y", "x stdout P y", "é ü", "2 stdout F 3", "cr\r"]
    records, expected, pieces = [], [], {"stdout": "", "stderr": ""}
    for _ in range(3000):
        stream = "stderr" if rng.random() < 0.1 else "stdout"
        text = rng.choice(texts) + str(rng.randrange(1000))
        whole = rng.random() > 0.05
        records.append(f"{ts} {stream} {'F' if whole else 'P'} {text}")
        pieces[stream] += text
        if whole:
            line = pieces[stream]
            expected.append((stream, line[:-1] if line.endswith("\r") else line))
            pieces[stream] = ""
    path = tmp_path / "container.log"
    path.write_bytes(("\n".join(records) + "\n").encode())
    log = LogFile(path, "podman")
    got = []
    size = path.stat().st_size
    while log.offset < size:  # a read of less than a record gives nothing yet
        got += [(str(s), text) for s, lines in log.read() for text in lines]
    assert log.read() == []
    got += [(str(s), t) for s, lines in log.flush() for t in lines]
    expected += [(s, t) for s, t in pieces.items() if t]
    assert got == expected
