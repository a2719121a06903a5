"""Crash resume: find a case left open in the journal and bring it back into the engine.

Owns: ``resume_open_case`` (reads the journal: the case data, the last engine-state
entry, the stimuli and rule events; works out the case time; hands them to
``Monitor.resume_case``).
May import: the standard library, ``app.record`` and ``app.engine.core``.

What comes back: the baselines and every rule state (the last ``engine`` entry with
``event = "state"``, then the stimuli journaled after it run through the rules again),
the alarm state (latched alarms and acknowledgements; audio pause does not survive a
restart, by design of the alarm manager), the procedure (steps, troubleshooting, mapping,
staging), the stimulation settings and outputs, the probe site, the tube check, the
trends and the last responses. The case clock continues from the last entry plus the
wall-clock time the engine was away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from app.engine.core import Monitor

log = logging.getLogger("lnm.engine")

_KINDS = ("engine", "stimulus", "rule_event")


class _Entry(Protocol):
    @property
    def t_s(self) -> float: ...

    @property
    def wall(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...


class ResumableJournal(Protocol):
    """What resuming needs from the journal (``app.record.journal.Journal``)."""

    def find_open_case(self) -> str | None: ...

    def resume_case(self, case_id: str) -> dict[str, Any]: ...

    def entries(self, case_id: str, kinds: Iterable[str] | None = None, blobs: bool = True) -> Iterable[_Entry]: ...


def resume_open_case(monitor: Monitor, journal: ResumableJournal,
                     wall_clock: Callable[[], datetime] | None = None) -> str | None:
    """Resume the newest case left open; returns its id (None: nothing to resume)."""
    from app.record.journal import parse_utc

    case_id = journal.find_open_case()
    if case_id is None:
        return None
    case_data = journal.resume_case(case_id)
    wall = wall_clock or (lambda: datetime.now(UTC))
    last_t, last_wall = 0.0, None
    state: Mapping[str, Any] | None = None
    stimuli: list[tuple[Mapping[str, Any], bool]] = []
    seen: set[tuple[str, int | None, str, str]] = set()
    for entry in journal.entries(case_id, blobs=False):
        if entry.t_s >= last_t:
            last_t = float(entry.t_s)
        last_wall = entry.wall
        if entry.kind == "engine" and entry.payload.get("event") == "state":
            state = entry.payload.get("detail")
            stimuli = [(pl, False) for pl, _after in stimuli]
            seen = set()
        elif entry.kind == "stimulus":
            stimuli.append((entry.payload, True))
        elif entry.kind == "rule_event":
            pl = entry.payload
            seen.add((pl["kind"], pl.get("stimulus_index"), pl["side"], pl["site"]))
    gap = 0.0
    if last_wall:
        try:
            gap = max(0.0, (wall() - parse_utc(last_wall)).total_seconds())
        except ValueError:
            gap = 0.0
    case_t = last_t + gap
    after = sum(1 for _p, a in stimuli if a)
    log.warning("resuming case %s at case time %.1f s (%.1f s without the engine, %d stimuli to replay)",
                case_id, case_t, gap, after)
    monitor.resume_case(case_id, case_data, case_t, state, stimuli, seen,
                        {"gap_s": round(gap, 3), "last_entry_t_s": round(last_t, 3),
                         "last_entry_wall": last_wall})
    return case_id
