"""Argo's template language end to end on the local runtime: loops, when, retries,
exit handlers, output parameters, depends expressions, deadlines and script templates,
each registered from a template through the real API, run by real step processes and
checked in step details, history and logs. Steps are short `sh` commands."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from workflow_helpers import (
    IMAGE,
    PHASE_NAME,
    STATUS_NAME,
    Runner,
    container,
    dag,
    script,
    steps,
    wait_for,
    workflow,
)

from client.client import TrainyardError
from trainyard.v1 import artifact_pb2


@pytest.fixture
def runner(server):
    r = Runner(server.address)
    yield r
    r.close()


def sh(name: str, code: str, **extra) -> dict:
    return container(name, "sh", "-c", code, **extra)


def echo(name: str = "echo") -> dict:
    """Prints its input parameter v."""
    return sh(name, "echo '{{inputs.parameters.v}}'", inputs={"parameters": [{"name": "v"}]})


def call(name: str, template: str, **extra) -> dict:
    return {"name": name, "template": template, **extra}


def value(v: str) -> dict:
    return {"parameters": [{"name": "v", "value": v}]}


def run(runner: Runner, name: str, templates: list[dict], timeout: float = 30, **spec):
    document = json.loads(workflow(name, templates))
    document["spec"].update(spec)
    runner.register(json.dumps(document))
    return runner.wait(runner.start(runner.configure(name)), timeout=timeout)


def phases(execution) -> list[tuple[str, str]]:
    return [(s.name, PHASE_NAME[s.phase]) for s in execution.step_details]


def status(execution) -> str:
    return STATUS_NAME[execution.status]


def test_with_items_runs_a_step_per_item(runner):
    items = [{"lr": 0.5, "model": "a"}, {"lr": 0.1, "model": "x"}]
    main = {"name": "main", "steps": [
        [call("fan", "echo", withItems=items, arguments=value("item={{item}} lr={{item.lr}}"))],
        [call("words", "echo", withItems=["a", 7], arguments=value("{{item}}"))],
    ]}
    execution = run(runner, "loop", [main, echo()])

    assert status(execution) == "COMPLETED", execution.status_message
    assert phases(execution) == [
        ("fan(0:lr:0.5,model:a)", "SUCCEEDED"),
        ("fan(1:lr:0.1,model:x)", "SUCCEEDED"),
        ("words(0:a)", "SUCCEEDED"),
        ("words(1:7)", "SUCCEEDED"),
    ]
    assert runner.output(execution.id, "words(1:7)") == ["7"]
    assert runner.output(execution.id, "fan(0:lr:0.5,model:a)") == [
        'item={"lr":0.5,"model":"a"} lr=0.5'
    ]
    assert runner.output(execution.id, "fan(1:lr:0.1,model:x)") == [
        'item={"lr":0.1,"model":"x"} lr=0.1'
    ]


def test_when_decides_on_an_earlier_steps_output_and_on_loop_items(runner):
    main = {
        "name": "main",
        "steps": [
            [call("flip", "flip")],
            [
                call("heads", "echo", arguments=value("won"),
                     when="{{steps.flip.outputs.result}} == heads"),
                call("tails", "echo", arguments=value("lost"),
                     when="{{steps.flip.outputs.result}} == tails"),
                call("big", "echo", arguments=value("{{item}}"), withItems=[1, 5, 12],
                     when="{{item}} > 4 && !({{item}} >= 10)"),
            ],
        ],
    }
    flip = script("flip", "print('heads')")
    execution = run(runner, "coin", [main, flip, echo()])

    assert status(execution) == "COMPLETED", execution.status_message
    assert phases(execution) == [
        ("flip", "SUCCEEDED"),
        ("heads", "SUCCEEDED"),
        ("tails", "SKIPPED"),
        ("big(0:1)", "SKIPPED"),
        ("big(1:5)", "SUCCEEDED"),
        ("big(2:12)", "SKIPPED"),
    ]
    details = runner.steps(execution.id)
    assert details["tails"].message == "skipped: when 'heads == tails' is false"
    assert runner.output(execution.id, "heads") == ["won"]
    assert runner.output(execution.id, "big(1:5)") == ["5"]
    assert not details["tails"].HasField("start_time")


def test_retries_are_step_details_of_their_own_until_one_succeeds(runner):
    # The step's root persists across attempts: a counter file there says which it is.
    flaky = sh(
        "flaky",
        'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; '
        'echo "attempt $n"; [ $n -ge 3 ]',
        retryStrategy={"limit": 3, "retryPolicy": "OnFailure",
                       "backoff": {"duration": "50ms", "factor": 2}},
    )
    execution = run(runner, "flaky", [steps("main", [("try", "flaky")]), flaky])

    assert status(execution) == "COMPLETED", execution.status_message
    assert [(s.name, s.attempt, PHASE_NAME[s.phase], s.exit_code)
            for s in execution.step_details] == [
        ("try", 1, "FAILED", 1), ("try", 2, "FAILED", 1), ("try", 3, "SUCCEEDED", 0)
    ]
    assert runner.output(execution.id, "try") == ["attempt 1", "attempt 2", "attempt 3"]
    system = [t for s, stream, t in runner.logs(execution.id) if stream == "system"]
    assert any("retry 1 of 3 in 0.05 s" in t for t in system)
    assert any("retry 2 of 3 in 0.1 s" in t for t in system)


def test_retries_give_up_after_the_limit(runner):
    failing = sh("failing", "exit 4", retryStrategy={"limit": "1"})
    execution = run(runner, "give-up", [steps("main", [("once", "failing")]), failing])

    assert status(execution) == "DEAD"
    assert execution.status_message == "step once exited with code 4 (attempt 2 of 2)"
    assert [(s.attempt, PHASE_NAME[s.phase]) for s in execution.step_details] == [
        (1, "FAILED"), (2, "FAILED")
    ]


def test_the_exit_handler_runs_after_a_failure_with_the_workflow_status(runner):
    main = steps("main", [("boom", "boom")], [("never", "echo")])
    main["steps"][1][0]["arguments"] = value("unreachable")
    handler = steps("bye", [("report", "echo")])
    handler["steps"][0][0]["arguments"] = value("status={{workflow.status}}")
    execution = run(
        runner, "exits", [main, handler, sh("boom", "exit 2"), echo()], onExit="bye"
    )

    assert status(execution) == "DEAD"
    assert execution.status_message == "step boom exited with code 2"
    assert phases(execution) == [
        ("boom", "FAILED"), ("never", "SKIPPED"), ("onExit.report", "SUCCEEDED")
    ]
    assert runner.output(execution.id, "onExit.report") == ["status=Failed"]


def test_the_exit_handler_after_success_and_its_own_failure(runner):
    execution = run(
        runner,
        "exit-fails",
        [sh("main", "echo fine"), sh("bye", 'echo "{{workflow.status}}"; exit 5')],
        onExit="bye",
    )
    assert status(execution) == "DEAD"
    assert execution.status_message == "step onExit exited with code 5"
    assert phases(execution) == [("main", "SUCCEEDED"), ("onExit", "FAILED")]
    assert runner.output(execution.id, "onExit") == ["Succeeded"]


def test_output_parameters_pass_between_steps_and_tasks(runner):
    produce = sh(
        "produce",
        "mkdir -p /tmp 2>/dev/null; mkdir -p tmp; printf '42\\n' > tmp/answer; echo made",
        outputs={"parameters": [
            {"name": "answer", "valueFrom": {"path": "/tmp/answer"}},
            {"name": "missing", "valueFrom": {"path": "/tmp/none", "default": "fallback"}},
        ]},
    )
    flow = dag(
        "main",
        call("make", "produce"),
        call("use", "echo", dependencies=["make"],
             arguments=value("{{tasks.make.outputs.parameters.answer}}/"
                             "{{tasks.make.outputs.parameters.missing}}")),
        call("nested", "inner", dependencies=["use"]),
    )
    inner = {
        "name": "inner",
        "steps": [[call("again", "produce")],
                  [call("show", "echo",
                        arguments=value("got {{steps.again.outputs.parameters.answer}}"))]],
    }
    execution = run(runner, "outputs", [flow, inner, produce, echo()])

    assert status(execution) == "COMPLETED", execution.status_message
    details = runner.steps(execution.id)
    assert dict(details["make"].output_parameters) == {"answer": "42", "missing": "fallback"}
    assert runner.output(execution.id, "use") == ["42/fallback"]
    assert runner.output(execution.id, "nested.show") == ["got 42"]


def test_an_output_parameter_that_was_not_written_fails_its_step(runner):
    quiet = sh("main", "true", outputs={"parameters": [
        {"name": "p", "valueFrom": {"path": "/out/p"}}]})
    execution = run(runner, "no-param", [quiet])
    assert status(execution) == "DEAD"
    assert execution.status_message.startswith(
        "step main did not write its output parameter p at "
    )


def test_depends_expressions_run_failure_handlers_and_omit_the_rest(runner):
    flow = dag(
        "main",
        call("train", "fail"),
        call("ok", "echo", arguments=value("ok")),
        call("cleanup", "echo", depends="train.Failed || train.Errored",
             arguments=value("cleaning")),
        call("publish", "echo", depends="train && ok", arguments=value("publishing")),
        call("either", "echo", depends="(train.Succeeded || ok.Succeeded) && !cleanup.Skipped",
             arguments=value("either")),
    )
    execution = run(runner, "handlers", [flow, sh("fail", "exit 1"), echo()])

    # train's failure is handled by cleanup's depends: the execution completes.
    assert status(execution) == "COMPLETED", execution.status_message
    assert phases(execution) == [
        ("train", "FAILED"),
        ("ok", "SUCCEEDED"),
        ("cleanup", "SUCCEEDED"),
        ("publish", "SKIPPED"),
        ("either", "SUCCEEDED"),
    ]
    details = runner.steps(execution.id)
    assert details["publish"].message == "omitted: depends 'train && ok' is false"
    assert runner.output(execution.id, "cleanup") == ["cleaning"]


def test_a_workflow_deadline_makes_the_execution_dead(runner):
    execution = run(
        runner,
        "slow-flow",
        [steps("main", [("nap", "nap")], [("after", "nap")]), sh("nap", "exec sleep 30")],
        activeDeadlineSeconds=1,
    )
    assert status(execution) == "DEAD"
    message = "the workflow ran past its activeDeadlineSeconds (1 s)"
    assert execution.status_message == message
    assert runner.history(execution.id)[-1] == ("DEAD", "deadline_exceeded", message)
    assert phases(execution) == [("nap", "STOPPED"), ("after", "SKIPPED")]


def test_a_template_deadline_fails_its_step(runner):
    nap = sh("nap", "exec sleep 30", activeDeadlineSeconds="1")
    execution = run(runner, "slow-step", [steps("main", [("nap", "nap")]), nap])
    assert status(execution) == "DEAD"
    assert execution.status_message.startswith(
        "step nap ran past its activeDeadlineSeconds (1 s); was killed by SIGTERM"
    )
    assert phases(execution) == [("nap", "FAILED")]


def test_a_script_template_runs_its_source_with_the_named_command(runner):
    source = "import sys\nprint('python', sys.version_info[0])\nprint('{{inputs.parameters.v}}')"
    code = {
        "name": "code",
        "inputs": {"parameters": [{"name": "v"}]},
        "script": {"image": IMAGE, "command": ["python3"], "source": source},
    }
    main = steps("main", [("py", "code")])
    main["steps"][0][0]["arguments"] = value("from the caller")
    execution = run(runner, "scripted", [main, code])
    assert status(execution) == "COMPLETED", execution.status_message
    assert runner.output(execution.id, "py") == ["python 3", "from the caller"]


def referenced_library() -> str:
    """An executable whose templates others call through templateRef: a steps
    template calling a template of its own document."""
    return workflow("shared-steps", [
        steps("twice", [("first", "say")], [("second", "say")]),
        sh("say", "echo 'shared {{inputs.parameters.v}}'",
           inputs={"parameters": [{"name": "v", "default": "hello"}]}),
    ], entrypoint="twice")


def test_template_ref_runs_another_executables_template(runner):
    runner.register(referenced_library())
    main = {"name": "main", "steps": [[
        {"name": "lib", "templateRef": {"name": "shared-steps", "template": "twice"}},
    ], [
        {"name": "one", "templateRef": {"name": "shared-steps", "template": "say"},
         "arguments": value("direct")},
    ]]}
    executable = runner.client.create_executable(workflow("uses-ref", [main]))
    assert list(executable.steps) == ["lib.first", "lib.second", "one"]

    execution = runner.wait(runner.start(runner.configure("uses-ref")))
    assert status(execution) == "COMPLETED", execution.status_message
    assert runner.output(execution.id, "lib.second") == ["shared hello"]
    assert runner.output(execution.id, "one") == ["shared direct"]


def write_artifact(name: str, artifact: str) -> dict:
    """Writes its output artifact ARTIFACT (globalName the same)."""
    path = f"{{{{outputs.artifacts.{artifact}.path}}}}"
    return sh(name, f'mkdir -p "$(dirname {path})"; echo {artifact} > {path}', outputs={
        "artifacts": [{"name": artifact, "globalName": artifact, "path": f"/out/{artifact}"}]
    })


def test_template_ref_outputs_are_registered_as_the_executions_outputs(runner):
    """Output artifacts (globalName) of templates run through templateRef are the
    executable's outputs, as its own templates' are: kind and labels from its own
    annotations, else from the referenced executable's."""
    lib_labels = {"ext.ai.sap.com/from": "library"}
    own_labels = {"ext.ai.sap.com/framework": "sklearn"}
    runner.register(workflow("model-lib", [
        steps("all", [("fit", "fit"), ("score", "score")]),
        write_artifact("fit", "model"), write_artifact("score", "metrics"),
    ], entrypoint="all", annotations={
        "artifacts.ai.sap.com/model.kind": "dataset",
        "artifacts.ai.sap.com/metrics.kind": "resultset",
        "artifacts.ai.sap.com/metrics.labels": json.dumps(lib_labels),
    }))
    main = {"name": "main", "steps": [
        [{"name": "train", "templateRef": {"name": "model-lib", "template": "fit"}}],
        [{"name": "eval", "templateRef": {"name": "model-lib", "template": "score"}}],
    ]}
    executable = runner.client.create_executable(workflow("uses-lib", [main], annotations={
        "artifacts.ai.sap.com/model.kind": "model",
        "artifacts.ai.sap.com/model.labels": json.dumps(own_labels),
    }))
    assert [(a.name, a.kind, a.step, dict(a.labels)) for a in executable.output_artifacts] == [
        ("model", artifact_pb2.ARTIFACT_KIND_MODEL, "fit", own_labels),
        ("metrics", artifact_pb2.ARTIFACT_KIND_RESULTSET, "score", lib_labels),
    ]

    execution = runner.wait(runner.start(runner.configure("uses-lib")))
    assert status(execution) == "COMPLETED", execution.status_message
    registered = {a.name: a for a in execution.output_artifacts}
    assert sorted(registered) == ["metrics", "model"]
    model = runner.client.get_artifact(registered["model"].id)
    assert (model.kind, dict(model.labels)) == (artifact_pb2.ARTIFACT_KIND_MODEL, own_labels)
    assert dict(registered["metrics"].labels) == lib_labels


def test_a_template_ref_output_named_like_an_own_output_is_refused(runner):
    runner.register(workflow("model-lib", [write_artifact("fit", "model")], entrypoint="fit"))
    main = {"name": "main", "steps": [
        [{"name": "train", "templateRef": {"name": "model-lib", "template": "fit"}}],
        [{"name": "again", "template": "own"}],
    ]}
    with pytest.raises(TrainyardError) as caught:
        runner.register(workflow("twice", [main, write_artifact("own", "model")]))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in caught.value.violations] == [(
        "spec.templates[0].steps[0][0].templateRef",
        "output artifact 'model' of template 'fit' of executable 'model-lib' is already "
        "declared by template 'own' of this executable",
    )]


def test_template_ref_inputs_are_bound_from_the_configuration(runner, tmp_path):
    """An input artifact of a template run through templateRef that nothing in the
    workflow passes is the executable's input artifact, bound by the configuration."""
    read = sh("read", "cat {{inputs.artifacts.data.path}}",
              inputs={"artifacts": [{"name": "data", "path": "/in/data.csv"}]})
    fed = sh("fed", "cat {{inputs.artifacts.note.path}}",
             inputs={"artifacts": [{"name": "note", "path": "/in/note"}]})
    runner.register(workflow("reader-lib", [read, fed], entrypoint="read"))
    main = {"name": "main", "steps": [[
        {"name": "load", "templateRef": {"name": "reader-lib", "template": "read"}},
        {"name": "told", "templateRef": {"name": "reader-lib", "template": "fed"},
         "arguments": {"artifacts": [{"name": "note", "raw": {"data": "passed"}}]}},
    ]]}
    executable = runner.client.create_executable(workflow("uses-reader", [main], annotations={
        "artifacts.ai.sap.com/data.kind": "dataset",
    }))
    assert [(a.name, a.kind) for a in executable.input_artifacts] == [
        ("data", artifact_pb2.ARTIFACT_KIND_DATASET)
    ]

    data = tmp_path / "data.csv"
    data.write_text("x,y\n")
    configuration = runner.configure(
        "uses-reader", artifacts={"data": runner.dataset(data.as_uri())}
    )
    execution = runner.wait(runner.start(configuration))
    assert status(execution) == "COMPLETED", execution.status_message
    assert runner.output(execution.id, "load") == ["x,y"]
    assert runner.output(execution.id, "told") == ["passed"]


@pytest.mark.parametrize(
    ("ref", "field", "message"),
    [
        ({"name": "nowhere", "template": "say"},
         "spec.templates[0].steps[0][0].templateRef.name",
         "no executable 'nowhere' in resource group 'default'"),
        ({"name": "shared-steps", "template": "shout"},
         "spec.templates[0].steps[0][0].templateRef.template",
         "executable 'shared-steps' has no template 'shout'"),
        ({"name": "shared-steps", "template": "say", "clusterScope": True},
         "spec.templates[0].steps[0][0].templateRef.clusterScope",
         "cluster-scoped templates are not supported"),
    ],
)
def test_a_template_ref_to_nothing_is_refused_at_registration(runner, ref, field, message):
    runner.register(referenced_library())
    main = {"name": "main", "steps": [[{"name": "s", "templateRef": ref}]]}
    with pytest.raises(TrainyardError) as caught:
        runner.register(workflow("bad-ref", [main]))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in caught.value.violations] == [(field, message)]
    if "clusterScope" not in ref:
        assert caught.value.reason == "TEMPLATE_REF_NOT_FOUND"


def test_with_param_loops_over_a_list_an_earlier_step_printed(runner):
    main = {"name": "main", "steps": [
        [call("gen", "gen")],
        [call("fan", "echo", withParam="{{steps.gen.outputs.result}}",
              arguments=value("got {{item}}"), when="{{item}} != skip-me")],
        [call("after", "echo", arguments=value("{{steps.fan.outputs.result}}"))],
    ]}
    gen = script("gen", "import json\nprint(json.dumps(['a', 'skip-me', 'c']))")
    execution = run(runner, "dynamic", [main, gen, echo()])

    assert status(execution) == "COMPLETED", execution.status_message
    assert phases(execution) == [
        ("gen", "SUCCEEDED"),
        ("fan(0:a)", "SUCCEEDED"),
        ("fan(1:skip-me)", "SKIPPED"),
        ("fan(2:c)", "SUCCEEDED"),
        ("after", "SUCCEEDED"),
    ]
    assert runner.output(execution.id, "fan(2:c)") == ["got c"]
    assert json.loads(runner.output(execution.id, "after")[0]) == ["got a", "got c"]


def test_with_param_from_an_output_parameter_in_a_dag(runner):
    gen = sh(
        "gen",
        """mkdir -p out; echo '[{"name": "x", "n": 1}, {"name": "y", "n": 2}]' > out/list""",
        outputs={"parameters": [{"name": "list", "valueFrom": {"path": "/out/list"}}]},
    )
    flow = dag(
        "main",
        call("gen", "gen"),
        call("each", "echo", depends="gen", withParam="{{tasks.gen.outputs.parameters.list}}",
             arguments=value("{{item.name}}={{item.n}}")),
        call("last", "echo", depends="each", arguments=value("done")),
    )
    execution = run(runner, "dynamic-dag", [flow, gen, echo()])

    assert status(execution) == "COMPLETED", execution.status_message
    assert phases(execution) == [
        ("gen", "SUCCEEDED"),
        ("each(0:n:1,name:x)", "SUCCEEDED"),
        ("each(1:n:2,name:y)", "SUCCEEDED"),
        ("last", "SUCCEEDED"),
    ]
    assert runner.output(execution.id, "each(1:n:2,name:y)") == ["y=2"]


def test_with_param_that_is_no_list_fails_the_execution(runner):
    main = {"name": "main", "steps": [
        [call("gen", "gen")],
        [call("fan", "echo", withParam="{{steps.gen.outputs.result}}", arguments=value("x"))],
    ]}
    execution = run(runner, "not-a-list", [main, sh("gen", "echo nope"), echo()])
    assert status(execution) == "DEAD"
    assert execution.status_message.startswith("step fan: withParam: ")
    assert phases(execution) == [("gen", "SUCCEEDED"), ("fan", "FAILED")]


def test_a_loops_outputs_are_a_json_list_for_the_steps_after_it(runner):
    square = sh(
        "square",
        "mkdir -p out; echo $(( {{inputs.parameters.n}} * {{inputs.parameters.n}} )) > out/sq",
        inputs={"parameters": [{"name": "n"}]},
        outputs={"parameters": [{"name": "sq", "valueFrom": {"path": "/out/sq"}}]},
    )
    main = {"name": "main", "steps": [
        [call("sweep", "square", withItems=[2, 3, 4],
              arguments={"parameters": [{"name": "n", "value": "{{item}}"}]})],
        [call("best", "echo", arguments=value("{{steps.sweep.outputs.parameters.sq}}"))],
    ]}
    execution = run(runner, "fan-in", [main, square, echo()])
    assert status(execution) == "COMPLETED", execution.status_message
    assert json.loads(runner.output(execution.id, "best")[0]) == ["4", "9", "16"]


def test_a_stop_during_a_retrys_back_off_ends_the_execution_at_once(runner):
    failing = sh("failing", "echo failed once; exit 1",
                 retryStrategy={"limit": 5, "backoff": {"duration": "1m"}})
    runner.register(workflow("backing-off", [steps("main", [("s", "failing")]), failing]))
    execution_id = runner.start(runner.configure("backing-off"))
    wait_for(
        lambda: any(d.attempt == 2 for d in runner.get(execution_id).step_details),
        30, "the second attempt to be announced",
    )
    started = time.monotonic()
    runner.client.stop_execution(execution_id)
    execution = runner.wait(execution_id, "STOPPED", timeout=20)
    assert time.monotonic() - started < 10  # not a minute: the back-off was cut short
    assert [(d.attempt, PHASE_NAME[d.phase]) for d in execution.step_details] == [
        (1, "FAILED"), (2, "SKIPPED")
    ]
    assert execution.step_details[1].message == "not retried: the execution is ending"


def test_a_stopped_execution_runs_its_exit_handler_then_ends_stopped(runner, tmp_path):
    """As `argo stop`: the running steps are stopped, then the exit handler runs with
    workflow.status Failed while the execution stays STOPPING (a second stop is
    refused), and it ends STOPPED."""
    release = tmp_path / "release"
    main = steps("main", [("long", "long")], [("never", "echo")])
    main["steps"][1][0]["arguments"] = value("unreachable")
    handler = steps("bye", [("report", "report")])
    report = sh(
        "report",
        f"echo 'status={{{{workflow.status}}}}'; "
        f"while [ ! -e {release} ]; do sleep 0.05; done; echo released",
    )
    long = sh("long", "echo working; sleep 60")
    document = json.loads(workflow("stopped-exit", [main, handler, long, report, echo()]))
    document["spec"]["onExit"] = "bye"
    runner.register(json.dumps(document))
    execution_id = runner.start(runner.configure("stopped-exit"))
    runner.wait_output(execution_id, "working")

    runner.client.stop_execution(execution_id)
    runner.wait_output(execution_id, "status=Failed")
    during = runner.get(execution_id)
    assert status(during) == "STOPPING"
    assert phases(during)[:2] == [("long", "STOPPED"), ("never", "SKIPPED")]
    with pytest.raises(TrainyardError) as caught:
        runner.client.stop_execution(execution_id)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "EXECUTION_NOT_STOPPABLE"
    release.touch()

    execution = runner.wait(execution_id, "STOPPED")
    assert phases(execution) == [
        ("long", "STOPPED"), ("never", "SKIPPED"), ("onExit.report", "SUCCEEDED")
    ]
    assert runner.output(execution_id, "onExit.report") == ["status=Failed", "released"]
    assert "running the exit handler (workflow status Failed)" in [
        text for _, stream, text in runner.logs(execution_id) if stream == "system"
    ]
    assert [h[0] for h in runner.history(execution_id)][-2:] == ["STOPPING", "STOPPED"]


def test_a_stopped_execution_without_an_exit_handler_stops_as_before(runner):
    main = steps("main", [("long", "long")], [("never", "echo")])
    main["steps"][1][0]["arguments"] = value("unreachable")
    long = sh("long", "echo working; sleep 60")
    runner.register(workflow("stopped-plain", [main, long, echo()]))
    execution_id = runner.start(runner.configure("stopped-plain"))
    runner.wait_output(execution_id, "working")

    runner.client.stop_execution(execution_id)
    execution = runner.wait(execution_id, "STOPPED")
    assert phases(execution) == [("long", "STOPPED"), ("never", "SKIPPED")]
    assert execution.step_details[1].message == "not started: the execution was stopped"
    system = [text for _, stream, text in runner.logs(execution_id) if stream == "system"]
    assert not any("exit handler" in text for text in system)
    assert [h[0] for h in runner.history(execution_id)][-2:] == ["STOPPING", "STOPPED"]


def test_the_exit_handler_reads_the_failed_steps_from_workflow_failures(runner):
    """{{workflow.failures}} is what Argo gives: the failed steps as a JSON list written
    as a quoted string, which a shell's echo prints as the list and a Python script
    reads with json.loads; steps that succeeded or were skipped are not in it."""
    main = steps("main", [("ok", "fine")], [("boom", "boom")], [("never", "fine")])
    handler = steps("bye", [("print", "print")], [("read", "read")])
    read = script("read", "import json\n"
                  "failures = json.loads({{workflow.failures}})\n"
                  "print(' '.join(f['displayName'] + ':' + f['phase'] for f in failures))\n")
    execution = run(
        runner,
        "failures",
        [main, handler, sh("fine", "echo fine"), sh("boom", "echo broke >&2; exit 3"),
         sh("print", "echo {{workflow.failures}}"), read],
        onExit="bye",
    )
    assert status(execution) == "DEAD"
    assert phases(execution) == [
        ("ok", "SUCCEEDED"), ("boom", "FAILED"), ("never", "SKIPPED"),
        ("onExit.print", "SUCCEEDED"), ("onExit.read", "SUCCEEDED"),
    ]
    boom = execution.step_details[1]
    [line] = runner.output(execution.id, "onExit.print")
    assert json.loads(line) == [{
        "displayName": "boom",
        "message": boom.message,
        "templateName": "boom",
        "phase": "Failed",
        "podName": json.loads(line)[0]["podName"],
        "finishedAt": boom.finish_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }]
    assert boom.message.startswith("exited with code 3")
    assert json.loads(line)[0]["podName"].startswith("process group ")
    assert runner.output(execution.id, "onExit.read") == ["boom:Failed"]


def test_workflow_failures_is_null_after_a_success_and_refused_outside_the_handler(runner):
    execution = run(
        runner, "no-failures",
        [sh("main", "echo fine"), sh("bye", "echo {{workflow.failures}}")], onExit="bye",
    )
    assert status(execution) == "COMPLETED", execution.status_message
    assert runner.output(execution.id, "onExit") == ["null"]

    execution = run(runner, "failures-early", [sh("main", "echo {{workflow.failures}}")])
    assert status(execution) == "DEAD"
    assert "{{workflow.failures}} has a value in the exit handler only" in (
        execution.status_message
    )


@pytest.mark.parametrize(("code", "ran"), [("exit 1", "SUCCEEDED"), ("true", "SKIPPED")])
def test_an_exit_handler_step_runs_when_workflow_failures_says_a_step_failed(
    runner, code, ran
):
    handler = steps("bye", [("alert", "alert")])
    handler["steps"][0][0]["when"] = "{{workflow.failures}} != null"
    execution = run(
        runner, "alerts", [sh("main", code), handler, sh("alert", "echo failed")],
        onExit="bye",
    )
    assert phases(execution)[-1] == ("onExit.alert", ran), execution.status_message
