"""The browser console, in headless Chromium (Debian's) driven by Playwright, against a
real server: every screen's journey, with screenshots written to docs/console/.

Without Chromium or Playwright the tests are skipped with one line saying why; with
TRAINYARD_REQUIRE_SERVICES=1 they fail instead."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from server.console import STATIC_DIR
from server.domain.models import Status
from tests.authkit import GROUP, make_tokens
from tests.services import unavailable
from tests.streamkit import Driver, make_configuration, make_execution
from tests.workflow_helpers import SCENARIO, python, steps, workflow
from trainyard.v1 import (
    artifact_service_pb2,
    configuration_pb2,
    metric_pb2,
    metric_service_pb2_grpc,
)
from trainyard.v1 import configuration_service_pb2 as cfg
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import metric_service_pb2 as mt

ROOT = Path(__file__).resolve().parent.parent
# Screenshots of every screen: into docs/console/ (shown in docs/console.md) with
# `make screenshots`; into a temporary folder otherwise, so that a test run leaves the
# work tree as it was.
SHOTS_ENV = "TRAINYARD_SCREENSHOTS_DIR"
CHROMIUM = os.environ.get("TRAINYARD_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser():
    if not (STATIC_DIR / "index.html").is_file():
        pytest.fail("the console is not built: run `make console`", pytrace=False)
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        unavailable(f"Chromium not installed ({CHROMIUM}): apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"the playwright package is not installed: {exc}")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        except Exception as exc:  # noqa: BLE001 - reported as the reason to skip
            unavailable(f"Chromium did not start: {str(exc).splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"errors in the page: {errors}"


def console_url(server) -> str:
    return f"http://{server.running.extra['console'].address}/"


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory) -> Path:
    chosen = os.environ.get(SHOTS_ENV)
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_shots: list[Path] = []


@pytest.fixture(autouse=True)
def _screenshots(shots_dir):
    _shots.append(shots_dir)
    yield
    _shots.pop()


def shot(page, name: str) -> None:
    path = _shots[-1] / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def log_ended(page) -> None:
    state = page.get_by_test_id("log-state")
    expect(state).to_have_attribute("data-state", "ended", timeout=WAIT_MS)


def row(page, execution_id: str):
    return page.locator(f'tr[data-execution="{execution_id}"]')


# ------------------------------------------------------------------ executions


def test_list_updates_live_and_enables_by_the_table(server_factory, stubs_for, page):
    """PENDING -> RUNNING -> COMPLETED without a reload; Stop enabled while it runs,
    disabled once completed (Delete the other way round), as allowed_operations says."""
    server = server_factory(console_address="127.0.0.1:0", runtime="none")
    stubs = stubs_for(server)
    configuration = make_configuration(stubs)
    earlier = make_execution(stubs, configuration)
    page.goto(console_url(server) + "#/executions")
    expect(row(page, earlier)).to_have_attribute("data-status", "PENDING")
    expect(page.get_by_text("● live")).to_be_visible(timeout=WAIT_MS)

    execution = make_execution(stubs, configuration)
    listed = row(page, execution)
    expect(listed).to_have_attribute("data-status", "PENDING", timeout=WAIT_MS)
    stop = page.get_by_role("button", name=f"Stop {execution}")
    delete = page.get_by_role("button", name=f"Delete {execution}")
    expect(stop).to_be_enabled()
    expect(delete).to_be_disabled()

    driver = Driver(server, execution)
    driver.transition(Status.RUNNING, "step_started")
    expect(listed).to_have_attribute("data-status", "RUNNING", timeout=WAIT_MS)
    expect(stop).to_be_enabled()
    expect(delete).to_be_disabled()
    shot(page, "executions")

    driver.finish(Status.COMPLETED)
    expect(listed).to_have_attribute("data-status", "COMPLETED", timeout=WAIT_MS)
    expect(stop).to_be_disabled()
    expect(delete).to_be_enabled()


def test_multi_delete_shows_each_outcome(server_factory, stubs_for, page):
    server = server_factory(console_address="127.0.0.1:0", runtime="none")
    stubs = stubs_for(server)
    configuration = make_configuration(stubs)
    running, completed = make_execution(stubs, configuration), make_execution(stubs, configuration)
    server.run_sync(server.plane.store.force_status, running, Status.RUNNING)
    server.run_sync(server.plane.store.force_status, completed, Status.COMPLETED)
    page.goto(console_url(server) + "#/executions")
    expect(row(page, completed)).to_have_attribute("data-status", "COMPLETED")
    page.get_by_role("checkbox", name=f"Select {running}").check()
    page.get_by_role("checkbox", name=f"Select {completed}").check()
    page.get_by_role("button", name="Delete selected (2)").click()
    outcomes = page.get_by_role("region", name="Outcomes")
    expect(outcomes.locator(f'li[data-execution="{completed}"]')).to_have_attribute(
        "data-ok", "true"
    )
    refused = outcomes.locator(f'li[data-execution="{running}"]')
    expect(refused).to_have_attribute("data-ok", "false")
    expect(refused).to_contain_text("EXECUTION_NOT_DELETABLE")
    expect(refused).to_contain_text("RUNNING")
    expect(row(page, completed)).to_have_count(0, timeout=WAIT_MS)
    expect(row(page, running)).to_have_count(1)
    shot(page, "executions-bulk-outcomes")


def test_filters_and_paging(server_factory, stubs_for, page):
    server = server_factory(console_address="127.0.0.1:0", runtime="none")
    stubs = stubs_for(server)
    configuration = make_configuration(stubs)
    ids = [make_execution(stubs, configuration) for _ in range(55)]
    server.run_sync(server.plane.store.force_status, ids[0], Status.COMPLETED)
    page.goto(console_url(server) + "#/executions")
    expect(page.get_by_role("status").filter(has_text="55 executions")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(50)
    page.get_by_role("button", name="Next").click()
    expect(page.locator("tbody tr")).to_have_count(5)
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    page.get_by_label("Status").select_option(label="COMPLETED")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(row(page, ids[0])).to_be_visible()


# ------------------------------------------------------------------ one execution


def printing_executable(stubs) -> str:
    code = (
        "import time\n"
        "for i in range(40):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    # A small DAG: the printer first, then two checks side by side after it.
    definition = workflow(
        "console-printer",
        [
            steps("main", [("print", "printer")], [("check", "ok"), ("count", "ok")]),
            python("printer", code),
            python("ok", "print('ok')"),
        ],
    )
    return stubs.executables.CreateExecutable(
        exe.CreateExecutableRequest(definition=definition)
    ).executable.id


def test_execution_page_and_logs_as_printed(server_factory, stubs_for, page):
    """A real run: the page shows lines while the step prints them, then the overview
    (timeline, the steps' DAG in columns with exit codes) and Stop disabled once it
    completed."""
    server = server_factory(console_address="127.0.0.1:0")
    stubs = stubs_for(server)
    executable = printing_executable(stubs)
    configuration = stubs.configurations.CreateConfiguration(
        cfg.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name="printer", executable_id=executable, scenario_id=SCENARIO
            )
        )
    ).configuration.id
    execution = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=configuration)
    ).execution.id
    page.goto(console_url(server) + f"#/executions/{execution}/logs")
    log = page.get_by_role("log", name="Log lines")
    expect(log).to_contain_text("tick 0", timeout=WAIT_MS)
    # Seen while the step still prints: the execution is not completed yet.
    status = stubs.executions.GetExecution(ex.GetExecutionRequest(execution_id=execution))
    assert status.execution.status != 3 or "tick 39" not in log.inner_text()
    expect(log).to_contain_text("tick 39", timeout=WAIT_MS)
    expect(page.get_by_test_id("log-state")).to_have_attribute(
        "data-state", "ended", timeout=WAIT_MS
    )
    shot(page, "logs")
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_test_id("execution-status")).to_contain_text("COMPLETED", timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Delete", exact=True)).to_be_enabled()
    region = page.get_by_role("region", name="Steps")
    expect(region).to_contain_text("SUCCEEDED")
    expect(region).to_contain_text("exit code 0")
    # The DAG: the printer alone in the first column, both checks in the second,
    # each saying what it runs after.
    first = region.get_by_role("list", name="Column 1")
    second = region.get_by_role("list", name="Column 2")
    expect(first.get_by_test_id("dag-step")).to_have_count(1)
    expect(first.locator('[data-step="print"]')).to_contain_text("exit code 0")
    expect(second.get_by_test_id("dag-step")).to_have_count(2)
    for name in ("check", "count"):
        box = second.locator(f'[data-step="{name}"]')
        expect(box).to_contain_text("SUCCEEDED")
        expect(box).to_contain_text("after print")
    assert (
        first.bounding_box()["x"] + first.bounding_box()["width"] <= second.bounding_box()["x"]
    ), "the second column is right of the first"
    timeline = page.get_by_role("region", name="Timeline")
    expect(timeline).to_contain_text("COMPLETED")
    shot(page, "execution-overview")
    # A re-run, offered by the table once it has ended, is a new execution of it.
    page.get_by_role("button", name="Re-run").click()
    expect(page.get_by_role("link", name=execution)).to_be_visible(timeout=WAIT_MS)
    assert execution not in page.url


def test_overview_draws_the_dag_of_the_version_it_runs(server_factory, stubs_for, page):
    """An execution of an older version of an executable is drawn with that version's
    edges, not the newest's: 1.0.0 runs b after a, 2.0.0 runs them side by side."""
    server = server_factory(console_address="127.0.0.1:0")
    stubs = stubs_for(server)
    templates = [python("ok", "print('ok')")]
    first = json.loads(
        workflow("console-versions", [steps("main", [("a", "ok")], [("b", "ok")]), *templates])
    )
    second = json.loads(
        workflow("console-versions", [steps("main", [("a", "ok"), ("b", "ok")]), *templates])
    )
    second["metadata"]["labels"]["ai.sap.com/version"] = "2.0.0"
    for document in (first, second):
        stubs.executables.CreateExecutable(
            exe.CreateExecutableRequest(definition=json.dumps(document))
        )
    configuration = stubs.configurations.CreateConfiguration(
        cfg.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name="versions",
                executable_id="console-versions",
                executable_version="1.0.0",
                scenario_id=SCENARIO,
            )
        )
    ).configuration.id
    execution = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=configuration)
    ).execution.id
    page.goto(console_url(server) + f"#/executions/{execution}")
    region = page.get_by_role("region", name="Steps")
    second_column = region.get_by_role("list", name="Column 2")
    expect(second_column.locator('[data-step="b"]')).to_contain_text("after a", timeout=WAIT_MS)
    expect(region.get_by_role("list", name="Column 1").get_by_test_id("dag-step")).to_have_count(1)


def test_log_view_resumes_after_a_server_restart(server_factory, stubs_for, page):
    """Lines written before and after a restart of the server, each shown once, in
    order: the view reconnects from the last sequence number it received."""
    first = server_factory(console_address="127.0.0.1:0", runtime="none")
    port = first.running.extra["console"].port
    stubs = stubs_for(first)
    execution = make_execution(stubs)
    Driver(first, execution).transition(Status.RUNNING, "step_started")
    Driver(first, execution).write(30)
    page.goto(console_url(first) + f"#/executions/{execution}/logs")
    log = page.get_by_role("log", name="Log lines")
    expect(log).to_contain_text("line 30", timeout=WAIT_MS)
    first.stop()
    expect(page.get_by_test_id("log-state")).to_have_attribute(
        "data-state", "reconnecting", timeout=WAIT_MS
    )

    second = server_factory(console_address=f"127.0.0.1:{port}", runtime="none")
    driver = Driver(second, execution)
    driver.written = 30
    driver.write(40)
    expect(log).to_contain_text("line 70", timeout=WAIT_MS)
    page.wait_for_function("window.__logLastSeq === 70", timeout=WAIT_MS)
    assert page.evaluate("window.__logLines") == 70  # every line once: none lost, none twice
    shown = [
        int(s) for s in log.locator(".line").evaluate_all("els => els.map(e => e.dataset.seq)")
    ]
    assert shown == sorted(set(shown)) and shown[-1] == 70
    driver.finish()
    expect(page.get_by_test_id("log-state")).to_have_attribute(
        "data-state", "ended", timeout=WAIT_MS
    )
    page.get_by_label("Search").fill("line 4")
    expect(page.get_by_test_id("log-state")).to_contain_text("11 shown")


# ------------------------------------------------------------------ configurations


def test_a_parameter_typo_shows_the_servers_message_on_its_field(server_factory, stubs_for, page):
    server = server_factory(console_address="127.0.0.1:0", runtime="none")
    stubs = stubs_for(server)
    make_configuration(stubs)  # registers a data set to bind
    page.goto(console_url(server) + "#/configurations/new/iris-train")
    form = page.get_by_role("form", name="Create configuration")
    form.get_by_label("Name").fill("typo")
    learning_rate = form.get_by_label(re.compile(r"^learning_rate"))
    learning_rate.fill("0.1O")
    form.get_by_label(re.compile(r"^iris-data")).select_option(index=1)
    shot(page, "configuration-create")
    form.get_by_role("button", name="Create").click()
    # The server's own words, on that field.
    expected = _server_message(stubs, "learning_rate", "0.1O")
    error = form.locator('[id="error-param:learning_rate"]')
    expect(error).to_have_text(expected)
    expect(learning_rate).to_have_attribute("aria-invalid", "true")
    shot(page, "configuration-field-error")

    learning_rate.fill("0.2")
    form.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Configuration typo")).to_be_visible()
    expect(page.get_by_role("cell", name="0.2")).to_be_visible()
    page.get_by_role("button", name="Create execution").click()
    expect(page.get_by_test_id("execution-status")).to_contain_text("PENDING", timeout=WAIT_MS)
    shot(page, "execution-created")


def _server_message(stubs, key: str, value: str) -> str:
    from google.rpc import error_details_pb2, status_pb2

    from tests.helpers import rpc_error

    artifact = stubs.artifacts.ListArtifacts(artifact_service_pb2.ListArtifactsRequest()).artifacts[
        0
    ]
    error = rpc_error(
        stubs.configurations.CreateConfiguration,
        cfg.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name="typo",
                executable_id="iris-train",
                scenario_id="iris",
                parameter_bindings=[configuration_pb2.ParameterBinding(key=key, value=value)],
                input_artifact_bindings=[
                    configuration_pb2.InputArtifactBinding(key="iris-data", artifact_id=artifact.id)
                ],
            )
        ),
    )
    for k, v in error.trailing_metadata():
        if k == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(v).details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    found = error_details_pb2.BadRequest()
                    detail.Unpack(found)
                    return found.field_violations[0].description
    raise AssertionError("no BadRequest in the server's answer")


# ------------------------------------------------------------------ metrics and compare


def _metrics(stubs, execution_id: str, rate: float) -> None:
    series = [
        metric_pb2.Metric(name="accuracy", value=min(0.99, rate * step), step=step)
        for step in range(1, 11)
    ]
    metric_service_pb2_grpc.MetricServiceStub(stubs.channel).WriteMetrics(
        mt.WriteMetricsRequest(
            executions=[
                metric_pb2.ExecutionMetrics(
                    execution_id=execution_id,
                    metrics=series,
                    tags=[metric_pb2.Tag(key="team", value="vision")],
                    custom_info=[
                        metric_pb2.CustomInfo(
                            name="confusion_matrix",
                            value=json.dumps({"labels": ["a", "b"], "matrix": [[9, 1], [2, 8]]}),
                            format=metric_pb2.CUSTOM_INFO_FORMAT_JSON,
                        )
                    ],
                )
            ]
        )
    )


def _named_configuration(stubs, name: str, rate: str) -> str:
    dataset = stubs.artifacts.ListArtifacts(artifact_service_pb2.ListArtifactsRequest()).artifacts[
        0
    ]
    return stubs.configurations.CreateConfiguration(
        cfg.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name=name,
                executable_id="iris-train",
                scenario_id="iris",
                parameter_bindings=[
                    configuration_pb2.ParameterBinding(key="learning_rate", value=rate)
                ],
                input_artifact_bindings=[
                    configuration_pb2.InputArtifactBinding(key="iris-data", artifact_id=dataset.id)
                ],
            )
        )
    ).configuration.id


def test_metrics_and_compare_draw_their_charts(server_factory, stubs_for, page):
    server = server_factory(console_address="127.0.0.1:0", runtime="none")
    stubs = stubs_for(server)
    make_configuration(stubs)
    executions = {}
    for name, rate in (("slow-lr", 0.05), ("medium-lr", 0.08), ("fast-lr", 0.12)):
        configuration = _named_configuration(stubs, name, str(rate))
        executions[name] = make_execution(stubs, configuration)
        server.run_sync(server.plane.store.force_status, executions[name], Status.COMPLETED)
        _metrics(stubs, executions[name], rate)

    page.goto(console_url(server) + f"#/executions/{executions['fast-lr']}/metrics")
    expect(page.get_by_role("table", name="Latest metric values")).to_contain_text("accuracy")
    matrix = page.get_by_role("table", name="confusion_matrix")
    expect(matrix.locator("tbody tr")).to_have_count(2)
    expect(matrix).to_contain_text("8")
    expect(page.get_by_role("img", name="accuracy chart").locator("canvas")).to_have_count(1)
    shot(page, "metrics")

    page.goto(console_url(server) + "#/compare")
    form = page.get_by_role("form", name="Compare")
    form.get_by_label("Executable").select_option("iris-train")
    form.get_by_label("Best by metric").fill("accuracy")
    form.get_by_role("button", name="Compare").click()
    table = page.get_by_role("table", name="Compared executions")
    best = table.locator('tr[data-best="true"]')
    expect(best).to_have_count(1)
    expect(best).to_contain_text("fast-lr")
    chart = page.get_by_role("img", name="accuracy chart")
    expect(chart).to_have_attribute("data-series", "3")
    expect(chart.locator("canvas")).to_have_count(1)
    legend = chart.locator(".u-legend")
    for name in executions:
        expect(legend).to_contain_text(name)
    shot(page, "compare")


# ------------------------------------------------------------------ catalog, groups, sign-in


def test_catalog_screens(server_factory, stubs_for, page):
    server = server_factory(console_address="127.0.0.1:0", runtime="none")
    stubs = stubs_for(server)
    make_configuration(stubs)
    page.goto(console_url(server) + "#/executables")
    page.get_by_role("link", name="iris-train").click()
    parameters = page.get_by_role("table", name="Parameters")
    expect(parameters).to_contain_text("learning_rate")
    expect(parameters).to_contain_text("float")
    expect(parameters).to_contain_text("0.1")
    expect(page.get_by_role("region", name="Steps")).to_be_visible()
    shot(page, "executable")
    page.get_by_role("link", name="Scenarios").click()
    expect(page.get_by_role("table", name="Scenarios")).to_contain_text("iris")
    page.get_by_role("link", name="Artifacts").click()
    expect(page.get_by_role("table", name="Artifacts")).to_contain_text("iris")
    shot(page, "artifacts")
    page.get_by_role("link", name="Configurations").click()
    expect(page.get_by_role("table", name="Configurations")).to_contain_text("iris-train")


def test_resource_group_selector_and_sign_in(server_factory, stubs_for, page, tmp_path):
    tokens = make_tokens(tmp_path / "tokens.json")
    server = server_factory(
        console_address="127.0.0.1:0",
        runtime="none",
        auth_tokens=tokens.file,
        default_resource_group=GROUP,
    )
    stubs = stubs_for(server)
    md = tokens.md(tokens.admin)
    stubs.executables.CreateExecutable(
        exe.CreateExecutableRequest(
            definition=(ROOT / "samples" / "executables" / "iris-train.yaml").read_text()
        ),
        metadata=md,
    )
    page.goto(console_url(server))
    form = page.get_by_role("form", name="Sign in")
    expect(form).to_be_visible()
    shot(page, "sign-in")
    form.get_by_label("Token").fill("not-a-token")
    form.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    form.get_by_label("Token").fill(tokens.viewer)
    form.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    page.get_by_role("link", name="Executables").click()
    expect(page.get_by_role("table", name="Executables")).to_contain_text("iris-train")
    # Another group: the viewer has no role there, and sees nothing of it.
    page.get_by_label("Resource group").fill("team-b")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_role("alert")).to_contain_text("PERMISSION_DENIED", ignore_case=True)


def test_narrow_window_is_readable(server_factory, stubs_for, browser):
    server = server_factory(console_address="127.0.0.1:0", runtime="none")
    stubs = stubs_for(server)
    make_execution(stubs)
    context = browser.new_context(viewport={"width": 390, "height": 800})
    narrow = context.new_page()
    narrow.goto(console_url(server) + "#/executions")
    expect(narrow.locator("tbody tr")).to_have_count(1)
    # Nothing wider than the window but the table's own scroll box.
    overflow = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    narrow.keyboard.press("Tab")
    focused = narrow.evaluate("document.activeElement.textContent")
    assert focused == "Trainyard"
    shot(narrow, "narrow")
    context.close()
