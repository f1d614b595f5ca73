"""The Ray cluster the Ray runner's tests use (tests/services/ray_cluster.py): two nodes
on loopback only, jobs run on it, and stopping it leaves none of its processes."""

from __future__ import annotations

import ipaddress
import time

import psutil
import pytest

from tests.services.ray_cluster import RayCluster, start_ray_or_skip


def _listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    found = []
    for proc in processes:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return found


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_cluster_on_loopback_runs_jobs_on_both_nodes(ray_cluster: RayCluster):
    from ray.job_submission import JobStatus, JobSubmissionClient

    sockets = _listening(ray_cluster.processes())
    assert sockets, "the cluster's processes listen nowhere"
    assert [s for s in sockets if not _loopback(s[1])] == []
    assert ray_cluster.cluster_cpus() == 2

    client = JobSubmissionClient(ray_cluster.address)
    # Two jobs holding a CPU each at once: one per node.
    ids = [
        client.submit_job(entrypoint="python3 -c 'import time; time.sleep(1); print(42)'",
                          entrypoint_num_cpus=1)
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all(client.get_job_status(i).is_terminal() for i in ids):
        assert time.monotonic() < deadline, "jobs did not end"
        time.sleep(0.1)
    infos = [client.get_job_info(i) for i in ids]
    assert [i.status for i in infos] == [JobStatus.SUCCEEDED] * 2
    assert len({i.driver_node_id for i in infos}) == 2
    assert all("42" in client.get_job_logs(i).splitlines() for i in ids)


@pytest.mark.timeout(180)
def test_stop_ends_every_process_of_the_cluster_and_only_those():
    cluster = start_ray_or_skip(head_cpus=1, worker_cpus=0)
    try:
        started = cluster.processes()
        assert {"gcs_server", "raylet"} <= {p.name() for p in started}
    finally:
        cluster.stop()
    assert [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
