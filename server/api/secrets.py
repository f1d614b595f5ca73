"""Handlers of the secret service: thin, values in, names and key names out."""

from __future__ import annotations

from server.api import convert
from server.api.context import caller, resource_group
from server.domain.secrets import SecretService as SecretUseCases
from trainyard.v1 import secret_service_pb2 as sec_pb
from trainyard.v1 import secret_service_pb2_grpc


class SecretService(secret_service_pb2_grpc.SecretServiceServicer):
    def __init__(self, secrets: SecretUseCases):
        self.secrets = secrets

    async def CreateSecret(self, request, context):
        secret = await self.secrets.create(
            resource_group(), request.name, dict(request.data), caller()
        )
        return sec_pb.CreateSecretResponse(secret=convert.secret_pb(secret))

    async def UpdateSecret(self, request, context):
        secret = await self.secrets.update(
            resource_group(), request.name, dict(request.data), caller()
        )
        return sec_pb.UpdateSecretResponse(secret=convert.secret_pb(secret))

    async def ListSecrets(self, request, context):
        page = await self.secrets.list(resource_group(), request.page_size, request.page_token)
        return sec_pb.ListSecretsResponse(
            secrets=[convert.secret_pb(s) for s in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def DeleteSecret(self, request, context):
        await self.secrets.delete(resource_group(), request.name, caller())
        return sec_pb.DeleteSecretResponse()
