"""Report metrics from code that runs inside a Trainyard step, with no set-up.

    from client.metrics import log_metric, set_tag, log_custom_info

    for epoch in range(1, epochs + 1):
        ...
        log_metric("loss", loss, step=epoch)
    log_metric("accuracy", accuracy)
    set_tag("dataset", "iris-v2")
    log_custom_info("confusion_matrix", [[10, 0], [1, 9]])

The runtime gives every step TRAINYARD_EXECUTION_ID, TRAINYARD_RESOURCE_GROUP and
TRAINYARD_ADDRESS; these functions read them on first use. Points are kept in memory and
sent in batches: when a batch fills, when ``flush_interval`` seconds have passed since the
last send (checked at each call), on ``flush()``, and when the interpreter exits. A
failed send never stops the training: it is reported once as a warning; the points are
kept for the next try when the server is only unreachable for a moment.

Outside a step (no TRAINYARD_EXECUTION_ID) every function does nothing, after one warning.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

import grpc

__all__ = ["MetricsLogger", "flush", "get_logger", "log_custom_info", "log_metric", "set_tag"]

ENV_EXECUTION_ID = "TRAINYARD_EXECUTION_ID"
ENV_RESOURCE_GROUP = "TRAINYARD_RESOURCE_GROUP"
ENV_ADDRESS = "TRAINYARD_ADDRESS"

# The server's rule for metric names, tag keys and custom info names.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/]([A-Za-z0-9_.\-/ ]{0,254}[A-Za-z0-9_.\-/])?$")

# The server's limit of points in one WriteMetrics call.
MAX_POINTS_PER_CALL = 10_000

# Errors after which the same points may succeed later; others drop the batch.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"{what} {name!r}: use 1 to 256 letters, digits, spaces or _ . - / "
            "(not starting or ending with a space)"
        )


class MetricsLogger:
    """Buffers the metrics of one execution and sends them in batches."""

    def __init__(
        self,
        execution_id: str,
        address: str,
        resource_group: str = "",
        *,
        batch_size: int = 1000,
        flush_interval: float = 2.0,
        timeout: float = 10.0,
        max_buffer: int = 100_000,
    ):
        self.execution_id = execution_id
        self.address = address
        self.resource_group = resource_group or None
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.max_buffer = max_buffer
        self.sent = 0  # points stored by the server
        self.dropped = 0  # points given up on
        self._points: list[tuple] = []  # (name, value, step, time_ns, labels)
        self._tags: dict[str, str] = {}
        self._infos: dict[str, tuple[str, bool]] = {}  # name -> (value, is_json)
        # The batch being sent, kept while its send is retried: (request id, entry,
        # its number of points).
        self._pending: tuple[str, Any, int] | None = None
        self._lock = threading.RLock()
        self._client: Any = None
        self._pid = os.getpid()
        self._last_flush = time.monotonic()
        self._warned: set[str] = set()
        self._names: set[str] = set()  # metric names already checked
        self._closed = False

    # ------------------------------------------------------------------ API

    def log_metric(
        self,
        name: str,
        value: float,
        step: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Record one value of metric ``name`` (at training ``step``, if given)."""
        if name not in self._names:
            _check_name("metric name", name)
            if len(self._names) < 10_000:
                self._names.add(name)
        value = float(value)
        if step is not None:
            step = int(step)
            if step < 0:
                raise ValueError(f"metric {name!r}: step must not be negative, got {step}")
        if not math.isfinite(value):
            # A diverging loss must not stop the training: drop the point, say so once.
            self._warn(
                f"nonfinite:{name}",
                f"metric {name!r}: dropped a non-finite value ({value}); only finite values "
                "are stored",
            )
            return
        point = (
            name,
            value,
            step,
            time.time_ns(),
            {str(k): str(v) for k, v in labels.items()} if labels else None,
        )
        with self._lock:
            self._fork_check()
            self._points.append(point)
            due = (
                len(self._points) >= self.batch_size
                or time.monotonic() - self._last_flush >= self.flush_interval
            )
        if due:
            self.flush()

    def set_tag(self, key: str, value: Any) -> None:
        """Set a key/value tag of the execution (a later value replaces an earlier one)."""
        _check_name("tag key", key)
        with self._lock:
            self._fork_check()
            self._tags[key] = str(value)

    def log_custom_info(self, name: str, value: Any) -> None:
        """Attach a named document: a string is stored as text, anything else as JSON
        (for example a confusion matrix as a list of lists)."""
        _check_name("custom info name", name)
        if isinstance(value, str):
            entry = (value, False)
        else:
            entry = (json.dumps(value, allow_nan=False), True)
        with self._lock:
            self._fork_check()
            self._infos[name] = entry

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything buffered now. True when nothing is left to send. Each batch
        is sent with a request id of its own; a batch whose send failed (and may have
        landed) is sent again first, as it was, with the same id, so the server
        records it once."""
        with self._lock:
            self._fork_check()
            self._last_flush = time.monotonic()
            while self._pending is not None or self._points or self._tags or self._infos:
                if self._pending is None:
                    points = self._points[:MAX_POINTS_PER_CALL]
                    entry = self._entry(points, self._tags, self._infos)
                    self._pending = (uuid.uuid4().hex, entry, len(points))
                    del self._points[: len(points)]
                    self._tags, self._infos = {}, {}
                request_id, entry, count = self._pending
                try:
                    self._send(entry, request_id, timeout)
                except Exception as error:  # noqa: BLE001 - reported, never raised
                    if not self._failed(error, count):
                        return False
                    # Not retryable: drop what was sent.
                else:
                    self.sent += count
                self._pending = None
            return True

    def close(self) -> None:
        """Flush and close the connection (registered to run at exit)."""
        with self._lock:
            if self._closed:
                return
            self.flush(timeout=min(self.timeout, 5.0))
            self._closed = True
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------- internals

    def _fork_check(self) -> None:
        """In a forked child, start afresh: the parent sends what it buffered."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._client = None
            self._points, self._tags, self._infos = [], {}, {}
            self._pending = None

    def _send(self, entry, request_id: str, timeout: float | None) -> None:
        from client.client import TrainyardClient

        if self._client is None:
            self._client = TrainyardClient(
                self.address, resource_group=self.resource_group, timeout=self.timeout
            )
        self._client.write_metrics_batch([entry], timeout=timeout, request_id=request_id)

    def _entry(self, points: list[tuple], tags: dict, infos: dict):
        """The ExecutionMetrics message of one batch."""
        from trainyard.v1 import metric_pb2

        # Plain dicts: protobuf builds messages from them faster than from constructors.
        metrics = [
            {
                "name": name,
                "value": value,
                "step": step,
                "time": {"seconds": time_ns // 1_000_000_000, "nanos": time_ns % 1_000_000_000},
                "labels": labels,
            }
            for name, value, step, time_ns, labels in points
        ]
        return metric_pb2.ExecutionMetrics(
            execution_id=self.execution_id,
            metrics=metrics,
            tags=[metric_pb2.Tag(key=k, value=v) for k, v in tags.items()],
            custom_info=[
                metric_pb2.CustomInfo(
                    name=k,
                    value=v,
                    format=(
                        metric_pb2.CUSTOM_INFO_FORMAT_JSON
                        if is_json
                        else metric_pb2.CUSTOM_INFO_FORMAT_TEXT
                    ),
                )
                for k, (v, is_json) in infos.items()
            ],
        )

    def _failed(self, error: Exception, count: int) -> bool:
        """Report a failed send. Returns True when the batch is to be dropped."""
        code = getattr(error, "code", None)
        if code in RETRYABLE:
            self._warn("retry", f"metrics not sent yet, will retry: {error}")
            overflow = len(self._points) - self.max_buffer
            if overflow > 0:
                del self._points[:overflow]
                self.dropped += overflow
                self._warn("overflow", f"metrics buffer full: dropped the {overflow} oldest points")
            return False
        self.dropped += count
        self._warn("dropped", f"metrics dropped: {error}")
        return True

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=4)


class _Disabled:
    """Stands in outside a step: every call does nothing."""

    def log_metric(self, *args: Any, **kwargs: Any) -> None:
        pass

    set_tag = log_custom_info = log_metric

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass


_default: MetricsLogger | _Disabled | None = None
_default_lock = threading.Lock()


def get_logger() -> MetricsLogger | _Disabled:
    """The logger of this process's execution, made from the environment on first use."""
    global _default
    if _default is not None:
        return _default
    with _default_lock:
        if _default is None:
            execution_id = os.environ.get(ENV_EXECUTION_ID, "")
            address = os.environ.get(ENV_ADDRESS, "")
            if not execution_id or not address:
                warnings.warn(
                    f"metrics are not recorded: {ENV_EXECUTION_ID} and {ENV_ADDRESS} are not "
                    "set (this code is not running as a Trainyard step)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                _default = _Disabled()
            else:
                logger = MetricsLogger(
                    execution_id, address, os.environ.get(ENV_RESOURCE_GROUP, "")
                )
                atexit.register(logger.close)
                _default = logger
    return _default


def log_metric(
    name: str, value: float, step: int | None = None, labels: Mapping[str, str] | None = None
) -> None:
    """Record one value of metric ``name`` for the current execution."""
    get_logger().log_metric(name, value, step=step, labels=labels)


def set_tag(key: str, value: Any) -> None:
    """Set a key/value tag of the current execution."""
    get_logger().set_tag(key, value)


def log_custom_info(name: str, value: Any) -> None:
    """Attach a named text or JSON document to the current execution."""
    get_logger().log_custom_info(name, value)


def flush(timeout: float | None = None) -> bool:
    """Send everything buffered now (it is also sent at exit)."""
    return get_logger().flush(timeout)
