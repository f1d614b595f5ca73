"""Handler of the audit service: the trail of changes, for admins."""

from __future__ import annotations

from server.api import convert
from server.api.context import caller, resource_group
from server.domain.audit import AuditFilter
from server.domain.service import ControlPlane
from trainyard.v1 import audit_service_pb2 as pb
from trainyard.v1 import audit_service_pb2_grpc


def _us(stamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


class AuditService(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(self, plane: ControlPlane):
        self.plane = plane

    async def ListAuditEvents(self, request, context):
        where = AuditFilter(
            principal=request.principal,
            action=request.action,
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            since_us=_us(request.start_time) if request.HasField("start_time") else 0,
            until_us=_us(request.end_time) if request.HasField("end_time") else 0,
        )
        page = await self.plane.list_audit_events(
            resource_group(),
            caller(),
            request.page_size,
            request.page_token,
            where=where,
            all_groups=request.all_resource_groups,
        )
        return pb.ListAuditEventsResponse(
            events=[convert.audit_event_pb(e) for e in page.items],
            next_page_token=page.next_page_token,
        )
