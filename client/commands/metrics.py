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
import sys

from client.client import TrainyardClient, TrainyardError
from client.commands.executions import DETAIL_SECTIONS, STATUSES, status_name
from client.metrics_api import value_of
from client.output import enum_name, print_json, table, to_dict, when
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
    metrics.set_defaults(handler=metrics_cmd)

    compare = subparsers.add_parser(
        "compare",
        help="compare executions side by side by their metrics",
        description="Side by side: status, duration, parameters and metrics, ordered by "
        "--by with the best marked '*'. Name executions, or select them with --executable "
        "or --configuration. Metrics are NAME or NAME:latest|min|max.",
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
    write_plot(series, labels, metric, args.output, args.width, args.height, args.title)
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
    """Execution id plus the parameters that differ between the plotted executions."""
    try:
        rows = client.compare_executions(ids).executions
    except TrainyardError:
        return {eid: eid for eid in ids}
    params = {r.execution_id: {p.key: p.value for p in r.parameters} for r in rows}
    keys = sorted({k for p in params.values() for k in p})
    varying = [k for k in keys if len({p.get(k) for p in params.values()}) > 1]
    return {
        eid: " ".join([eid[:8], *(f"{k}={params[eid].get(k, '-')}" for k in varying)])
        for eid in params
    }


def write_plot(
    series: dict[str, list[metric_pb2.Metric]],
    labels: dict[str, str],
    metric: str,
    output: str,
    width: int,
    height: int,
    title: str = "",
) -> None:
    """Draw one line per execution: the metric over steps (or over point order when
    the points have no step). The PNG is exactly ``width`` x ``height`` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    dpi = 100
    fig, ax = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        for eid, points in series.items():
            if not points:
                continue
            xs = [p.step if p.HasField("step") else i for i, p in enumerate(points, start=1)]
            pairs = sorted(zip(xs, (p.value for p in points), strict=True), key=lambda t: t[0])
            ax.plot(
                [x for x, _ in pairs],
                [y for _, y in pairs],
                marker="o" if len(pairs) < 30 else None,
                markersize=3,
                linewidth=1.5,
                label=labels.get(eid, eid),
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(title or metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(output, format="png", dpi=dpi)
    finally:
        plt.close(fig)


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
    headers = ["", "ID", "STATUS", "DURATION", *param_keys, *metric_heads]
    body = []
    for r in rows:
        params = {p.key: p.value for p in r.parameters}
        values = {_metric_head(m): _fmt(value_of(m)) for m in r.metrics}
        body.append(
            [
                "*" if r.best else "",
                r.execution_id,
                status_name(r.status),
                _duration(r),
                *(params.get(k, "-") for k in param_keys),
                *(values.get(h, "-") for h in metric_heads),
            ]
        )
    _table(headers, body)
    if args.by:
        if result.HasField("best_value"):
            direction = "lowest" if args.ascending else "highest"
            print(f"* best by {args.by} ({direction}): {_fmt(result.best_value)}")
        else:
            print(f"no execution has metric {args.by!r}")
    if len(rows) < result.total_size:
        print(f"({len(rows)} of {result.total_size} executions shown)")
    return 0


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
