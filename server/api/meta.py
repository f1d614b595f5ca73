"""Handler of the meta service: version and capabilities."""

from __future__ import annotations

from server import __version__
from server.config import Settings
from trainyard.v1 import meta_service_pb2 as pb
from trainyard.v1 import meta_service_pb2_grpc


class MetaService(meta_service_pb2_grpc.MetaServiceServicer):
    def __init__(
        self,
        settings: Settings,
        capabilities: dict[str, bool],
        runtime: str,
        store: str,
        auth_enabled: bool = False,
        tls_enabled: bool = False,
        cluster=None,
        runtime_address: str = "",
    ):
        # () -> the runtime's cluster resources as last read (never blocks), or None
        self.cluster = cluster
        self.runtime_address = runtime_address
        self.settings = settings
        self.auth_enabled = auth_enabled
        self.tls_enabled = tls_enabled
        self.capabilities = capabilities
        self.runtime = runtime
        self.store = store
        self.console_address = ""  # set once the console listens

    async def GetMeta(self, request, context):
        resources = self.cluster() if self.cluster is not None else None
        return pb.GetMetaResponse(
            cluster_resources=None if resources is None else pb.ClusterResources(
                nodes=resources.nodes,
                cpus=resources.cpus,
                gpus=resources.gpus,
                memory_bytes=resources.memory_bytes,
                largest_node_cpus=resources.largest_node_cpus,
                largest_node_gpus=resources.largest_node_gpus,
                largest_node_memory_bytes=resources.largest_node_memory_bytes,
            ),
            runtime_address=self.runtime_address,
            version=__version__,
            api_version="v1",
            capabilities=pb.Capabilities(**self.capabilities),
            runtime=self.runtime,
            store=self.store,
            default_resource_group=self.settings.default_resource_group,
            max_concurrent_executions=self.settings.max_concurrent_executions,
            auth_enabled=self.auth_enabled,
            tls_enabled=self.tls_enabled,
            console_address=self.console_address,
        )
