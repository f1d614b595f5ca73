"""Watching executions: their current state, then every change, in order, resumable.

Two kinds of watch, with two kinds of cursor (both opaque to clients):

* One execution. The cursor is the sequence number of the last history entry the
  client has seen. Resuming replays the transitions recorded after it from the store
  (so it survives a server restart), then goes live. Step changes are not recorded in
  the history: they are not replayed, but every event carries the execution's current
  step details. The stream ends after the final status unless ``keep_watching``.
* A filtered set of one resource group. The cursor is the number of the last change
  of the group the client has heard of: every creation, transition, step change and
  deletion is recorded in the store in the transaction that makes it, numbered in its
  resource group in the order the changes committed (``execution_event``, see
  server/store/executions.py). So a cursor is the database's, valid on every replica
  of it and after a restart: resuming reads the changes after it from the store, with
  nothing replayed twice and nothing skipped. The broker's events (this replica's
  changes, and through server/streams/notify.py the other replicas') only wake the
  watch; what it sends is read from the store, in number order. When the changes
  after a cursor are no longer kept (older than the retention, see
  server/domain/retention.py) or the cursor is not of this database, the watch starts
  over with fresh SNAPSHOT events, which a client treats as "replace what you knew".
  A watch whose broker queue overflowed, or whose notifier was deaf for a while,
  reads the store again and goes on: no event is lost to either. A filtered watch
  never ends by itself.

Live and stored state meet without gaps or doubles by sequence number: a transition at
or below what a snapshot (or the cursor) already covered is dropped; a gap in the live
transitions is filled from the store.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import InvalidArgument, Reason, ResourceExhausted
from server.domain.lifecycle import is_final
from server.domain.models import (
    Execution,
    Status,
    StepDetail,
    StoredEvent,
    Transition,
    deleted_execution,
)
from server.domain.service import ControlPlane
from server.streams.broker import Broker

SNAPSHOT_PAGE = 500
MAX_CURSOR_CHARS = 512


@dataclass(frozen=True, slots=True)
class WatchOptions:
    execution_id: str = ""
    statuses: Sequence[Status] = ()
    scenario_id: str = ""
    configuration_id: str = ""
    executable_id: str = ""
    keep_watching: bool = False
    after_cursor: str = ""

    def filter_digest(self) -> str:
        canonical = json.dumps(
            [sorted(str(s) for s in self.statuses), self.scenario_id, self.configuration_id,
             self.executable_id],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(slots=True)
class WatchEvent:
    """One event of a watch. ``kind``: snapshot, transition, step, created, deleted."""

    kind: str
    execution: Execution
    cursor: str
    transition: Transition | None = None
    step: StepDetail | None = None


def _encode_cursor(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument.of("after_cursor", "malformed cursor") from exc


@dataclass
class ExecutionWatches:
    """Starts watches of executions."""

    plane: ControlPlane
    broker: Broker
    # Events queued for one watcher before it is cut off (RESOURCE_EXHAUSTED).
    max_pending_events: int = 10_000
    started: int = 0
    active: int = 0
    # Reads of a group's changes in flight, by (group, after): watchers at the same
    # position (all that are caught up, woken by the same change) share one.
    _reads: dict[tuple[str, int], asyncio.Future] = field(default_factory=dict, repr=False)

    def _read_events(
        self, group: str, after: int
    ) -> Awaitable[tuple[int, list[StoredEvent], dict[str, Execution]]]:
        key = (group, after)
        future = self._reads.get(key)
        if future is None:
            future = asyncio.ensure_future(
                self.plane.store.read_events(group, after, SNAPSHOT_PAGE)
            )
            self._reads[key] = future

            def done(finished: asyncio.Future) -> None:
                if self._reads.get(key) is finished:
                    del self._reads[key]
                if not finished.cancelled():
                    finished.exception()  # retrieved: each watcher gets it on its own

            future.add_done_callback(done)
        # One watcher going away does not cancel the others' read.
        return asyncio.shield(future)

    async def watch(self, resource_group: str, options: WatchOptions) -> AsyncIterator[WatchEvent]:
        if options.execution_id:
            filters = (options.statuses, options.scenario_id, options.configuration_id,
                       options.executable_id)
            if any(filters):
                raise InvalidArgument.of(
                    "execution_id", "cannot be combined with filters: watch one execution or a set"
                )
            stream = self._watch_one(resource_group, options)
        else:
            if options.keep_watching:
                raise InvalidArgument.of(
                    "keep_watching", "only applies to a watch of one execution"
                )
            stream = self._watch_set(resource_group, options)
        self.started += 1
        self.active += 1
        try:
            async for event in stream:
                yield event
        finally:
            self.active -= 1
            await stream.aclose()

    # ------------------------------------------------------------ one execution

    def _one_cursor(self, execution_id: str, seq: int) -> str:
        return _encode_cursor({"e": execution_id, "h": seq})

    async def _watch_one(self, group: str, options: WatchOptions) -> AsyncIterator[WatchEvent]:
        execution_id = options.execution_id
        after: int | None = None
        if options.after_cursor:
            data = _decode_cursor(options.after_cursor)
            seq = data.get("h")
            if data.get("e") != execution_id or not isinstance(seq, int) or seq < 0:
                raise InvalidArgument.of(
                    "after_cursor", "cursor was issued for another watch"
                )
            after = seq
        # Subscribe first, then read: nothing committed after the read can be missed.
        events, _ = self.broker.subscribe_events(
            execution_id=execution_id, max_events=self.max_pending_events
        )
        try:
            execution = await self.plane.get_execution(group, execution_id)
            history = execution.history
            position = history[-1].seq if history else 0
            if after is not None and after > position:
                raise InvalidArgument.of(
                    "after_cursor", "cursor is ahead of the execution's history"
                )
            if after is None:
                yield WatchEvent("snapshot", execution, self._one_cursor(execution_id, position))
            else:
                for transition in history:
                    if transition.seq > after:
                        yield WatchEvent(
                            "transition", execution, self._one_cursor(execution_id, transition.seq),
                            transition=transition,
                        )
            if self._ends(execution, options):
                return
            while True:
                items = events.take()
                if not items:
                    if events.overflowed:
                        raise self._too_slow(self._one_cursor(execution_id, position))
                    await events.wait()
                    continue
                for item in items:
                    event = item.event
                    if event.kind == "transition" and event.transition is not None:
                        seq = event.transition.seq
                        if seq <= position:
                            continue
                        if seq > position + 1:
                            # Fill a gap from the store (a broker may lose messages).
                            for missed in await self.plane.store.history(execution_id):
                                if position < missed.seq < seq:
                                    yield WatchEvent(
                                        "transition", event.execution,
                                        self._one_cursor(execution_id, missed.seq),
                                        transition=missed,
                                    )
                        position = seq
                        yield WatchEvent(
                            "transition", event.execution, self._one_cursor(execution_id, seq),
                            transition=event.transition,
                        )
                        if self._ends(event.execution, options):
                            return
                    elif event.kind == "step":
                        yield WatchEvent(
                            "step", event.execution, self._one_cursor(execution_id, position),
                            step=event.step,
                        )
                    elif event.kind == "deleted":
                        yield WatchEvent(
                            "deleted", event.execution, self._one_cursor(execution_id, position)
                        )
                        return
        finally:
            events.close()

    @staticmethod
    def _ends(execution: Execution, options: WatchOptions) -> bool:
        return is_final(execution.status) and not options.keep_watching

    # ------------------------------------------------------------- filtered set

    @staticmethod
    def _set_cursor(number: int, digest: str) -> str:
        return _encode_cursor({"g": number, "f": digest})

    def _matches(
        self, execution: Execution, options: WatchOptions, transition: Transition | None
    ) -> bool:
        if options.scenario_id and execution.scenario_id != options.scenario_id:
            return False
        if options.configuration_id and execution.configuration_id != options.configuration_id:
            return False
        if options.executable_id and execution.executable_id != options.executable_id:
            return False
        if options.statuses:
            wanted = set(options.statuses)
            if execution.status in wanted:
                return True
            # A transition out of a watched status is news for the watcher.
            return transition is not None and transition.from_status in wanted
        return True

    async def _watch_set(self, group: str, options: WatchOptions) -> AsyncIterator[WatchEvent]:
        digest = options.filter_digest()
        after: int | None = None
        if options.after_cursor:
            data = _decode_cursor(options.after_cursor)
            number = data.get("g", data.get("n"))
            if (
                data.get("f") != digest
                or not isinstance(number, int)
                or isinstance(number, bool)
                or number < 0
            ):
                raise InvalidArgument.of("after_cursor", "cursor was issued for another watch")
            if "g" in data:  # a change number of the store ("n": a server's own, before)
                after = number
        # Subscribe first, then read: a change committed after the read wakes the
        # watch. The broker's events only wake it: the changes are read from the store.
        events, _ = self.broker.subscribe_events(
            resource_group=group, max_events=self.max_pending_events
        )
        store = self.plane.store
        try:
            positions: dict[str, int] = {}
            read: tuple[int, list[StoredEvent], dict[str, Execution]] | None = None
            if after is not None:
                read = await self._read_events(group, after)
                last, stored, _ = read
                if (stored and stored[0].number != after + 1) or (not stored and last != after):
                    # The changes after the cursor are no longer kept (past the
                    # retention), or the cursor is of another database: start over.
                    after, read = None, None
            if after is None:
                after = await store.last_event_number(group)
                async for event in self._snapshot(group, options, digest, after, positions):
                    yield event
            while True:
                if read is None:
                    read = await self._read_events(group, after)
                _, stored, executions = read
                read = None
                for change in stored:
                    after = change.number
                    watch_event = self._stored_event(group, change, executions, positions)
                    if watch_event is None or not self._matches(
                        watch_event.execution, options, watch_event.transition
                    ):
                        continue
                    watch_event.cursor = self._set_cursor(after, digest)
                    yield watch_event
                if len(stored) >= SNAPSHOT_PAGE:
                    continue  # more stored: read on
                # Wait for news of the group (any change heard, here or from another
                # replica; a full queue or a notifier that was deaf: read anyway).
                while not (events.take() or events.overflowed or events.resync):
                    await events.wait()
                events.overflowed = events.resync = False
        finally:
            events.close()

    @staticmethod
    def _stored_event(
        group: str,
        change: StoredEvent,
        executions: dict[str, Execution],
        positions: dict[str, int],
    ) -> WatchEvent | None:
        """The watch event of a recorded change, with the execution as it was right
        after it (its other fields as they are now); None when there is nothing to
        say (the execution is gone since: its deletion follows; a transition the
        snapshot already showed)."""
        execution_id = change.execution_id
        if change.kind == "deleted":
            positions.pop(execution_id, None)
            gone = deleted_execution(execution_id, group, change.detail)
            return WatchEvent("deleted", gone, "")
        execution = executions.get(execution_id)
        if execution is None:
            return None
        if change.kind == "step":
            step = next((s for s in execution.step_details if s.name == change.detail), None)
            return None if step is None else WatchEvent("step", execution, "", step=step)
        history = execution.history
        index = next((i for i, t in enumerate(history) if t.seq == change.seq), None)
        if index is None or change.seq <= positions.get(execution_id, 0):
            return None
        transition = history[index]
        state = execution
        if index != len(history) - 1:
            state = dataclasses.replace(
                execution, status=transition.to_status, history=history[: index + 1]
            )
        if is_final(state.status):
            positions.pop(execution_id, None)
        else:
            positions[execution_id] = transition.seq
        kind = "created" if transition.from_status is None else "transition"
        return WatchEvent(kind, state, "", transition=transition)

    async def _snapshot(
        self, group: str, options: WatchOptions, digest: str, number: int, positions: dict[str, int]
    ) -> AsyncIterator[WatchEvent]:
        # Only the last SNAPSHOT event carries the cursor: a client that reconnects
        # before the snapshot is complete gets a whole snapshot again.
        cursor = self._set_cursor(number, digest)
        held: Execution | None = None
        token = ""
        while True:
            page = await self.plane.list_executions(
                group,
                SNAPSHOT_PAGE,
                token,
                statuses=options.statuses,
                scenario_id=options.scenario_id,
                executable_id=options.executable_id,
                configuration_id=options.configuration_id,
            )
            positions.update(
                await self.plane.store.last_transition_seqs([e.id for e in page.items])
            )
            for execution in page.items:
                if held is not None:
                    yield WatchEvent("snapshot", held, "")
                held = execution
            if not page.next_page_token:
                break
            token = page.next_page_token
        if held is not None:
            yield WatchEvent("snapshot", held, cursor)

    def _too_slow(self, cursor: str) -> ResourceExhausted:
        return ResourceExhausted(
            message="watcher fell too far behind; reconnect with after_cursor",
            reason=Reason.LIMIT_EXCEEDED,
            metadata={"cursor": cursor},
        )

