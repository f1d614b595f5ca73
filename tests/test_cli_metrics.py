"""`trainyard compare` and `trainyard metrics plot` as the issue's users read them:
configuration names, one number format per column, a star for the best (each of a tie,
as the server marks them),
legends that tell runs apart, distinct styles, a log step axis, single points."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from client.cli import main  # noqa: E402
from client.commands.metrics import draw, format_column, legend_labels, line_style  # noqa: E402
from tests.metricslib import Runs  # noqa: E402
from trainyard.v1 import metric_pb2  # noqa: E402


@pytest.fixture
def runs(server):
    r = Runs(server)
    try:
        yield r
    finally:
        r.close()


def _run(server, capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--address", server.address])
    return code, capsys.readouterr().out


def test_compare_names_configurations_formats_columns_alike_and_stars_every_tied_best(
    server, runs, capsys
):
    ids = {}
    for lr, accuracy in ((0.1, 1.0), (0.5, 0.966667), (0.9, 1.0)):
        ids[lr] = runs.execution(lr)
        runs.client.write_metrics(ids[lr], [("accuracy", accuracy)])
    code, out = _run(server, capsys, "compare", "--executable", "iris-train", "--by", "accuracy")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "CONFIGURATION", "STATUS", "DURATION"]
    body = {line.lstrip("*").split()[0]: line.lstrip("*").split() for line in lines[1:4]}
    assert body[ids[0.1]][1] == "lr-0.1" and body[ids[0.5]][1] == "lr-0.5"
    assert body[ids[0.1]][-1] == "1.0000" and body[ids[0.5]][-1] == "0.9667"
    # 1.0 is shared: both are best, as the server marks them (ComparedExecution.best).
    starred = {line.split()[1] for line in lines[1:4] if line.startswith("*")}
    assert starred == {ids[0.1], ids[0.9]}, out
    assert "* best by accuracy (highest): 1.0000 (a tie: every execution with it is starred)" in out
    # One row shown of a tie: its star is the server's, not a count of the rows shown.
    code, out = _run(
        server, capsys, "compare", "--executable", "iris-train", "--by", "accuracy",
        "--limit", "1",
    )
    row = out.splitlines()[1]
    assert row.startswith("*") and row.split()[1] in (ids[0.1], ids[0.9]), out

    runs.client.write_metrics(ids[0.9], [("accuracy", 0.5)])  # the latest value now
    code, out = _run(server, capsys, "compare", "--executable", "iris-train", "--by", "accuracy")
    starred = [line for line in out.splitlines()[1:4] if line.startswith("*")]
    assert len(starred) == 1 and ids[0.1] in starred[0], out
    code, out = _run(server, capsys, "compare", "--executable", "iris-train", "-q")
    assert sorted(out.split()) == sorted(ids.values())


def test_one_format_per_column():
    assert [format_column([1, 0.966667])(v) for v in (1, 0.966667)] == ["1.0000", "0.9667"]
    assert [format_column([3.0, 20])(v) for v in (3.0, 20)] == ["3", "20"]
    fmt = format_column([0.12341, 0.12349])
    assert fmt(0.12341) != fmt(0.12349) and len(fmt(0.12341)) == len(fmt(0.12349))
    assert format_column([1e-7, 2e-7])(1e-7) == "1.0000e-07"
    assert format_column([0.5])(None) == "-"


def test_legends_name_configurations_and_differing_parameters():
    same_second = "01a236e6003e1237b8", "01a236e6003e12ffff"
    labels = legend_labels(
        {
            same_second[0]: ("lr-sweep", {"learning_rate": "0.1", "epochs": "20"}),
            same_second[1]: ("lr-sweep", {"learning_rate": "0.5", "epochs": "20"}),
            "01a236e6004e4eac0b63": ("baseline", {"learning_rate": "0.5", "epochs": "20"}),
        }
    )
    assert labels[same_second[0]] == "lr-sweep learning_rate=0.1"
    assert labels[same_second[1]] == "lr-sweep learning_rate=0.5"
    assert labels["01a236e6004e4eac0b63"] == "baseline learning_rate=0.5"
    twins = legend_labels({i: ("same", {"lr": "1"}) for i in same_second})
    assert len(set(twins.values())) == 2  # alike in everything: the id's end tells them apart


def _points(values, steps=True):
    return [
        metric_pb2.Metric(name="loss", value=v, **({"step": n} if steps else {}))
        for n, v in enumerate(values, start=1)
    ]


def test_plot_styles_stay_distinct_past_ten_lines_and_log_x_spreads_steps():
    series = {f"e{n:02d}": _points([1 / (k + n + 1) for k in range(5)]) for n in range(14)}
    series["long"] = _points([1 / (k + 1) for k in range(5000)])
    labels = {eid: f"run {eid}" for eid in series}
    fig, ax = plt.subplots()
    try:
        draw(ax, series, labels, "loss", log_x=True)
        lines = ax.get_lines()
        looks = {(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in lines}
        assert len(lines) == 15 and len(looks) == 15
        assert ax.get_xscale() == "log"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(labels.values())
    finally:
        plt.close(fig)
    assert len({tuple(line_style(n).items()) for n in range(40)}) == 40


def test_plot_draws_single_points_as_bars_named_by_their_label():
    series = {"a": _points([0.9], steps=False), "b": _points([0.96], steps=False)}
    fig, ax = plt.subplots()
    try:
        draw(ax, series, {"a": "lr-0.1", "b": "lr-0.5"}, "accuracy")
        assert len(ax.patches) == 2
        assert [t.get_text() for t in ax.get_xticklabels()] == ["lr-0.1", "lr-0.5"]
        assert sorted(p.get_height() for p in ax.patches) == [0.9, 0.96]
    finally:
        plt.close(fig)
    # Among lines, a lone point is a marker with no line.
    fig, ax = plt.subplots()
    try:
        draw(ax, {"a": _points([1, 0.5, 0.2]), "b": _points([0.4])}, {}, "loss")
        lone = ax.get_lines()[1]
        assert lone.get_linestyle() == "None" and lone.get_marker() not in ("", "None", None)
    finally:
        plt.close(fig)


def test_plot_command_takes_log_x(server, runs, capsys, tmp_path):
    short, long = runs.execution(0.1), runs.execution(0.5)
    runs.client.write_metrics(short, [("loss", 1 / s, s) for s in range(1, 6)])
    runs.client.write_metrics(long, [("loss", 1 / s, s) for s in range(1, 3000, 7)])
    out_file = tmp_path / "curves.png"
    code, out = _run(server, capsys, "metrics", "plot", short, long, "--metric", "loss",
                     "--log-x", "-o", str(out_file))
    assert code == 0 and out_file.stat().st_size > 5000
