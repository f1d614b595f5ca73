"""A bounded randomized soak: 32 clients doing random valid and invalid operations in
three resource groups for about 20 seconds. Afterwards: no INTERNAL was ever returned,
every execution reaches a final status (none stuck without a live process), no group
sees another's rows, and SQLite's integrity check passes."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from client.client import TrainyardClient, TrainyardError
from tests.workflow_helpers import FINAL, STATUS_NAME, python, wait_for, workflow

GROUPS = ["team-a", "team-b", "team-c"]
CLIENTS = 32
SECONDS = 20.0
BAD_CODES = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE"}

SHORT = workflow(
    "soak-short",
    [
        python(
            "main", "import time, os\nprint(os.environ['TRAINYARD_EXECUTION_ID'])\ntime.sleep(0.2)"
        )
    ],
    parameters={"n": "1"},
)
FAILING = workflow("soak-failing", [python("main", "raise SystemExit(3)")])


def test_randomized_soak(server_factory):
    server = server_factory(max_concurrent_executions=3, stop_grace_seconds=1.0)
    configs: dict[str, list[str]] = {}
    created: dict[str, set[str]] = {g: set() for g in GROUPS}
    bad: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    for group in GROUPS:
        with TrainyardClient(server.address, resource_group=group) as ty:
            ty.create_executable(SHORT)
            ty.create_executable(FAILING)
            configs[group] = [
                ty.create_configuration("short", "soak-short", "runtime-tests", {"n": 2}).id,
                ty.create_configuration("failing", "soak-failing", "runtime-tests").id,
            ]

    def client(seed: int) -> int:
        rng = random.Random(seed)
        group = GROUPS[seed % len(GROUPS)]
        calls = 0
        deadline = time.monotonic() + SECONDS
        with TrainyardClient(server.address, resource_group=group, timeout=30) as ty:
            while time.monotonic() < deadline:
                with lock:
                    mine = list(created[group])
                    others = [e for g, ids in created.items() if g != group for e in ids]
                target = rng.choice(
                    (mine or ["0000000000000000"]) * 3 + (others or ["ffffffffffffffff"])
                )
                op = rng.choice(
                    [
                        "create",
                        "create",
                        "get",
                        "list",
                        "stop",
                        "delete",
                        "bulk_stop",
                        "bulk_delete",
                        "bad_config",
                        "bad_artifact",
                        "history",
                        "logs",
                    ]
                )
                calls += 1
                try:
                    if op == "create":
                        execution = ty.create_execution(rng.choice(configs[group]))
                        with lock:
                            created[group].add(execution.id)
                    elif op == "get":
                        ty.get_execution(target)
                    elif op == "list":
                        for i, _ in enumerate(ty.list_executions(page_size=7)):
                            if i > 20:
                                break
                    elif op == "stop":
                        ty.stop_execution(target)
                    elif op == "delete":
                        ty.delete_execution(target)
                        with lock:
                            created[group].discard(target)
                    elif op == "bulk_stop":
                        ty.batch_stop(list({target, *rng.sample(mine, min(3, len(mine)))}))
                    elif op == "bulk_delete":
                        outcomes = ty.batch_delete(
                            list({target, *rng.sample(mine, min(3, len(mine)))})
                        )
                        with lock:
                            for o in outcomes:
                                if o.ok:
                                    created[group].discard(o.execution_id)
                    elif op == "bad_config":
                        ty.create_configuration("x", "soak-short", "runtime-tests", {"n": "two"})
                    elif op == "bad_artifact":
                        ty.create_artifact("", "relative/path", "runtime-tests")
                    elif op == "history":
                        ty.execution_history(target)
                    elif op == "logs":
                        list(ty.list_logs(target, limit=10))
                except TrainyardError as error:
                    if error.code.name in BAD_CODES:
                        with lock:
                            bad.append((op, error.code.name, error.message))
        return calls

    with ThreadPoolExecutor(CLIENTS) as pool:
        total = sum(pool.map(client, range(CLIENTS)))
    assert total > 500
    assert not bad, bad[:5]

    for group in GROUPS:
        with TrainyardClient(server.address, resource_group=group, timeout=30) as ty:

            def settled():
                return all(STATUS_NAME[e.status] in FINAL for e in ty.list_executions())

            wait_for(settled, timeout=120, what=f"every execution of {group} to be final")
            listed = {e.id for e in ty.list_executions()}
            others = {e for g, ids in created.items() if g != group for e in ids}
            assert not listed & others
            assert created[group] <= listed
            for execution_id in list(others)[:20]:
                try:
                    ty.get_execution(execution_id)
                    raise AssertionError("another group's execution is visible")
                except TrainyardError as error:
                    assert error.code.name == "NOT_FOUND"
    runtime = server.plane.runtime
    for ids in created.values():
        for execution_id in ids:  # the runtime holds nothing (no queue entry, no process)
            assert server.run_sync(runtime.inspect, execution_id) is None
    assert server.run_sync(server.plane.store.sync.integrity_check) == "ok"
