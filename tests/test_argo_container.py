"""One template that uses Argo's flow control (a withParam loop over an earlier step's
output, output parameters, a retry, when, depends, the exit handler), every step in a
container of the test image through Podman."""

from __future__ import annotations

import json

import pytest

from tests.services.podman import IMAGE
from tests.workflow_helpers import PHASE_NAME, STATUS_NAME, Runner

COMBINED = f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: argo-in-containers
  labels:
    scenarios.ai.sap.com/id: "container-tests"
    ai.sap.com/version: "1.0"
spec:
  entrypoint: main
  onExit: bye
  templates:
    - name: main
      dag:
        tasks:
          - name: gen
            template: gen
          - name: fan
            template: square
            depends: gen
            withParam: "{{{{tasks.gen.outputs.result}}}}"
            arguments:
              parameters: [{{name: n, value: "{{{{item}}}}"}}]
          - name: flaky
            template: flaky
          - name: report
            template: show
            depends: "fan && flaky"
            when: "{{{{tasks.flaky.outputs.parameters.tries}}}} == 2"
            arguments:
              parameters:
                - name: v
                  value: "squares {{{{tasks.fan.outputs.parameters.sq}}}}"
          - name: never
            template: show
            depends: "flaky.Failed"
            arguments:
              parameters: [{{name: v, value: "not shown"}}]
    - name: gen
      container:
        image: {IMAGE}
        command: [/bin/sh, -c]
        args: ["echo '[2, 3]'"]
    - name: square
      inputs:
        parameters: [{{name: n}}]
      outputs:
        parameters:
          - name: sq
            valueFrom: {{path: /tmp/sq}}
      container:
        image: {IMAGE}
        command: [/bin/sh, -c]
        args: ["echo $(( {{{{inputs.parameters.n}}}} * {{{{inputs.parameters.n}}}} )) > /tmp/sq"]
    - name: flaky
      retryStrategy:
        limit: 2
        backoff: {{duration: "10ms"}}
      outputs:
        artifacts:
          - name: state
            path: /state
        parameters:
          - name: tries
            valueFrom: {{path: /state/tries}}
      container:
        image: {IMAGE}
        command: [/bin/sh, -c]
        args:
          - n=$(( $(cat /state/tries 2>/dev/null || echo 0) + 1 )); echo $n > /state/tries;
            echo "try $n"; [ $n -ge 2 ]
    - name: show
      inputs:
        parameters: [{{name: v}}]
      container:
        image: {IMAGE}
        command: [/bin/sh, -c]
        args: ["echo '{{{{inputs.parameters.v}}}}'"]
    - name: bye
      container:
        image: {IMAGE}
        command: [/bin/sh, -c]
        args: ["echo 'exit handler: {{{{workflow.status}}}}'; echo {{{{workflow.failures}}}}"]
"""


@pytest.fixture
def runner(server_factory, podman):
    server = server_factory(runtime="container", console_address="127.0.0.1:0")
    r = Runner(server.address)
    yield r
    r.close()


def test_argo_flow_control_in_containers(runner, podman):
    runner.register(COMBINED)
    execution = runner.wait(
        runner.start(runner.configure("argo-in-containers", scenario="container-tests")),
        timeout=120,
    )
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
    assert [(s.name, s.attempt, PHASE_NAME[s.phase]) for s in execution.step_details] == [
        ("gen", 1, "SUCCEEDED"),
        ("fan(0:2)", 1, "SUCCEEDED"),
        ("fan(1:3)", 1, "SUCCEEDED"),
        ("flaky", 1, "FAILED"),
        ("flaky", 2, "SUCCEEDED"),
        ("report", 1, "SUCCEEDED"),
        ("never", 1, "SKIPPED"),
        ("onExit", 1, "SUCCEEDED"),
    ]
    details = {(s.name, s.attempt): s for s in execution.step_details}
    assert dict(details[("fan(1:3)", 1)].output_parameters) == {"sq": "9"}
    assert runner.output(execution.id, "report") == ['squares ["4", "9"]']
    assert runner.output(execution.id, "flaky") == ["try 1", "try 2"]
    status, failures = runner.output(execution.id, "onExit")
    assert status == "exit handler: Succeeded"
    # The retried step's first attempt failed: Argo lists that pod too.
    [failure] = json.loads(failures)
    assert (failure["displayName"], failure["templateName"], failure["phase"]) == (
        "flaky",
        "flaky",
        "Failed",
    )
    assert failure["message"] == details[("flaky", 1)].message
    assert failure["podName"].startswith("container ")
    assert json.loads(runner.output(execution.id, "gen")[0]) == [2, 3]
    podman.wait_empty()
