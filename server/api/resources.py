"""Handlers of the scenario, executable, artifact and configuration services."""

from __future__ import annotations

from server.api import convert
from server.api.context import caller, resource_group
from server.domain.service import ControlPlane
from trainyard.v1 import (
    artifact_service_pb2 as art_pb,
)
from trainyard.v1 import (
    artifact_service_pb2_grpc,
    configuration_service_pb2_grpc,
    executable_service_pb2_grpc,
    scenario_service_pb2_grpc,
)
from trainyard.v1 import (
    configuration_service_pb2 as cfg_pb,
)
from trainyard.v1 import (
    executable_service_pb2 as exe_pb,
)
from trainyard.v1 import (
    scenario_service_pb2 as scn_pb,
)


class ScenarioService(scenario_service_pb2_grpc.ScenarioServiceServicer):
    def __init__(self, plane: ControlPlane):
        self.plane = plane

    async def GetScenario(self, request, context):
        scenario, count = await self.plane.get_scenario(resource_group(), request.scenario_id)
        return scn_pb.GetScenarioResponse(scenario=convert.scenario_pb(scenario, count))

    async def ListScenarios(self, request, context):
        page = await self.plane.list_scenarios(
            resource_group(), request.page_size, request.page_token
        )
        return scn_pb.ListScenariosResponse(
            scenarios=[convert.scenario_pb(s, n) for s, n in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )


class ExecutableService(executable_service_pb2_grpc.ExecutableServiceServicer):
    def __init__(self, plane: ControlPlane):
        self.plane = plane

    async def CreateExecutable(self, request, context):
        exe, created = await self.plane.register_executable(
            resource_group(), request.definition, caller()
        )
        return exe_pb.CreateExecutableResponse(
            executable=convert.executable_pb(exe, await self.plane.steps_of(exe)),
            created=created,
        )

    async def GetExecutable(self, request, context):
        exe = await self.plane.get_executable(
            resource_group(), request.executable_id, request.version
        )
        return exe_pb.GetExecutableResponse(
            executable=convert.executable_pb(exe, await self.plane.steps_of(exe))
        )

    async def ListExecutables(self, request, context):
        page = await self.plane.list_executables(
            resource_group(),
            request.page_size,
            request.page_token,
            scenario_id=request.scenario_id,
            all_versions=request.all_versions,
        )
        return exe_pb.ListExecutablesResponse(
            executables=[
                convert.executable_pb(e, await self.plane.steps_of(e)) for e in page.items
            ],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )


class ArtifactService(artifact_service_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, plane: ControlPlane):
        self.plane = plane

    async def CreateArtifact(self, request, context):
        a = request.artifact
        artifact = await self.plane.create_artifact(
            resource_group(),
            name=a.name,
            kind=convert.kind_from_pb(a.kind, "artifact.kind"),
            url=a.url,
            scenario_id=a.scenario_id,
            description=a.description,
            labels=dict(a.labels),
            request_id=request.request_id,
            caller=caller(),
        )
        return art_pb.CreateArtifactResponse(artifact=convert.artifact_pb(artifact))

    async def GetArtifact(self, request, context):
        artifact = await self.plane.get_artifact(resource_group(), request.artifact_id)
        return art_pb.GetArtifactResponse(artifact=convert.artifact_pb(artifact))

    async def ListArtifacts(self, request, context):
        page = await self.plane.list_artifacts(
            resource_group(),
            request.page_size,
            request.page_token,
            scenario_id=request.scenario_id,
            kind=convert.kind_from_pb(request.kind, "kind"),
            execution_id=request.execution_id,
            labels=dict(request.labels),
            name=request.name,
        )
        return art_pb.ListArtifactsResponse(
            artifacts=[convert.artifact_pb(a) for a in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )


class ConfigurationService(configuration_service_pb2_grpc.ConfigurationServiceServicer):
    def __init__(self, plane: ControlPlane):
        self.plane = plane

    async def CreateConfiguration(self, request, context):
        c = request.configuration
        configuration = await self.plane.create_configuration(
            resource_group(),
            name=c.name,
            executable_id=c.executable_id,
            executable_version=c.executable_version,
            scenario_id=c.scenario_id,
            parameters=[(b.key, b.value) for b in c.parameter_bindings],
            artifact_bindings=[(b.key, b.artifact_id) for b in c.input_artifact_bindings],
            request_id=request.request_id,
            caller=caller(),
        )
        return cfg_pb.CreateConfigurationResponse(
            configuration=convert.configuration_pb(configuration)
        )

    async def GetConfiguration(self, request, context):
        configuration = await self.plane.get_configuration(
            resource_group(), request.configuration_id
        )
        return cfg_pb.GetConfigurationResponse(
            configuration=convert.configuration_pb(configuration)
        )

    async def ListConfigurations(self, request, context):
        page = await self.plane.list_configurations(
            resource_group(),
            request.page_size,
            request.page_token,
            scenario_id=request.scenario_id,
            executable_id=request.executable_id,
        )
        return cfg_pb.ListConfigurationsResponse(
            configurations=[convert.configuration_pb(c) for c in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )
