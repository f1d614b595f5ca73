"""An execution on the container runtime survives a kill -9 of the server in any state:
the next start runs it on from where its walk was. Steps that ended are not run again
(their outputs still feed later steps), running ones are watched again, the others
start; loops, retries, the exit handler and a stop in progress go on. Real Podman (a
private store, tests/services/podman.py), real server processes.

A restart while no step runs needs the server killed at a moment it runs nothing: the
engine's command is a shell script in front of Podman that holds the start of one step
(it never runs it) until the test lets go, after the server was killed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.services.podman import IMAGE
from tests.workflow_helpers import (
    PHASE_NAME,
    STATUS_NAME,
    Runner,
    ServerProcess,
    replica_process,
    wait_for,
)

OPTIONS = ("--runtime", "container", "--stop-grace-seconds", "2")


def template(name: str, body: str, on_exit: str = "") -> str:
    return f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: {name}
  annotations:
    scenarios.ai.sap.com/name: "Resume tests"
  labels:
    scenarios.ai.sap.com/id: "resume-tests"
    ai.sap.com/version: "1.0"
spec:
  entrypoint: main
{f"  onExit: {on_exit}" if on_exit else ""}
  templates:
{body}"""


def shell(name: str, script: str, extra: str = "") -> str:
    """A container template running ``script`` in the test image's shell."""
    quoted = script.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f"    - name: {name}\n{extra}"
        f"      container:\n"
        f"        image: {IMAGE}\n"
        f'        command: ["/bin/sh", "-c", "{quoted}"]\n'
    )


ECHO = (
    "    - name: echo\n"
    "      inputs:\n"
    "        parameters: [{name: word}]\n"
    "      container:\n"
    f"        image: {IMAGE}\n"
    '        command: ["echo", "{{inputs.parameters.word}}"]\n'
)


@pytest.fixture
def server(tmp_path, podman):
    process = ServerProcess(tmp_path)
    yield process
    if process.process is not None and process.process.poll() is None:
        process.terminate()


def run_until(server: ServerProcess, definition: str, name: str, *options: str):
    """Start a server, register ``definition``, start an execution of it."""
    server.start(*OPTIONS, *options)
    runner = Runner(server.address)
    runner.register(definition)
    return runner, runner.start(runner.configure(name, scenario="resume-tests"))


def restart(server: ServerProcess, *options: str) -> Runner:
    server.start(*OPTIONS, *options)
    return Runner(server.address)


def killed_and_restarted(
    server: ServerProcess, runner: Runner, execution_id: str, *options: str, meanwhile=None
):
    """kill -9 the server (``meanwhile`` runs while it is down), start it again, and
    wait for the execution to end: (a client of the new server, the execution)."""
    server.kill()
    if meanwhile is not None:
        meanwhile()
    runner.close()
    runner = restart(server, *options)
    return runner, runner.wait(execution_id, timeout=120)


def system(runner: Runner, execution_id: str) -> list[str]:
    return [t for _, s, t in runner.logs(execution_id) if s == "system"]


def held_engine(tmp_path: Path, step: str, started: bool = False) -> tuple[Path, Path, Path]:
    """A container engine command that holds the start of ``step`` while the file
    ``hold`` exists (writing ``held`` once it holds one). It never runs that start (the
    held engine call fails once let go), or with ``started`` it runs it first: the
    container runs while the server still waits for the engine. (engine, hold, held)"""
    real = shutil.which("podman")
    hold, held = tmp_path / "hold", tmp_path / "held"
    engine = tmp_path / "bin" / "podman"
    engine.parent.mkdir()
    run_first = f'"{real}" "$@"; ' if started else ""
    engine.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = run ] && [ -e "{hold}" ]; then\n'
        '  case " $* " in\n'
        f'    *" trainyard.step={step} "*)\n'
        f'      {run_first}: > "{held}"\n'
        f'      while [ -e "{hold}" ]; do sleep 0.05; done\n'
        "      exit 1;;\n"
        "  esac\n"
        "fi\n"
        f'exec "{real}" "$@"\n'
    )
    engine.chmod(0o755)
    hold.touch()
    return engine, hold, held


BETWEEN = template(
    "between",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: first\n"
    "            template: first\n"
    "        - - name: second\n"
    "            template: echo\n"
    "            arguments:\n"
    "              parameters:\n"
    '                - {name: word, value: "got {{steps.first.outputs.parameters.n}}"}\n'
    + shell(
        "first",
        "echo first ran; echo 7 > /tmp/n",
        "      outputs:\n        parameters:\n          - {name: n, valueFrom: {path: /tmp/n}}\n",
    )
    + ECHO,
)


def test_a_restart_between_two_steps_starts_the_next_with_the_first_ones_output(
    podman, server, tmp_path
):
    """Killed once the first step ended and before the second started (no step runs):
    the second starts after the restart, with the first one's output parameter, and the
    first does not run again."""
    engine, hold, held = held_engine(tmp_path, "second")
    runner, eid = run_until(server, BETWEEN, "between", "--container-engine", str(engine))
    try:
        wait_for(held.exists, 120, "the second step's start to be held")
        assert runner.output(eid, "first") == ["first ran"]
        server.kill()
        hold.unlink()  # the held start fails: the second step never ran before the kill
        runner.close()

        runner = restart(server, "--container-engine", str(engine))
        done = runner.wait(eid, timeout=120)
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert runner.output(eid, "first") == ["first ran"]
        assert runner.output(eid, "second") == ["got 7"]
        phases = [(s.name, PHASE_NAME[s.phase]) for s in done.step_details]
        assert phases == [("first", "SUCCEEDED"), ("second", "SUCCEEDED")]
        assert dict(done.step_details[0].output_parameters) == {"n": "7"}
        assert [h[1] for h in runner.history(eid)].count("step_started") == 1
        assert any("going on after first, not run again" in t for t in system(runner, eid))
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


ONCE = template(
    "once",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: only\n"
    "            template: only\n"
    + shell("only", "echo began; sleep 2; echo done"),
)


def test_a_server_killed_while_the_engine_starts_a_step_adopts_its_container(
    podman, server, tmp_path
):
    """Killed after the engine started the container and before the server recorded
    it: the restart finds the container by its name and watches it, rather than
    starting the step a second time."""
    engine, hold, held = held_engine(tmp_path, "only", started=True)
    runner, eid = run_until(server, ONCE, "once", "--container-engine", str(engine))
    try:
        wait_for(held.exists, 120, "the step's container to start")
        [first] = podman.ours()  # ps -q: the short id
        runner, done = killed_and_restarted(
            server, runner, eid, "--container-engine", str(engine), meanwhile=hold.unlink
        )
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert runner.output(eid, "only") == ["began", "done"]
        phases = [(s.name, s.attempt, PHASE_NAME[s.phase]) for s in done.step_details]
        assert phases == [("only", 1, "SUCCEEDED")]
        # The container that ran is the one started before the kill, not a second one.
        watched = f"container {first[:12]} was started before the restart; watching it"
        assert any(watched in t for t in system(runner, eid)), system(runner, eid)
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


FANNED = template(
    "fanned",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: gen\n"
    "            template: gen\n"
    "        - - name: fan\n"
    "            template: item\n"
    '            withParam: "{{steps.gen.outputs.result}}"\n'
    "            arguments:\n"
    '              parameters: [{name: word, value: "{{item}}"}]\n'
    + shell("gen", "echo '[\"x\"]'")
    + "    - name: item\n"
    "      inputs:\n"
    "        parameters: [{name: word}]\n"
    "      container:\n"
    f"        image: {IMAGE}\n"
    '        command: ["/bin/sh", "-c"]\n'
    '        args: ["echo {{inputs.parameters.word}} began; sleep 2; echo done"]\n',
)


def test_an_item_of_a_loop_expanded_at_run_time_is_adopted_too(podman, server, tmp_path):
    engine, hold, held = held_engine(tmp_path, "fan(0:x)", started=True)
    runner, eid = run_until(server, FANNED, "fanned", "--container-engine", str(engine))
    try:
        wait_for(held.exists, 120, "the item's container to start")
        first = podman.ours()
        runner, done = killed_and_restarted(
            server, runner, eid, "--container-engine", str(engine), meanwhile=hold.unlink
        )
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert runner.output(eid, "fan(0:x)") == ["x began", "done"]
        watched = "was started before the restart; watching it"
        assert any(watched in t and any(c[:12] in t for c in first) for t in system(runner, eid))
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


PRODUCE_THEN_CONSUME = template(
    "produce",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: make\n"
    "            template: make\n"
    "        - - name: slow\n"
    "            template: slow\n"
    "        - - name: use\n"
    "            template: echo\n"
    "            arguments:\n"
    "              parameters:\n"
    '                - {name: word, value: "made {{steps.make.outputs.parameters.v}}"}\n'
    + shell(
        "make",
        "echo making; echo forty-two > /tmp/v",
        "      outputs:\n        parameters:\n          - {name: v, valueFrom: {path: /tmp/v}}\n",
    )
    + shell("slow", "echo slow up; sleep 2; echo slow done")
    + ECHO,
)


def test_an_output_parameter_made_before_the_kill_feeds_a_step_after_it(podman, server):
    runner, eid = run_until(server, PRODUCE_THEN_CONSUME, "produce")
    try:
        runner.wait_output(eid, "slow up", timeout=120)
        runner, done = killed_and_restarted(server, runner, eid)
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert runner.output(eid, "make") == ["making"]
        assert runner.output(eid, "slow") == ["slow up", "slow done"]
        assert runner.output(eid, "use") == ["made forty-two"]
        assert any("step slow still runs" in t for t in system(runner, eid))
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


LOOP = template(
    "loop",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: each\n"
    "            template: item\n"
    "            withItems: [a, b, c]\n"
    "            arguments:\n"
    '              parameters: [{name: word, value: "{{item}}"}]\n'
    "        - - name: after\n"
    "            template: echo\n"
    "            arguments:\n"
    '              parameters: [{name: word, value: "after {{steps.each.outputs.result}}"}]\n'
    "    - name: item\n"
    "      inputs:\n"
    "        parameters: [{name: word}]\n"
    "      container:\n"
    f"        image: {IMAGE}\n"
    '        command: ["/bin/sh", "-c"]\n'
    '        args: ["echo {{inputs.parameters.word}}; sleep 2"]\n' + ECHO,
)


def test_a_loop_killed_while_its_items_run_runs_every_item_once(podman, server):
    runner, eid = run_until(server, LOOP, "loop")
    try:
        items = ("each(0:a)", "each(1:b)", "each(2:c)")
        wait_for(lambda: all(runner.output(eid, i) for i in items), 120, "every item to run")
        runner, done = killed_and_restarted(server, runner, eid)
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert [runner.output(eid, i) for i in items] == [["a"], ["b"], ["c"]]
        # Each item's result (its whole output, read before and after the restart).
        assert runner.output(eid, "after") == ['after ["a", "b", "c"]']
        phases = {s.name: PHASE_NAME[s.phase] for s in done.step_details}
        assert phases == {**dict.fromkeys(items, "SUCCEEDED"), "after": "SUCCEEDED"}
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


HANDLED = template(
    "handled",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: work\n"
    "            template: work\n"
    + shell("work", "echo working; sleep 2; echo worked")
    + shell("bye", "echo bye {{workflow.status}}"),
    on_exit="bye",
)


def test_an_exit_handler_workflow_killed_mid_run_runs_its_handler_once(podman, server):
    runner, eid = run_until(server, HANDLED, "handled")
    try:
        runner.wait_output(eid, "working", timeout=120)
        runner, done = killed_and_restarted(server, runner, eid)
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert runner.output(eid, "work") == ["working", "worked"]
        assert runner.output(eid, "onExit") == ["bye Succeeded"]
        assert sum("running the exit handler" in t for t in system(runner, eid)) == 1
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


def retried(name: str, first: str, second: str, retry: str) -> str:
    """One step, ``flaky``: its first attempt runs ``first`` and exits 3, the next ones
    run ``second`` (a mark in an output folder tells them apart); ``retry``: the
    retryStrategy's lines."""
    return template(
        name,
        "    - name: main\n"
        "      steps:\n"
        "        - - name: flaky\n"
        "            template: flaky\n"
        + shell(
            "flaky",
            f"if [ -e /app/state/failed ]; then {second}; "
            f"else touch /app/state/failed; {first}; exit 3; fi",
            "      retryStrategy:\n"
            + retry
            + "      outputs:\n"
            "        artifacts:\n"
            "          - {name: state, path: /app/state, optional: true}\n",
        ),
    )


RETRIED = retried(
    "retried", "echo first try", "echo second try",
    '        limit: 2\n        backoff: {duration: "2"}\n',
)


def test_a_retry_announced_before_the_kill_runs_after_it_as_the_next_attempt(podman, server):
    """Killed while the retry waits its backoff (the first attempt failed, no step
    runs): the next start runs attempt 2, and the step's details are attempts 1 and 2."""
    runner, eid = run_until(server, RETRIED, "retried")
    try:
        wait_for(
            lambda: any("retry 1 of 2 in 2 s" in t for t in system(runner, eid)),
            120,
            "the retry to be announced",
        )
        runner, done = killed_and_restarted(server, runner, eid)
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert runner.output(eid, "flaky") == ["first try", "second try"]
        tries = [(s.name, s.attempt, PHASE_NAME[s.phase], s.exit_code) for s in done.step_details]
        assert tries == [("flaky", 1, "FAILED", 3), ("flaky", 2, "SUCCEEDED", 0)]
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


RETRIED_RUNNING = retried(
    "retried-running",
    "echo first one; echo first two; echo first three",
    "echo second one; echo second two; sleep 3; echo second three",
    "        limit: 1\n",
)


def test_a_retried_attempt_killed_mid_run_keeps_every_line_of_both_attempts(podman, server):
    """Killed while attempt 2 runs: it is re-attached and its log read on from the lines
    attempt 2 (not both attempts) had stored, so none of its lines is lost."""
    runner, eid = run_until(server, RETRIED_RUNNING, "retried-running")
    try:
        runner.wait_output(eid, "second two", timeout=120)
        runner, done = killed_and_restarted(server, runner, eid)
        assert STATUS_NAME[done.status] == "COMPLETED", (done.status_message, system(runner, eid))
        assert runner.output(eid, "flaky") == [
            "first one", "first two", "first three", "second one", "second two", "second three"
        ]
        tries = [(s.name, s.attempt, PHASE_NAME[s.phase]) for s in done.step_details]
        assert tries == [("flaky", 1, "FAILED"), ("flaky", 2, "SUCCEEDED")]
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


STOPPABLE = template(
    "stoppable",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: work\n"
    "            template: work\n"
    "        - - name: never\n"
    "            template: never\n"
    # PID 1 of a container ignores SIGTERM: it ends at the end of the grace period.
    + shell("work", "echo working; sleep 60")
    + shell("never", "echo never")
    + shell("bye", "echo bye {{workflow.status}}"),
    on_exit="bye",
)


def test_a_stopping_execution_killed_finishes_its_stop_and_its_exit_handler(podman, server):
    runner, eid = run_until(server, STOPPABLE, "stoppable", "--stop-grace-seconds", "30")
    try:
        runner.wait_output(eid, "working", timeout=120)
        runner.client.stop_execution(eid)
        runner.wait(eid, "STOPPING", timeout=30)
        server.kill()  # within the stop's 30 s grace period: the step still runs
        runner.close()

        runner = restart(server)
        done = runner.wait(eid, timeout=120)
        assert STATUS_NAME[done.status] == "STOPPED", (done.status_message, system(runner, eid))
        phases = {s.name: PHASE_NAME[s.phase] for s in done.step_details}
        assert phases == {"work": "STOPPED", "never": "SKIPPED", "onExit": "SUCCEEDED"}
        assert runner.output(eid, "onExit") == ["bye Failed"]
        assert runner.output(eid, "never") == []
        assert [h[0] for h in runner.history(eid)][-2:] == ["STOPPING", "STOPPED"]
        podman.wait_empty("every container to be removed")
    finally:
        runner.close()


COUNTER = template(
    "counter",
    "    - name: main\n"
    "      steps:\n"
    "        - - name: count\n"
    "            template: count\n"
    + shell("count", "i=1; while [ $i -le 100 ]; do echo line $i; i=$((i+1)); sleep 0.2; done"),
)


def test_a_replica_stopped_for_a_deploy_hands_its_running_container_over_at_once(
    podman, postgres_url, tmp_path
):
    """SIGTERM, as a deploy stops a replica: its container goes on, and as its last
    write the replica ends its leases, so the other one takes the execution over at
    its next round (a third of the lease, cause replica_shutdown) instead of once the
    lease would have run out, and follows the same container to its end."""
    lease = 30.0
    options = (*OPTIONS, "--artifact-root", str(tmp_path / "shared"),
               "--database-url", postgres_url, "--lease-seconds", str(lease))
    servers = {name: replica_process(tmp_path, name) for name in "ab"}
    a, b = servers["a"].start(*options, "--replica-id", "a"), servers["b"]
    runner_a = Runner(a.address)
    runner_b = None
    try:
        runner_a.register(COUNTER)
        eid = runner_a.start(runner_a.configure("counter", scenario="resume-tests"))
        runner_a.wait_output(eid, "line 3", timeout=60)
        runner_a.close()
        b.start(*options, "--replica-id", "b")
        runner_b = Runner(b.address)
        assert runner_b.status(eid) == "RUNNING"
        a.terminate()
        assert podman.ours(), "the container outlives the replica"

        def taken_over():
            return [h for h in runner_b.history(eid) if h[1] == "replica_shutdown"]

        # Well before the 30 s lease would have run out.
        [entry] = wait_for(taken_over, lease * 2 / 3, "b to take the execution over")
        assert entry == (
            "RUNNING", "replica_shutdown",
            "replica a shut down; replica b took the execution over: count watched again",
        )
        done = runner_b.wait(eid, timeout=60)
        assert STATUS_NAME[done.status] == "COMPLETED", system(runner_b, eid)
        assert runner_b.output(eid, "count") == [f"line {i}" for i in range(1, 101)]
        assert [h[1] for h in runner_b.history(eid)].count("step_started") == 1
        podman.wait_empty("the container to be removed")
    finally:
        if runner_b is not None:
            runner_b.close()
        for server in servers.values():
            if server.process is not None and server.process.poll() is None:
                server.terminate()
