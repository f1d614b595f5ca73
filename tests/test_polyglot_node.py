"""The contract is polyglot: a Node.js client built from protos/ at run time (with
@grpc/grpc-js and @grpc/proto-loader, installed by `make test`) creates an execution of
a real workflow, follows its log to the end (dropping and resuming its connection
half-way) and watches its status to COMPLETED, on a server with authentication on
(its bearer token from TRAINYARD_TOKEN).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from streamkit import wait_for

from client.client import TrainyardClient
from server.security.tokens import TokenFile
from tests.workflow_helpers import container, workflow

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
            check=True,
            timeout=300,
        )
    return NODE_DIR / "follow.js"


# Waits for the test's go-ahead (once the Node client follows), then prints 200 lines.
PRINTER = workflow(
    "node-printer",
    [
        container(
            "main",
            "python3",
            "-c",
            "import os, sys, time\n"
            "go = sys.argv[1]\n"
            "deadline = time.monotonic() + 60\n"
            "while not os.path.exists(go) and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            "for i in range(160):\n"
            "    print(f'epoch {i} loss {1 / (i + 1):.4f}', flush=True)\n"
            "    if i % 4 == 0:\n"
            "        print(f'warning {i}', file=sys.stderr, flush=True)\n",
            "{{workflow.parameters.go}}",
        )
    ],
    parameters={"go": ""},
)


def test_node_client_creates_follows_and_watches_an_execution(
    server_factory, node_client, tmp_path
):
    go = tmp_path / "go"
    tokens = TokenFile(tmp_path / "tokens.json")
    admin = tokens.add("setup", {"default": "admin"}, 3600.0)[1]
    bot = tokens.add("node-bot", {"default": "operator"}, 3600.0)[1]
    server = server_factory(auth_tokens=tokens.path)
    with TrainyardClient(server.address, token=admin) as ty:
        ty.create_executable(PRINTER)
        configuration_id = ty.create_configuration(
            "node", "node-printer", "runtime-tests", {"go": str(go)}
        ).id
    process = subprocess.Popen(
        [NODE, str(node_client), server.address, str(ROOT / "protos"), configuration_id, "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TRAINYARD_TOKEN": bot},
    )
    try:
        created = json.loads(process.stdout.readline())
        assert created["event"] == "created", created
        execution_id = created["execution_id"]
        assert created["status"] == "EXECUTION_STATUS_PENDING"
        following = json.loads(process.stdout.readline())
        assert following["event"] == "following", following
        stats = server.running.extra["broker"].stats
        wait_for(
            lambda: stats().log_subscriptions == 1 and stats().event_subscriptions >= 2,
            what="the Node client's streams",
        )
        go.touch()
        done = json.loads(process.stdout.readline())
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read()
    assert done["event"] == "done", done
    with TrainyardClient(server.address, token=admin) as ty:
        stored = list(ty.list_logs(execution_id))
    assert [(x["sequence"], x["step"], x["text"]) for x in done["lines"]] == [
        (line.sequence, line.step, line.text) for line in stored
    ]
    assert sum(1 for x in done["lines"] if x["stream"] == "LOG_STREAM_STDOUT") == 160
    assert sum(1 for x in done["lines"] if x["stream"] == "LOG_STREAM_STDERR") == 40
    assert done["reconnects"] == 1
    events = done["events"]
    assert events[0]["type"] == "WATCH_EVENT_TYPE_SNAPSHOT"
    transitions = [e["to"] for e in events if e["type"] == "WATCH_EVENT_TYPE_TRANSITION"]
    assert transitions[-1] == "EXECUTION_STATUS_COMPLETED"
    assert transitions in (
        ["EXECUTION_STATUS_RUNNING", "EXECUTION_STATUS_COMPLETED"],
        ["EXECUTION_STATUS_COMPLETED"],  # it was already RUNNING at the snapshot
    )
