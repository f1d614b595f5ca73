"""The one table of which role every rpc needs.

Every rpc the server serves is named here, unary and streaming alike; an rpc missing
from the table is refused to everyone (deny by default). ``OPEN`` rpcs need no
credential at all (meta; health and reflection are outside the table and open too).

For an rpc that names one resource (``id_field``), a caller holding no role at all in
the request's resource group gets the same ``NOT_FOUND`` as for an id that exists
nowhere (``kind`` names the resource), so nobody learns what another group holds.

``step`` says what an execution's own step token may do with the rpc: ``execution``,
when every execution id of the request is the step's execution; ``configuration``,
when the configuration id is the step's configuration. Step tokens may call nothing
else.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.principal import ADMIN, OPERATOR, VIEWER

OPEN = "open"


@dataclass(frozen=True, slots=True)
class Rule:
    role: str
    kind: str = ""  # resource type of id_field, for NOT_FOUND
    id_field: str = ""
    step: str = ""  # "", "execution" or "configuration"


_SVC = "/trainyard.v1."

RULES: dict[str, Rule] = {
    _SVC + "MetaService/GetMeta": Rule(OPEN),
    # Scenarios
    _SVC + "ScenarioService/GetScenario": Rule(VIEWER, "scenario", "scenario_id"),
    _SVC + "ScenarioService/ListScenarios": Rule(VIEWER),
    # Executables: registering one is an admin's change
    _SVC + "ExecutableService/CreateExecutable": Rule(ADMIN),
    _SVC + "ExecutableService/GetExecutable": Rule(VIEWER, "executable", "executable_id"),
    _SVC + "ExecutableService/ListExecutables": Rule(VIEWER),
    # Artifacts
    _SVC + "ArtifactService/CreateArtifact": Rule(OPERATOR),
    _SVC + "ArtifactService/GetArtifact": Rule(VIEWER, "artifact", "artifact_id"),
    _SVC + "ArtifactService/ListArtifacts": Rule(VIEWER),
    # Configurations
    _SVC + "ConfigurationService/CreateConfiguration": Rule(OPERATOR),
    _SVC + "ConfigurationService/GetConfiguration": Rule(
        VIEWER, "configuration", "configuration_id", step="configuration"
    ),
    _SVC + "ConfigurationService/ListConfigurations": Rule(VIEWER),
    # Executions
    _SVC + "ExecutionService/CreateExecution": Rule(OPERATOR),
    _SVC + "ExecutionService/GetExecution": Rule(
        VIEWER, "execution", "execution_id", step="execution"
    ),
    _SVC + "ExecutionService/ListExecutions": Rule(VIEWER),
    _SVC + "ExecutionService/StopExecution": Rule(OPERATOR, "execution", "execution_id"),
    _SVC + "ExecutionService/DeleteExecution": Rule(OPERATOR, "execution", "execution_id"),
    _SVC + "ExecutionService/BatchStopExecutions": Rule(OPERATOR),
    _SVC + "ExecutionService/BatchDeleteExecutions": Rule(OPERATOR),
    _SVC + "ExecutionService/ListExecutionHistory": Rule(VIEWER, "execution", "execution_id"),
    _SVC + "ExecutionService/WatchExecutions": Rule(VIEWER, "execution", "execution_id"),
    # Logs
    _SVC + "LogService/TailLogs": Rule(VIEWER, "execution", "execution_id"),
    _SVC + "LogService/ListLogs": Rule(VIEWER, "execution", "execution_id"),
    # Metrics: steps write their own execution's
    _SVC + "MetricService/WriteMetrics": Rule(OPERATOR, step="execution"),
    _SVC + "MetricService/ListMetrics": Rule(VIEWER),
    _SVC + "MetricService/DeleteMetrics": Rule(OPERATOR, "execution", "execution_id"),
    _SVC + "MetricService/CompareExecutions": Rule(VIEWER),
    # Secrets: the group's credentials are an admin's (values are never returned)
    _SVC + "SecretService/CreateSecret": Rule(ADMIN),
    _SVC + "SecretService/UpdateSecret": Rule(ADMIN, "secret", "name"),
    _SVC + "SecretService/ListSecrets": Rule(ADMIN),
    _SVC + "SecretService/DeleteSecret": Rule(ADMIN, "secret", "name"),
    # The audit trail
    _SVC + "AuditService/ListAuditEvents": Rule(ADMIN),
}


def rule_of(method: str) -> Rule | None:
    """The rule of a full method name (``/trainyard.v1.X/Y``); None: refused."""
    return RULES.get(method)


def step_execution_ids(method: str, request) -> list[str]:
    """The execution ids a request names (what a step token is checked against)."""
    if method.endswith("/WriteMetrics"):
        return [entry.execution_id for entry in request.executions]
    return [request.execution_id]
