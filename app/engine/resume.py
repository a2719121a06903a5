"""Crash resume: find a case left open in the journal and bring it back into the engine.

Owns: ``resume_open_case`` (reads the journal: the case data, the last engine-state
entry, the stimuli and rule events; works out the case time; hands them to
``Monitor.resume_case``).

A damaged case: the entries are read as far as they verify (``Journal.verified_entries``:
digests, hashes, the chain, readable JSON); the case resumes from those, and the
technical alarm ``storage_problem:resume`` names the first entry that could not be read
and how many were left out (the journal keeps them for service). A case whose opening
cannot be read is not resumed: it is closed in the journal ("not resumed: ...") and the
alarm says so; monitoring starts afresh.
May import: the standard library, ``app.record`` and ``app.engine.core``.

What comes back: the baselines and every rule state (the last ``engine`` entry with
``event = "state"``, then the stimuli journaled after it run through the rules again),
the alarm state with its times (each alarm's onset, unacknowledged period and
acknowledgement on the case clock as they were, an audio pause still running until its
original end; audio off does not survive a restart, by design of the alarm manager), the
procedure (steps, troubleshooting, mapping, staging), the stimulation settings and
outputs, the probe site, the tube check, the trends and the last responses. The case
clock continues from the last entry plus the wall-clock time the engine was away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from app.alarms import AlarmKind
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
    def seq(self) -> int: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...


class ResumableJournal(Protocol):
    """What resuming needs from the journal (``app.record.journal.Journal``)."""

    def find_open_case(self) -> str | None: ...

    def resume_case(self, case_id: str) -> dict[str, Any]: ...

    def entries(self, case_id: str, kinds: Iterable[str] | None = None, blobs: bool = True) -> Iterable[_Entry]: ...

    def verified_entries(self, case_id: str, report: dict[str, Any]) -> Iterable[_Entry]: ...

    def close_case(self, case_id: str, payload: Mapping[str, Any] | None = None) -> int | None: ...


def resume_open_case(monitor: Monitor, journal: ResumableJournal,
                     wall_clock: Callable[[], datetime] | None = None) -> str | None:
    """Resume the newest case left open; returns its id (None: nothing resumed). Never raises
    for a damaged record: what verifies is resumed and the rest named (see the module docstring)."""
    import sqlite3

    from app.record.journal import JournalError, StorageError, parse_utc

    try:
        case_id = journal.find_open_case()
    except (StorageError, JournalError, sqlite3.Error) as exc:
        _not_resumed(monitor, None, f"the case journal cannot be searched for a case left open ({exc})")
        return None
    if case_id is None:
        return None
    wall = wall_clock or (lambda: datetime.now(UTC))
    read = _read_case(journal, case_id)
    case_data, state, stimuli, seen, damage = read.case_data, read.state, read.stimuli, read.seen, read.damage
    last_t, last_wall = read.last_t, read.last_wall
    if case_data is None:
        _not_resumed(monitor, case_id, f"its first entry cannot be read ({damage.get('problem', 'missing')})",
                     journal)
        return None
    try:
        journal.resume_case(case_id)
    except (StorageError, JournalError, ValueError, sqlite3.Error) as exc:
        _not_resumed(monitor, case_id, f"the journal cannot continue it ({exc})")
        return None
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
    detail: dict[str, Any] = {"gap_s": round(gap, 3), "last_entry_t_s": round(last_t, 3),
                              "last_entry_wall": last_wall}
    if damage:
        detail["damaged"] = {"from_seq": damage.get("seq"), "entries": damage.get("unread"),
                             "problem": damage.get("problem")}
        log.error("case %s: entries from %s on cannot be read (%s); resumed from what came before", case_id,
                  damage.get("seq"), damage.get("problem"))
    try:
        monitor.resume_case(case_id, case_data, case_t, state, stimuli, seen, detail)
    except (KeyError, TypeError, ValueError) as exc:  # a state or stimulus that verifies but does not fit
        log.error("case %s: its saved state cannot be restored (%s); resumed without it", case_id, exc)
        monitor.ctx.case = None
        detail["damaged"] = {"problem": f"its saved engine state cannot be restored ({exc})",
                             **detail.get("damaged", {})}
        monitor.resume_case(case_id, case_data, case_t, None, [], seen, detail)
    return case_id


@dataclass
class _Read:
    case_data: Mapping[str, Any] | None = None
    state: Mapping[str, Any] | None = None
    stimuli: list[tuple[Mapping[str, Any], bool]] = field(default_factory=list)
    seen: set[tuple[str, int | None, str, str]] = field(default_factory=set)
    damage: dict[str, Any] = field(default_factory=dict)
    last_t: float = 0.0
    last_wall: str | None = None


def _read_case(journal: ResumableJournal, case_id: str) -> _Read:
    """What a resume needs from the case's entries that verify (``damage`` names the rest)."""
    r = _Read()
    for entry in journal.verified_entries(case_id, r.damage):
        if entry.t_s >= r.last_t:
            r.last_t = float(entry.t_s)
        r.last_wall = entry.wall
        pl = entry.payload
        try:
            if entry.kind == "case_opened":
                r.case_data = pl
            elif entry.kind == "engine" and pl.get("event") == "state":
                r.state = pl.get("detail")
                r.stimuli = [(p, False) for p, _after in r.stimuli]
                r.seen = set()
            elif entry.kind == "stimulus":
                r.stimuli.append((pl, True))
            elif entry.kind == "rule_event":
                r.seen.add((pl["kind"], pl.get("stimulus_index"), pl["side"], pl["site"]))
        except (KeyError, TypeError, AttributeError) as exc:
            r.damage.update(problem=f"entry {entry.seq} ({entry.kind}) does not hold what it should ({exc})",
                            seq=entry.seq, unread=None)
            break
    return r


def _not_resumed(monitor: Monitor, case_id: str | None, why: str, journal: Any = None) -> None:
    """A case left open that cannot be resumed: say so (technical alarm, latched); a case whose
    opening cannot be read is closed in the journal so that it is not tried at every start."""
    what = f"case {case_id}" if case_id else "a case left open"
    message = f"{what} could not be resumed: {why}; monitoring starts afresh, the journal keeps it for service"
    log.error("%s", message)
    if journal is not None and case_id is not None:
        try:
            journal.close_case(case_id, {"reason": f"not resumed: {why}"[:2000], "who": "engine"})
        except Exception as exc:  # noqa: BLE001 - the record is damaged already; monitoring goes on
            log.error("case %s could not be closed either: %s", case_id, exc)
    monitor.alarm_desk.raise_technical(AlarmKind.STORAGE_PROBLEM, "resume", message=f"Case record: {message}")
    monitor.alarm_desk.clear_technical(AlarmKind.STORAGE_PROBLEM, "resume")  # latched until acknowledged
    monitor.ledger.event("technical", "not_resumed", message, priority="medium")
    monitor.alarm_desk.dirty = True
