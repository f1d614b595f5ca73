"""Races: stop and delete of one execution from many clients at once, and stop racing
the natural completion. Exactly one consistent outcome, a history that follows the
lifecycle table, never INTERNAL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from client.client import TrainyardClient, TrainyardError
from server.domain import lifecycle
from server.domain.models import Status
from tests.workflow_helpers import STATUS_NAME, Runner, python, workflow

pytestmark = pytest.mark.backends("sqlite", "postgresql")

ALLOWED_REFUSALS = {"FAILED_PRECONDITION", "NOT_FOUND"}

SLEEPER = workflow(
    "race-sleeper",
    [python("main", "import time\nprint('up', flush=True)\nwhile True: time.sleep(0.05)")],
)
QUICK = workflow("race-quick", [python("main", "print('done')")])


def assert_history_follows_the_table(history) -> None:
    previous = None
    for transition in history:
        status = Status(STATUS_NAME[transition.to_status])
        if previous is not None:
            assert lifecycle.can_transition(previous, status), (previous, status)
        previous = status


def hammer(address: str, calls: list) -> list[tuple[str, str]]:
    """Run (verb, execution id) calls from as many clients at once; (verb, outcome)."""
    barrier = threading.Barrier(len(calls))

    def one(call):
        verb, execution_id = call
        with TrainyardClient(address, timeout=30) as ty:
            barrier.wait(10)
            try:
                if verb == "stop":
                    ty.stop_execution(execution_id)
                else:
                    ty.delete_execution(execution_id)
                return verb, "OK"
            except TrainyardError as error:
                return verb, error.code.name

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


@pytest.fixture
def runner(server):
    r = Runner(server.address)
    yield r
    r.close()


def test_many_stops_and_deletes_of_one_running_execution(server, runner):
    config = runner.configure(runner.register(SLEEPER))
    execution_id = runner.start(config)
    runner.wait(execution_id, "RUNNING")
    runner.wait_output(execution_id, "up")
    outcomes = hammer(server.address, [("stop", execution_id)] * 8 + [("delete", execution_id)] * 8)
    codes = {code for _, code in outcomes}
    assert "INTERNAL" not in codes and "UNKNOWN" not in codes
    assert codes <= {"OK"} | ALLOWED_REFUSALS
    stops = [code for verb, code in outcomes if verb == "stop"]
    assert stops.count("OK") == 1  # exactly one stop moved it to STOPPING
    deletes = [code for verb, code in outcomes if verb == "delete"]
    # At most one delete wins (once the stop made it final, during the hammering).
    assert deletes.count("OK") <= 1, deletes
    if "OK" in deletes:
        # It won: the execution is gone, and every other delete was refused or late.
        assert set(deletes) - {"OK"} <= {"NOT_FOUND", "FAILED_PRECONDITION"}, deletes
        with pytest.raises(TrainyardError) as gone:
            runner.get(execution_id)
        assert gone.value.code.name == "NOT_FOUND"
        again = hammer(server.address, [("delete", execution_id)] * 8)
        assert [code for _, code in again] == ["NOT_FOUND"] * 8
    final = runner.wait(execution_id, "STOPPED", timeout=30) if "OK" not in deletes else None
    if final is not None:
        assert_history_follows_the_table(final.history)
        causes = [t.cause for t in final.history]
        assert causes.count("stop_requested") == 1
        # now that it is final, exactly one of many deletes wins
        again = hammer(server.address, [("delete", execution_id)] * 8)
        assert sorted(code for _, code in again) == ["NOT_FOUND"] * 7 + ["OK"]


def test_stop_racing_natural_completion(server, runner):
    config = runner.configure(runner.register(QUICK))
    for _ in range(10):
        execution_id = runner.start(config)
        outcomes = hammer(server.address, [("stop", execution_id)] * 4)
        codes = [code for _, code in outcomes]
        assert set(codes) <= {"OK", "FAILED_PRECONDITION"}
        assert codes.count("OK") <= 1
        final = runner.wait(execution_id)
        status = STATUS_NAME[final.status]
        if "OK" in codes:
            assert status == "STOPPED"  # a stop that was accepted always wins
        else:
            assert status == "COMPLETED"
        assert_history_follows_the_table(final.history)
        assert [t.sequence for t in final.history] == list(range(1, len(final.history) + 1))
