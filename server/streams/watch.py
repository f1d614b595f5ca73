"""Watching executions: their current state, then every change, in order, resumable.

Two kinds of watch, with two kinds of cursor (both opaque to clients):

* One execution. The cursor is the sequence number of the last history entry the
  client has seen. Resuming replays the transitions recorded after it from the store
  (so it survives a server restart), then goes live. Step changes are not recorded in
  the history: they are not replayed, but every event carries the execution's current
  step details. The stream ends after the final status unless ``keep_watching``.
* A filtered set of one resource group. The cursor is the broker's event number
  (valid for the broker's epoch, i.e. this server process). Resuming replays the
  events after it that the broker still holds; when it no longer holds them (restart,
  or too many events since) the watch starts over with fresh SNAPSHOT events, which a
  client treats as "replace what you knew". A filtered watch never ends by itself.
  With replicas on one PostgreSQL database the broker hears the other replicas'
  changes too (server/streams/notify.py), so a set watch sees every replica's changes
  and its cursors resume on the replica that issued them; a cursor of another
  replica starts over with SNAPSHOT events (its numbering is not this broker's). When
  the broker may have missed events (its notifier lost its connection), every set
  watch is ended with RESOURCE_EXHAUSTED and a cursor that starts over, and the
  broker's epoch changes, so that no earlier cursor resumes past the gap either.

Live and stored state meet without gaps or doubles by sequence number: a transition at
or below what a snapshot (or the cursor) already covered is dropped; a gap in the live
transitions is filled from the store.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from server.domain.errors import InvalidArgument, Reason, ResourceExhausted
from server.domain.lifecycle import is_final
from server.domain.models import Execution, Status, StepDetail, Transition
from server.domain.service import ControlPlane, ExecutionEvent
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

    def _set_cursor(self, number: int, digest: str) -> str:
        return _encode_cursor({"p": self.broker.epoch, "n": number, "f": digest})

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
            number = data.get("n")
            if data.get("f") != digest or not isinstance(number, int) or number < 0:
                raise InvalidArgument.of("after_cursor", "cursor was issued for another watch")
            if data.get("p") == self.broker.epoch:
                after = number
        events, complete = self.broker.subscribe_events(
            resource_group=group, max_events=self.max_pending_events, after_number=after
        )
        try:
            start_number = getattr(self.broker, "last_event_number", 0)
            positions: dict[str, int] = {}
            if after is None or not complete:
                async for event in self._snapshot(group, options, digest, start_number, positions):
                    yield event
            while True:
                if events.resync:
                    # Events may have been lost on their way here: no cursor of this
                    # stream can be resumed exactly, so the client starts over.
                    raise self._too_slow(_encode_cursor({"p": "", "n": 0, "f": digest}))
                items = events.take()
                if not items:
                    if events.overflowed:
                        raise self._too_slow(self._set_cursor(start_number, digest))
                    await events.wait()
                    continue
                for item in items:
                    event = item.event
                    if not self._matches(event.execution, options, event.transition):
                        continue
                    watch_event = self._set_event(event, positions)
                    if watch_event is None:
                        continue
                    watch_event.cursor = self._set_cursor(item.number, digest)
                    start_number = item.number
                    yield watch_event
        finally:
            events.close()

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

    @staticmethod
    def _set_event(event: ExecutionEvent, positions: dict[str, int]) -> WatchEvent | None:
        execution = event.execution
        if event.kind in ("transition", "created") and event.transition is not None:
            if event.transition.seq <= positions.get(execution.id, 0):
                return None
            if is_final(execution.status):
                positions.pop(execution.id, None)
            else:
                positions[execution.id] = event.transition.seq
            return WatchEvent(event.kind, execution, "", transition=event.transition)
        if event.kind == "step":
            return WatchEvent("step", execution, "", step=event.step)
        if event.kind == "deleted":
            positions.pop(execution.id, None)
            return WatchEvent("deleted", execution, "")
        return None

    def _too_slow(self, cursor: str) -> ResourceExhausted:
        return ResourceExhausted(
            message="watcher fell too far behind; reconnect with after_cursor",
            reason=Reason.LIMIT_EXCEEDED,
            metadata={"cursor": cursor},
        )

