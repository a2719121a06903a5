"""The case journal: an append-only, hash-chained record of everything that happens in a case.

Owns: the SQLite journal file, writing entries (one committed transaction each, WAL mode,
``synchronous=FULL``: an entry ``append`` has returned for survives a crash or power
loss; ``append_many`` writes several entries of a case in one transaction, one durable
sync: after a crash either all of them are there or none; with ``sync=False`` a transaction
is committed without waiting for the disk, and is on it with the next synced transaction
or ``sync()``: ``durable_seq`` says which entries are), the per-case hash chain, the case
index across cases (``chain.py``), finding and resuming a case left open, handling storage
problems, and retention pruning.
May import: the standard library, ``app`` (version), ``app.record.entries``.

Layout. One file holds every case (``default_journal_path()``). Table ``entries`` holds
one row per entry: ``case_id, seq`` (0, 1, 2 ... per case), ``kind``, ``t_s`` (monotonic
case time, seconds), ``wall`` (UTC, ISO-8601), ``payload`` (canonical JSON text),
``payload_sha256``, ``blob`` (optional bytes), ``blob_sha256``, ``prev_hash`` and
``hash``. Triggers refuse UPDATE and DELETE; the API has no path to either.

Hash chain. ``hash = SHA-256(canonical JSON of {v, case, seq, kind, t_s, wall,
payload_sha256, blob_sha256, blob_len, prev})``: every field of the entry, the blob
through its digest, and the previous entry's hash (``GENESIS`` for seq 0). Changing,
removing, inserting or reordering an entry breaks the chain from that entry on
(``verify.py`` finds the first one). Removing the newest entries of a case leaves a
shorter valid chain: the report and the export carry the hash of the last entry, which
pins the length of a documented case.

Storage problems (disk full, read-only, corrupt file, file deleted or replaced): ``append``
does not raise. It keeps entries it cannot write in a bounded in-memory queue (in order,
already chained), reports ``StorageStatus(ok=False, message=...)`` through the
``on_status`` callback and ``status`` (the engine raises its "storage problem" technical
alarm on it), and retries at most every ``retry_interval_s`` on the next ``append`` or on
``flush()``. When the queue reaches its byte limit, new entries are refused (``append``
returns ``None``; a batch is refused whole) and counted per kind; free-running EMG (``emg_block``) is refused once
the queue is half full so that stimuli, events and alarms keep their room. When writing
works again the queue is written in order and a ``storage`` entry records the problem,
its start and what was refused. A journal file deleted while open is rescued from the open
connection (SQLite backup) back to its path; a file replaced by another is rescued to
``NAME.rescued-<UTC>.db`` and the journal continues there. Opening a file that is not an
SQLite database raises ``StorageError`` naming the file.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import datetime, UTC
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Iterator, Mapping

from app.record import entries as _entries
from app.record.atomic import SQLITE_MAGIC, fsync_dir, fsync_file
from app.record.storage import ROW_OVERHEAD, space_check
from app.record.chain import (  # noqa: F401 - GENESIS, sha256_hex, entry_hash: the journal's public names too
    GENESIS,
    CaseFacts,
    IndexRow,
    VerifyResult,
    check_case_index,
    check_case_rows,
    check_index_rows,
    entry_hash,
    index_hash,
    sha256_hex,
)

log = logging.getLogger(__name__)

FORMAT = "lnm-journal/2"
OLD_FORMAT = "lnm-journal/1"  # without the case index: read as it is, given an index when opened for writing
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_PIN_INTERVAL_S = 60.0
PAGE_SIZE = 8192  # new files: 2-3 kB waveform rows waste less of 8 kB pages than of 4 kB (bench/record.py: -6 %)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    case_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    t_s REAL NOT NULL,
    wall TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    blob BLOB,
    blob_sha256 TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (case_id, seq)
);
CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind, case_id);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the case journal is append-only: entries cannot be changed'); END;
CREATE TABLE IF NOT EXISTS case_index (
    n INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    case_id TEXT NOT NULL,
    wall TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_index_case ON case_index (case_id, n);
CREATE TABLE IF NOT EXISTS prune_permit (case_id TEXT PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS case_index_no_update BEFORE UPDATE ON case_index
BEGIN SELECT RAISE(ABORT, 'the case index is append-only: rows cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS case_index_no_delete BEFORE DELETE ON case_index
BEGIN SELECT RAISE(ABORT, 'the case index is append-only: rows cannot be deleted'); END;
"""
# entries may be deleted only by retention pruning (``prune_case``), which journals a
# ``pruned`` index row in the same transaction
_DELETE_TRIGGER = """
DROP TRIGGER IF EXISTS entries_no_delete;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
WHEN OLD.case_id NOT IN (SELECT case_id FROM prune_permit)
BEGIN SELECT RAISE(ABORT, 'the case journal is append-only: entries cannot be deleted'); END;
"""
_COLUMNS = "case_id, seq, kind, t_s, wall, payload, payload_sha256, blob, blob_sha256, prev_hash, hash"


class JournalError(Exception):
    """A journal operation was refused (unknown or closed case, conflicting writer...)."""


class StorageError(JournalError):
    """The journal file cannot be read or written. ``problem`` is a short code."""

    def __init__(self, message: str, path: str | os.PathLike = "", problem: str = "io") -> None:
        super().__init__(message)
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class StorageStatus:
    """The journal's storage state, as ``on_status`` reports it."""

    ok: bool
    path: str
    problem: str = ""  # "", "disk_full", "read_only", "corrupt", "missing", "replaced", "io", ...
    message: str = ""
    queued: int = 0  # entries waiting in memory
    queued_bytes: int = 0
    dropped: int = 0  # entries refused since the problem began (queue full)


@dataclass(frozen=True)
class Entry:
    """One written entry as read back."""

    seq: int
    case_id: str
    kind: str
    t_s: float
    wall: str
    payload: dict[str, Any]
    blob: bytes | None
    prev_hash: str
    hash: str
    payload_text: str = field(default="", repr=False, compare=False)


def default_journal_path() -> Path:
    """``$LNM_JOURNAL``, else ``$LNM_DATA_DIR/journal.db``, else ``~/.local/share/lnm/journal.db``."""
    if os.environ.get("LNM_JOURNAL"):
        return Path(os.environ["LNM_JOURNAL"])
    if os.environ.get("LNM_DATA_DIR"):
        return Path(os.environ["LNM_DATA_DIR"]) / "journal.db"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "lnm" / "journal.db"


def utc_iso(dt: datetime) -> str:
    """An aware time as the journal's UTC ISO-8601 text."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    """The journal's UTC ISO-8601 text as an aware time."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass
class _Row:
    case_id: str
    seq: int
    kind: str
    t_s: float
    wall: str
    payload: str
    payload_sha256: str
    blob: bytes | None
    blob_sha256: str | None
    prev_hash: str
    hash: str
    index: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # case-index rows written with it

    def values(self) -> tuple:
        return (self.case_id, self.seq, self.kind, self.t_s, self.wall, self.payload,
                self.payload_sha256, self.blob, self.blob_sha256, self.prev_hash, self.hash)

    @property
    def size(self) -> int:
        return len(self.payload) + (len(self.blob) if self.blob else 0) + 256 + 256 * len(self.index)


@dataclass
class _Head:
    case_id: str
    next_seq: int
    last_hash: str
    last_t_s: float
    base_t_s: float  # case time at t_origin
    t_origin: float  # clock reading when the case (or its resume) started
    closed: bool = False
    pin_due: float = 0.0  # clock reading from which the next entry is pinned in the case index
    close_stats: dict[str, Any] | None = None  # bytes and duration, for the "closed" index row
    pinned_seq: int = -1  # newest seq the case index pins


class _MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def classify(exc: BaseException) -> tuple[str, str]:
    """(problem code, plain words) for a storage exception."""
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ENOSPC:
            return "disk_full", "the disk is full"
        if exc.errno == errno.EROFS:
            return "read_only", "the storage is read-only"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "read_only", "no permission to write"
        if exc.errno == errno.ENOENT:
            return "missing", "the file or its folder is missing"
    msg = str(exc).lower()
    if "full" in msg:
        return "disk_full", "the disk is full"
    if "readonly" in msg or "read-only" in msg or "read only" in msg:
        return "read_only", "the storage is read-only"
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return "corrupt", "the database file is corrupt"
    if "unable to open" in msg:
        return "unavailable", "the database file cannot be opened"
    if "locked" in msg or "busy" in msg:
        return "busy", "the database is locked by another program"
    return "io", "disk input/output error"


class Journal:
    """The case journal file. Thread-safe; one writing process per file.

    ``clock``: object with ``now() -> float`` seconds (monotonic), used for case time
    when ``append`` gets no ``t_s`` and for retry timing. ``wall_clock``: returns an
    aware ``datetime`` (UTC wall time of entries). ``on_status``: called with a
    ``StorageStatus`` whenever storage goes bad, changes problem, starts refusing
    entries, or recovers. ``readonly``: open for reading only (``lnm verify/report``).
    ``durable=False`` (``synchronous=NORMAL``: consistent after a crash, but the newest
    entries may be lost on power loss) is for generating synthetic journals only, never
    for a patient's case.
    """

    def __init__(self, path: str | os.PathLike, *, clock: Any = None,
                 wall_clock: Callable[[], datetime] | None = None,
                 on_status: Callable[[StorageStatus], None] | None = None,
                 max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES, retry_interval_s: float = 1.0,
                 readonly: bool = False, durable: bool = True,
                 pin_interval_s: float = DEFAULT_PIN_INTERVAL_S, min_free_hours: float = 8.0) -> None:
        self.path = Path(path)
        self.pin_interval_s = float(pin_interval_s)
        self.min_free_hours = float(min_free_hours)
        self.space_warning: str | None = None  # set by open_case when space is short
        self.format = FORMAT
        self.readonly = readonly
        self.durable = durable
        self._clock = clock if clock is not None else _MonotonicClock()
        self._wall = wall_clock or _utcnow
        self._on_status = on_status
        self.max_queue_bytes = int(max_queue_bytes)
        self.retry_interval_s = float(retry_interval_s)
        self._lock = threading.RLock()
        self._heads: dict[str, _Head] = {}
        self._queue: deque[_Row] = deque()
        self._queued_bytes = 0
        self._dropped: dict[str, Counter] = {}
        self._failure: StorageError | None = None
        self._failure_since: str | None = None
        self._affected: set[str] = set()
        self._next_retry = 0.0
        self._conn: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None
        self._durable: dict[str, int] = {}  # per case: the newest seq committed to the file (durable)
        self._unsynced: dict[str, int] = {}  # per case: the newest seq committed with sync=False, not yet synced
        self._lazy = False  # the connection commits with synchronous=NORMAL now (sync=False)
        self._open()

    # ------------------------------------------------------------------ opening and closing

    def _open(self) -> None:
        path = self.path
        if self.readonly:
            if not path.exists():
                raise StorageError(f"case journal {path}: no such file", path, "missing")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                problem, words = classify(exc)
                raise StorageError(f"case journal {path}: cannot create its folder: {words} ({exc.strerror})",
                                   path, problem) from None
        self._check_magic(path)
        try:
            if self.readonly:
                conn = self._connect_readonly(path)
            else:
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "journal_meta" not in tables:  # another program's database: never ours to change
                    conn.close()
                    raise StorageError(f"case journal {path}: an SQLite database of another program (tables "
                                       f"{', '.join(sorted(tables)[:5])}), not an LNM case journal; it was not "
                                       "changed", path, "format")
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only in a new, empty file
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
                conn.execute("PRAGMA synchronous=FULL" if self.durable else "PRAGMA synchronous=NORMAL")
                conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
                conn.execute("INSERT OR IGNORE INTO journal_meta VALUES ('format', ?)", (FORMAT,))
                self._migrate(conn)
            fmt = conn.execute("SELECT value FROM journal_meta WHERE key='format'").fetchone()
        except sqlite3.Error as exc:
            problem, words = classify(exc)
            if problem == "corrupt" or "no such table" in str(exc):
                problem, words = "corrupt", "not a readable LNM case journal (corrupt, or not a journal)"
            raise StorageError(f"case journal {path}: {words} ({exc})", path, problem) from None
        if fmt is None or fmt[0] not in (FORMAT, OLD_FORMAT):
            conn.close()
            raise StorageError(f"case journal {path}: unknown journal format {fmt[0] if fmt else None!r} "
                               f"(this software reads {FORMAT} and {OLD_FORMAT})", path, "format")
        self.format = fmt[0]
        self._conn = conn
        self._lazy = False  # (opened with synchronous=FULL, or NORMAL when not durable)
        self._ident = self._stat_ident()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Give an ``lnm-journal/1`` file its case index: one ``adopted`` row per case as it is
        now (first and newest entry), then the format becomes ``lnm-journal/2``. In one
        transaction; what was removed before this cannot be seen afterwards either."""
        fmt = conn.execute("SELECT value FROM journal_meta WHERE key='format'").fetchone()
        if fmt is None or fmt[0] not in (FORMAT, OLD_FORMAT):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in [x for x in _DELETE_TRIGGER.split(";\n") if x.strip()]:
                conn.execute(stmt)
            if fmt[0] == OLD_FORMAT:
                wall = utc_iso(self._wall())
                items = []
                cases = conn.execute("SELECT case_id, min(seq), max(seq) FROM entries GROUP BY case_id "
                                     "ORDER BY min(rowid)").fetchall()
                for case_id, first, last in cases:
                    h0 = conn.execute("SELECT hash FROM entries WHERE case_id=? AND seq=?", (case_id, first)).fetchone()
                    hl = conn.execute("SELECT hash FROM entries WHERE case_id=? AND seq=?", (case_id, last)).fetchone()
                    closed = conn.execute("SELECT 1 FROM entries WHERE case_id=? AND kind='case_closed'",
                                          (case_id,)).fetchone() is not None
                    items.append(("adopted", case_id, wall, {
                        "first_seq": first, "first_hash": h0[0], "last_seq": last, "last_hash": hl[0],
                        "closed": closed, "from_format": OLD_FORMAT}))
                _insert_index(conn, items)
                conn.execute("UPDATE journal_meta SET value=? WHERE key='format'", (FORMAT,))
                log.warning("case journal %s: format %s given its case index (%d cases adopted)", self.path,
                            OLD_FORMAT, len(items))
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    @staticmethod
    def _check_magic(path: Path) -> None:
        try:
            with open(path, "rb") as f:
                head = f.read(100)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            return
        except OSError as exc:
            problem, words = classify(exc)
            raise StorageError(f"case journal {path}: cannot be read: {words} ({exc.strerror})", path,
                               problem) from None
        if head and head[:len(SQLITE_MAGIC)] != SQLITE_MAGIC:
            raise StorageError(
                f"case journal {path}: the file is corrupt (not an SQLite database: it starts with "
                f"{head[:8]!r}); it was not changed, move it aside to start a new journal", path, "corrupt")
        problem = _truncation(path, head, size)
        if problem:
            raise StorageError(f"case journal {path}: the file is damaged ({problem}); it was not changed", path,
                               "corrupt")

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection:
        uri = f"file:{path.resolve()}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=5.0)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            # a WAL database on read-only media: read it as immutable, but only when no
            # entries wait in its WAL (immutable reads would silently leave them out)
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StorageError(f"case journal {path}: cannot be read without write access to its folder "
                                   f"while entries wait in {wal.name} ({exc}); run as the engine's user",
                                   path, "read_only") from None
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False, isolation_level=None)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn

    def _stat_ident(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def close(self) -> int:
        """Write what is queued if possible, then close. Returns entries left unwritten."""
        with self._lock:
            if self._conn is None:
                return 0
            if self._queue and not self.readonly:
                self.flush()
            self._pin_open_cases()
            self.sync()
            left = len(self._queue)
            if left:
                log.error("case journal %s: closing with %d entries unwritten (%s)", self.path, left,
                          self._failure)
            try:
                self._conn.close()
            except sqlite3.Error as exc:  # closing a broken file: nothing more to save
                log.error("case journal %s: close failed: %s", self.path, exc)
            self._conn = None
            return left

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"case journal {self.path} is closed")
        return self._conn

    # ------------------------------------------------------------------ cases

    def open_case(self, case_data: Mapping[str, Any]) -> str:
        """Start a case; returns its id. ``case_data`` is the ``case_opened`` payload
        (``patient_id``, ``planned_sides`` required; ``software_version`` and ``date``
        are filled in). ``case_id`` may be given in ``case_data`` to choose the id."""
        from app import __version__

        self._writable()
        data = dict(case_data)
        now = self._wall()
        data.setdefault("software_version", __version__)
        data.setdefault("date", now.astimezone(UTC).strftime("%Y-%m-%d"))
        data["format"] = FORMAT
        case_id = str(data.pop("case_id", "") or f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}")
        _entries.validate("case_opened", data)
        with self._lock:
            if case_id in self._heads or self._case_exists(case_id):
                raise JournalError(f"case {case_id} already exists in {self.path}")
            self._heads[case_id] = _Head(case_id, 0, GENESIS, 0.0, 0.0, self._clock.now())
            self._append_locked(case_id, "case_opened", _entries.canonical_json(data), None, 0.0)
            self._check_space(case_id)
        return case_id

    def _check_space(self, case_id: str) -> None:
        """Before monitoring starts: is there room for ``min_free_hours`` of this case?"""
        self.space_warning = None
        if self.min_free_hours <= 0:
            return
        try:
            check = space_check(self, self.min_free_hours)
        except (OSError, sqlite3.Error) as exc:
            log.warning("case journal %s: free space not known (%s)", self.path, exc)
            return
        if check.ok:
            return
        self.space_warning = check.message
        log.warning("%s", check.message)
        self._append_locked(case_id, "storage", _entries.canonical_json({
            "event": "low_space", "message": check.message, "free_bytes": check.free_bytes,
            "hours_left": round(check.hours_left, 2), "bytes_per_hour": check.bytes_per_hour,
            "min_hours": self.min_free_hours, "path": str(self.path)}), None, None)

    def append(self, case_id: str, kind: str, payload: Mapping[str, Any], blob: bytes | None = None,
               t_s: float | None = None, sync: bool = True) -> int | None:
        """Append one entry; returns its seq, or ``None`` if storage is failing and the
        in-memory queue is full (the entry is counted as refused). ``t_s`` defaults to
        the case clock. Invalid kind/payload raises ``ValueError``. ``sync=False``: committed
        without waiting for the disk (see ``sync``)."""
        _entries.validate(kind, payload, blob)
        if t_s is not None and not math.isfinite(float(t_s)):
            raise ValueError(f"journal entry {kind}: t_s must be a finite number of seconds, got {t_s!r}")
        text = _entries.canonical_json(payload)
        if blob is not None:
            blob = bytes(blob)
        self._writable()
        with self._lock:
            return self._append_locked(case_id, kind, text, blob, None if t_s is None else float(t_s), sync)

    def append_many(self, case_id: str, items: Iterable[tuple], sync: bool = True) -> list[int | None]:
        """Append several entries of one case in ONE transaction (one durable sync), in
        order, on the same hash chain as one ``append`` after the other. ``items``: tuples
        ``(kind, payload)``, ``(kind, payload, blob)`` or ``(kind, payload, blob, t_s)``.
        All or nothing: every entry is validated before anything is written (an invalid
        one raises ``ValueError`` and none is written), a crash leaves all of them or none,
        and while storage is failing the batch is queued whole or refused whole. Returns
        their seqs (``None`` for each when refused)."""
        rows_in: list[tuple[str, str, bytes | None, float | None]] = []
        for item in items:
            if not 2 <= len(item) <= 4:
                raise ValueError(f"journal batch item must be (kind, payload[, blob[, t_s]]), got {len(item)} fields")
            kind, payload = item[0], item[1]
            blob = item[2] if len(item) > 2 else None
            t_s = item[3] if len(item) > 3 else None
            _entries.validate(kind, payload, blob)
            if t_s is not None and not math.isfinite(float(t_s)):
                raise ValueError(f"journal entry {kind}: t_s must be a finite number of seconds, got {t_s!r}")
            rows_in.append((kind, _entries.canonical_json(payload), None if blob is None else bytes(blob),
                            None if t_s is None else float(t_s)))
        if not rows_in:
            return []
        self._writable()
        with self._lock:
            return self._append_batch_locked(case_id, rows_in, sync)

    def close_case(self, case_id: str, payload: Mapping[str, Any] | None = None) -> int | None:
        """Append ``case_closed``; the case takes no more entries. The case index records
        the close (last seq and hash, bytes and duration of the case)."""
        with self._lock:
            head = self._head(case_id)
            head.close_stats = self._case_stats(case_id, head)
            seq = self.append(case_id, "case_closed", dict(payload or {}))
            self._heads[case_id].closed = True
            if self._queue:
                self.flush()
            return seq

    def resume_case(self, case_id: str) -> dict[str, Any]:
        """Continue a case left open (after a crash). Returns its ``case_opened`` data.
        Case time continues from the later of its last entry and the wall time elapsed
        since it was opened."""
        self._writable()
        with self._lock:
            head = self._load_head(case_id)
            if head.closed:
                raise JournalError(f"case {case_id} is closed; it cannot be resumed")
            head.pin_due = self._clock.now()  # the next entry pins where the case resumed
            self._heads[case_id] = head
            self._durable[case_id] = head.next_seq - 1
            return self.case_data(case_id)

    def open_cases(self) -> list[str]:
        """Cases without a ``case_closed`` entry (left open by a crash or power loss), oldest first."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT case_id FROM entries WHERE seq = 0 AND case_id NOT IN "
                "(SELECT case_id FROM entries WHERE kind = 'case_closed') ORDER BY rowid").fetchall()
        return [r[0] for r in rows]

    def find_open_case(self) -> str | None:
        """The most recently opened case left open, or ``None``."""
        cases = self.open_cases()
        return cases[-1] if cases else None

    def cases(self) -> list[dict[str, Any]]:
        """Every case, in the entries or only in the case index (pruned, or removed): id,
        opened (wall), patient_id, procedure, planned_sides, entries, closed (wall or None),
        last_hash, state (``open``, ``closed``, ``pruned``, ``missing``, ``unindexed``,
        ``damaged``) and problems (what the case index shows was removed or added)."""
        with self._lock:
            first = {c: (w, pl) for c, w, pl in self.conn.execute(
                "SELECT case_id, wall, payload FROM entries WHERE seq = 0")}
            closed = dict(self.conn.execute("SELECT case_id, wall FROM entries WHERE kind = 'case_closed'").fetchall())
            order = self._case_order()
            index, index_problem = self._index_by_case()
            out: list[dict[str, Any]] = []
            for case_id in order:
                facts = self._facts(case_id)
                wall, payload = first.get(case_id, (None, None))
                rows = index.get(case_id, [])
                start = next((r for r in rows if r.event in ("opened", "adopted")), None)
                try:
                    data = _json_loads(payload) if payload else {}
                except ValueError:
                    data = {}
                if self.format == OLD_FORMAT:
                    verdict_state = "closed" if case_id in closed else "open"
                    problems: tuple[str, ...] = ()
                    if facts.first_seq not in (0, None):
                        verdict_state, problems = "damaged", (f"case {case_id}: its first entry was removed",)
                else:
                    verdict = check_case_index(facts, rows)
                    verdict_state, problems = verdict.state, verdict.problems
                pruned = next((r for r in rows if r.event == "pruned"), None)
                summary = pruned.data if pruned is not None else {}
                opened = wall or summary.get("opened") or (start.wall if start else "")
                out.append({"case_id": case_id, "opened": opened,
                            "patient_id": data.get("patient_id", summary.get("patient_id")),
                            "procedure": data.get("procedure"), "planned_sides": data.get("planned_sides"),
                            "entries": facts.count if not pruned else summary.get("entries", 0),
                            "closed": closed.get(case_id) or summary.get("closed"),
                            "last_hash": facts.hash_at(facts.last_seq) if facts.last_seq is not None
                            else summary.get("last_hash"),
                            "state": verdict_state, "problems": list(problems)})
        if index_problem:
            for c in out:
                c["problems"].append(index_problem)
        return out

    def case_data(self, case_id: str) -> dict[str, Any]:
        with self._lock:
            row = self.conn.execute(
                "SELECT payload FROM entries WHERE case_id = ? AND seq = 0", (case_id,)).fetchone()
        if row is None:
            raise JournalError(f"no case {case_id!r} in {self.path}")
        return _json_loads(row[0])

    def resolve_case(self, ref: str) -> str:
        """A case id from an exact id, a unique prefix, ``last`` or ``open``."""
        with self._lock:
            ids = self._case_order()
        if not ids:
            raise JournalError(f"case journal {self.path} holds no cases")
        if ref in ("last", "latest"):
            return ids[-1]
        if ref == "open":
            found = self.find_open_case()
            if found is None:
                raise JournalError(f"no open case in {self.path}")
            return found
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise JournalError(f"case {ref!r} is ambiguous in {self.path}: " + ", ".join(matches[:5]))
        raise JournalError(f"no case {ref!r} in {self.path} (lnm cases lists them)")

    def last_hash(self, case_id: str) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT hash FROM entries WHERE case_id = ? ORDER BY seq DESC LIMIT 1",
                                    (case_id,)).fetchone()
        return row[0] if row else None

    def entries(self, case_id: str, kinds: Iterable[str] | None = None, blobs: bool = True,
                page: int = 512) -> Iterator[Entry]:
        """The written entries of a case in seq order (optionally only some kinds)."""
        kinds = list(kinds) if kinds is not None else None
        blob_col = "blob" if blobs else "NULL"
        where = "case_id = ? AND seq > ?"
        if kinds:
            where += " AND kind IN (" + ",".join("?" * len(kinds)) + ")"
        sql = (f"SELECT case_id, seq, kind, t_s, wall, payload, {blob_col}, prev_hash, hash FROM entries "
               f"WHERE {where} ORDER BY seq LIMIT {int(page)}")
        last = -1
        while True:
            with self._lock:
                rows = self.conn.execute(sql, [case_id, last] + (kinds or [])).fetchall()
            for c, seq, kind, t_s, wall, payload, blob, prev, h in rows:
                yield Entry(seq, c, kind, t_s, wall, _json_loads(payload), blob, prev, h, payload)
            if len(rows) < page:
                return
            last = rows[-1][1]

    def verified_entries(self, case_id: str, report: dict[str, Any], page: int = 512) -> Iterator[Entry]:
        """The entries of a case in seq order, without blobs, as far as they verify: each one's
        payload against its digest, its hash recomputed (the blob through its stored digest and
        length; the blob's bytes are left to ``verify``), its link to the one before and its
        JSON. Stops at the first entry that does not verify or cannot be read, and says so in
        ``report`` (``problem``, ``seq`` and ``unread``: that entry and those after it). Never
        raises for damage (crash resume reads a damaged case with it)."""
        prev, expected, last = GENESIS, 0, -1
        sql = ("SELECT seq, kind, t_s, wall, payload, payload_sha256, blob_sha256, length(blob), prev_hash, hash "
               f"FROM entries WHERE case_id = ? AND seq > ? ORDER BY seq LIMIT {int(page)}")
        while True:
            try:
                with self._lock:
                    rows = self.conn.execute(sql, (case_id, last)).fetchall()
            except sqlite3.Error as exc:
                self._unreadable(case_id, report, expected, f"the journal cannot be read there ({exc})")
                return
            for seq, kind, t_s, wall, payload, psha, bsha, blen, prev_hash, h in rows:
                problem = _entry_problem(case_id, seq, expected, kind, t_s, wall, payload, psha, bsha, blen,
                                         prev_hash, h, prev)
                if problem is None:
                    try:
                        data = _json_loads(payload)
                        if not isinstance(data, dict):
                            raise ValueError("not an object")
                    except ValueError:
                        problem = "its payload is not readable JSON"
                if problem is not None:
                    self._unreadable(case_id, report, seq if seq == expected else expected, problem)
                    return
                yield Entry(seq, case_id, kind, t_s, wall, data, None, prev_hash, h, payload)
                prev, expected, last = h, seq + 1, seq
            if len(rows) < page:
                return

    def _unreadable(self, case_id: str, report: dict[str, Any], seq: int, problem: str) -> None:
        try:
            with self._lock:
                n = self.conn.execute("SELECT count(*) FROM entries WHERE case_id = ? AND seq >= ?",
                                      (case_id, seq)).fetchone()[0]
        except sqlite3.Error:
            n = None
        report.update(problem=problem, seq=seq, unread=n)

    def entry(self, case_id: str, seq: int) -> Entry | None:
        """One written entry (with its blob), or ``None``."""
        with self._lock:
            row = self.conn.execute(
                "SELECT case_id, seq, kind, t_s, wall, payload, blob, prev_hash, hash FROM entries "
                "WHERE case_id = ? AND seq = ?", (case_id, int(seq))).fetchone()
        if row is None:
            return None
        c, sq, kind, t_s, wall, payload, blob, prev, h = row
        return Entry(sq, c, kind, t_s, wall, _json_loads(payload), blob, prev, h, payload)

    def verify(self, case_id: str) -> VerifyResult:
        """Recompute the chain of a case and hold it against the case index
        (``app.record.chain``): the first altered, removed or added entry, or intact."""
        with self._lock:
            try:
                cur = self.conn.execute(
                    "SELECT seq, kind, t_s, wall, payload, payload_sha256, blob, blob_sha256, prev_hash, hash "
                    "FROM entries WHERE case_id = ? ORDER BY seq", (case_id,))
                try:
                    result = check_case_rows(case_id, _iter(cur),
                                             lambda prev, seq: self._moved_from(case_id, prev, seq))
                except LookupError:
                    result = None
                if self.format == OLD_FORMAT:
                    if result is None:
                        raise JournalError(f"no case {case_id!r} in {self.path}")
                    return replace(result, notes=result.notes + (
                        f"the journal is in the older format {OLD_FORMAT} without a case index: a removed case or "
                        "removed last entries cannot be seen (the engine gives it an index when it next opens it)",))
                index, index_problem = self._index_by_case()
                rows = index.get(case_id, [])
                if result is None and not rows:
                    raise JournalError(f"no case {case_id!r} in {self.path}")
                verdict = check_case_index(self._facts(case_id), rows)
            except sqlite3.Error as exc:
                raise StorageError(f"case journal {self.path}: cannot be read ({exc})", self.path, "corrupt") from None
        if verdict.state == "pruned" and not verdict.problems:
            d = verdict.pruned or {}
            return VerifyResult(True, case_id, 0, d.get("last_hash"), closed=True, pruned=d)
        problems = list(verdict.problems) + ([index_problem] if index_problem else [])
        if result is None:
            return VerifyResult(False, case_id, 0, None, verdict.first_problem_seq, None, "; ".join(problems))
        if not result.ok:
            return result
        if problems:
            return VerifyResult(False, case_id, result.entries, None, verdict.first_problem_seq, None,
                                "; ".join(problems), closed=result.closed)
        return replace(result, notes=verdict.notes)

    def _moved_from(self, case_id: str, prev: str, seq: int) -> int | None:
        """If this entry's prev_hash is the hash of another entry, it was written after that one."""
        row = self.conn.execute("SELECT seq FROM entries WHERE case_id = ? AND hash = ?", (case_id, prev)).fetchone()
        if row is None or row[0] + 1 == seq:
            return None
        return row[0] + 1

    # ------------------------------------------------------------------ the case index

    def index_rows(self) -> tuple[list[IndexRow], str | None]:
        """The case index rows that verify, in order, and the first problem of its chain (or None)."""
        if self.format == OLD_FORMAT:
            return [], None
        with self._lock:
            cur = self.conn.execute("SELECT n, event, case_id, wall, data, prev_hash, hash FROM case_index ORDER BY n")
            return check_index_rows(_iter(cur))

    def index_head(self) -> dict[str, Any] | None:
        """``{"n", "hash"}`` of the newest case-index row (pins every case up to now), or None."""
        if self.format == OLD_FORMAT:
            return None
        with self._lock:
            row = self.conn.execute("SELECT n, hash FROM case_index ORDER BY n DESC LIMIT 1").fetchone()
        return {"n": row[0], "hash": row[1]} if row else None

    def _case_order(self) -> list[str]:
        """Every case id, oldest first: as the case index lists them, then any only in the entries."""
        ids: list[str] = []
        if self.format != OLD_FORMAT:
            ids = [r[0] for r in self.conn.execute("SELECT case_id FROM case_index GROUP BY case_id ORDER BY min(n)")]
        known = set(ids)
        ids += [r[0] for r in self.conn.execute("SELECT case_id FROM entries GROUP BY case_id ORDER BY min(rowid)")
                if r[0] not in known]
        return ids

    def _index_by_case(self) -> tuple[dict[str, list[IndexRow]], str | None]:
        rows, problem = self.index_rows()
        by_case: dict[str, list[IndexRow]] = {}
        for r in rows:
            by_case.setdefault(r.case_id, []).append(r)
        if problem is not None:
            problem = f"the case index is damaged: {problem}; cases after that row cannot be checked"
        return by_case, problem

    def _facts(self, case_id: str) -> CaseFacts:
        conn = self.conn
        count, first, last = conn.execute("SELECT count(*), min(seq), max(seq) FROM entries WHERE case_id = ?",
                                          (case_id,)).fetchone()
        has_closed = conn.execute("SELECT 1 FROM entries WHERE case_id = ? AND kind = 'case_closed'",
                                  (case_id,)).fetchone() is not None

        def hash_at(seq: int | None) -> str | None:
            if seq is None:
                return None
            row = conn.execute("SELECT hash FROM entries WHERE case_id = ? AND seq = ?", (case_id, int(seq))).fetchone()
            return row[0] if row else None

        return CaseFacts(case_id, int(count), first, last, hash_at, has_closed)

    def _case_stats(self, case_id: str, head: _Head) -> dict[str, Any]:
        """Bytes the case holds and its duration (for the ``closed`` index row and storage figures)."""
        try:
            row = self.conn.execute(
                "SELECT coalesce(sum(length(payload) + coalesce(length(blob), 0)), 0), count(*) FROM entries "
                "WHERE case_id = ?", (case_id,)).fetchone()
        except sqlite3.Error:
            row = (0, 0)
        queued = [r for r in self._queue if r.case_id == case_id]
        size = int(row[0]) + sum(len(r.payload) + len(r.blob or b"") for r in queued)
        n = int(row[1]) + len(queued) + 1
        return {"bytes": size + ROW_OVERHEAD * n, "duration_s": round(self._case_time(head), 3)}

    def add_index_event(self, event: str, case_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Write one case-index row now (``exported``...); returns it as ``{"n", "hash"}``.
        Raises ``StorageError`` when it cannot be written."""
        self._writable()
        if event not in ("exported", "checkpoint"):
            raise ValueError(f"case index event {event!r} is written by the journal itself")
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                written = _insert_index(conn, [(event, case_id, utc_iso(self._wall()), dict(data))])
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                problem, words = classify(exc)
                raise StorageError(f"case journal {self.path}: cannot write the case index: {words} ({exc})",
                                   self.path, problem) from None
        return written[-1]

    def prune_case(self, case_id: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Remove a case's entries, keeping ``summary`` in a ``pruned`` case-index row, in
        ONE transaction (retention, ``app.record.storage.prune``: the caller has checked
        that the case was exported and verified). Returns the index row ``{"n", "hash"}``."""
        self._writable()
        with self._lock:
            if case_id in self._heads and not self._heads[case_id].closed:
                raise JournalError(f"case {case_id} is open in this engine; it cannot be pruned")
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                written = _insert_index(conn, [("pruned", case_id, utc_iso(self._wall()), dict(summary))])
                conn.execute("INSERT OR REPLACE INTO prune_permit VALUES (?)", (case_id,))
                conn.execute("DELETE FROM entries WHERE case_id = ?", (case_id,))
                conn.execute("DELETE FROM prune_permit WHERE case_id = ?", (case_id,))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                problem, words = classify(exc)
                raise StorageError(f"case journal {self.path}: cannot prune case {case_id}: {words} ({exc})",
                                   self.path, problem) from None
            self._heads.pop(case_id, None)
        return written[-1]

    def _pin_open_cases(self) -> None:
        """Pin every open case's newest entry in the case index (the engine is stopping)."""
        if self.readonly or self._queue or self._failure is not None or self.format == OLD_FORMAT:
            return
        items = [("checkpoint", h.case_id, utc_iso(self._wall()), {"seq": h.next_seq - 1, "hash": h.last_hash})
                 for h in self._heads.values() if not h.closed and h.next_seq > 0 and h.pinned_seq != h.next_seq - 1]
        if not items:
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            _insert_index(self.conn, items)
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            log.error("case journal %s: open cases not pinned at close: %s", self.path, exc)

    # ------------------------------------------------------------------ storage state

    @property
    def status(self) -> StorageStatus:
        with self._lock:
            return self._status()

    def _status(self) -> StorageStatus:
        dropped = sum(sum(c.values()) for c in self._dropped.values())
        if self._failure is None:
            return StorageStatus(True, str(self.path), queued=len(self._queue), queued_bytes=self._queued_bytes,
                                 dropped=dropped)
        return StorageStatus(False, str(self.path), self._failure.problem, str(self._failure), len(self._queue),
                             self._queued_bytes, dropped)

    def _notify(self) -> None:
        if self._on_status is not None:
            self._on_status(self._status())

    def durable_seq(self, case_id: str) -> int:
        """The newest seq of ``case_id`` committed to the file by this journal object and on the
        disk (a commit with ``synchronous=FULL``, or ``sync()`` after commits without); -1 when
        none. Entries are committed in seq order, so every entry up to it is on the disk too; a
        seq ``append`` returned above it is only committed (``sync=False``) or queued.
        Takes no lock (a dictionary read): the engine asks while another thread writes."""
        return self._durable.get(case_id, -1)

    @property
    def unsynced(self) -> bool:
        """Entries are committed with ``sync=False`` and not yet on the disk."""
        return bool(self._unsynced)

    def sync(self) -> bool:
        """Put every entry committed with ``sync=False`` on the disk (the write-ahead log is
        synced, as a commit with ``synchronous=FULL`` does). True when none is left unsynced;
        False (logged) when the file system refuses (the next synced commit tries again)."""
        with self._lock:
            if not self._unsynced or self._conn is None:
                return not self._unsynced
            wal = self.path.with_name(self.path.name + "-wal")
            try:
                try:
                    fd = os.open(wal, os.O_RDONLY)
                except FileNotFoundError:  # checkpointed and removed: the frames are in the file itself
                    fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.error("case journal %s: cannot sync the entries written without waiting: %s", self.path, exc)
                return False
            self._synced()
            return True

    def _synced(self) -> None:
        """Everything committed so far is on the disk."""
        for case_id, seq in self._unsynced.items():
            if seq > self._durable.get(case_id, -1):
                self._durable[case_id] = seq
        self._unsynced.clear()

    def head_seq(self, case_id: str) -> int:
        """The newest seq given to an entry of ``case_id`` (written or queued); -1 when none."""
        with self._lock:
            head = self._heads.get(case_id)
            return head.next_seq - 1 if head is not None else -1

    def flush(self) -> bool:
        """Try now to write every queued entry. True when nothing is left queued."""
        with self._lock:
            self._next_retry = 0.0
            self._retry()
            return not self._queue

    # ------------------------------------------------------------------ internals

    def _writable(self) -> None:
        if self.readonly:
            raise JournalError(f"case journal {self.path} is open read-only")

    def _case_exists(self, case_id: str) -> bool:
        try:
            return self.conn.execute("SELECT 1 FROM entries WHERE case_id = ? AND seq = 0",
                                     (case_id,)).fetchone() is not None
        except sqlite3.Error:
            return False

    def _load_head(self, case_id: str) -> _Head:
        try:
            row = self.conn.execute(
                "SELECT seq, hash, t_s FROM entries WHERE case_id = ? ORDER BY seq DESC LIMIT 1",
                (case_id,)).fetchone()
            first = self.conn.execute("SELECT wall FROM entries WHERE case_id = ? AND seq = 0",
                                      (case_id,)).fetchone()
            closed = self.conn.execute("SELECT 1 FROM entries WHERE case_id = ? AND kind = 'case_closed'",
                                       (case_id,)).fetchone() is not None
        except sqlite3.Error as exc:
            problem, words = classify(exc)
            raise StorageError(f"case journal {self.path}: cannot read case {case_id}: {words} ({exc})",
                               self.path, problem) from None
        if row is None or first is None:
            raise JournalError(f"no case {case_id!r} in {self.path}")
        seq, h, last_t = row
        try:
            elapsed = (self._wall() - parse_utc(first[0])).total_seconds()
        except ValueError:
            elapsed = 0.0
        base = max(float(last_t), elapsed)
        return _Head(case_id, seq + 1, h, float(last_t), base, self._clock.now(), closed)

    def _head(self, case_id: str) -> _Head:
        head = self._heads.get(case_id)
        if head is None:
            head = self._load_head(case_id)
            self._heads[case_id] = head
        if head.closed:
            raise JournalError(f"case {case_id} is closed; it takes no more entries")
        return head

    def _case_time(self, head: _Head) -> float:
        t = head.base_t_s + (self._clock.now() - head.t_origin)
        return max(t, head.last_t_s)

    def _make_row(self, head: _Head, kind: str, payload: str, blob: bytes | None, t_s: float | None) -> _Row:
        t = self._case_time(head) if t_s is None else t_s
        wall = utc_iso(self._wall())
        psha = sha256_hex(payload.encode("ascii"))
        bsha = sha256_hex(blob) if blob is not None else None
        h = entry_hash(head.case_id, head.next_seq, kind, t, wall, psha, bsha,
                       len(blob) if blob is not None else None, head.last_hash)
        row = _Row(head.case_id, head.next_seq, kind, t, wall, payload, psha, blob, bsha, head.last_hash, h)
        if self.format == OLD_FORMAT:
            return row
        if row.seq == 0:
            row.index.append(("opened", {"first_hash": h}))
        elif kind == "case_closed":
            row.index.append(("closed", {"last_seq": row.seq, "last_hash": h, **(head.close_stats or {})}))
        elif self._clock.now() >= head.pin_due:
            row.index.append(("checkpoint", {"seq": row.seq, "hash": h}))
        return row

    def _advance(self, head: _Head, row: _Row) -> None:
        head.next_seq = row.seq + 1
        head.last_hash = row.hash
        head.last_t_s = max(head.last_t_s, row.t_s)
        if row.index:
            head.pinned_seq = row.seq
            head.pin_due = self._clock.now() + self.pin_interval_s

    def _append_locked(self, case_id: str, kind: str, payload: str, blob: bytes | None,
                       t_s: float | None, sync: bool = True) -> int | None:
        head = self._head(case_id)
        self._check_file()
        if self._queue or self._failure is not None:
            self._retry()
        row = self._make_row(head, kind, payload, blob, t_s)
        if not self._queue and self._failure is None:
            try:
                self._write([row], sync)
            except StorageError as exc:
                self._begin_failure(exc, head)
                row = self._make_row(head, kind, payload, blob, t_s)  # after the "problem" entry
            else:
                self._advance(head, row)
                return row.seq
        return self._enqueue(head, row)

    def _chain_rows(self, head: _Head, rows_in: list[tuple[str, str, bytes | None, float | None]]) -> list[_Row]:
        """Rows for consecutive entries after ``head`` (which is left unchanged)."""
        scratch = replace(head)
        rows = []
        for kind, payload, blob, t_s in rows_in:
            row = self._make_row(scratch, kind, payload, blob, t_s)
            self._advance(scratch, row)
            rows.append(row)
        return rows

    def _append_batch_locked(self, case_id: str, rows_in: list[tuple[str, str, bytes | None, float | None]],
                             sync: bool = True) -> list[int | None]:
        head = self._head(case_id)
        self._check_file()
        if self._queue or self._failure is not None:
            self._retry()
        rows = self._chain_rows(head, rows_in)
        if not self._queue and self._failure is None:
            try:
                self._write(rows, sync)
            except StorageError as exc:
                self._begin_failure(exc, head)
                rows = self._chain_rows(head, rows_in)  # after the "problem" entry
            else:
                for row in rows:
                    self._advance(head, row)
                return [row.seq for row in rows]
        # storage is failing: the whole batch joins the queue (written later in one
        # transaction with it), or the whole batch is refused
        added = 0
        fits = True
        for row in rows:
            limit = self.max_queue_bytes // 2 if row.kind == "emg_block" else self.max_queue_bytes
            added += row.size
            if self._queued_bytes + added > limit:
                fits = False
        if not fits:
            counter = self._dropped.setdefault(case_id, Counter())
            first_drop = sum(counter.values()) == 0
            for row in rows:
                counter[row.kind] += 1
            if first_drop:
                log.error("case journal %s: in-memory queue full, refusing entries", self.path)
                self._notify()
            return [None] * len(rows)
        return [self._enqueue(head, row) for row in rows]

    def _enqueue(self, head: _Head, row: _Row) -> int | None:
        limit = self.max_queue_bytes // 2 if row.kind == "emg_block" else self.max_queue_bytes
        if self._queued_bytes + row.size > limit:
            counter = self._dropped.setdefault(row.case_id, Counter())
            first_drop = not any(self._dropped.values()) or sum(counter.values()) == 0
            counter[row.kind] += 1
            if first_drop:
                log.error("case journal %s: in-memory queue full, refusing entries", self.path)
                self._notify()
            return None
        self._queue.append(row)
        self._queued_bytes += row.size
        self._affected.add(row.case_id)
        self._advance(head, row)
        return row.seq

    def _begin_failure(self, exc: StorageError, head: _Head | None) -> None:
        changed = self._failure is None or self._failure.problem != exc.problem
        if self._failure is None:
            self._failure_since = utc_iso(self._wall())
            if head is not None:
                note = self._make_row(head, "storage", _entries.canonical_json(
                    {"event": "problem", "message": str(exc), "path": str(self.path)}), None, None)
                self._queue.append(note)
                self._queued_bytes += note.size
                self._affected.add(head.case_id)
                self._advance(head, note)
        self._failure = exc
        self._next_retry = self._clock.now() + self.retry_interval_s
        if changed:
            log.error("%s", exc)
            self._notify()

    def _retry(self) -> None:
        if self._clock.now() < self._next_retry:
            return
        self._check_file()
        if self._queue:
            try:
                self._write(list(self._queue))
            except StorageError as exc:
                self._begin_failure(exc, None)
                return
            self._queue.clear()
            self._queued_bytes = 0
        if self._failure is not None:
            self._recovered()

    def _recovered(self) -> None:
        failure, since = self._failure, self._failure_since
        self._failure = None
        self._failure_since = None
        affected = sorted(self._affected | set(self._dropped))
        self._affected.clear()
        notes = []
        for case_id in affected:
            head = self._heads.get(case_id)
            if head is None or head.closed:
                continue
            dropped = dict(self._dropped.get(case_id, {}))
            note = self._make_row(head, "storage", _entries.canonical_json(
                {"event": "recovered", "message": str(failure), "since": since, "dropped": dropped,
                 "path": str(self.path)}), None, None)
            notes.append((head, note))
        self._dropped.clear()
        try:
            self._write([n for _, n in notes])
        except StorageError as exc:
            for head, note in notes:
                self._queue.append(note)
                self._queued_bytes += note.size
                self._advance(head, note)
            self._begin_failure(exc, None)
            return
        for head, note in notes:
            self._advance(head, note)
        log.warning("case journal %s: storage works again", self.path)
        self._notify()

    def _write(self, rows: list[_Row], sync: bool = True) -> None:
        if not rows:
            return
        conn = self.conn
        lazy = self.durable and not sync
        try:
            if lazy != self._lazy:  # (a connection setting, changed between transactions)
                conn.execute("PRAGMA synchronous=NORMAL" if lazy else "PRAGMA synchronous=FULL")
                self._lazy = lazy
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"INSERT INTO entries ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             [r.values() for r in rows])
            pins = [(event, r.case_id, r.wall, data) for r in rows for event, data in r.index]
            if pins:
                _insert_index(conn, pins)
            conn.execute("COMMIT")
            if lazy:  # committed, on the disk with the next synced commit or sync()
                for r in rows:
                    if r.seq > self._unsynced.get(r.case_id, -1):
                        self._unsynced[r.case_id] = r.seq
                return
            if self._unsynced:  # the write-ahead log was synced with everything before this commit
                self._synced()
            for r in rows:  # committed with synchronous=FULL: on the disk
                if r.seq > self._durable.get(r.case_id, -1):
                    self._durable[r.case_id] = r.seq
        except sqlite3.IntegrityError as exc:
            self._rollback()
            raise JournalError(
                f"case journal {self.path}: entry {rows[0].case_id}#{rows[0].seq} already exists "
                f"(another program is writing this case?): {exc}") from None
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            problem, words = classify(exc)
            if problem == "io":
                problem, words = self._probe(problem, words)
            raise StorageError(f"case journal {self.path}: cannot write: {words} ({exc}); "
                               f"entries are kept in memory and retried", self.path, problem) from None

    def _probe(self, problem: str, words: str) -> tuple[str, str]:
        """SQLite says only "disk I/O error": ask the file system what is wrong."""
        try:
            vfs = os.statvfs(self.path.parent)
            if vfs.f_bavail * vfs.f_frsize < 64 * 1024:
                return "disk_full", "the disk is full"
        except OSError:
            pass
        for name in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                fd = os.open(name, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                continue
            except OSError as exc:
                return classify(exc)
            os.close(fd)
        return problem, words

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # nothing to roll back (SQLite already did)

    def _check_file(self) -> None:
        """Notice a journal file deleted or replaced under us and rescue its content."""
        ident = self._stat_ident()
        if ident is not None and ident == self._ident:
            return
        if ident is None and self.path.parent.exists() is False:
            self._begin_failure(StorageError(f"case journal {self.path}: its folder has disappeared; "
                                             "entries are kept in memory", self.path, "missing"), None)
            return
        problem = "missing" if ident is None else "replaced"
        if problem == "missing":
            target = self.path
        else:
            stamp = self._wall().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            target = self.path.with_name(f"{self.path.name}.rescued-{stamp}.db")
        tmp = target.with_name(target.name + ".rescue-tmp")
        try:
            dest = sqlite3.connect(str(tmp))
            try:
                self.conn.backup(dest)
            finally:
                dest.close()
            fsync_file(tmp)
        except (sqlite3.Error, OSError) as exc:
            p, words = classify(exc)
            self._begin_failure(StorageError(
                f"case journal {self.path} was {'deleted' if problem == 'missing' else 'replaced'} while in use "
                f"and cannot be rescued: {words} ({exc}); entries are kept in memory", self.path, p), None)
            return
        if problem == "replaced":
            # closing must not delete the new file's companions: keep the old connection open
            old = self._conn
            self._stale = getattr(self, "_stale", []) + [old]
        else:
            try:
                self.conn.close()  # checkpoints into the unlinked file and removes its -wal
            except sqlite3.Error:
                pass
        os.replace(tmp, target)
        fsync_dir(target.parent)
        old_path = self.path
        self.path = target
        self._conn = None
        self._open()
        self._synced()  # the rescued copy was synced whole, with what was committed without waiting
        msg = (f"case journal {old_path} was {'deleted' if problem == 'missing' else 'replaced by another file'} "
               f"while in use; every entry written was rescued into {target}")
        log.error("%s", msg)
        if self._on_status is not None:
            self._on_status(StorageStatus(False, str(target), problem, msg, len(self._queue), self._queued_bytes))
        for head in self._heads.values():
            if not head.closed:
                row = self._make_row(head, "storage", _entries.canonical_json(
                    {"event": "rescued", "message": msg, "path": str(target)}), None, None)
                if self._queue or self._failure is not None:
                    self._queue.append(row)
                    self._queued_bytes += row.size
                    self._advance(head, row)
                else:
                    try:
                        self._write([row])
                        self._advance(head, row)
                    except StorageError as exc:
                        self._begin_failure(exc, head)
        if self._failure is None:
            self._notify()


def _entry_problem(case_id: str, seq: int, expected: int, kind: str, t_s: float, wall: str, payload: Any,
                   psha: str, bsha: str | None, blen: int | None, prev_hash: str, h: str, prev: str) -> str | None:
    """What is wrong with one entry read back for resume (None: it verifies)."""
    if seq != expected:
        return f"entries {expected}-{seq - 1} are missing" if seq > expected else f"seq {seq} appears twice"
    if not isinstance(payload, str) or sha256_hex(payload.encode("utf-8")) != psha:
        return "its payload was changed or damaged after it was written"
    try:
        ok = entry_hash(case_id, seq, kind, t_s, wall, psha, bsha, blen, prev_hash) == h
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return "its fields were changed or damaged after it was written"
    if prev_hash != prev:
        return "it does not follow the entry before it (entries removed or changed)"
    if seq == 0 and kind != "case_opened":
        return "the first entry is not the case's opening"
    return None


def _truncation(path: Path, head: bytes, size: int) -> str:
    """What the SQLite header says is missing from a file cut short ("" when nothing is). Only
    without a write-ahead log beside it: a checkpoint cut off by a crash is finished from there."""
    if len(head) < 100:
        return f"only {size} bytes: shorter than the SQLite header" if head else ""
    wal = path.with_name(path.name + "-wal")
    try:
        if wal.stat().st_size > 0:
            return ""
    except OSError:
        pass
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header gives an impossible page size ({page_size})"
    pages = int.from_bytes(head[28:32], "big")
    valid = head[92:96] == head[24:28]  # the in-header size is valid only when these match
    if size % page_size:
        return f"{size} bytes is not a whole number of {page_size}-byte pages (cut short)"
    if valid and pages and size < pages * page_size:
        return f"truncated: {size} bytes on disk, its header says {pages * page_size}"
    return ""


def _insert_index(conn: sqlite3.Connection, items: list[tuple[str, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Append case-index rows ``(event, case_id, wall, data)`` inside the caller's transaction,
    chained on the newest row read in that transaction (so two writers never fork the chain)."""
    row = conn.execute("SELECT n, hash FROM case_index ORDER BY n DESC LIMIT 1").fetchone()
    n, prev = (row[0] + 1, row[1]) if row else (0, GENESIS)
    out = []
    for event, case_id, wall, data in items:
        text = _entries.canonical_json(data)
        h = index_hash(n, event, case_id, wall, text, prev)
        conn.execute("INSERT INTO case_index (n, event, case_id, wall, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
                     (n, event, case_id, wall, text, prev, h))
        out.append({"n": n, "hash": h})
        n, prev = n + 1, h
    return out


def _iter(cur: sqlite3.Cursor) -> Iterator[tuple]:
    while True:
        batch = cur.fetchmany(256)
        if not batch:
            return
        yield from batch


def _json_loads(text: str) -> dict[str, Any]:
    import json

    return json.loads(text)


# ----------------------------------------------------------------------------- the engine's journal at start-up

JOURNAL_NAME = "journal.db"


@dataclass
class EngineJournal:
    """What ``open_for_engine`` found: the journal to write (None: nothing is writable), the
    recording state to show (``recording``, ``new_journal``, ``not_recording``) and its words."""

    journal: Journal | None
    state: str
    message: str
    set_aside: Path | None = None


def open_for_engine(data_dir: str | os.PathLike, release_space: Callable[[], bool] | None = None,
                    **kw: Any) -> EngineJournal:
    """Open the engine's journal ``DATA/journal.db`` whatever state it is in; never raises.

    - It opens and reads: recorded into (``recording``).
    - It cannot be used (corrupt, truncated, not a journal, unreadable, a read-only file):
      it is set aside untouched, renamed with its companions to
      ``journal.db.damaged-<UTC>.db`` for service, and a fresh ``journal.db`` is started
      (``new_journal``). If it cannot even be renamed, the fresh journal is
      ``journal-<UTC>.db`` beside it (the newest such file that opens is used again at the
      next start, so a case left open in it resumes).
    - The disk is full: ``release_space`` (the storage reserve) is asked for room once.
    - Nothing in the folder can be written (read-only, missing and not creatable, busy):
      ``not_recording``; the engine monitors without a record and tries again later.
    ``kw`` goes to ``Journal`` (clock, on_status, min_free_hours...)."""
    folder = Path(data_dir)
    path = folder / JOURNAL_NAME
    first = _try_open(path, kw)
    if isinstance(first, Journal):
        return EngineJournal(first, "recording", "recording")
    if first.problem == "disk_full" and release_space is not None and release_space():
        again = _try_open(path, kw)
        if isinstance(again, Journal):
            return EngineJournal(again, "recording", "recording")
        first = again
    writable = _folder_writable(folder)
    if writable is not None:
        return EngineJournal(None, "not_recording", (
            f"NOT RECORDING: the case record cannot be written ({writable}; the journal: {first}). Monitoring "
            "and alarms continue without a record; call service"))
    if first.problem in ("busy", "disk_full", "missing", "unavailable") and not path.exists():
        return EngineJournal(None, "not_recording", f"NOT RECORDING: {first}. Monitoring and alarms continue")
    if first.problem == "busy":
        return EngineJournal(None, "not_recording", (
            f"NOT RECORDING: {first} (another program holds the journal); monitoring and alarms continue, "
            "recording is tried again every 30 s"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}.db")
    try:
        _rename_with_companions(path, aside)
    except OSError as exc:
        for old in sorted(folder.glob("journal-*.db"), reverse=True):  # a fresh journal of an earlier start
            found = _try_open(old, kw)
            if isinstance(found, Journal):
                return EngineJournal(found, "new_journal", (
                    f"the case journal {path} cannot be used ({first}) nor moved aside ({exc.strerror}); it is kept "
                    f"untouched for service, and recording goes on in {old.name}"), None)
        fresh = folder / f"journal-{stamp}.db"
        opened = _try_open(fresh, kw)
        if isinstance(opened, Journal):
            return EngineJournal(opened, "new_journal", (
                f"the case journal {path} cannot be used ({first}) nor moved aside ({exc.strerror}); it is kept "
                f"untouched for service, and recording goes on in a new journal {fresh.name}"))
        return EngineJournal(None, "not_recording", f"NOT RECORDING: {first}; a new journal cannot be made "
                                                    f"either ({opened}). Monitoring and alarms continue")
    opened = _try_open(path, kw)
    if isinstance(opened, Journal):
        log.error("case journal %s unusable (%s): set aside as %s; recording to a new journal", path, first, aside)
        return EngineJournal(opened, "new_journal", (
            f"the case journal could not be used ({first.reason}); it was set aside untouched as {aside.name} for "
            "service (a case left open in it was not resumed), and recording goes on in a new journal"), aside)
    return EngineJournal(None, "not_recording", f"NOT RECORDING: {first}; a new journal cannot be made either "
                                                f"({opened}). Monitoring and alarms continue")


@dataclass
class _Refusal:
    problem: str
    reason: str

    def __str__(self) -> str:
        return self.reason


def _try_open(path: Path, kw: Mapping[str, Any]) -> Journal | _Refusal:
    """The journal at ``path``, opened and probed (its open cases and newest rows read), or why not."""
    try:
        j = Journal(path, **kw)
    except StorageError as exc:
        return _Refusal(exc.problem, str(exc))
    except (JournalError, OSError, sqlite3.Error) as exc:
        return _Refusal("io", f"case journal {path}: {exc}")
    try:
        j.find_open_case()
        with j._lock:
            j.conn.execute("SELECT max(rowid), count(*) FROM case_index").fetchone()
            j.conn.execute("SELECT case_id, seq, hash FROM entries ORDER BY rowid DESC LIMIT 64").fetchall()
    except (sqlite3.Error, StorageError, JournalError) as exc:
        problem, words = classify(exc)
        try:
            j.close()
        except Exception:  # noqa: BLE001 - closing a damaged file: nothing more to save
            pass
        return _Refusal("corrupt" if problem == "io" else problem,
                        f"case journal {path}: {words} when read ({exc})")
    return j


def _folder_writable(folder: Path) -> str | None:
    """None when a file can be made in ``folder``; else why not, in plain words."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".lnm-write-test-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _problem, words = classify(exc)
        return f"the data folder {folder}: {words} ({exc.strerror})"
    return None


def _rename_with_companions(path: Path, target: Path) -> None:
    """Rename a journal and its ``-wal``/``-shm`` together (contents untouched; SQLite finds the WAL by name)."""
    os.rename(path, target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.rename(companion, target.with_name(target.name + suffix))
    fsync_dir(path.parent)
