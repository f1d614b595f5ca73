"""The in-step helper (client.metrics) in real subprocesses, and the metrics, compare and
plot commands of the CLI against a real server."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from conftest import ROOT, SAMPLES
from metricslib import Runs
from workflow_helpers import STATUS_NAME, Runner

from client.cli import main as cli
from server.domain.models import Status

IRIS_CSV = ROOT / "samples" / "data" / "iris.csv"


def url_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


@pytest.fixture
def runs(server):
    r = Runs(server)
    try:
        yield r
    finally:
        r.close()


def step_env(server, execution_id: str | None, address: str | None = None) -> dict[str, str]:
    """The environment the runtime gives a step (or none of the Trainyard part)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["PYTHONPATH"] = str(ROOT)
    if execution_id is not None:
        env["TRAINYARD_EXECUTION_ID"] = execution_id
        env["TRAINYARD_RESOURCE_GROUP"] = "default"
        env["TRAINYARD_ADDRESS"] = address or server.address
    return env


def run_python(code_or_file: str | Path, env: dict[str, str], cwd: Path, timeout: float = 120):
    args = [sys.executable, str(code_or_file)]
    if isinstance(code_or_file, str):
        args = [sys.executable, "-c", textwrap.dedent(code_or_file)]
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def sample_training_script(tmp_path: Path, learning_rate: str, epochs: str) -> Path:
    """The iris-train sample's step script with its placeholders filled in, as the
    runtime would run it."""
    template = yaml.safe_load((SAMPLES / "iris-train.yaml").read_text())
    source = template["spec"]["templates"][0]["script"]["source"]
    for placeholder, value in {
        "inputs.parameters.learning_rate": learning_rate,
        "inputs.parameters.epochs": epochs,
        "inputs.parameters.seed": "0",
        "inputs.artifacts.iris-data.path": str(IRIS_CSV),
        "outputs.artifacts.iris-model.path": str(tmp_path / "model" / "model.json"),
    }.items():
        source = source.replace("{{" + placeholder + "}}", value)
    assert "{{" not in source
    script = tmp_path / "train.py"
    script.write_text(source)
    return script


# ----------------------------------------------------------------------- helper


def test_sample_training_run_reports_loss_series_and_accuracy_through_the_helper(
    server, runs, tmp_path
):
    eid = runs.execution(0.5, status=Status.RUNNING)
    script = sample_training_script(tmp_path, "0.5", "12")
    result = run_python(script, step_env(server, eid), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "metrics are off" not in result.stderr and "Warning" not in result.stderr

    model = json.loads((tmp_path / "model" / "model.json").read_text())
    printed = re.findall(r"^epoch=(\d+) loss=([0-9.]+)", result.stdout, re.MULTILINE)
    assert len(printed) == 12

    (entry,) = runs.client.list_metrics([eid], series=True)
    loss = [m for m in entry.metrics if m.name == "loss"]
    accuracy = [m for m in entry.metrics if m.name == "accuracy"]
    assert [m.step for m in loss] == list(range(1, 13))
    assert [f"{m.value:.4f}" for m in loss] == [value for _, value in printed]
    assert loss[-1].value == model["metrics"]["loss"]  # bit for bit
    assert len(accuracy) == 1 and not accuracy[0].HasField("step")
    assert accuracy[0].value == model["metrics"]["accuracy"]


def test_real_training_runs_report_through_the_helper_and_compare_by_accuracy(server):
    """The journey end to end: the runtime runs the iris-train sample three times with
    different learning rates; each step reports its loss per epoch and its accuracy
    through client.metrics; they read back exactly as the model files record them, and
    the comparison puts the most accurate run first, marked best."""
    runner = Runner(server.address)
    try:
        data = runner.dataset(IRIS_CSV.as_uri(), name="iris", scenario="iris")
        ids = {
            lr: runner.start(
                runner.configure(
                    "iris-train",
                    {"learning_rate": lr, "epochs": 8},
                    {"iris-data": data},
                    scenario="iris",
                )
            )
            for lr in ("0.01", "0.2", "1.5")
        }
        accuracies = {}
        for eid in ids.values():
            execution = runner.wait(eid, timeout=120)
            assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
            [model] = execution.output_artifacts
            recorded = json.loads(url_path(model.url).read_text())["metrics"]
            (entry,) = runner.client.list_metrics([eid], series=True)
            loss = [m for m in entry.metrics if m.name == "loss"]
            [accuracy] = [m for m in entry.metrics if m.name == "accuracy"]
            assert [m.step for m in loss] == list(range(1, 9))
            assert loss[-1].value == recorded["loss"]
            assert accuracy.value == recorded["accuracy"]
            accuracies[eid] = accuracy.value

        result = runner.client.compare_executions(executable_id="iris-train", order_by="accuracy")
        rows = list(result.executions)
        assert [r.execution_id for r in rows] == sorted(
            accuracies, key=lambda e: (-accuracies[e], -list(ids.values()).index(e))
        )
        best = max(accuracies.values())
        assert [r.best for r in rows] == [accuracies[r.execution_id] == best for r in rows]
        assert result.best_value == best
    finally:
        runner.close()


def test_helper_batches_flushes_at_exit_and_drops_non_finite_values(server, runs, tmp_path):
    eid = runs.execution(status=Status.RUNNING)
    code = """
        import math
        from client.metrics import get_logger, log_custom_info, log_metric, set_tag

        logger = get_logger()
        for i in range(2500):
            log_metric("loss", 1.0 / (i + 1), step=i, labels={"split": "train"})
        assert logger.sent == 2000, logger.sent   # two full batches went during the loop
        log_metric("loss", math.nan, step=2500)  # dropped, with one warning
        log_metric("loss", math.inf, step=2501)
        set_tag("dataset", "iris-v2")
        log_custom_info("confusion_matrix", [[10, 0], [1, 9]])
        log_custom_info("summary", "converged")
        log_metric("accuracy", 0.9667)
    """
    result = run_python(code, step_env(server, eid), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("non-finite") == 1

    (entry,) = runs.client.list_metrics([eid], series=True)
    loss = [m for m in entry.metrics if m.name == "loss"]
    assert [m.step for m in loss] == list(range(2500))
    assert all(m.value == 1.0 / (m.step + 1) for m in loss)
    assert dict(loss[0].labels) == {"split": "train"}
    assert [m.value for m in entry.metrics if m.name == "accuracy"] == [0.9667]
    assert [(t.key, t.value) for t in entry.tags] == [("dataset", "iris-v2")]
    infos = {c.name: c for c in entry.custom_info}
    assert json.loads(infos["confusion_matrix"].value) == [[10, 0], [1, 9]]
    assert infos["summary"].value == "converged"


def test_helper_outside_a_step_does_nothing_after_one_warning(server, tmp_path):
    code = """
        from client.metrics import flush, log_metric, set_tag
        for i in range(5):
            log_metric("loss", 0.5, step=i)
        set_tag("a", "b")
        assert flush()
        print("trained")
    """
    result = run_python(code, step_env(server, None), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "trained"
    assert result.stderr.count("metrics are not recorded") == 1


def test_helper_never_stops_training_when_the_server_is_unreachable(server, tmp_path):
    code = """
        from client.metrics import log_metric
        for i in range(3000):
            log_metric("loss", 0.5, step=i)
        print("trained")
    """
    env = step_env(server, "0123456789abcdef", address="127.0.0.1:9")
    result = run_python(code, env, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "trained"
    assert result.stderr.count("not sent yet") == 1


def test_helper_refuses_a_bad_name_at_the_call(server, runs, tmp_path):
    eid = runs.execution(status=Status.RUNNING)
    code = """
        from client.metrics import log_metric
        try:
            log_metric("bad name!", 1.0)
        except ValueError as error:
            print("refused:", error)
    """
    result = run_python(code, step_env(server, eid), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: metric name 'bad name!'")


# -------------------------------------------------------------------------- CLI


def cli_run(server, capsys, *args: str) -> tuple[int, str, str]:
    code = cli(["--address", server.address, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def trained(runs):
    """Three completed runs with loss curves and accuracies, and one without accuracy."""
    ids = {}
    for lr, accuracy in ((0.05, 0.9), (0.5, 0.9667), (1.0, 0.9333)):
        eid = runs.execution(lr)
        runs.client.write_metrics(
            eid,
            [("loss", 1.0 / (1 + lr * e), e) for e in range(1, 21)] + [("accuracy", accuracy)],
            tags={"dataset": "iris"},
        )
        ids[lr] = eid
    ids[None] = runs.execution(2.0, status=Status.DEAD)
    runs.client.write_metrics(ids[None], [("loss", 5.0, 1)])
    return ids


def test_cli_compare_shows_executions_side_by_side_with_the_best_marked(server, trained, capsys):
    code, out, _ = cli_run(
        server, capsys, "compare", "--executable", "iris-train", "--by", "accuracy"
    )
    assert code == 0
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:4] == ["ID", "CONFIGURATION", "STATUS", "DURATION"]
    assert {"learning_rate", "epochs", "accuracy", "loss"} <= set(header)
    rows = lines[1:5]
    assert rows[0].startswith("*") and trained[0.5] in rows[0]
    assert [r for r in rows if r.startswith("*")] == [rows[0]]
    assert trained[None] in rows[3] and "DEAD" in rows[3]  # missing accuracy: last, shown
    assert "* best by accuracy (highest): 0.9667" in out


def test_cli_compare_json_by_ids(server, trained, capsys):
    ids = [trained[0.05], trained[1.0], trained[0.5]]
    code, out, _ = cli_run(server, capsys, "compare", *ids, "--by", "accuracy", "--json")
    assert code == 0
    data = json.loads(out)
    assert [e["execution_id"] for e in data["executions"]] == [ids[2], ids[1], ids[0]]
    assert [e.get("best", False) for e in data["executions"]] == [True, False, False]
    assert data["best_value"] == 0.9667


def test_cli_metrics_shows_latest_values_and_tags(server, trained, capsys):
    code, out, _ = cli_run(server, capsys, "metrics", trained[0.5])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "VALUE", "STEP", "TIME", "LABELS"]
    assert lines[1].split()[:3] == ["accuracy", "0.9667", "-"]
    assert lines[2].split()[:3] == ["loss", f"{1 / 11:.6g}", "20"]
    assert "tags: dataset=iris" in out


def test_cli_executions_get_has_a_metrics_section(server, trained, capsys):
    code, out, _ = cli_run(server, capsys, "executions", "get", trained[0.5])
    assert code == 0
    section = out.split("\nMetrics\n", 1)[1].splitlines()
    assert section[0].split() == ["accuracy", "0.9667"]
    assert section[1].split() == ["loss", f"{1 / 11:.6g}", "step", "20"]
    assert section[2] == "  tags: dataset=iris"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_cli_plot_writes_a_png_of_the_requested_size(server, trained, capsys, tmp_path):
    out_file = tmp_path / "curves.png"
    ids = [trained[0.05], trained[0.5], trained[1.0]]
    code, out, err = cli_run(
        server,
        capsys,
        "metrics",
        "plot",
        *ids,
        "--metric",
        "loss",
        "-o",
        str(out_file),
        "--width",
        "640",
        "--height",
        "480",
    )
    assert code == 0, err
    assert png_size(out_file) == (640, 480)
    assert out_file.stat().st_size > 5000  # lines were drawn, not an empty canvas
    assert str(out_file) in out


def test_cli_plot_refuses_a_metric_nobody_has(server, trained, capsys, tmp_path):
    code, _, err = cli_run(
        server,
        capsys,
        "metrics",
        "plot",
        trained[0.5],
        "--metric",
        "f1",
        "-o",
        str(tmp_path / "x.png"),
    )
    assert code == 1 and "no execution has points of metric 'f1'" in err
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_every_execution_of_an_executable(server, trained, capsys, tmp_path):
    out_file = tmp_path / "all.png"
    code, out, err = cli_run(
        server,
        capsys,
        "metrics",
        "plot",
        "--executable",
        "iris-train",
        "--metric",
        "loss",
        "-o",
        str(out_file),
        "--width",
        "300",
        "--height",
        "200",
    )
    assert code == 0, err
    assert png_size(out_file) == (300, 200)
    assert "loss of 4 execution(s)" in out
