"""Shared pieces of the security tests: a token file with one token per role, and a
server (thread) with authentication on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from server.security.tokens import TokenFile

GROUP = "team-a"
OTHER = "team-b"


@dataclass
class Tokens:
    file: Path
    viewer: str
    operator: str
    admin: str
    other_operator: str  # operator of OTHER only
    expired: str  # operator of GROUP, expired

    def md(self, token: str, group: str = GROUP) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"), ("ai-resource-group", group))


def make_tokens(path: Path) -> Tokens:
    tokens = TokenFile(path)

    def add(name: str, roles: dict[str, str], **kw) -> str:
        return tokens.add(name, roles, kw.pop("expires_in", 3600.0), **kw)[1]

    return Tokens(
        file=path,
        viewer=add("vera", {GROUP: "viewer"}),
        operator=add("otto", {GROUP: "operator"}),
        admin=add("ada", {GROUP: "admin"}),
        other_operator=add("bob", {OTHER: "operator"}),
        expired=add("eve", {GROUP: "operator"}, expires_in=10.0, now=time.time() - 60),
    )


def retry_delay(error) -> float:
    """The RetryInfo delay (seconds) of an RpcError's status details; 0 when none."""
    from google.rpc import error_details_pb2, status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.ToTimedelta().total_seconds()
    return 0.0
