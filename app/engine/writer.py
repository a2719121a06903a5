"""The journal writer: the case journal is written beside the engine loop, never in its way.

Owns: ``JournalWriter`` (the ledger hands it every journal operation in order, as a
numbered *ticket*; it writes them with its own thread in the live engine, or at once in
the single-threaded engine), what happens while the disk cannot take them (a backlog kept
in memory, and what is dropped from it first), the disk-space levels and the ``Reserve``
file, and the recording state (``RecordingState``) the engine shows.
May import: the standard library, ``app.record.entries``, ``app.record.journal`` (its
exceptions), ``app.engine.seams``.

Durability. A ticket is *durable* once every entry in it is committed to the journal file
(``Journal.durable_seq``: WAL with ``synchronous=FULL``). Only then does the engine say
"recorded" (``Ledger.outcome``). A ticket can also be *refused* (its entries will never be
written: dropped to save space, or nothing is writable) or still *pending*. A ticket of raw
free-running EMG alone (``STREAM_KINDS``, a chunk a second) is committed without waiting for
the disk: the next ticket with anything else in it (a stimulus, an event) syncs it along
with its own, and when none comes the writer syncs it ``sync_s`` (1 s) after it was written.
Half the disk syncs of a case go, which the SD card of the appliance feels most; a power
cut loses at most that second of raw EMG more, and nothing the engine has announced.
The raw EMG reaches the writer as samples (``LaterEntry``): its lossless encoding, about a
millisecond per second of signal, is done here too, not on the engine loop (except while
more than ``COMPACT_BACKLOG_BYTES``, 8 MB, wait: the backlog keeps raw EMG encoded, a tenth
of the memory).

Order. Tickets reach the journal in the order they were handed over. While the journal
reports a problem (disk full, read-only, I/O errors) the writer stops handing it entries:
they wait in the backlog, unchained, and the writer asks the journal to retry every
``retry_s``; when it works again the backlog follows in order. A write that blocks (a
stalled disk) holds up only this thread: the engine keeps measuring and alarming, and the
recording state says the entries are waiting.

Group commit. The ``append`` tickets of one case that wait together (the writer fell behind:
a slow disk, a fast stimulation rate) are written in one transaction, one disk sync for all
of them (at most ``GROUP_MAX_BATCHES`` and ``GROUP_MAX_BYTES``; raw EMG alone still without
waiting for the disk). The writer thread begins a write at most every ``pace_s`` (50 ms):
a ticket that comes after a quiet spell is written at once, one that comes within 50 ms of
the last write waits for the rest of that time with those after it. Tickets that come
faster (a probe train at 30 Hz beside the vagal electrode, a backlog) then take one disk
sync per 50 ms instead of one each, and the thread wakes once per 50 ms instead of once per
ticket; its waking takes the engine loop's time (one interpreter lock), about 15 % of it in
``bench/engine.py``. "Recorded" and the events come at most that much later; the alarms
never wait for the disk. When that transaction cannot be written (an entry that cannot be made
or is invalid, the journal refusing), each ticket is written on its own as if they had not
been grouped, so one bad ticket never takes the others with it.

What is dropped first. The essentials (events, alarms, operator actions, measurements,
settings, the engine state) are never dropped for space. In memory: past half of
``max_backlog_bytes`` the raw free-running EMG waiting in the backlog is dropped (and new
EMG with it), past three quarters the stimulus epochs' waveforms (their measurements stay);
only past ``4 x max_backlog_bytes`` of essentials alone is anything else refused. On the
disk (``Reserve``, checked every ``check_s``): with less free space than
``low_free_bytes`` (about an hour of full recording) the raw EMG is no longer written
(level 1); when the disk is full the reserve file is released, waveforms are no longer
written either (level 2), and the essentials go on into the space the reserve held, sized
for ``reserve_hours`` of them. Each drop is counted per case and journaled (a ``storage``
entry ``not_recorded`` when recording is whole again, and when the case closes). Back to
level 0 once the free space holds the reserve again plus twice ``low_free_bytes``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.seams import FallbackItem, JournalItem, LaterEntry, QueuedItem, fallback_items, item_kind, made_items

log = logging.getLogger("lnm.engine")

DURABLE = "durable"
REFUSED = "refused"
PENDING = "pending"

RECORDING = "recording"
NEW_JOURNAL = "new_journal"
REDUCED = "reduced"
QUEUED = "queued"
NOT_RECORDING = "not_recording"

WAVEFORM_KINDS = ("stimulus",)  # entries whose waveform may be dropped (the measurement stays)
STREAM_KINDS = ("emg_block",)  # entries dropped whole first
EPOCH_KINDS = ("stimulus_waveform",)  # an epoch on its own: dropped whole with the waveforms
DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024
# past this much waiting, raw EMG handed over is encoded at once: a backlog keeps it compact
# (a second of samples, 320 kB, is ten times its encoding). Below it: the 25 s of raw EMG a
# stalled disk holds before that, and the seconds a stepped engine running a hundred times
# faster than real time hands over within one ``PACE_S`` (left to the writer thread)
COMPACT_BACKLOG_BYTES = 8 * 1024 * 1024
WAITING_S = 2.0  # entries waiting longer than this: the recording state says "queued"
SYNC_S = 1.0  # raw EMG committed without waiting for the disk is synced at most this long after
PACE_S = 0.05  # the writer thread begins a write at most this often (see "Group commit")
GROUP_MAX_BATCHES = 64  # append batches of one case written together in one transaction, at most
GROUP_MAX_BYTES = 8 * 1024 * 1024  # ... and at most this much of them (Batch.size)
RESERVE_HOURS = 8.0  # the essentials that still fit once the disk is full
# Measured (bench/record.py, "essentials"): the stepped engine on the virtual board with the
# probe stimulating continuously at the default 4 Hz and the continuous vagal electrode at the
# default 1 Hz, waveforms and raw EMG left out as after the disk filled: 16.1 MB per hour on
# disk (stimulus measurements 5 / s, engine-state entries, alarms, events; SQLite pages and
# the WAL checkpointed). Less stimulation takes less (APS alone with probe bursts: ~6 MB/h).
ESSENTIAL_BYTES_PER_HOUR = 16_500_000
WAL_ALLOWANCE = 16 * 1024 * 1024  # the journal's write-ahead log grows to about 1000 pages between checkpoints


def reserve_size(hours: float = RESERVE_HOURS) -> int:
    """Bytes of the storage reserve: ``hours`` of the essentials (every entry but the raw EMG
    and the epochs' waveforms) with SQLite's pages, at ``ESSENTIAL_BYTES_PER_HOUR``, a quarter
    again for safety, plus the write-ahead log (about 182 MB for 8 hours)."""
    return int(hours * ESSENTIAL_BYTES_PER_HOUR * 1.25) + WAL_ALLOWANCE


@dataclass
class Batch:
    """One journal operation of the ledger (``open``, ``append`` one transaction, ``close``)."""

    ticket: int
    op: str
    case_id: str
    items: list[QueuedItem]
    handed: float  # when the ledger handed it over (writer clock)
    size: int = 0
    fallback: list[FallbackItem] = field(default_factory=list)  # written instead of a dropped stream entry

    def __post_init__(self) -> None:
        self.size = sum(_item_size(i) for i in self.items)


def _item_size(item: QueuedItem) -> int:
    if isinstance(item, LaterEntry):
        return 400 + item.size + (4000 if item.kind in WAVEFORM_KINDS + STREAM_KINDS else 0)
    kind, payload, blob, _t = item
    return 400 + len(blob or b"") + (4000 if kind in WAVEFORM_KINDS + STREAM_KINDS else 0) + 40 * len(payload)


def strip_waveform(item: JournalItem, reason: str) -> JournalItem:
    """A stimulus entry without its epoch's waveform (the measurement stays)."""
    kind, payload, blob, t = item
    if blob is None and "waveform" not in payload and "waveform_in_stream" not in payload:
        return item
    rest = {k: v for k, v in payload.items() if k not in ("waveform", "waveform_in_stream")}
    rest["waveform_not_recorded"] = reason
    return kind, rest, None, t


@dataclass(frozen=True)
class RecordingState:
    """What the engine shows about its record (the state's ``recording``)."""

    state: str  # recording | new_journal | reduced | queued | not_recording
    message: str
    path: str | None = None
    queued: int = 0  # tickets waiting (in memory, or being written)
    queued_bytes: int = 0
    waiting_s: float = 0.0  # how long the oldest has waited
    level: int = 0  # 0 all, 1 without raw EMG, 2 without raw EMG and waveforms
    not_recorded: Mapping[str, int] = field(default_factory=dict)  # since the engine started, by what
    new_journal: str | None = None  # the start-up note when recording to a fresh journal
    problem: str = ""

    @property
    def ok(self) -> bool:
        """Everything handed over is being recorded in full."""
        return self.state in (RECORDING, NEW_JOURNAL)

    def to_json(self) -> dict[str, Any]:
        """As the state snapshot carries it."""
        return {"state": self.state, "message": self.message, "path": self.path, "queued": self.queued,
                "queued_bytes": self.queued_bytes, "waiting_s": round(self.waiting_s, 1), "level": self.level,
                "not_recorded": dict(self.not_recorded), "new_journal": self.new_journal, "problem": self.problem}


class Reserve:
    """A file of ``size`` bytes beside the journal, released when the disk is full so that the
    essentials still have room (see the module docstring)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = Path(path)
        self.size = int(size)

    @property
    def present(self) -> bool:
        """The reserve holds its space now."""
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def free_bytes(self) -> int:
        """Free space of the folder (without the reserve)."""
        st = os.statvfs(self.path.parent)
        return int(st.f_bavail * st.f_frsize)

    def ensure(self, margin: int = 0) -> bool:
        """Hold the reserve (allocating it when ``margin`` bytes stay free beside it); True when held."""
        if self.present:
            return True
        try:
            if self.free_bytes() < self.size + margin:
                return False
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)
                except OSError:
                    chunk = b"\0" * (1 << 20)
                    left = self.size
                    while left > 0:
                        left -= os.write(fd, chunk[:min(left, len(chunk))])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            return True
        except OSError as exc:
            log.warning("storage reserve %s not allocated: %s", self.path, exc)
            try:
                os.unlink(self.path.with_name(self.path.name + ".tmp"))
            except OSError:
                pass
            return False

    def release(self) -> bool:
        """Give the reserve's space to the journal; True when it was held."""
        try:
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("storage reserve %s cannot be released: %s", self.path, exc)
            try:  # truncating frees the blocks too
                os.truncate(self.path, 0)
                return True
            except OSError:
                return False


class JournalWriter:
    """Writes the ledger's tickets into the journal (see the module docstring).

    ``journal``: the ``app.record.journal.Journal`` (or any object of its shape), or None when
    nothing is writable. ``threaded``: write from an own thread (``start()``), else at once in
    ``submit`` and ``pump``. ``now``: the clock for the retry and waiting times (the engine's
    injected clock for the inline writer). ``heartbeat``: a supervision heartbeat (``busy``
    during a journal call, ``idle`` while waiting). ``on_progress``: called (from the writer
    thread) when tickets were resolved or the state changed, to wake the engine loop.
    ``opener``: makes a new journal when there is none (tried every ``reopen_s``).
    ``start_note``: the start-up's word about the journal (``(state, message)``: a new
    journal, or nothing writable). ``pace_s``: the writer thread begins a write at most this
    often (module docstring, "Group commit"; 0 writes every ticket as it comes).
    """

    def __init__(self, journal: Any, *, threaded: bool = False, now: Callable[[], float] | None = None,
                 heartbeat: Any = None, on_progress: Callable[[], None] | None = None,
                 opener: Callable[[], Any] | None = None, reserve: Reserve | None = None,
                 low_free_bytes: int = 0, start_note: tuple[str, str] | None = None,
                 max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES, retry_s: float = 1.0, check_s: float = 10.0,
                 reopen_s: float = 30.0, sync_s: float = SYNC_S, pace_s: float = PACE_S) -> None:
        self.journal = journal
        self.threaded = threaded
        self._now = now or time.monotonic
        self.heartbeat = heartbeat
        self.on_progress = on_progress
        self._opener = opener
        self.reserve = reserve
        self.low_free_bytes = int(low_free_bytes)
        self.max_backlog_bytes = int(max_backlog_bytes)
        self.retry_s, self.check_s, self.reopen_s = float(retry_s), float(check_s), float(reopen_s)
        self.sync_s = float(sync_s)
        self.pace_s = float(pace_s)
        self._pacing = False  # the thread waits out its pace (see "Group commit")
        self._last_write = -math.inf  # when the thread last began to write (time.monotonic)
        self._unsynced_since: float | None = None  # when raw EMG was first committed without a sync
        self._sync_now = False  # closing: sync at once
        self._lock = threading.Condition(threading.Lock())
        self._backlog: collections.deque[Batch] = collections.deque()
        self._backlog_bytes = 0
        self._handed: collections.deque[tuple[int, str, int]] = collections.deque()  # (ticket, case, seq) not durable
        self._refused: set[int] = set()
        self._refused_order: collections.deque[int] = collections.deque()
        self._last_ticket = 0
        self._last_announced = 0  # the newest ticket with more than raw EMG in it
        self._resolved_through = 0
        self._busy: Batch | None = None
        self._busy_since = 0.0
        self._failing = False
        self._problem = ""
        self._level = 0
        self._open_cases: dict[str, dict[str, Any]] = {}  # case data, to open it again in a new journal
        self._unopened: set[str] = set()  # cases whose opening did not reach the journal
        self._not_recorded: collections.Counter[str] = collections.Counter()  # since the engine started
        self._case_dropped: dict[str, collections.Counter[str]] = {}  # per open case, not yet journaled
        self._space_notes: list[str] = []
        self._next_retry = 0.0
        self._next_check = 0.0
        self._next_reopen = 0.0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._version = 0
        self.start_note = start_note
        self.errors = 0

    # ------------------------------------------------------------------ the ledger's side

    def submit(self, op: str, case_id: str, items: list[QueuedItem],
               fallback: list[FallbackItem] | None = None) -> int:
        """Hand over one operation; returns its ticket (never blocks on the disk). ``fallback``:
        entries written instead when its free-running EMG is not (the stimulus epochs that
        refer to those samples, as ``stimulus_waveform`` entries)."""
        if self._backlog_bytes > COMPACT_BACKLOG_BYTES and any(isinstance(i, LaterEntry) for i in items):
            try:
                items = list(made_items(items))
            except ValueError:  # (one that cannot be made is refused when written, and said so)
                pass
        with self._lock:
            self._last_ticket += 1
            batch = Batch(self._last_ticket, op, case_id, list(items), self._now(), fallback=list(fallback or ()))
            if op != "append" or any(item_kind(item) not in STREAM_KINDS for item in items):
                self._last_announced = self._last_ticket
            if op == "open" and items and not isinstance(items[0], LaterEntry):
                self._open_cases[case_id] = dict(items[0][1])
            self._admit(batch)
            if not self._pacing:  # (a pacing writer looks when its pause is over)
                self._lock.notify_all()
        if not self.threaded:
            self._drain()
        return batch.ticket

    def outcome(self, ticket: int) -> str:
        """``durable``, ``refused`` or ``pending``."""
        with self._lock:
            if ticket in self._refused:
                return REFUSED
            return DURABLE if ticket <= self._resolved_through else PENDING

    @property
    def last_ticket(self) -> int:
        """The newest ticket handed over."""
        return self._last_ticket

    @property
    def last_announced_ticket(self) -> int:
        """The newest ticket with entries other than raw EMG: what an event or a command's
        "recorded" waits for (raw EMG alone may wait up to ``sync_s`` for its disk sync)."""
        return self._last_announced

    @property
    def version(self) -> int:
        """Grows whenever tickets are resolved or the state changes (the ledger polls it)."""
        return self._version

    def pump(self) -> None:
        """The inline writer's timer: retries and disk checks (the threaded writer does its own).
        The engine calls it on every input; it does nothing until something waits or is due."""
        if not self.threaded and not self._idle():
            self._drain()

    def _idle(self) -> bool:
        """Nothing waits and no timer of ``_timers`` is due (the inline writer writes a ticket
        when it is handed over: between tickets only the timers have work)."""
        if self.journal is None or self._backlog or self._failing or self._sync_now or self._busy is not None:
            return False
        now = self._now()
        since = self._unsynced_since
        return (since is None or now - since < self.sync_s) and (self.reserve is None or now < self._next_check)

    def take_space_notes(self) -> list[str]:
        """Warnings about free space when a case opened (``Journal.space_warning``), once each."""
        if not self._space_notes:  # (the usual case, without the lock: a note added now comes next time)
            return []
        with self._lock:
            notes, self._space_notes = self._space_notes, []
        return notes

    def state(self) -> RecordingState:
        """The recording state now."""
        with self._lock:
            now = self._now()
            queued = len(self._backlog) + (1 if self._busy is not None else 0) + len(self._handed)
            oldest = [b.handed for b in list(self._backlog)[:1]]
            if self._busy is not None:
                oldest.append(self._busy_since)
            waiting = max(0.0, now - min(oldest)) if oldest else 0.0
            path = str(getattr(self.journal, "path", "")) or None
            note = self.start_note
            base: dict[str, Any] = dict(path=path, queued=queued, queued_bytes=self._backlog_bytes, waiting_s=waiting,
                        level=self._level, not_recorded=dict(self._not_recorded), problem=self._problem,
                        new_journal=note[1] if note and note[0] == NEW_JOURNAL else None)
            if self.journal is None:
                msg = note[1] if note and note[0] == NOT_RECORDING else (
                    self._problem or "no case journal can be written")
                return RecordingState(NOT_RECORDING, msg, **base)
            if self._failing or waiting > WAITING_S:
                what = self._problem or "the disk does not answer"
                return RecordingState(QUEUED, f"{queued} record entries wait in memory ({what}); "
                                              "monitoring and alarms continue", **base)
            if self._level:
                return RecordingState(REDUCED, _level_words(self._level), **base)
            if note and note[0] == NEW_JOURNAL:
                return RecordingState(NEW_JOURNAL, note[1], **base)
            return RecordingState(RECORDING, "recording", **base)

    # ------------------------------------------------------------------ the thread

    def start(self) -> None:
        """Start the writer thread (threaded writer)."""
        if not self.threaded or (self._thread is not None and self._thread.is_alive()):
            return
        self._closing = self._sync_now = False
        self._thread = threading.Thread(target=self._run, name="lnm-journal-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The writer thread runs (always true for the inline writer)."""
        return not self.threaded or (self._thread is not None and self._thread.is_alive())

    def restart(self, heartbeat: Any = None) -> None:
        """A new writer thread on the same backlog (the old one died: no journal call is under way)."""
        if heartbeat is not None:
            self.heartbeat = heartbeat
        self._thread = None
        self.start()

    def close(self, timeout_s: float = 5.0) -> bool:
        """Write what waits (up to ``timeout_s``), then stop the thread. True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        self._sync_now = True
        if not self.threaded:
            self._next_retry = 0.0
            self._drain()
            return self.idle()
        with self._lock:
            self._next_retry = 0.0
            self._lock.notify_all()
        while time.monotonic() < deadline and not self.idle():
            with self._lock:
                self._lock.wait(0.05)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.idle()

    def idle(self) -> bool:
        """Nothing waits: every ticket is resolved."""
        with self._lock:
            return not self._backlog and self._busy is None and not self._handed

    def _run(self) -> None:
        hb = self.heartbeat
        while True:
            with self._lock:
                if hb is not None:
                    hb.idle()
                if self._closing:
                    return
                if not self._writable():
                    self._lock.wait(0.2)  # (on waking without a ticket: the timers)
                if self._writable() and not self._sync_now:
                    rest = self._last_write + self.pace_s - time.monotonic()
                    if rest > 0:  # written in the last ``pace_s``: the next ones wait together
                        self._pacing = True
                        self._lock.wait(rest)
                        self._pacing = False
                        continue
                if self._writable():
                    self._last_write = time.monotonic()
            if hb is not None:
                hb.busy()
            try:
                self._drain()
            except Exception:  # noqa: BLE001 - the writer must outlive its own bugs; the ticket was refused
                log.exception("journal writer step failed")

    def _writable(self) -> bool:
        """Tickets wait and the journal takes them (the lock is held)."""
        return bool(self._backlog) and not self._failing and self.journal is not None

    # ------------------------------------------------------------------ writing

    def _drain(self) -> None:
        """Timers, then every batch that can go to the journal now: the ``append`` batches of
        one case waiting together in one transaction (one disk sync), each on its own when
        that fails (module docstring, "Group commit")."""
        self._timers()
        while True:
            with self._lock:
                if self._failing or self.journal is None or not self._backlog:
                    break
                group = self._take_group()
                if not group:
                    continue
                self._busy, self._busy_since = group[0], self._now()
            try:
                if len(group) == 1 or not self._write_group(group):
                    for batch in group:
                        self._write(batch)
            finally:
                with self._lock:
                    self._busy = None
                    self._resolve()
            self._progress()
        self._sync(self._now())
        with self._lock:
            self._resolve()

    def _take_group(self) -> list[Batch]:
        """The next batch from the backlog, with the ``append`` batches of the same case right
        behind it (at most ``GROUP_MAX_BATCHES`` and ``GROUP_MAX_BYTES``); the lock is held."""
        group: list[Batch] = []
        size = 0
        while self._backlog:
            nxt = self._backlog[0]
            if group and (nxt.op != "append" or nxt.case_id != group[0].case_id
                          or len(group) >= GROUP_MAX_BATCHES or size + nxt.size > GROUP_MAX_BYTES):
                break
            self._backlog.popleft()
            self._backlog_bytes -= nxt.size
            filtered = self._filtered(nxt)
            if filtered is None:  # nothing of it is written (the next one may lead)
                continue
            group.append(filtered)
            size += filtered.size
            if filtered.op != "append" or filtered.case_id in self._unopened:
                break  # (written on its own)
        return group

    def _write_group(self, group: list[Batch]) -> bool:
        """Several ``append`` batches of one case in one transaction. False when nothing of
        them was written (an entry that cannot be made or is invalid, or the journal raised):
        each is then written on its own, as if they had not been grouped."""
        j = self.journal
        from app.record.journal import JournalError

        try:
            made = [made_items(batch.items) for batch in group]
            lazy = all(self._lazy(j, batch) for batch in group)
            seqs = list(j.append_many(group[0].case_id, [item for items in made for item in items], sync=not lazy))
        except (JournalError, ValueError, OSError):
            return False  # (append_many is all or nothing: validated before anything is written)
        if lazy and self._unsynced_since is None:
            self._unsynced_since = self._now()
        start = 0
        for batch, items in zip(group, made, strict=True):
            self._settle(j, batch, seqs[start:start + len(items)])
            start += len(items)
        return True

    def _write(self, batch: Batch) -> None:
        j = self.journal
        from app.record.journal import JournalError

        try:
            if batch.case_id in self._unopened and batch.op != "open":
                raise JournalError(f"case {batch.case_id} was never opened in {j.path}")
            if batch.op == "open":
                _kind, payload, _blob, _t = made_items(batch.items[:1])[0]
                j.open_case({**payload, "case_id": batch.case_id})
                self._unopened.discard(batch.case_id)
                warning = getattr(j, "space_warning", None)
                if warning:
                    with self._lock:
                        self._space_notes.append(str(warning))
                seqs = [j.head_seq(batch.case_id)]
            elif batch.op == "close":
                self._journal_dropped(batch.case_id)
                _kind, payload, _blob, _t = made_items(batch.items[:1])[0]
                seqs = [j.close_case(batch.case_id, payload)]
                with self._lock:
                    self._open_cases.pop(batch.case_id, None)
            else:
                seqs = self._append(j, batch, made_items(batch.items))
        except (JournalError, ValueError, OSError) as exc:
            self.errors += 1
            if batch.op == "open":
                self._unopened.add(batch.case_id)
            log.error("case journal: %s %s of case %s not written: %s", batch.op,
                      ",".join(item_kind(i) for i in batch.items), batch.case_id, exc)
            with self._lock:
                self._refuse(batch, "error")
                self._problem = f"case record entries not written: {exc}"
                self._version += 1
            return
        self._settle(j, batch, seqs)

    def _settle(self, j: Any, batch: Batch, seqs: list[int | None]) -> None:
        """After ``batch`` went to the journal (``seqs``: what it gave its entries)."""
        from app.record.journal import JournalError

        if batch.fallback and any(s is None for s in seqs):  # the journal refused the stream: keep its epochs
            try:
                kept = j.append_many(batch.case_id, fallback_items(batch.fallback))
                if all(k is not None for k in kept):
                    seqs = list(kept)
            except (JournalError, ValueError, OSError) as exc:
                log.error("case journal: the epochs of refused EMG not written: %s", exc)
        status = j.status
        with self._lock:
            if any(s is None for s in seqs):
                self._refuse(batch, "queue_full")
            elif seqs:
                self._handed.append((batch.ticket, batch.case_id, max(int(s) for s in seqs if s is not None)))
        if not status.ok:
            self._begin_failure(status)

    def _append(self, j: Any, batch: Batch, items: list[JournalItem]) -> list[int | None]:
        """One ``append`` ticket (``items``: its entries, made); raw EMG alone is committed
        without waiting for the disk."""
        if self._lazy(j, batch):
            seqs = list(j.append_many(batch.case_id, items, sync=False))
            if self._unsynced_since is None:
                self._unsynced_since = self._now()
            return seqs
        if len(items) == 1:
            kind, payload, blob, t = items[0]
            return [j.append(batch.case_id, kind, payload, blob, t_s=t)]
        return list(j.append_many(batch.case_id, items))

    @staticmethod
    def _lazy(j: Any, batch: Batch) -> bool:
        """Raw EMG alone, to a journal that can commit without waiting for the disk."""
        return (getattr(j, "durable", False) is True and callable(getattr(j, "sync", None))
                and all(item_kind(item) in STREAM_KINDS for item in batch.items))

    def _sync(self, now: float) -> None:
        """Sync the raw EMG committed without waiting, when it is due (or at once when closing)."""
        j = self.journal
        if j is None or self._unsynced_since is None:
            return
        if not getattr(j, "unsynced", True):  # a later synced commit took it along
            self._unsynced_since = None
        elif self._sync_now or now - self._unsynced_since >= self.sync_s:
            try:
                if j.sync():
                    self._unsynced_since = None
            except Exception as exc:  # noqa: BLE001 - tried again at the next turn
                log.error("case journal: sync failed: %s", exc)
            with self._lock:
                self._resolve()
            self._progress()  # (the live engine's loop: tickets may be durable now)

    def _journal_dropped(self, case_id: str) -> None:
        """A ``storage`` entry in the case for what was not recorded since the last one."""
        with self._lock:
            dropped = self._case_dropped.pop(case_id, None)
        if not dropped or self.journal is None:
            return
        try:
            self.journal.append(case_id, "storage", {
                "event": "not_recorded", "dropped": dict(dropped),
                "message": "not recorded to save space or while nothing was writable: " + _dropped_words(dropped)})
        except Exception as exc:  # noqa: BLE001 - a note about the record; the record itself goes on
            log.error("case journal: the note of what was not recorded failed: %s", exc)

    # ------------------------------------------------------------------ failures, retries, space

    def _begin_failure(self, status: Any) -> None:
        """The journal reports a problem: hand it nothing more until a retry works (no lock held)."""
        with self._lock:
            if not self._failing:
                log.error("case journal: %s; entries wait in memory", status.message)
            self._failing = True
            self._problem = status.message or status.problem
            self._next_retry = self._now() + self.retry_s
            self._version += 1
            level = self._level
        if status.problem == "disk_full" and self.reserve is not None and level < 2:
            released = self.reserve.release()
            self._set_level(2, "the disk is full" + ("; the storage reserve was released" if released else ""))
            with self._lock:
                self._next_retry = 0.0  # at once, into the space the reserve held

    def _timers(self) -> None:
        now = self._now()
        self._sync(now)
        j = self.journal
        if j is None:
            if self._opener is not None and now >= self._next_reopen:
                self._next_reopen = now + self.reopen_s
                self._reopen()
            return
        if self._failing and now >= self._next_retry:
            self._next_retry = now + self.retry_s
            ok, message = False, ""
            try:
                ok = bool(j.flush())
                status = j.status
                ok, message = ok and status.ok, status.message
            except Exception as exc:  # noqa: BLE001 - retried later
                log.error("case journal retry failed: %s", exc)
            with self._lock:
                if ok:
                    self._failing = False
                    self._problem = ""
                    log.warning("case journal: writing again; %d entries waited in memory", len(self._backlog))
                else:
                    self._problem = message or self._problem
                self._version += 1
                self._resolve()
            if ok:
                for case_id in list(self._case_dropped):
                    self._journal_dropped(case_id)
            self._progress()
        if self.reserve is not None and now >= self._next_check:
            self._next_check = now + self.check_s
            self._check_space()

    def _check_space(self) -> None:
        reserve = self.reserve
        if reserve is None:
            return
        try:
            free = reserve.free_bytes()
        except OSError:
            return
        low = self.low_free_bytes
        with self._lock:
            level = self._level
        if level == 0 and low and free < low:
            self._set_level(1, f"less than {low / 1e6:.0f} MB free (about an hour of full recording)")
        elif level > 0 and free >= reserve.size + 2 * low and reserve.ensure(margin=2 * low):
            self._set_level(0, "space again")
            for case_id in list(self._case_dropped):
                self._journal_dropped(case_id)
        elif level == 0 and not reserve.present:
            reserve.ensure(margin=2 * low)

    def _set_level(self, level: int, why: str) -> None:
        with self._lock:
            if level == self._level:
                return
            self._level = level
            self._version += 1
            self._prune()
        (log.warning if level else log.info)("case record: %s: %s", why, _level_words(level))
        self._progress()

    def _reopen(self) -> None:
        try:
            journal = self._opener() if self._opener is not None else None
        except Exception as exc:  # noqa: BLE001 - still nothing writable: tried again later
            log.warning("case journal still cannot be opened: %s", exc)
            return
        if journal is None:
            return
        with self._lock:
            self.journal = journal
            self._problem = ""
            self.start_note = (NEW_JOURNAL, f"recording again, into {journal.path} (nothing was recorded before)")
            cases = dict(self._open_cases)
            self._version += 1
        for case_id, data in cases.items():  # the open case goes on in the new journal
            with self._lock:  # an inner batch (ticket 0): every ticket after it waits for it
                self._backlog.appendleft(Batch(0, "open", case_id, [("case_opened", data, None, 0.0)], self._now()))
                self._case_dropped.setdefault(case_id, collections.Counter())["before_journal"] += 1
        log.warning("case journal %s opened: recording again", journal.path)

    # ------------------------------------------------------------------ the backlog

    def _admit(self, batch: Batch) -> None:
        """A new batch joins the backlog (or is refused: nothing writable, or no room)."""
        if self.journal is None:
            self._refuse(batch, "nothing_writable")
            return
        f = self._filtered(batch)
        if f is None:
            return
        if self._backlog_bytes + f.size > 4 * self.max_backlog_bytes:
            self._refuse(f, "memory_full")
            return
        self._backlog.append(f)
        self._backlog_bytes += f.size
        if self._backlog_bytes > self.max_backlog_bytes // 2:
            self._prune()

    def _effective_level(self) -> int:
        level = self._level
        if self._backlog_bytes > self.max_backlog_bytes * 3 // 4:
            level = max(level, 2)
        elif self._backlog_bytes > self.max_backlog_bytes // 2:
            level = max(level, 1)
        return level

    def _filtered(self, batch: Batch) -> Batch | None:
        """The batch as the space allows now (None: nothing of it is written)."""
        level = self._effective_level()
        if level == 0 or batch.op != "append":
            return batch
        kept: list[QueuedItem] = []
        stream_dropped = False
        for item in batch.items:
            if item_kind(item) in STREAM_KINDS:
                self._count(batch.case_id, "emg_block")
                stream_dropped = True
                continue
            kept.extend(self._keep(batch.case_id, item, level))
        if stream_dropped:  # the epochs that lived in the dropped EMG are written on their own
            try:
                epochs = fallback_items(batch.fallback)
            except ValueError as exc:
                log.error("case journal: the epochs of EMG left out cannot be written: %s", exc)
                epochs = []
            for item in epochs:
                kept.extend(self._keep(batch.case_id, item, level))
        if not stream_dropped and len(kept) == len(batch.items) and all(
                a is b for a, b in zip(kept, batch.items, strict=True)):
            return batch
        if not kept:
            self._refused_add(batch.ticket)
            return None
        return Batch(batch.ticket, batch.op, batch.case_id, kept, batch.handed)

    def _keep(self, case_id: str, item: QueuedItem, level: int) -> list[QueuedItem]:
        """``item`` as level ``level`` (1 or 2) keeps it: at 2 no epoch waveforms (the lock is held)."""
        if level < 2 or isinstance(item, LaterEntry):  # (an entry made later is raw EMG)
            return [item]
        if item[0] in EPOCH_KINDS:
            self._count(case_id, "waveforms")
            return []
        if item[0] in WAVEFORM_KINDS and (item[2] is not None or "waveform_in_stream" in item[1]):
            self._count(case_id, "waveforms")
            return [strip_waveform(item, "not recorded: storage full")]
        return [item]

    def _prune(self) -> None:
        """Drop what matters least from the backlog (the lock is held)."""
        if not self._backlog:
            return
        old = list(self._backlog)
        self._backlog.clear()
        self._backlog_bytes = 0
        for b in old:
            f = self._filtered(b)
            if f is not None:
                self._backlog.append(f)
                self._backlog_bytes += f.size

    def _count(self, case_id: str, what: str, n: int = 1) -> None:
        self._not_recorded[what] += n
        self._case_dropped.setdefault(case_id, collections.Counter())[what] += n
        self._version += 1

    def _refuse(self, batch: Batch, why: str) -> None:
        for item in batch.items:
            kind = item_kind(item)
            self._count(batch.case_id, kind if why != "error" else f"{kind} (error)")
        self._refused_add(batch.ticket)

    def _refused_add(self, ticket: int) -> None:
        self._refused.add(ticket)
        self._refused_order.append(ticket)
        while len(self._refused_order) > 100_000:
            self._refused.discard(self._refused_order.popleft())
        self._version += 1

    def _resolve(self) -> None:
        """Move the durable watermark (the lock is held)."""
        j = self.journal
        while self._handed and j is not None:
            ticket, case_id, seq = self._handed[0]
            if j.durable_seq(case_id) < seq:
                break
            self._handed.popleft()
        # the oldest real ticket not yet durable (inner batches, ticket 0, only ever come first)
        candidates = [next((t for t, _c, _s in self._handed if t), None),
                      self._busy.ticket if self._busy is not None and self._busy.ticket else None,
                      next((b.ticket for b in self._backlog if b.ticket), None)]
        waiting = [t for t in candidates if t is not None]
        through = (min(waiting) - 1) if waiting else self._last_ticket
        through = max(through, self._resolved_through)
        if through != self._resolved_through:
            self._resolved_through = through
            self._version += 1

    def _progress(self) -> None:
        if self.threaded and self.on_progress is not None:
            try:
                self.on_progress()
            except Exception:  # noqa: BLE001 - waking the loop is a courtesy
                pass


def _level_words(level: int) -> str:
    if level >= 2:
        return ("STORAGE FULL: recording events, alarms, operator actions and measurements only (into the "
                "storage reserve); raw EMG and waveforms are not recorded")
    if level == 1:
        return "STORAGE NEARLY FULL: the raw free-running EMG is no longer recorded; everything else is"
    return "recording"


def _dropped_words(dropped: Mapping[str, int]) -> str:
    names = {"emg_block": "seconds of raw EMG", "waveforms": "stimulus waveforms (measurements kept)",
             "before_journal": "everything before the journal could be opened"}
    return ", ".join(f"{n} {names.get(k, k + ' entries')}" for k, n in sorted(dropped.items()))


__all__ = ["Batch", "DURABLE", "JournalWriter", "NEW_JOURNAL", "NOT_RECORDING", "PENDING", "QUEUED", "RECORDING",
           "REDUCED", "REFUSED", "RecordingState", "Reserve", "strip_waveform"]
