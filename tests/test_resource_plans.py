"""Resource plans: ``ai.sap.com/resourcePlan`` and a container's ``resources`` become
each step's CPUs, memory and GPUs; an unknown plan is refused at registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_helpers import container, dag, workflow

from server.config import parse_args
from server.domain.resources import (
    DEFAULT_PLANS,
    PlanFileError,
    Resources,
    load_plan_file,
    parse_cpu,
    parse_memory,
)
from server.domain.templates import parse_template_text
from server.runtime.plan import PlanError, build_plan
from tests.conftest import group
from tests.helpers import details, rpc_error
from trainyard.v1 import executable_service_pb2 as exe_pb

GIB = 1024**3


def with_plan(template: dict, plan: str) -> dict:
    """``template`` with SAP AI Core's resource plan label (at pod level)."""
    return {**template, "metadata": {"labels": {"ai.sap.com/resourcePlan": plan}}}


def with_labels(template: dict, **labels: str) -> dict:
    """``template`` with plan labels given by their last word (``instanceType=...``)."""
    return {
        **template,
        "metadata": {"labels": {f"ai.sap.com/{key}": value for key, value in labels.items()}},
    }


def with_resources(template: dict, **sections: dict) -> dict:
    body = dict(template["container"], resources=sections)
    return {**template, "container": body}


def build(text: str, plans=None, parameters=None):
    [exe] = parse_template_text(text, "default")
    return build_plan(
        exe, parameters or {}, {}, execution_id="e1", resource_group="default",
        work_dir=Path("/w"), plans=plans,
    )


def register(stubs, text: str, metadata=()):
    return stubs.executables.CreateExecutable(
        exe_pb.CreateExecutableRequest(definition=text), metadata=metadata
    ).executable


# ------------------------------------------------------------------ the table


def test_default_plans_are_sap_ai_cores():
    assert DEFAULT_PLANS["starter"] == Resources(cpus=1, memory_bytes=3 * GIB)
    assert DEFAULT_PLANS["basic"] == Resources(cpus=3, memory_bytes=11 * GIB)
    assert DEFAULT_PLANS["basic.8x"] == Resources(cpus=31, memory_bytes=116 * GIB)
    assert DEFAULT_PLANS["train.l"] == Resources(cpus=7, memory_bytes=55 * GIB, gpus=1)
    assert DEFAULT_PLANS["infer.s"].gpus == DEFAULT_PLANS["infer.m"].gpus == 1
    assert DEFAULT_PLANS["infer.l"] == Resources(cpus=15, memory_bytes=58 * GIB, gpus=1)


@pytest.mark.parametrize(
    ("text", "cores"), [("2", 2.0), ("500m", 0.5), ("0.25", 0.25), (3, 3.0)]
)
def test_cpu_quantities(text, cores):
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("text", "size"),
    [("3Gi", 3 * GIB), ("512Mi", 512 * 2**20), ("1G", 10**9), ("1e9", 10**9),
     ("128974848", 128974848), ("100k", 100_000)],
)
def test_memory_quantities(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1Gi", "3GB", "0"])
def test_bad_memory_quantities_are_refused(text):
    with pytest.raises(ValueError):
        parse_memory(text)


def test_plan_file_adds_and_replaces_plans(tmp_path):
    path = tmp_path / "plans.yaml"
    path.write_text("tiny: {cpu: 250m, memory: 64Mi}\nstarter: {cpu: 2, memory: 4Gi, gpu: 0}\n")
    plans = load_plan_file(path)
    assert plans["tiny"] == Resources(cpus=0.25, memory_bytes=64 * 2**20)
    assert plans["starter"] == Resources(cpus=2, memory_bytes=4 * GIB)
    assert plans["train.l"] == DEFAULT_PLANS["train.l"]


@pytest.mark.parametrize(
    ("text", "named"),
    [("tiny: {cpu: many}\n", "'tiny'"), ("tiny: {cpus: 1}\n", "unknown keys cpus"),
     ("- a\n", "must map plan names"), ("tiny: {memory: 1GB}\n", "'tiny'")],
)
def test_bad_plan_file_is_refused_naming_the_entry(tmp_path, text, named):
    path = tmp_path / "plans.yaml"
    path.write_text(text)
    with pytest.raises(PlanFileError, match=named):
        load_plan_file(path)


def test_resource_plans_flag():
    assert parse_args(["--resource-plans", "p.yaml"]).resource_plans_file == Path("p.yaml")
    assert parse_args([]).resource_plans_file is None


# ------------------------------------------------------------------ the planner


def test_planned_steps_carry_their_plans_resources():
    text = workflow(
        "plans",
        [
            dag("main", {"name": "prep", "template": "prep"},
                {"name": "fit", "template": "fit", "dependencies": ["prep"]},
                {"name": "free", "template": "free"}),
            with_plan(container("prep", "true"), "basic"),
            with_resources(
                with_plan(container("fit", "true"), "train.l"),
                limits={"cpu": "2", "nvidia.com/gpu": 2},
                requests={"memory": "8Gi", "cpu": "1"},
            ),
            container("free", "true"),
        ],
    )
    plan = build(text)
    assert plan.step("prep").resources == DEFAULT_PLANS["basic"]
    # The container's limits (else requests) replace the plan's values of that kind.
    assert plan.step("fit").resources == Resources(cpus=2, memory_bytes=8 * GIB, gpus=2)
    assert plan.step("free").resources == Resources()


def test_a_calling_templates_plan_applies_to_its_steps():
    text = workflow(
        "inherit",
        [with_plan(dag("main", {"name": "a", "template": "leaf"}), "infer.s"),
         container("leaf", "true")],
    )
    assert build(text).step("a").resources == DEFAULT_PLANS["infer.s"]


def test_a_plan_given_as_a_parameter_is_looked_up_at_start():
    text = workflow(
        "param-plan",
        [with_plan(container("main", "true"), "{{workflow.parameters.plan}}")],
        parameters={"plan": "starter"},
    )
    assert build(text).step("main").resources == DEFAULT_PLANS["starter"]
    with pytest.raises(PlanError, match="unknown resource plan 'huge'"):
        build(text, parameters={"plan": "huge"})


def test_the_planner_uses_the_servers_table():
    text = workflow("custom", [with_plan(container("main", "true"), "tiny")])
    tiny = Resources(cpus=0.5, memory_bytes=2**30)
    assert build(text, plans={"tiny": tiny}).step("main").resources == tiny


def test_an_instance_type_is_looked_up_in_the_same_table():
    """SAP AI Core's instance types are listed per tenant: the plan file adds them."""
    text = workflow(
        "instance",
        [dag("main", {"name": "a", "template": "leaf"}),
         with_labels(container("leaf", "true"), instanceType="g5.xlarge")],
    )
    g5 = Resources(cpus=4, memory_bytes=16 * GIB, gpus=1)
    assert build(text, plans={**DEFAULT_PLANS, "g5.xlarge": g5}).step("a").resources == g5


# ------------------------------------------------------------------ through the API


def test_executable_shows_each_steps_plan_and_resources(stubs):
    text = workflow(
        "shown",
        [
            dag("main", {"name": "prep", "template": "prep"},
                {"name": "fit", "template": "fit", "dependencies": ["prep"]}),
            with_plan(container("prep", "true"), "basic"),
            with_resources(container("fit", "true"), limits={"cpu": "500m", "memory": "1Gi"}),
        ],
    )
    exe = register(stubs, text)
    assert list(exe.steps) == ["prep", "fit"]
    prep, fit = exe.workflow_steps
    assert (prep.name, prep.template, prep.resource_plan) == ("prep", "prep", "basic")
    assert (prep.cpus, prep.memory_bytes, prep.gpus) == (3.0, 11 * GIB, 0)
    assert (fit.name, fit.resource_plan, fit.cpus, fit.memory_bytes) == ("fit", "", 0.5, GIB)
    got = stubs.executables.GetExecutable(exe_pb.GetExecutableRequest(executable_id="shown"))
    assert got.executable.workflow_steps == exe.workflow_steps


def test_unknown_plan_is_refused_at_registration_naming_the_label(stubs):
    text = workflow("unknown-plan", [with_plan(container("main", "true"), "gigantic")])
    error = rpc_error(register, stubs, text, group("plans"))
    assert error.code().name == "INVALID_ARGUMENT"
    found = details(error)
    assert found["reason"] == "RESOURCE_PLAN_UNKNOWN"
    field = 'spec.templates[0].metadata.labels["ai.sap.com/resourcePlan"]'
    assert "unknown resource plan 'gigantic'" in found["fields"][field]
    assert "starter" in found["fields"][field]
    listed = stubs.executables.ListExecutables(
        exe_pb.ListExecutablesRequest(), metadata=group("plans")
    )
    assert "unknown-plan" not in {e.id for e in listed.executables}  # nothing half-written


def test_an_unknown_instance_type_or_both_labels_are_refused_naming_the_label(stubs):
    unknown = workflow(
        "unknown-type", [with_labels(container("main", "true"), instanceType="p9.huge")]
    )
    found = details(rpc_error(register, stubs, unknown))
    assert found["reason"] == "RESOURCE_PLAN_UNKNOWN"
    field = 'spec.templates[0].metadata.labels["ai.sap.com/instanceType"]'
    assert "unknown instance type 'p9.huge'" in found["fields"][field]
    assert "--resource-plans" in found["fields"][field]

    both = workflow(
        "both-labels",
        [with_labels(container("main", "true"), resourcePlan="starter", instanceType="basic")],
    )
    found = details(rpc_error(register, stubs, both))
    assert found["reason"] == "INVALID_ARGUMENT"
    assert found["fields"] == {
        field: "give ai.sap.com/resourcePlan or ai.sap.com/instanceType, not both"
    }


def test_bad_resource_quantity_is_refused_naming_the_field(stubs):
    text = workflow(
        "bad-qty", [with_resources(container("main", "true"), limits={"memory": "lots"})]
    )
    error = rpc_error(register, stubs, text)
    found = details(error)
    assert found["reason"] == "INVALID_ARGUMENT"
    field = 'spec.templates[0].container.resources.limits["memory"]'
    assert "memory quantity" in found["fields"][field]


def test_plan_file_plans_are_known_to_the_server(server_factory, stubs_for, tmp_path):
    path = tmp_path / "plans.yaml"
    path.write_text(json.dumps({"tiny": {"cpu": "250m", "memory": "64Mi"}}))
    stubs = stubs_for(server_factory(resource_plans_file=path))
    exe = register(stubs, workflow("tiny-plan", [with_plan(container("main", "true"), "tiny")]))
    [step] = exe.workflow_steps
    assert (step.resource_plan, step.cpus, step.memory_bytes) == ("tiny", 0.25, 64 * 2**20)
