"""`trainyard metrics ...` and `trainyard compare ...`: read, plot and compare metrics.

trainyard metrics EXEC_ID [EXEC_ID...]        latest value per metric, tags, custom info
trainyard metrics EXEC_ID --series --name loss every point of a series
trainyard metrics plot EXEC_ID... --metric loss -o chart.png
trainyard metrics delete EXEC_ID [--name loss]
trainyard compare EXEC_ID... --by accuracy
trainyard compare --executable iris-train --by loss:min --ascending
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from client.client import TrainyardClient, TrainyardError
from client.commands.executions import DETAIL_SECTIONS, STATUSES, status_name
from client.metrics_api import value_of
from client.output import enum_name, print_json, quiet, table, to_dict, when
from trainyard.v1 import execution_pb2, metric_pb2

ACTIONS = ("plot", "delete")


def _table(headers, rows) -> None:
    # sys.stdout is looked up at each call (the output helpers bind it at import).
    table(headers, rows, out=sys.stdout)


def _print_json(data) -> None:
    print_json(data, out=sys.stdout)


def register(subparsers: argparse._SubParsersAction) -> None:
    metrics = subparsers.add_parser(
        "metrics",
        help="show, plot or delete the metrics of executions",
        usage=(
            "trainyard metrics EXEC_ID... [--name NAME] [--series]\n"
            "       trainyard metrics plot EXEC_ID... --metric NAME [-o FILE.png] "
            "[--width PX] [--height PX]\n"
            "       trainyard metrics plot --executable ID --metric NAME [-o FILE.png]\n"
            "       trainyard metrics delete EXEC_ID [--name NAME]"
        ),
        description="Without an action: the latest value of every metric, tags and custom "
        "info. `plot` draws a metric's series over steps as a PNG; `delete` removes metrics "
        "(also those kept after deleting an execution).",
    )
    metrics.add_argument("targets", nargs="+", metavar="EXEC_ID", help="execution ids")
    metrics.add_argument("--name", action="append", default=[], help="only this metric (repeat)")
    metrics.add_argument("--series", action="store_true", help="every point, not only the latest")
    plot = metrics.add_argument_group("plot")
    plot.add_argument("--metric", help="metric to plot (default: the only --name, or loss)")
    plot.add_argument("-o", "--output", default="chart.png", help="PNG file (default chart.png)")
    plot.add_argument("--width", type=int, default=1000, help="image width in pixels (1000)")
    plot.add_argument("--height", type=int, default=600, help="image height in pixels (600)")
    plot.add_argument("--title", default="", help="chart title (default: the metric name)")
    plot.add_argument(
        "--executable", default="", help="plot every execution of this executable (newest 50)"
    )
    plot.add_argument(
        "--log-x", action="store_true", help="logarithmic step axis (one long run among short ones)"
    )
    metrics.set_defaults(handler=metrics_cmd)

    compare = subparsers.add_parser(
        "compare",
        help="compare executions side by side by their metrics",
        description="Side by side: status, duration, parameters and metrics, ordered by "
        "--by with the best marked '*' (every one of a tie). Name executions, or select "
        "them with --executable or --configuration. Metrics are NAME or "
        "NAME:latest|min|max.",
    )
    compare.add_argument("execution_ids", nargs="*", metavar="EXEC_ID")
    compare.add_argument("--executable", default="", help="every execution of this executable")
    compare.add_argument("--configuration", default="", help="every execution of a configuration")
    compare.add_argument("--status", action="append", choices=sorted(STATUSES), default=[])
    compare.add_argument("--by", default="", help="order by this metric, best first")
    compare.add_argument(
        "--ascending",
        "--lower-is-better",
        action="store_true",
        help="smallest value is best (for a loss)",
    )
    compare.add_argument(
        "--metric", action="append", default=[], help="metric to show (repeat; default all)"
    )
    compare.add_argument("--limit", type=int, default=0, help="at most this many rows (0: all)")
    compare.set_defaults(handler=compare_cmd)


# ------------------------------------------------------------------- metrics


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


def metrics_cmd(client: TrainyardClient, args) -> int:
    action = args.targets[0] if args.targets[0] in ACTIONS else ""
    ids = args.targets[1:] if action else args.targets
    if action == "plot" and not ids and args.executable:
        rows = client.compare_executions(executable_id=args.executable, limit=50).executions
        ids = [r.execution_id for r in rows]
    if not ids:
        print(f"error: metrics {action}: give at least one execution id", file=sys.stderr)
        return 2
    if action == "plot":
        return plot_cmd(client, args, ids)
    if action == "delete":
        total = 0
        for eid in ids:
            total += client.delete_metrics(eid, args.name)
        if args.json:
            _print_json({"metrics_deleted": total})
        else:
            print(f"{total} points deleted")
        return 0
    entries = client.list_metrics(ids, args.name, series=args.series)
    if args.json:
        _print_json(entries)
        return 0
    for n, entry in enumerate(entries):
        if len(entries) > 1:
            print(("\n" if n else "") + f"Execution {entry.execution_id}")
        if args.series:
            _table(
                ["NAME", "STEP", "VALUE", "TIME", "LABELS"],
                [
                    [
                        m.name,
                        m.step if m.HasField("step") else "-",
                        _fmt(m.value),
                        when(m.time),
                        _labels(m.labels),
                    ]
                    for m in entry.metrics
                ],
            )
        else:
            _table(
                ["NAME", "VALUE", "STEP", "TIME", "LABELS"],
                [
                    [
                        m.name,
                        _fmt(m.value),
                        m.step if m.HasField("step") else "-",
                        when(m.time),
                        _labels(m.labels),
                    ]
                    for m in entry.metrics
                ],
            )
        if entry.tags:
            print("tags: " + ", ".join(f"{t.key}={t.value}" for t in entry.tags))
        for info in entry.custom_info:
            print(f"custom info {info.name} ({_format_name(info.format)}): {_short(info.value)}")
    return 0


def _labels(labels) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _format_name(value: int) -> str:
    return metric_pb2.CustomInfoFormat.Name(value).removeprefix("CUSTOM_INFO_FORMAT_").lower()


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def metrics_section(client: TrainyardClient, execution: execution_pb2.Execution) -> list[str]:
    """The "Metrics" section of `trainyard executions get`: latest values, tags."""
    try:
        entries = client.list_metrics([execution.id])
    except TrainyardError as error:
        return [f"  (unavailable: {error})"]
    entry = entries[0] if entries else metric_pb2.ExecutionMetrics()
    lines = []
    width = max((len(m.name) for m in entry.metrics), default=0)
    for m in entry.metrics:
        step = f"  step {m.step}" if m.HasField("step") else ""
        lines.append(f"  {m.name:<{width}}  {_fmt(m.value)}{step}")
    if not entry.metrics:
        lines.append("  (none)")
    if entry.tags:
        lines.append("  tags: " + ", ".join(f"{t.key}={t.value}" for t in entry.tags))
    for info in entry.custom_info:
        lines.append(
            f"  custom info {info.name} ({_format_name(info.format)}, "
            f"{len(info.value.encode())} bytes)"
        )
    return lines


DETAIL_SECTIONS.append(("Metrics", metrics_section))


# ---------------------------------------------------------------------- plot


def plot_cmd(client: TrainyardClient, args, ids: list[str]) -> int:
    metric = args.metric or (args.name[0] if len(args.name) == 1 else "loss")
    if args.width < 100 or args.height < 100 or args.width > 10_000 or args.height > 10_000:
        print("error: --width and --height must be between 100 and 10000", file=sys.stderr)
        return 2
    series = client.metric_series(ids, metric)
    if not any(series.values()):
        print(f"error: no execution has points of metric {metric!r}", file=sys.stderr)
        return 1
    labels = _legend_labels(client, ids)
    write_plot(
        series, labels, metric, args.output, args.width, args.height, args.title, args.log_x
    )
    if args.json:
        _print_json(
            {
                "output": args.output,
                "metric": metric,
                "width": args.width,
                "height": args.height,
                "executions": ids,
            }
        )
    else:
        print(f"{args.output}: {metric} of {len(ids)} execution(s), {args.width}x{args.height}")
    return 0


def _legend_labels(client: TrainyardClient, ids: list[str]) -> dict[str, str]:
    """Each execution's configuration name, with the parameters that differ between the
    plotted executions; an id suffix only where that still leaves two alike."""
    try:
        rows = {r.execution_id: r for r in client.compare_executions(ids).executions}
    except TrainyardError:
        return {eid: eid for eid in ids}
    return legend_labels(
        {
            eid: (
                rows[eid].configuration_name or rows[eid].configuration_id,
                {p.key: p.value for p in rows[eid].parameters},
            )
            for eid in ids
            if eid in rows
        }
    )


def legend_labels(runs: dict[str, tuple[str, dict[str, str]]]) -> dict[str, str]:
    """``{execution id: (configuration name, parameters)}`` -> a label for each."""
    keys = sorted({k for _, params in runs.values() for k in params})
    varying = [k for k in keys if len({params.get(k) for _, params in runs.values()}) > 1]
    labels = {
        eid: " ".join([name, *(f"{k}={params.get(k, '-')}" for k in varying)])
        for eid, (name, params) in runs.items()
    }
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    # Ids made in the same second share their first characters: the end tells them apart.
    return {
        eid: label if counts[label] == 1 else f"{label} (…{eid[-6:]})"
        for eid, label in labels.items()
    }


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def line_style(n: int) -> dict[str, object]:
    """The n-th line's colour, dash pattern and marker: ten colours, then the colours
    again with the next dash pattern and marker, so that no two of the first 40 lines
    look alike."""
    cycle = n // 10
    return {
        "color": f"C{n % 10}",
        "linestyle": LINE_STYLES[cycle % len(LINE_STYLES)],
        "marker": MARKERS[cycle % len(MARKERS)],
    }


def write_plot(
    series: dict[str, list[metric_pb2.Metric]],
    labels: dict[str, str],
    metric: str,
    output: str,
    width: int,
    height: int,
    title: str = "",
    log_x: bool = False,
) -> None:
    """Draw the metric of each execution as a PNG of exactly ``width`` x ``height``
    pixels (see :func:`draw`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    dpi = 100
    fig, ax = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        draw(ax, series, labels, metric, title, log_x)
        fig.tight_layout()
        fig.savefig(output, format="png", dpi=dpi)
    finally:
        plt.close(fig)


def draw(ax, series, labels, metric: str, title: str = "", log_x: bool = False) -> None:
    """One line per execution: the metric over steps (over point order when the points
    have no step). When every execution has a single point, a bar each, named by its
    label; a lone point among lines is a marker. ``log_x``: a logarithmic step axis."""
    from matplotlib.ticker import MaxNLocator

    drawn = {eid: points for eid, points in series.items() if points}
    ax.set_title(title or metric)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    if drawn and all(len(points) == 1 for points in drawn.values()):
        names = [labels.get(eid, eid) for eid in drawn]
        values = [points[0].value for points in drawn.values()]
        bars = ax.bar(range(len(names)), values,
                      color=[line_style(n)["color"] for n in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 3 else 0,
                      ha="right" if len(names) > 3 else "center", fontsize="small")
        ax.bar_label(bars, fmt="%.4g", fontsize="small")
        return
    for n, (eid, points) in enumerate(drawn.items()):
        xs = [p.step if p.HasField("step") else i for i, p in enumerate(points, start=1)]
        pairs = sorted(zip(xs, (p.value for p in points), strict=True), key=lambda t: t[0])
        style = line_style(n)
        ax.plot(
            [x for x, _ in pairs],
            [y for _, y in pairs],
            color=style["color"],
            linestyle=style["linestyle"] if len(pairs) > 1 else "none",
            marker=style["marker"] if len(pairs) < 30 else None,
            markersize=3 if len(pairs) > 1 else 7,
            linewidth=1.5,
            label=labels.get(eid, eid),
        )
    if log_x and _has_zero_step(drawn):
        ax.set_xscale("symlog", linthresh=1)  # a log axis cannot show step 0
    elif log_x:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.legend(fontsize="small", ncol=2 if len(drawn) > 12 else 1)


def _has_zero_step(series) -> bool:
    return any(
        (p.step if p.HasField("step") else 1) <= 0 for points in series.values() for p in points
    )


# ------------------------------------------------------------------- compare


def compare_cmd(client: TrainyardClient, args) -> int:
    if not args.execution_ids and not (args.executable or args.configuration):
        print(
            "error: compare: name executions, or give --executable or --configuration",
            file=sys.stderr,
        )
        return 2
    result = client.compare_executions(
        args.execution_ids,
        executable_id=args.executable,
        configuration_id=args.configuration,
        statuses=[STATUSES[s] for s in args.status],
        metrics=args.metric,
        order_by=args.by or None,
        ascending=args.ascending,
        limit=args.limit,
    )
    if args.json:
        _print_json(to_dict(result))
        return 0
    rows = list(result.executions)
    param_keys = sorted({p.key for r in rows for p in r.parameters})
    metric_heads: list[str] = []
    for r in rows:
        for m in r.metrics:
            head = _metric_head(m)
            if head not in metric_heads:
                metric_heads.append(head)
    columns = {
        head: format_column(
            [value_of(m) for r in rows for m in r.metrics if _metric_head(m) == head]
        )
        for head in metric_heads
    }
    # Starred as the server marks them (ComparedExecution.best): every execution whose
    # value of the ordering metric is the best of the whole comparison, ties included,
    # so the star of a row does not depend on which other rows are shown.
    starred = {r.execution_id for r in rows if r.best}
    headers = ["", "ID", "CONFIGURATION", "STATUS", "DURATION", *param_keys, *metric_heads]
    body = []
    for r in rows:
        params = {p.key: p.value for p in r.parameters}
        values = {_metric_head(m): columns[_metric_head(m)](value_of(m)) for m in r.metrics}
        body.append(
            [
                "*" if r.execution_id in starred else "",
                r.execution_id,
                r.configuration_name or r.configuration_id,
                status_name(r.status),
                _duration(r),
                *(params.get(k, "-") for k in param_keys),
                *(values.get(h, "-") for h in metric_heads),
            ]
        )
    table(headers, body, out=sys.stdout, id_column=1)
    if quiet():
        return 0
    if args.by:
        if result.HasField("best_value"):
            direction = "lowest" if args.ascending else "highest"
            shown = _by_format(columns, args.by)(result.best_value)
            tie = " (a tie: every execution with it is starred)" if len(starred) > 1 else ""
            print(f"* best by {args.by} ({direction}): {shown}{tie}")
        else:
            print(f"no execution has metric {args.by!r}")
    if len(rows) < result.total_size:
        print(f"({len(rows)} of {result.total_size} executions shown)")
    return 0


def format_column(values: list[float | None]) -> Callable[[float | None], str]:
    """One format for a column of numbers: integers when every value is whole, else the
    same number of decimals for all (enough for the smallest difference to show, at most
    6), scientific notation for very large or very small magnitudes."""
    numbers = [v for v in values if v is not None and math.isfinite(v)]

    def missing(fmt: Callable[[float], str]) -> Callable[[float | None], str]:
        return lambda v: "-" if v is None else (fmt(v) if math.isfinite(v) else str(v))

    if not numbers:
        return missing(lambda v: f"{v:.6g}")
    if all(float(v).is_integer() and abs(v) < 1e15 for v in numbers):
        return missing(lambda v: f"{v:.0f}")
    biggest = max(abs(v) for v in numbers)
    smallest = min((abs(v) for v in numbers if v), default=biggest)
    if biggest >= 1e6 or smallest < 1e-4:
        return missing(lambda v: f"{v:.4e}")
    decimals = 4
    while decimals < 6 and len({round(v, decimals) for v in numbers}) < len(set(numbers)):
        decimals += 1
    return missing(lambda v: f"{v:.{decimals}f}")


def _by_format(columns, by: str) -> Callable[[float | None], str]:
    name, _, aggregation = by.partition(":")
    head = name if aggregation in ("", "latest") else f"{name}:{aggregation}"
    return columns.get(head) or format_column([])


def _metric_head(m: metric_pb2.MetricValue) -> str:
    aggregation = enum_name(metric_pb2.MetricAggregation.Name(m.aggregation))
    aggregation = aggregation.removeprefix("METRIC_AGGREGATION_").lower()
    return m.name if aggregation == "latest" else f"{m.name}:{aggregation}"


def _duration(r: metric_pb2.ComparedExecution) -> str:
    if not r.HasField("duration"):
        return "-"
    seconds = r.duration.ToTimedelta().total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"
