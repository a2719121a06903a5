"""Journal first: the one place where the engine writes the case journal and announces.

Owns: ``Ledger``: journal entries of the open case (handed FIRST, in order, to the journal
writer, before anything about them is announced), the transaction of one stimulus
(``transaction()``: the stimulus, its rule events, the alarm transitions they cause and
step results go in one ticket, one ``append_many``), what is announced once it is
written (``event`` messages), publishing on the API streams (``sink``, which never
blocks), the event stream for people (the numbered ``event`` messages and the list of
recent ones that ``events.list`` returns), and the recording state the engine shows.
May import: ``app.engine.seams``, ``app.engine.timebase``, ``app.engine.writer``,
``app.record.entries``.

Writing. Every entry is checked against the entry schema here (a wrong payload is a bug:
it raises at once, on the engine loop), then handed to the ``JournalWriter`` as a numbered
ticket: with its own thread in the live engine, at once in the single-threaded one. The
engine never waits for the disk: ``outcome(ticket)`` says whether a ticket is on the disk
(``durable``), will never be (``refused``) or is still ``pending``; the service answers an
operator command "recorded" only once its ticket is durable.

Announcing, in this order for one input: the entries are handed to the writer; the alarm
system tells the outputs (sound, LEDs) and publishes the ``alarms`` stream and the state
at once, never waiting for the disk (``app.engine.alarm_desk``); the ``event`` messages
follow once the entries before them are on the disk, or after ``hold_s`` (0.5 s) when the
disk is slow, never out of order (the recording state then says the entries wait).
Measurements, waveforms and the EMG display are published at once.

The list of recent events belongs to the case: ``attach`` gives the ledger the open
case's list, ``detach`` a fresh one for the time until the next case opens; event
numbers (``seq``) run on across cases so that a reader asking "since seq N" misses nothing.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from app.engine.seams import CaseLister, FallbackItem, Journal, LaterEntry, QueuedItem, Sink, Wants
from app.engine.timebase import TimeBase
from app.engine.writer import DURABLE, PENDING, JournalWriter, RecordingState
from app.record import entries as E

EventList = collections.deque[dict[str, Any]]
HOLD_S = 0.5  # an event waits at most this long for its entries to reach the disk


def new_case_id(wall: datetime) -> str:
    """A case id as the journal makes them: UTC date and time, four random hex digits."""
    return f"{wall.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class Ledger:
    """Journal entries, publication and events (see the module docstring)."""

    def __init__(self, journal: Journal, sink: Sink, wants: Wants, time: TimeBase,
                 counters: collections.Counter[str], events_kept: int, writer: JournalWriter | None = None,
                 wall_clock: Callable[[], datetime] | None = None, hold_s: float = HOLD_S) -> None:
        self.journal = journal
        self.writer = writer if writer is not None else JournalWriter(journal, now=time.clock.now)
        self.sink = sink
        self.wants = wants
        self.counters = counters
        self._time = time
        self._wall = wall_clock or (lambda: datetime.now(UTC))
        self._events_kept = events_kept
        self.hold_s = float(hold_s)
        self.case_id: str | None = None
        self.events: EventList = collections.deque(maxlen=events_kept)
        self.event_seq = 0
        self._batch: list[QueuedItem] | None = None  # one transaction being collected
        self._batch_fallback: list[FallbackItem] = []  # ... and what replaces its EMG if that is left out
        self._held: list[tuple[str, Mapping[str, Any], bool]] | None = None  # published once it is written
        self._waiting: collections.deque[tuple[int, float, str, Mapping[str, Any], bool]] = collections.deque()
        self._seen_version = -1
        self._next_look = 0.0
        self.on_recording: Callable[[RecordingState], None] | None = None
        self.on_space_note: Callable[[str], None] | None = None

    # -- the case the journal writes into

    def open_case(self, case_data: Mapping[str, Any]) -> str:
        """A new case in the journal; returns its id (``attach`` it to write into it)."""
        data = dict(case_data)
        case_id = str(data.pop("case_id", "") or new_case_id(self._wall()))
        self.writer.submit("open", case_id, [("case_opened", data, None, 0.0)])
        self.counters["journal_entries"] += 1
        return case_id

    def attach(self, case_id: str, events: EventList) -> None:
        """Write into ``case_id`` from now on; keep events in the case's list."""
        self.case_id = case_id
        self.events = events

    def close_case(self, payload: Mapping[str, Any]) -> None:
        """The closing entry of the attached case; nothing is written to it afterwards."""
        if self.case_id is not None:
            E.validate("case_closed", payload)
            self.writer.submit("close", self.case_id, [("case_closed", dict(payload), None, self._time.now_t())])
            self.counters["journal_entries"] += 1
        self.detach()

    def detach(self) -> None:
        """No case: nothing is journaled; events go to a fresh list."""
        self.case_id = None
        self.events = collections.deque(maxlen=self._events_kept)

    def cases(self) -> list[dict[str, Any]]:
        """The journal's cases, oldest first (none for a journal that cannot list them)."""
        journal = self.writer.journal
        return journal.cases() if isinstance(journal, CaseLister) else []

    # -- writing

    def write(self, kind: str, payload: Mapping[str, Any], blob: bytes | None = None,
              t_s: float | None = None, fallback: list[FallbackItem] | None = None) -> int | None:
        """One journal entry of the open case (nothing without a case); returns its ticket
        (None inside a transaction: the transaction's ticket comes at its end). ``fallback``
        (free-running EMG only): the entries written instead if the writer leaves it out."""
        if self.case_id is None:
            return None
        E.validate(kind, payload, blob)
        t = self._time.now_t() if t_s is None else t_s
        return self._hand(self.case_id, (kind, payload, blob, t), fallback)

    def write_later(self, entry: LaterEntry, fallback: list[FallbackItem] | None = None) -> int | None:
        """One journal entry of the open case that the writer makes when it writes it (raw EMG,
        encoded off the engine loop; checked against the schema when made: a bug there is
        logged by the writer and the entry refused). Otherwise as ``write``."""
        if self.case_id is None:
            return None
        return self._hand(self.case_id, entry, fallback)

    def _hand(self, case_id: str, item: QueuedItem, fallback: list[FallbackItem] | None) -> int | None:
        for entry in fallback or ():
            if not callable(entry):  # one made later is validated when it is made
                E.validate(entry[0], entry[1], entry[2])
        self.counters["journal_entries"] += 1
        if self._batch is not None:
            self._batch.append(item)
            self._batch_fallback.extend(fallback or ())
            return None
        if fallback:
            return self.writer.submit("append", case_id, [item], fallback=fallback)
        return self.writer.submit("append", case_id, [item])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Entries written inside go to the journal in one transaction at the end; what was
        published inside follows the write (see the module docstring)."""
        self._batch, self._held, self._batch_fallback = [], [], []
        try:
            yield
        finally:
            batch, held, fallback = self._batch or [], self._held or [], self._batch_fallback
            self._batch = self._held = None
            self._batch_fallback = []
            ticket = None
            if self.case_id is not None and batch:
                ticket = (self.writer.submit("append", self.case_id, batch, fallback=fallback) if fallback
                          else self.writer.submit("append", self.case_id, batch))
            for stream, message, sticky in held:
                self._announce(stream, message, sticky, ticket)
            self.release()

    @property
    def last_ticket(self) -> int:
        """The newest ticket handed to the writer with more than raw EMG in it (an event or a
        command's reply waits for it, not for the EMG synced within a second after it)."""
        return self.writer.last_announced_ticket

    def outcome(self, ticket: int) -> str:
        """``durable`` (on the disk), ``refused`` (never will be) or ``pending``."""
        return self.writer.outcome(ticket)

    # -- announcing

    def publish(self, stream: str, message: Mapping[str, Any], sticky: bool = False) -> None:
        """A message on an API stream (held while a transaction is being collected; an event
        follows the entries handed over before it)."""
        if self._held is not None:
            self._held.append((stream, message, sticky))
            return
        self._announce(stream, message, sticky, self.writer.last_announced_ticket if stream == "events" else None)

    def _announce(self, stream: str, message: Mapping[str, Any], sticky: bool, ticket: int | None) -> None:
        if stream == "events" and ticket and (self._waiting or self.writer.outcome(ticket) == PENDING):
            self._waiting.append((ticket, self._time.clock.now() + self.hold_s, stream, message, sticky))
            return
        self.sink(stream, message, sticky)

    def release(self) -> None:
        """Publish the held messages whose entries are written (or waited long enough), in order."""
        now = self._time.clock.now()
        while self._waiting:
            ticket, deadline, stream, message, sticky = self._waiting[0]
            if self.writer.outcome(ticket) == PENDING and now < deadline:
                break
            self._waiting.popleft()
            self.sink(stream, message, sticky)

    def pump(self) -> None:
        """Every input and tick: the inline writer's retries, held messages, the recording state."""
        self.writer.pump()
        self.release()
        version, now = self.writer.version, self._time.clock.now()
        if version != self._seen_version or now >= self._next_look:  # (waiting is a matter of time too)
            self._seen_version, self._next_look = version, now + 0.25
            if self.on_recording is not None:
                self.on_recording(self.writer.state())
        for note in self.writer.take_space_notes():
            if self.on_space_note is not None:
                self.on_space_note(note)

    def recording(self) -> RecordingState:
        """The recording state now."""
        return self.writer.state()

    def durable(self, ticket: int | None) -> bool:
        """``ticket`` is on the disk."""
        return ticket is not None and self.writer.outcome(ticket) == DURABLE

    def event(self, category: str, kind: str, message: str, *, priority: str | None = None,
              side: str | None = None, site: str | None = None, detail: Mapping[str, Any] | None = None,
              t_s: float | None = None) -> dict[str, Any]:
        """An event for people (already journaled by the caller): kept and published."""
        self.event_seq += 1
        ev = {"type": "event", "seq": self.event_seq, "t_s": round(self._time.now_t() if t_s is None else t_s, 4),
              "category": category, "kind": kind, "priority": priority, "side": side, "site": site,
              "message": message, "detail": dict(detail or {})}
        self.events.append(ev)
        self.publish("events", ev)
        return ev
