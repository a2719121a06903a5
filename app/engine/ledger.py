"""Journal first: the one place where the engine writes the case journal and announces.

Owns: ``Ledger``: journal entries of the open case (written FIRST, before anything about
them is published or sounded), the transaction of one stimulus (``transaction()``: the
stimulus, its rule events, the alarm transitions they cause and step results go in one
``append_many``; what they announce is held back until it is written), publishing on
the API streams (``sink``, which never blocks), and the event stream for people (the
numbered ``event`` messages and the list of recent ones that ``events.list`` returns).
May import: ``app.engine.seams``, ``app.engine.timebase``.

The list of recent events belongs to the case: ``attach`` gives the ledger the open
case's list, ``detach`` a fresh one for the time until the next case opens; event
numbers (``seq``) run on across cases so that a reader asking "since seq N" misses nothing.

Seam for a journal writer thread: every write goes through ``write`` and ``transaction``;
an asynchronous writer would queue there and publish the held announcements when the
entries are on disk.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from app.engine.seams import CaseLister, Journal, JournalItem, Sink, Wants
from app.engine.timebase import TimeBase

EventList = collections.deque[dict[str, Any]]


class Ledger:
    """Journal entries, publication and events (see the module docstring)."""

    def __init__(self, journal: Journal, sink: Sink, wants: Wants, time: TimeBase,
                 counters: collections.Counter[str], events_kept: int) -> None:
        self.journal = journal
        self.sink = sink
        self.wants = wants
        self.counters = counters
        self._time = time
        self._events_kept = events_kept
        self.case_id: str | None = None
        self.events: EventList = collections.deque(maxlen=events_kept)
        self.event_seq = 0
        self._batch: list[JournalItem] | None = None  # one transaction being collected
        self._held: list[tuple[str, Mapping[str, Any], bool]] | None = None  # published once it is written

    # -- the case the journal writes into

    def open_case(self, case_data: Mapping[str, Any]) -> str:
        """A new case in the journal; returns its id (``attach`` it to write into it)."""
        return self.journal.open_case(case_data)

    def attach(self, case_id: str, events: EventList) -> None:
        """Write into ``case_id`` from now on; keep events in the case's list."""
        self.case_id = case_id
        self.events = events

    def close_case(self, payload: Mapping[str, Any]) -> None:
        """The closing entry of the attached case; nothing is written to it afterwards."""
        if self.case_id is not None:
            self.journal.close_case(self.case_id, payload)
        self.detach()

    def detach(self) -> None:
        """No case: nothing is journaled; events go to a fresh list."""
        self.case_id = None
        self.events = collections.deque(maxlen=self._events_kept)

    def cases(self) -> list[dict[str, Any]]:
        """The journal's cases, oldest first (none for a journal that cannot list them)."""
        return self.journal.cases() if isinstance(self.journal, CaseLister) else []

    # -- writing

    def write(self, kind: str, payload: Mapping[str, Any], blob: bytes | None = None,
              t_s: float | None = None) -> None:
        """One journal entry of the open case (nothing without a case)."""
        if self.case_id is None:
            return
        t = self._time.now_t() if t_s is None else t_s
        if self._batch is not None:
            self._batch.append((kind, payload, blob, t))
        else:
            self.journal.append(self.case_id, kind, payload, blob, t_s=t)
        self.counters["journal_entries"] += 1

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Entries written inside go to the journal in one transaction at the end, then
        what was published inside is published (nothing is announced when the write raises)."""
        self._batch, self._held = [], []
        try:
            yield
        finally:
            batch, held = self._batch or [], self._held or []
            self._batch = self._held = None
            if self.case_id is not None:
                if len(batch) == 1:
                    kind, payload, blob, t = batch[0]
                    self.journal.append(self.case_id, kind, payload, blob, t_s=t)
                elif batch:
                    self.journal.append_many(self.case_id, batch)
            for stream, message, sticky in held:
                self.sink(stream, message, sticky)

    # -- announcing

    def publish(self, stream: str, message: Mapping[str, Any], sticky: bool = False) -> None:
        """A message on an API stream (held while a transaction is being collected)."""
        if self._held is not None:
            self._held.append((stream, message, sticky))
            return
        self.sink(stream, message, sticky)

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
