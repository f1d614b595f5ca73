"""Template fidelity: what a SAP AI Core template says is what the server keeps and
shows: output artifact labels, step names as step details name them, label scalars as
written, 64-character ids, and an executables directory that serves every group with
every version it holds."""

from __future__ import annotations

import json

import grpc
import pytest
from workflow_helpers import SCENARIO, Runner, container, dag, python, steps, workflow

from client.client import TrainyardClient, TrainyardError
from server.domain.errors import InvalidArgument
from server.domain.templates import parse_template_text

pytestmark = pytest.mark.backends("sqlite", "postgresql")

LABELS = {"ext.ai.sap.com/framework": "sklearn", "ext.ai.sap.com/size": "10"}


def document(name: str = "exe", version: str = '"1.0"', extra_labels: tuple = ()) -> str:
    """A WorkflowTemplate in YAML, its label scalars written as given."""
    lines = [
        "apiVersion: argoproj.io/v1alpha1",
        "kind: WorkflowTemplate",
        "metadata:",
        f"  name: {name}",
        "  annotations:",
        '    scenarios.ai.sap.com/name: "Fidelity"',
        "    ai.sap.com/flag: true",
        "  labels:",
        "    scenarios.ai.sap.com/id: fidelity",
        f"    ai.sap.com/version: {version}",
        *(f"    {label}" for label in extra_labels),
        "spec:",
        "  entrypoint: main",
        "  templates:",
        "    - name: main",
        '      container: {image: "python:3.11-slim", command: ["true"]}',
    ]
    return "\n".join(lines) + "\n"


def refused(fn, *args) -> TrainyardError:
    with pytest.raises(TrainyardError) as caught:
        fn(*args)
    return caught.value


# ------------------------------------------------------------ scalars as written


def test_label_and_annotation_scalars_are_kept_as_written():
    text = document(version="1.10", extra_labels=("team: 007", "quoted: '1.0'", "big: 1e3"))
    [exe] = parse_template_text(text, "default")
    assert exe.version == "1.10"  # not 1.1
    assert exe.labels == {"team": "007", "quoted": "1.0", "big": "1e3"}
    # Elsewhere YAML's types are kept: the entrypoint's command stays a list.
    assert exe.spec["templates"][0]["container"]["command"] == ["true"]


def test_version_as_written_is_what_the_api_shows(stubs):
    from trainyard.v1 import executable_service_pb2 as exe_pb

    created = stubs.executables.CreateExecutable(
        exe_pb.CreateExecutableRequest(definition=document("versions", version="1.10"))
    ).executable
    assert created.version == "1.10"


# ------------------------------------------------------------------ 64-char ids


def test_ids_up_to_64_characters_are_accepted():
    long_id = "a" * 64
    [exe] = parse_template_text(document(long_id), "default")
    assert exe.id == long_id
    with pytest.raises(InvalidArgument) as caught:
        parse_template_text(document("a" * 65), "default")
    assert [v.field for v in caught.value.violations] == ["metadata.name"]
    assert "at most 64 characters" in caught.value.violations[0].description


# -------------------------------------------------------------- artifact labels


def labelled_workflow(labels: str) -> str:
    doc = json.loads(
        workflow(
            "labelled",
            [
                python(
                    "main",
                    "import sys, pathlib; p = pathlib.Path(sys.argv[1]); "
                    "p.parent.mkdir(parents=True, exist_ok=True); p.write_text('{}')",
                    outputs={
                        "artifacts": [
                            {"name": "model", "globalName": "model", "path": "/app/model/m.json"}
                        ]
                    },
                )
            ],
            annotations={
                "artifacts.ai.sap.com/model.kind": "model",
                "artifacts.ai.sap.com/model.labels": labels,
            },
        )
    )
    doc["spec"]["templates"][0]["container"]["args"] = ["{{outputs.artifacts.model.path}}"]
    return json.dumps(doc)


def test_output_artifacts_carry_the_labels_of_their_annotation(server):
    runner = Runner(server.address, resource_group="team-a")
    try:
        exe_id = runner.register(labelled_workflow(json.dumps(LABELS)))
        [spec] = runner.client.get_executable(exe_id).output_artifacts
        assert dict(spec.labels) == LABELS
        execution = runner.wait(runner.start(runner.configure(exe_id)))
        assert execution.status == 3, execution.status_message  # COMPLETED
        [output] = execution.output_artifacts
        artifact = runner.client.get_artifact(output.id)
        assert artifact.name == "model" and dict(artifact.labels) == LABELS
        assert dict(output.labels) == LABELS
    finally:
        runner.close()


@pytest.mark.parametrize("labels", ["not json", '["a"]', '{"bad key!": "v"}', '{"k": [1]}'])
def test_bad_labels_annotation_is_refused_naming_it(labels):
    with pytest.raises(InvalidArgument) as caught:
        parse_template_text(labelled_workflow(labels), "default")
    fields = {v.field for v in caught.value.violations}
    assert 'metadata.annotations["artifacts.ai.sap.com/model.labels"]' in fields


# ----------------------------------------------------- steps as step details name them


def test_executable_steps_are_the_step_details_names_in_order(server):
    text = workflow(
        "named-steps",
        [
            steps("main", [("first", "leaf")], [("inner", "pair"), ("side", "leaf")]),
            dag("pair", {"name": "a", "template": "leaf"},
                {"name": "b", "template": "other", "dependencies": ["a"]}),
            container("leaf", "true"),
            container("other", "true"),
        ],
    )
    runner = Runner(server.address)
    try:
        exe_id = runner.register(text)
        exe = runner.client.get_executable(exe_id)
        assert list(exe.steps) == ["first", "inner.a", "inner.b", "side"]
        assert [(s.name, s.template) for s in exe.workflow_steps] == [
            ("first", "leaf"), ("inner.a", "leaf"), ("inner.b", "other"), ("side", "leaf"),
        ]
        execution = runner.wait(runner.start(runner.configure(exe_id)))
        assert [d.name for d in execution.step_details] == list(exe.steps)
    finally:
        runner.close()


def test_executable_steps_carry_their_dag_edges(server):
    """Each workflow step names the steps it runs after: the previous group of a steps
    template (a parallel group shares it), a dag task's dependencies / depends, the
    caller's wait for a called template's first steps, and only direct ones; the exit
    handler runs after the main steps nothing else waits for."""
    document = json.loads(workflow(
        "dag-edges",
        [
            steps("main", [("prep", "leaf")], [("fit", "leaf"), ("lint", "leaf")],
                  [("inner", "graph")], [("report", "leaf")]),
            dag("graph",
                {"name": "a", "template": "leaf"},
                {"name": "b", "template": "leaf", "dependencies": ["a"]},
                {"name": "c", "template": "leaf", "depends": "a.Succeeded"},
                {"name": "d", "template": "leaf", "depends": "b && (c.Succeeded || c.Failed)"}),
            container("leaf", "true"),
            container("cleanup", "true"),
        ],
    ))
    document["spec"]["onExit"] = "cleanup"
    runner = Runner(server.address)
    try:
        exe = runner.client.get_executable(runner.register(json.dumps(document)))
        assert {s.name: list(s.after) for s in exe.workflow_steps} == {
            "prep": [],
            "fit": ["prep"],
            "lint": ["prep"],
            "inner.a": ["fit", "lint"],
            "inner.b": ["inner.a"],
            "inner.c": ["inner.a"],
            "inner.d": ["inner.b", "inner.c"],
            "report": ["inner.d"],
            "onExit": ["report"],
        }
    finally:
        runner.close()


# ------------------------------------------- the executables directory, every group


@pytest.fixture
def directory(tmp_path):
    path = tmp_path / "executables"
    path.mkdir()
    (path / "a-train.yaml").write_text(
        workflow("dir-train", [python("main", "print('trained')")])
    )
    return path


def test_the_directory_serves_every_resource_group(server_factory, directory, tmp_path):
    server = server_factory(executables_dir=directory)
    for group in ("default", "team-new"):
        runner = Runner(server.address, resource_group=group)
        try:
            listed = [(e.id, e.version) for e in runner.client.list_executables()]
            assert listed == [("dir-train", "1.0.0")], group
            assert runner.client.get_scenario(SCENARIO).id == SCENARIO
            assert [s.id for s in runner.client.list_scenarios()] == [SCENARIO]
            # A new team registers a dataset for the scenario and runs the executable.
            data = tmp_path / f"{group}.csv"
            data.write_text("x\n")
            runner.dataset(data.as_uri())
            execution = runner.wait(runner.start(runner.configure("dir-train")))
            assert runner.output(execution.id) == ["trained"], execution.status_message
        finally:
            runner.close()


def test_a_groups_own_executables_stay_its_own(server_factory, directory):
    server = server_factory(executables_dir=directory)
    with TrainyardClient(server.address, resource_group="team-a") as a, TrainyardClient(
        server.address, resource_group="team-b"
    ) as b:
        a.create_executable(workflow("a-only", [python("main", "pass")]))
        # A new version of a shared id: the group's, listed beside the shared one.
        bumped = workflow("dir-train", [python("main", "print('v2')")]).replace(
            '"ai.sap.com/version": "1.0.0"', '"ai.sap.com/version": "2.0.0"'
        )
        assert a.create_executable(bumped).version == "2.0.0"
        mine = [(e.id, e.version) for e in a.list_executables(all_versions=True)]
        assert mine == [("a-only", "1.0.0"), ("dir-train", "1.0.0"), ("dir-train", "2.0.0")]
        assert a.get_executable("dir-train").version == "2.0.0"
        theirs = [(e.id, e.version) for e in b.list_executables(all_versions=True)]
        assert theirs == [("dir-train", "1.0.0")]
        assert refused(b.get_executable, "a-only").code == grpc.StatusCode.NOT_FOUND
        # A changed definition under the shared version is refused, as for a group's own.
        changed = workflow("dir-train", [python("main", "print('changed')")])
        assert refused(a.create_executable, changed).code == grpc.StatusCode.ALREADY_EXISTS


def test_a_new_version_in_the_directory_loads_as_a_new_version(
    server_factory, directory, stubs_for
):
    (directory / "b-train-v2.yaml").write_text(
        workflow("dir-train", [python("main", "print('v2')")]).replace(
            '"ai.sap.com/version": "1.0.0"', '"ai.sap.com/version": "2.0.0"'
        )
    )
    server = server_factory(executables_dir=directory)
    with TrainyardClient(server.address, resource_group="team-x") as client:
        versions = [(e.id, e.version) for e in client.list_executables(all_versions=True)]
        assert versions == [("dir-train", "1.0.0"), ("dir-train", "2.0.0")]
        assert client.get_executable("dir-train").version == "2.0.0"
        assert client.get_executable("dir-train", "1.0.0").version == "1.0.0"


def test_the_directory_registers_the_outputs_of_templates_a_later_file_holds(
    server_factory, tmp_path
):
    """A templateRef to an executable of a file loaded after it: its output artifacts
    are the caller's, labelled from the caller's annotation."""
    path = tmp_path / "executables"
    path.mkdir()
    main = {"name": "main", "steps": [
        [{"name": "train", "templateRef": {"name": "z-lib", "template": "fit"}}],
    ]}
    (path / "a-uses.yaml").write_text(workflow("a-uses", [main], annotations={
        "artifacts.ai.sap.com/model.kind": "model",
        "artifacts.ai.sap.com/model.labels": json.dumps(LABELS),
    }))
    fit = python("fit", "pass", outputs={
        "artifacts": [{"name": "model", "globalName": "model", "path": "/app/m.json"}]
    })
    (path / "z-lib.yaml").write_text(workflow("z-lib", [fit], entrypoint="fit"))
    server = server_factory(executables_dir=path)
    with TrainyardClient(server.address) as client:
        [spec] = client.get_executable("a-uses").output_artifacts
        assert (spec.name, spec.step, dict(spec.labels)) == ("model", "fit", LABELS)
        assert list(client.get_executable("z-lib").output_artifacts[0].labels) == []
