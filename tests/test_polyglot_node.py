"""The contract is polyglot: a Node.js client built from protos/ at run time (with
@grpc/grpc-js and @grpc/proto-loader, installed by `make test`) creates an execution,
follows its log to the end (dropping and resuming its connection half-way) and watches
its status.

The execution is driven from this test (lines through the log sink, transitions through
the control plane), as the runtime would. With a runtime that runs the sample steps,
drop ``drive`` and pass the configuration of a real run: the Node side is unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from streamkit import Driver, make_configuration, wait_for

from server.domain.models import LogStream, Status

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None, reason="Node.js is not installed: the polyglot client test needs `node`"
)


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The Node.js client's dependencies, installed from the lock file when missing
    (`make test` installs them first)."""
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        if NPM is None:
            pytest.fail("npm is needed to install tests/node (npm ci --prefix tests/node)")
        subprocess.run(
            [NPM, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            check=True, timeout=300,
        )
    return NODE_DIR / "follow.js"


def drive(server, execution_id: str) -> None:
    """Play the runtime: 200 lines over two steps and streams, then COMPLETED."""
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING, "step_started")
    for batch in range(4):
        driver.write(40, step="train", text=lambda i: f"epoch {i} loss {1 / (i + 1):.4f}")
        driver.write(10, step="train", stream=LogStream.STDERR)
        del batch
    driver.finish(Status.COMPLETED)


def test_node_client_creates_follows_and_watches_an_execution(server, stubs, node_client):
    configuration_id = make_configuration(stubs)
    process = subprocess.Popen(
        [NODE, str(node_client), server.address, str(ROOT / "protos"), configuration_id, "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        created = json.loads(process.stdout.readline())
        assert created["event"] == "created", created
        execution_id = created["execution_id"]
        assert created["status"] == "EXECUTION_STATUS_PENDING"
        following = json.loads(process.stdout.readline())
        assert following["event"] == "following", following
        stats = server.running.extra["broker"].stats
        wait_for(lambda: stats().log_subscriptions == 1 and stats().event_subscriptions >= 2,
                 what="the Node client's streams")
        drive(server, execution_id)
        done = json.loads(process.stdout.readline())
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read()
    assert done["event"] == "done", done
    stored = Driver(server, execution_id).stored()
    assert [(x["sequence"], x["step"], x["text"]) for x in done["lines"]] == [
        (row[1], row[3], row[5]) for row in stored
    ]
    assert len(done["lines"]) == 200
    assert done["reconnects"] == 1
    assert [(e["type"], e["to"]) for e in done["events"]] == [
        ("WATCH_EVENT_TYPE_SNAPSHOT", None),
        ("WATCH_EVENT_TYPE_TRANSITION", "EXECUTION_STATUS_RUNNING"),
        ("WATCH_EVENT_TYPE_TRANSITION", "EXECUTION_STATUS_COMPLETED"),
    ]
