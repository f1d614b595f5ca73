"""The browser console in Chromium: first meaningful paint of the executions list with
100,000 executions in the group, and the log view following a step that prints 10,000
lines a second (every line kept, frame times measured in the browser).

    python -m bench.console [--rows 100000] [--rate 10000] [--seconds 5]

Each figure is printed beside a baseline measured in the same run: the list's paint
beside the same page over 1,000 executions, the frame times while following beside the
frame times of the same page with no lines arriving.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import free_port, trainyard_server, verdict
from bench.list_scale import seed
from client.client import TrainyardClient
from trainyard.v1 import configuration_pb2
from trainyard.v1 import configuration_service_pb2 as cfg
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import log_service_pb2 as lg

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Frame times: a requestAnimationFrame loop in the page records each frame's interval.
FRAMES_START = """() => {
  window.__frames = [];
  let last = performance.now();
  window.__framing = true;
  const tick = (now) => {
    window.__frames.push(now - last);
    last = now;
    if (window.__framing) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""
FRAMES_STOP = "() => { window.__framing = false; return window.__frames; }"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def first_rows_ms(browser, url: str, runs: int = 5) -> float:
    """Median over fresh pages of the time from navigation to the first rows painted."""
    times = []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        page.goto(url + "#/executions")
        page.wait_for_function("window.__firstRowsAt !== undefined", timeout=30_000)
        times.append(page.evaluate("window.__firstRowsAt"))
        context.close()
    return statistics.median(times)


def list_paint(browser, rows: int) -> tuple[float, float]:
    figures = []
    for count in (1_000, rows):
        with tempfile.TemporaryDirectory(prefix="trainyard-console-") as tmp:
            seed(Path(tmp), count)
            port = free_port()
            with trainyard_server("--console-address", f"127.0.0.1:{port}", data_dir=Path(tmp)):
                figures.append(first_rows_ms(browser, f"http://127.0.0.1:{port}/"))
    return figures[0], figures[1]


def printer(rate: int, seconds: float) -> str:
    total = int(rate * seconds)
    code = (
        "import sys, time\n"
        # Time for the page to open and follow before the first line.
        "time.sleep(4)\n"
        f"rate, total = {rate}, {total}\n"
        "start = time.monotonic()\n"
        "out = sys.stdout\n"
        "for i in range(total):\n"
        "    out.write(f'line {i} of the bench, a little text to make it a log line\\n')\n"
        "    if i % 100 == 99:\n"
        "        out.flush()\n"
        "        ahead = (i + 1) / rate - (time.monotonic() - start)\n"
        "        if ahead > 0:\n"
        "            time.sleep(ahead)\n"
        "out.flush()\n"
    )
    return json.dumps(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {
                "name": "console-bench-printer",
                "labels": {"scenarios.ai.sap.com/id": "bench", "ai.sap.com/version": "1.0.0"},
            },
            "spec": {
                "entrypoint": "main",
                "templates": [
                    {
                        "name": "main",
                        "container": {
                            "image": "python:3.11-slim",
                            "command": ["python3", "-c", code],
                        },
                    }
                ],
            },
        }
    )


def log_follow(browser, rate: int, seconds: float) -> tuple[float, float, int, int, float]:
    port = free_port()
    with trainyard_server("--console-address", f"127.0.0.1:{port}") as (address, _process):
        with TrainyardClient(address) as ty:
            executable = ty.call(
                ty.executables.CreateExecutable,
                exe.CreateExecutableRequest(definition=printer(rate, seconds)),
            ).executable.id
            configuration = ty.call(
                ty.configurations.CreateConfiguration,
                cfg.CreateConfigurationRequest(
                    configuration=configuration_pb2.Configuration(
                        name="bench", executable_id=executable, scenario_id="bench"
                    )
                ),
            ).configuration.id
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            page = context.new_page()
            url = f"http://127.0.0.1:{port}/"
            # Baseline: the same view, open on an execution that prints nothing yet.
            idle = ty.call(
                ty.executions.CreateExecution,
                ex.CreateExecutionRequest(configuration_id=configuration),
            ).execution.id
            ty.call(ty.executions.StopExecution, ex.StopExecutionRequest(execution_id=idle))
            page.goto(url + f"#/executions/{idle}/logs")
            page.wait_for_selector('[data-testid="log-state"]')
            page.evaluate(FRAMES_START)
            page.wait_for_timeout(int(seconds * 1000))
            idle_frames = page.evaluate(FRAMES_STOP)
            context.close()

            context = browser.new_context(viewport={"width": 1280, "height": 860})
            page = context.new_page()
            execution = ty.call(
                ty.executions.CreateExecution,
                ex.CreateExecutionRequest(configuration_id=configuration),
            ).execution.id
            page.goto(url + f"#/executions/{execution}/logs")
            page.wait_for_function("window.__logLines > 0", timeout=60_000)
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            before = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            page.evaluate(FRAMES_START)
            began = time.perf_counter()
            page.wait_for_selector('[data-state="ended"]', timeout=int(seconds * 1000) + 120_000)
            elapsed = time.perf_counter() - began
            frames = page.evaluate(FRAMES_STOP)
            after = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            busy = {
                k: round(after[k] - before.get(k, 0), 2)
                for k in ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "TaskDuration")
            }
            print(f"  browser main thread busy while following (s): {busy}", flush=True)
            shown = page.evaluate("window.__logLines")
            stored = 0
            token = ""
            while True:
                answer = ty.call(
                    ty.logs.ListLogs,
                    lg.ListLogsRequest(execution_id=execution, limit=10_000, page_token=token),
                )
                stored += len(answer.lines)
                token = answer.next_page_token
                if not token:
                    break
            context.close()
    return p95(frames), p95(idle_frames), shown, stored, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        small, big = list_paint(browser, args.rows)
        print(f"first rows painted, 1,000 executions       {small:7.1f} ms")
        print(
            f"first rows painted, {args.rows:,} executions   {big:7.1f} ms  "
            f"ratio {big / small:.2f}  target < 1000 ms: {verdict(big < 1000)}"
        )
        following, idle, shown, stored, elapsed = log_follow(browser, args.rate, args.seconds)
        print(f"log view frame time p95, idle                {idle:7.1f} ms")
        print(
            f"log view frame time p95, {args.rate:,} lines/s    {following:7.1f} ms  "
            f"ratio {following / idle:.2f}  target < 50 ms: {verdict(following < 50)}"
        )
        print(
            f"log view lines shown {shown:,} of {stored:,} stored "
            f"(in {elapsed:.1f}s): {verdict(shown == stored)}"
        )
        browser.close()


if __name__ == "__main__":
    main()
