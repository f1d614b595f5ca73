"""The workflow walk and the planner: pure functions, no processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_helpers import container, dag, inputs, python, steps, workflow

from server.domain.errors import InvalidArgument
from server.domain.templates import load_directory, parse_template_text
from server.domain.workflow import step_names
from server.runtime.plan import PlanError, build_plan, late_key, resolve_late

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "executables"
WORK = Path("/work-dir/abc")


def executable(text: str):
    [parsed] = parse_template_text(text, "default")
    return parsed


def plan(text: str, parameters=None, urls=None):
    return build_plan(
        executable(text),
        parameters or {},
        urls or {},
        execution_id="abc",
        resource_group="team",
        work_dir=WORK,
    )


def test_samples_list_their_steps_in_workflow_order():
    executables = {e.id: e for e in load_directory(SAMPLES, "default")[0]}
    assert step_names(executables["iris-train"].spec) == ["train"]
    assert step_names(executables["iris-infer"].spec) == ["prepare", "score"]


def test_nested_templates_expand_in_place_with_qualified_names():
    text = workflow(
        "nested",
        [
            steps("main", [("first", "leaf")], [("inner", "pair"), ("side", "leaf")]),
            dag("pair", {"name": "a", "template": "leaf"},
                {"name": "b", "template": "leaf", "dependencies": ["a"]}),
            container("leaf", "true"),
        ],
    )
    result = plan(text)
    assert [(s.name, sorted(s.after)) for s in result.steps] == [
        ("first", []),
        ("inner.a", ["first"]),
        ("inner.b", ["first", "inner.a"]),
        ("side", ["first"]),
    ]
    assert result.step("inner.b").root == WORK / "steps" / "inner.b"


def test_parameters_flow_from_the_workflow_through_step_arguments():
    text = workflow(
        "params",
        [
            {"name": "main", "steps": [[{"name": "s", "template": "leaf", "arguments": {
                "parameters": [{"name": "x", "value": "{{workflow.parameters.p}}!"}]}}]]},
            container("leaf", "echo", "{{inputs.parameters.x}}", "{{inputs.parameters.y}}",
                      "{{workflow.name}}", "{{workflow.namespace}}", "{{ other.thing }}",
                      inputs={"parameters": [{"name": "x"}, {"name": "y", "default": "dy"}]}),
        ],
        parameters={"p": "default"},
    )
    assert plan(text, {"p": "bound"}).step("s").argv == [
        "echo", "bound!", "dy", "abc", "team", "{{ other.thing }}"
    ]


def test_unresolvable_placeholder_is_a_plan_error():
    text = workflow("bad", [container("main", "echo", "{{inputs.parameters.nope}}")])
    with pytest.raises(PlanError, match=r"cannot resolve \{\{inputs.parameters.nope\}\}"):
        plan(text)


def test_artifact_paths_stay_inside_the_step_root():
    text = workflow(
        "escape",
        [python("main", "print('{{inputs.artifacts.d.path}}')",
                inputs=inputs(artifacts={"d": "/../../etc/passwd"}))],
    )
    step = plan(text, urls={"d": "file:///x"}).step("main")
    assert step.inputs[0].path == WORK / "steps" / "main" / "etc" / "passwd"


LEAF = container(
    "leaf", "echo", "{{inputs.parameters.v}}", inputs={"parameters": [{"name": "v"}]}
)


def test_with_items_runs_the_call_once_per_item_named_as_argo_names_it():
    main = steps(
        "main",
        [("fan", "leaf")],
        [("last", "leaf")],
    )
    main["steps"][0][0].update(
        withItems=["a", {"lr": 0.1, "model": "x"}, 3],
        arguments={"parameters": [{"name": "v", "value": "{{item}}"}]},
    )
    main["steps"][1][0]["arguments"] = {"parameters": [{"name": "v", "value": "end"}]}
    leaf = LEAF
    text = workflow("loop", [main, leaf])
    assert step_names(executable(text).spec) == [
        "fan(0:a)", "fan(1:lr:0.1,model:x)", "fan(2:3)", "last"
    ]
    result = plan(text)
    assert [s.argv[1] for s in result.steps] == ["a", '{"lr":0.1,"model":"x"}', "3", "end"]
    assert result.step("last").after == {"fan(0:a)", "fan(1:lr:0.1,model:x)", "fan(2:3)"}


def test_item_keys_and_a_written_with_param_list():
    main = dag("main", {"name": "t", "template": "leaf", "withParam": '[{"k": "one"}, {"k": 2}]',
                        "arguments": {"parameters": [{"name": "v", "value": "k={{item.k}}"}]}})
    result = plan(workflow("param", [main, LEAF]))
    assert [(s.name, s.argv[1]) for s in result.steps] == [
        ("t(0:k:one)", "k=one"), ("t(1:k:2)", "k=2")
    ]


def test_artifact_sources_no_runtime_reads_are_refused_at_registration():
    """They used to load and then fail at start; one grammar refuses them up front."""
    doc = json.loads(workflow(
        "s3", [python("main", "pass", inputs=inputs(artifacts={"d": "/d"}))]
    ))
    doc["spec"]["templates"][0]["inputs"]["artifacts"][0]["s3"] = {"key": "x"}
    with pytest.raises(InvalidArgument) as caught:
        plan(json.dumps(doc))
    assert [v.field for v in caught.value.violations] == [
        "spec.templates[0].inputs.artifacts[0].s3"
    ]


def test_raw_artifacts_and_step_outputs_are_inputs():
    text = workflow(
        "passing",
        [
            {"name": "main", "steps": [
                [{"name": "make", "template": "make"}],
                [{"name": "use", "template": "use", "arguments": {"artifacts": [
                    {"name": "in", "from": "{{steps.make.outputs.artifacts.out}}"},
                    {"name": "note", "raw": {"data": "run {{workflow.name}}"}},
                ]}}],
            ]},
            python("make", "pass", outputs={"artifacts": [{"name": "out", "path": "/o"}]}),
            python("use", "pass", inputs=inputs(artifacts={"in": "/i", "note": "/n"})),
        ],
    )
    use = plan(text).step("use")
    sources = {i.name: i.source for i in use.inputs}
    assert (sources["in"].step, sources["in"].output) == ("make", "out")
    assert sources["note"].raw == "run abc"


def test_step_outputs_stay_for_the_runtime_under_their_step_names():
    gen = container("gen", "sh", "-c", "echo 3 > /tmp/n", outputs={"parameters": [
        {"name": "n", "valueFrom": {"path": "/tmp/n", "default": "0"}}]})
    inner = steps("inner", [("make", "gen")], [("use", "leaf")])
    inner["steps"][1][0]["arguments"] = {"parameters": [
        {"name": "v", "value": "{{steps.make.outputs.parameters.n}}:{{steps.make.outputs.result}}"}
    ]}
    inner["steps"][1][0]["when"] = "{{steps.make.outputs.parameters.n}} > 2"
    text = workflow("outs", [steps("main", [("in", "inner")]), inner, gen, LEAF])
    result = plan(text)
    use = result.step("in.use")
    assert use.argv[1] == (
        "{{steps.in.make.outputs.parameters.n}}:{{steps.in.make.outputs.result}}"
    )
    assert use.when == ("{{steps.in.make.outputs.parameters.n}} > 2",)
    make = result.step("in.make")
    assert [(p.name, p.path, p.default) for p in make.parameters] == [
        ("n", WORK / "steps" / "in.make" / "tmp" / "n", "0")
    ]
    assert make.keeps_result and not use.keeps_result
    values = {late_key("in.make", "parameters.n"): "3", late_key("in.make", "result"): "ok"}
    assert resolve_late(use.argv[1], values, "here") == "3:ok"
    with pytest.raises(PlanError, match=r"outputs.result\}\} has no value"):
        resolve_late(use.argv[1], {late_key("in.make", "parameters.n"): "3"}, "here")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{{workflow.status}}", "in the exit handler only"),
        ("{{workflow.failures}}", "in the exit handler only"),
    ],
)
def test_the_workflow_status_is_for_the_exit_handler(value, message):
    gen = container("gen", "true", outputs={"parameters": [
        {"name": "n", "valueFrom": {"path": "/tmp/n"}}]})
    main = steps("main", [("make", "gen")], [("use", "leaf")])
    main["steps"][1][0]["arguments"] = {"parameters": [{"name": "v", "value": value}]}
    with pytest.raises(PlanError, match=message):
        plan(workflow("bad-outs", [main, gen, LEAF]))


def test_depends_on_a_failure_marks_it_handled():
    text = workflow("handled", [
        dag("main", {"name": "a", "template": "leaf0"}, {"name": "b", "template": "leaf0"},
            {"name": "c", "template": "leaf0", "depends": "a.Failed || b"}),
        container("leaf0", "true"),
    ])
    result = plan(text)
    assert result.handled == {"a"}
    assert result.step("c").after == {"a", "b"}
