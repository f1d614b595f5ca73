"""The metric service over real gRPC: writes, reads, validation, isolation between
resource groups, one transaction per call, deletion with the execution, comparison."""

from __future__ import annotations

import math

import grpc
import pytest
from conftest import group
from google.protobuf.timestamp_pb2 import Timestamp
from metricslib import Runs, error_details, metric_stub, table_counts

from server.domain.models import Status
from trainyard.v1 import (
    execution_pb2,
    execution_service_pb2,
    meta_service_pb2,
    metric_pb2,
    metric_service_pb2,
)

pytestmark = pytest.mark.backends("sqlite", "postgresql")


@pytest.fixture
def runs(server):
    r = Runs(server)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def metrics(stubs):
    return metric_stub(stubs.channel)


def point(name: str, value: float, step: int | None = None, **labels: str) -> metric_pb2.Metric:
    m = metric_pb2.Metric(name=name, value=value, step=step, labels=labels)
    return m


def write(metrics, execution_id: str, points=(), tags=(), infos=(), metadata=None):
    request = metric_service_pb2.WriteMetricsRequest(
        executions=[
            metric_pb2.ExecutionMetrics(
                execution_id=execution_id, metrics=points, tags=tags, custom_info=infos
            )
        ]
    )
    return metrics.WriteMetrics(request, metadata=metadata, timeout=30)


def read(metrics, ids, series=False, names=(), page_size=0, token="", metadata=None):
    view = (
        metric_service_pb2.METRIC_VIEW_SERIES if series else metric_service_pb2.METRIC_VIEW_LATEST
    )
    return metrics.ListMetrics(
        metric_service_pb2.ListMetricsRequest(
            execution_ids=ids, names=names, view=view, page_size=page_size, page_token=token
        ),
        metadata=metadata,
        timeout=30,
    )


def refused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------ write / read


def test_write_then_read_series_round_trips_exactly(runs, metrics):
    eid = runs.execution()
    stamp = Timestamp(seconds=1_700_000_000, nanos=123_456_000)
    sent = [
        metric_pb2.Metric(name="loss", value=1.0986122886681098, step=0, time=stamp),
        metric_pb2.Metric(
            name="loss", value=0.1 + 0.2, step=1, time=stamp, labels={"split": "train"}
        ),
        metric_pb2.Metric(name="loss", value=5e-324, step=2, time=stamp),
        metric_pb2.Metric(name="eval/accuracy", value=-1.7976931348623157e308, time=stamp),
        metric_pb2.Metric(name="lr schedule", value=123456789.123456789, step=7, time=stamp),
    ]
    tags = [metric_pb2.Tag(key="dataset", value="iris-v2"), metric_pb2.Tag(key="empty", value="")]
    infos = [
        metric_pb2.CustomInfo(
            name="confusion_matrix",
            value="[[10, 0], [1, 9]]",
            format=metric_pb2.CUSTOM_INFO_FORMAT_JSON,
        ),
        metric_pb2.CustomInfo(name="notes", value="ünïcode\nlines"),
    ]
    response = write(metrics, eid, sent, tags, infos)
    assert (response.metrics_written, response.tags_written, response.custom_info_written) == (
        5,
        2,
        2,
    )

    (entry,) = read(metrics, [eid], series=True).executions
    assert entry.execution_id == eid
    by_name = sorted(sent, key=lambda m: m.name)  # stable: per-name write order kept
    assert list(entry.metrics) == by_name
    assert [(t.key, t.value) for t in entry.tags] == [("dataset", "iris-v2"), ("empty", "")]
    assert [(c.name, c.value, c.format) for c in entry.custom_info] == [
        ("confusion_matrix", "[[10, 0], [1, 9]]", metric_pb2.CUSTOM_INFO_FORMAT_JSON),
        ("notes", "ünïcode\nlines", metric_pb2.CUSTOM_INFO_FORMAT_TEXT),
    ]


def test_latest_view_gives_the_last_written_point_per_name(runs, metrics):
    eid = runs.execution()
    write(metrics, eid, [point("loss", 0.9, 1), point("loss", 0.5, 2), point("acc", 0.7)])
    write(
        metrics, eid, [point("loss", 0.4, 3, split="train")], [metric_pb2.Tag(key="k", value="1")]
    )
    write(metrics, eid, tags=[metric_pb2.Tag(key="k", value="2")])
    (entry,) = read(metrics, [eid]).executions
    assert [(m.name, m.value, m.step if m.HasField("step") else None) for m in entry.metrics] == [
        ("acc", 0.7, None),
        ("loss", 0.4, 3),
    ]
    assert dict(entry.metrics[1].labels) == {"split": "train"}
    assert [(t.key, t.value) for t in entry.tags] == [("k", "2")]  # replaced, not added


def test_time_defaults_to_when_the_server_received_the_point(runs, metrics):
    eid = runs.execution()
    before = Timestamp()
    before.GetCurrentTime()
    write(metrics, eid, [point("loss", 1.0)])
    after = Timestamp()
    after.GetCurrentTime()
    (entry,) = read(metrics, [eid]).executions
    got = entry.metrics[0].time.ToMicroseconds()
    assert before.ToMicroseconds() - 1 <= got <= after.ToMicroseconds()


def test_series_pages_have_no_gap_and_no_duplicate(runs, metrics):
    a, b = runs.execution(), runs.execution()
    write(
        metrics,
        a,
        [point("loss", i / 1000, i) for i in range(1500)],
        [metric_pb2.Tag(key="t", value="a")],
    )
    write(metrics, b, [point("acc", i / 100, i) for i in range(700)] + [point("loss", 1.0, 0)])
    seen, token, pages = [], "", 0
    while True:
        response = read(metrics, [a, b], series=True, page_size=1000, token=token)
        pages += 1
        if pages == 1:
            assert [e.execution_id for e in response.executions] == [a, b]
            assert [t.key for t in response.executions[0].tags] == ["t"]
        else:
            assert all(not e.tags for e in response.executions)
        for e in response.executions:
            seen += [(e.execution_id, m.name, m.step) for m in e.metrics]
        token = response.next_page_token
        if not token:
            break
    assert pages == 3
    expected = (
        [(a, "loss", i) for i in range(1500)]
        + [(b, "acc", i) for i in range(700)]
        + [(b, "loss", 0)]
    )
    assert seen == expected


def test_names_filter_selects_series(runs, metrics):
    eid = runs.execution()
    write(metrics, eid, [point("loss", 1.0, 1), point("acc", 0.5, 1), point("f1", 0.2)])
    (entry,) = read(metrics, [eid], names=["f1", "loss"], series=True).executions
    assert [m.name for m in entry.metrics] == ["f1", "loss"]


def test_page_token_is_bound_to_its_request(runs, metrics):
    eid = runs.execution()
    write(metrics, eid, [point("loss", i, i) for i in range(10)])
    token = read(metrics, [eid], series=True, page_size=3).next_page_token
    assert token
    error = refused(read, metrics, [eid], series=True, names=["loss"], page_size=3, token=token)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(error)[0] == "INVALID_PAGE_TOKEN"


# -------------------------------------------------------------------- refusals


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_value_refused_with_its_field(runs, metrics, bad):
    eid = runs.execution()
    points = [point("loss", 0.5, i) for i in range(3)] + [point("loss", bad, 3)]
    error = refused(write, metrics, eid, points)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, fields = error_details(error)
    assert reason == "INVALID_ARGUMENT"
    assert [f for f, _ in fields] == ["executions[0].metrics[3].value"]
    assert "finite" in fields[0][1]
    assert table_counts(runs.server, eid)["metric_point_all"] == 0  # nothing half-written


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is required"),
        (" loss", "must be 1 to 256"),
        ("loss ", "must be 1 to 256"),
        ("lo\nss", "must be 1 to 256"),
        ("loss%", "must be 1 to 256"),
        ("x" * 257, "must be 1 to 256"),
    ],
)
def test_bad_metric_name_refused_with_its_field(runs, metrics, name, problem):
    eid = runs.execution()
    error = refused(write, metrics, eid, [point("ok", 1.0), point(name, 1.0)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = error_details(error)[1]
    assert fields[0][0] == "executions[0].metrics[1].name"
    assert problem in fields[0][1]


def test_longest_allowed_name_and_every_allowed_character_accepted(runs, metrics):
    eid = runs.execution()
    names = ["x" * 256, "Aa0_.-/ z", "eval/top-1 accuracy"]
    write(metrics, eid, [point(n, 1.0) for n in names])
    (entry,) = read(metrics, [eid]).executions
    assert sorted(m.name for m in entry.metrics) == sorted(names)


def test_bad_tags_labels_and_custom_info_refused_with_their_fields(runs, metrics):
    eid = runs.execution()
    error = refused(
        write,
        metrics,
        eid,
        [point("loss", 1.0, -1), point("loss", 1.0, 1, **{"bad key!": "x"})],
        [metric_pb2.Tag(key="", value="x")],
        [
            metric_pb2.CustomInfo(
                name="cm", value="{not json", format=metric_pb2.CUSTOM_INFO_FORMAT_JSON
            ),
            metric_pb2.CustomInfo(
                name="nan", value="[NaN]", format=metric_pb2.CUSTOM_INFO_FORMAT_JSON
            ),
        ],
    )
    fields = [f for f, _ in error_details(error)[1]]
    assert fields == [
        "executions[0].metrics[0].step",
        "executions[0].metrics[1].labels['bad key!']",
        "executions[0].tags[0].key",
        "executions[0].custom_info[0].value",
        "executions[0].custom_info[1].value",
    ]


def test_unknown_execution_refused_and_nothing_written(runs, metrics):
    known = runs.execution()
    request = metric_service_pb2.WriteMetricsRequest(
        executions=[
            metric_pb2.ExecutionMetrics(execution_id=known, metrics=[point("loss", 1.0)]),
            metric_pb2.ExecutionMetrics(
                execution_id="feedfacecafebeef", metrics=[point("loss", 1.0)]
            ),
        ]
    )
    error = refused(metrics.WriteMetrics, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(error)[0] == "EXECUTION_NOT_FOUND"
    assert "feedfacecafebeef" in error.details()
    assert table_counts(runs.server, known) == dict.fromkeys(
        [
            "metric_owner",
            "metric_series",
            "metric_tag",
            "metric_custom_info",
            "metric_point",
            "metric_point_all",
        ],
        0,
    )


def test_another_resource_groups_execution_is_not_found_for_every_call(server, runs, metrics):
    eid = runs.execution()
    write(metrics, eid, [point("accuracy", 0.9)], [metric_pb2.Tag(key="owner", value="a")])
    other = group("team-b")
    for call, request in [
        (
            metrics.WriteMetrics,
            metric_service_pb2.WriteMetricsRequest(
                executions=[
                    metric_pb2.ExecutionMetrics(execution_id=eid, metrics=[point("x", 1.0)])
                ]
            ),
        ),
        (metrics.ListMetrics, metric_service_pb2.ListMetricsRequest(execution_ids=[eid])),
        (metrics.DeleteMetrics, metric_service_pb2.DeleteMetricsRequest(execution_id=eid)),
        (
            metrics.CompareExecutions,
            metric_service_pb2.CompareExecutionsRequest(execution_ids=[eid]),
        ),
    ]:
        error = refused(call, request, metadata=other)
        assert error.code() == grpc.StatusCode.NOT_FOUND, call
        assert error_details(error)[0] == "EXECUTION_NOT_FOUND"
    by_filter = metrics.CompareExecutions(
        metric_service_pb2.CompareExecutionsRequest(executable_id="iris-train"), metadata=other
    )
    assert list(by_filter.executions) == [] and by_filter.total_size == 0
    (entry,) = read(metrics, [eid]).executions  # untouched in its own group
    assert [m.name for m in entry.metrics] == ["accuracy"]


def test_request_limits_refused(runs, metrics):
    eid = runs.execution()
    error = refused(write, metrics, eid, [point("loss", 1.0, i) for i in range(10_001)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 10000" in error.details()
    error = refused(metrics.WriteMetrics, metric_service_pb2.WriteMetricsRequest())
    assert error_details(error)[1][0][0] == "executions"
    error = refused(read, metrics, [eid, eid])
    assert error_details(error)[1] == [("execution_ids[1]", f"execution {eid} is listed twice")]
    error = refused(read, metrics, [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------ one transaction


# SQLite's connection reports every statement it runs; PostgreSQL's driver does not.
@pytest.mark.backends("sqlite")
def test_batch_of_10000_points_is_stored_in_one_transaction(server, runs, metrics):
    eid = runs.execution()
    statements: list[str] = []

    def trace(on: bool):
        # On the store's writer thread, whose connection runs every write.
        return server.plane.store.run_write(
            lambda sync: sync.db.connection().set_trace_callback(
                statements.append if on else None
            )
        )

    server.run_sync(trace, True)
    try:
        response = write(metrics, eid, [point("loss", i * 0.5, i) for i in range(10_000)])
    finally:
        server.run_sync(trace, False)
    assert response.metrics_written == 10_000

    # Split what the connection ran into transactions; every point insert is in one.
    transactions: list[list[str]] = []
    current: list[str] | None = None
    for sql in statements:
        word = sql.split(None, 1)[0].upper()
        if word == "BEGIN":
            current = []
        elif word in ("COMMIT", "ROLLBACK"):
            if current is not None:
                transactions.append([*current, word])
            current = None
        elif current is not None:
            current.append(sql)
    with_points = [
        t for t in transactions if any(s.startswith("INSERT INTO metric_point") for s in t)
    ]
    assert len(with_points) == 1
    assert with_points[0][-1] == "COMMIT"
    assert sum(s.startswith("INSERT INTO metric_point") for s in with_points[0]) == 10_000
    assert table_counts(server, eid)["metric_point"] == 10_000


def test_batch_with_a_bad_last_point_stores_nothing(runs, metrics):
    eid = runs.execution()
    points = [point("loss", i * 0.5, i) for i in range(9_999)] + [point("loss", math.nan, 9_999)]
    error = refused(write, metrics, eid, points)
    assert error_details(error)[1][0][0] == "executions[0].metrics[9999].value"
    assert table_counts(runs.server, eid)["metric_point_all"] == 0
    assert list(read(metrics, [eid]).executions[0].metrics) == []


def test_many_bad_points_give_a_bounded_error(runs, metrics):
    eid = runs.execution()
    error = refused(write, metrics, eid, [point("loss", math.nan, i) for i in range(5_000)])
    fields = error_details(error)[1]
    # The domain lists 100 and counts the rest; the error's trailers keep as many of
    # those as fit under gRPC's metadata limit and count the ones left out.
    assert 10 < len(fields) <= 101
    assert fields[-1][1].startswith("and ") and "more" in fields[-1][1]
    assert fields[0][0] == "executions[0].metrics[0].value"


# -------------------------------------------------------------------- deletion


def _delete(stubs, eid: str, keep: bool) -> None:
    stubs.executions.DeleteExecution(
        execution_service_pb2.DeleteExecutionRequest(execution_id=eid, keep_metrics=keep),
        timeout=30,
    )


def _fill(metrics, eid: str) -> None:
    write(
        metrics,
        eid,
        [point("loss", 0.5, 1), point("loss", 0.25, 2), point("acc", 0.9)],
        [metric_pb2.Tag(key="t", value="v")],
        [metric_pb2.CustomInfo(name="note", value="text")],
    )


def test_deleting_an_execution_deletes_its_metrics_by_default(server, stubs, runs, metrics):
    eid, other = runs.execution(), runs.execution()
    _fill(metrics, eid)
    _fill(metrics, other)
    _delete(stubs, eid, keep=False)
    counts = table_counts(server, eid)
    assert counts.pop("metric_point_all") == 3  # the other execution's points
    assert counts == dict.fromkeys(counts, 0)
    error = refused(read, metrics, [eid])
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert len(read(metrics, [other], series=True).executions[0].metrics) == 3


def test_deleting_an_execution_keeps_its_metrics_when_asked(server, stubs, runs, metrics):
    eid = runs.execution()
    _fill(metrics, eid)
    _delete(stubs, eid, keep=True)
    (entry,) = read(metrics, [eid], series=True).executions
    assert [(m.name, m.value) for m in entry.metrics] == [
        ("acc", 0.9),
        ("loss", 0.5),
        ("loss", 0.25),
    ]
    assert [t.key for t in entry.tags] == ["t"] and [c.name for c in entry.custom_info] == ["note"]
    # Kept metrics stay in their group: another group still cannot see them.
    assert (
        refused(read, metrics, [eid], metadata=group("team-b")).code() == grpc.StatusCode.NOT_FOUND
    )
    # No new points for a deleted execution.
    assert refused(write, metrics, eid, [point("loss", 0.1)]).code() == grpc.StatusCode.NOT_FOUND
    # DeleteMetrics removes what was kept; then the id is unknown.
    deleted = metrics.DeleteMetrics(metric_service_pb2.DeleteMetricsRequest(execution_id=eid))
    assert deleted.metrics_deleted == 3
    assert table_counts(server, eid) == dict.fromkeys(table_counts(server, eid), 0)
    assert refused(read, metrics, [eid]).code() == grpc.StatusCode.NOT_FOUND


def test_refused_execution_delete_leaves_metrics_alone(server, stubs, runs, metrics):
    eid = runs.execution(status=Status.RUNNING)
    _fill(metrics, eid)
    error = refused(_delete, stubs, eid, False)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert table_counts(server, eid)["metric_point"] == 3


def test_delete_metrics_by_name_keeps_the_rest(server, runs, metrics):
    eid = runs.execution()
    _fill(metrics, eid)
    deleted = metrics.DeleteMetrics(
        metric_service_pb2.DeleteMetricsRequest(execution_id=eid, names=["loss"])
    )
    assert deleted.metrics_deleted == 2
    (entry,) = read(metrics, [eid], series=True).executions
    assert [m.name for m in entry.metrics] == ["acc"]
    assert [t.key for t in entry.tags] == ["t"]


# --------------------------------------------------------------------- compare

LEARNING_RATES = [0.01, 0.05, 0.1, 0.5, 1.0]
ACCURACIES = [0.70, 0.90, 0.9667, 0.9333, 0.80]


def _compare(stub, **kwargs) -> metric_service_pb2.CompareExecutionsResponse:
    order_by = kwargs.pop("order_by", None)
    request = metric_service_pb2.CompareExecutionsRequest(**kwargs)
    if order_by is not None:
        name, _, aggregation = order_by.partition(":")
        request.order_by.name = name
        request.order_by.aggregation = {
            "": 0,
            "min": metric_pb2.METRIC_AGGREGATION_MIN,
            "max": metric_pb2.METRIC_AGGREGATION_MAX,
        }[aggregation]
    return stub.CompareExecutions(request, timeout=30)


@pytest.fixture
def trained(runs, metrics):
    """Five completed executions with different learning rates, and one that died
    before reporting accuracy. Returns their ids by learning rate (None: the dead one)."""
    ids = {}
    for lr, accuracy in zip(LEARNING_RATES, ACCURACIES, strict=True):
        eid = runs.execution(lr)
        losses = [1.0 / (1 + lr * epoch) for epoch in range(1, 11)]
        write(
            metrics,
            eid,
            [point("loss", v, e) for e, v in enumerate(losses, 1)] + [point("accuracy", accuracy)],
        )
        ids[lr] = eid
    dead = runs.execution(2.0, status=Status.DEAD)
    write(metrics, dead, [point("loss", 3.0, 1)])
    ids[None] = dead
    return ids


def _params(row) -> dict[str, str]:
    return {p.key: p.value for p in row.parameters}


def test_compare_orders_by_accuracy_and_marks_the_best(trained, metrics):
    ids = [trained[lr] for lr in [*LEARNING_RATES, None]]
    response = _compare(metrics, execution_ids=ids, order_by="accuracy")
    rows = list(response.executions)
    expected_lrs = [0.1, 0.5, 0.05, 1.0, 0.01, 2.0]
    assert [float(_params(r)["learning_rate"]) for r in rows] == expected_lrs
    assert [r.best for r in rows] == [True, False, False, False, False, False]
    assert response.best_value == 0.9667 and response.total_size == 6
    best = rows[0]
    assert best.execution_id == trained[0.1]
    assert best.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    assert _params(best) == {"epochs": "20", "learning_rate": "0.1", "seed": "0"}
    assert best.HasField("duration") and best.configuration_name == "lr-0.1"
    (accuracy,) = [m for m in best.metrics if m.name == "accuracy"]
    assert (accuracy.value, accuracy.count) == (0.9667, 1)
    # The dead run has no accuracy: listed last, with the metric present but unset.
    dead = rows[-1]
    assert dead.execution_id == trained[None]
    assert dead.status == execution_pb2.EXECUTION_STATUS_DEAD
    (missing,) = [m for m in dead.metrics if m.name == "accuracy"]
    assert not missing.HasField("value") and missing.count == 0


def test_compare_by_executable_filter_matches_compare_by_ids(trained, metrics):
    by_ids = _compare(metrics, execution_ids=list(trained.values()), order_by="accuracy")
    by_filter = _compare(metrics, executable_id="iris-train", order_by="accuracy")
    assert [r.execution_id for r in by_filter.executions] == [
        r.execution_id for r in by_ids.executions
    ]
    completed = _compare(
        metrics,
        executable_id="iris-train",
        order_by="accuracy",
        statuses=[execution_pb2.EXECUTION_STATUS_COMPLETED],
    )
    assert completed.total_size == 5 and trained[None] not in [
        r.execution_id for r in completed.executions
    ]


def test_compare_ascending_by_min_loss(trained, metrics):
    response = _compare(
        metrics,
        executable_id="iris-train",
        order_by="loss:min",
        ascending=True,
        metrics=[metric_pb2.MetricSelector(name="accuracy")],
    )
    rows = list(response.executions)
    # Higher learning rate -> lower final loss in the fixture; the dead run has 3.0.
    assert [float(_params(r)["learning_rate"]) for r in rows] == [1.0, 0.5, 0.1, 0.05, 0.01, 2.0]
    assert rows[0].best and not any(r.best for r in rows[1:])
    assert [m.name for m in rows[0].metrics] == ["loss", "accuracy"]
    loss = rows[0].metrics[0]
    assert loss.aggregation == metric_pb2.METRIC_AGGREGATION_MIN
    assert loss.value == pytest.approx(1 / 11) and loss.count == 10


def test_compare_pages_keep_the_order_and_the_best(trained, metrics):
    whole = [
        r.execution_id
        for r in _compare(metrics, executable_id="iris-train", order_by="accuracy").executions
    ]
    seen, token = [], ""
    while True:
        page = _compare(
            metrics, executable_id="iris-train", order_by="accuracy", page_size=2, page_token=token
        )
        assert page.best_value == 0.9667 and page.total_size == 6
        assert len(page.executions) == 2 or not page.next_page_token
        seen += [r.execution_id for r in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert seen == whole


def test_compare_marks_every_tied_best(runs, metrics):
    a, b, c = runs.execution(0.1), runs.execution(0.2), runs.execution(0.3)
    for eid, accuracy in ((a, 0.9), (b, 1.0), (c, 1.0)):
        write(metrics, eid, [point("accuracy", accuracy)])
    rows = _compare(metrics, execution_ids=[a, b, c], order_by="accuracy").executions
    assert [(r.execution_id, r.best) for r in rows] == [(b, True), (c, True), (a, False)]


def test_compare_without_order_keeps_request_order_and_shows_every_metric(trained, metrics):
    ids = [trained[1.0], trained[0.01]]
    response = _compare(metrics, execution_ids=ids)
    assert [r.execution_id for r in response.executions] == ids
    assert not any(r.best for r in response.executions) and not response.HasField("best_value")
    assert [m.name for m in response.executions[0].metrics] == ["accuracy", "loss"]


def test_compare_needs_ids_or_a_filter_not_both(trained, metrics):
    error = refused(_compare, metrics)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = refused(_compare, metrics, execution_ids=[trained[0.1]], executable_id="iris-train")
    assert error_details(error)[1][0][0] == "execution_ids"
    error = refused(_compare, metrics, execution_ids=[trained[0.1], "0123456789abcdef"])
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_meta_reports_the_metrics_capability(stubs):
    meta = stubs.meta.GetMeta(meta_service_pb2.GetMetaRequest())
    assert meta.capabilities.metrics


def test_a_page_over_the_message_limit_is_refused_not_cut(server_factory):
    small = server_factory(max_message_bytes=64 * 1024)
    runs = Runs(small)
    try:
        eid = runs.execution()
        for name in ("a", "b"):
            runs.client.write_metrics(eid, custom_info={name: "x" * 40_000})
        stub = metric_stub(runs.client.channel)
        error = refused(read, stub, [eid])
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_details(error)[0] == "LIMIT_EXCEEDED"
        assert "fewer executions" in error.details()
    finally:
        runs.close()
