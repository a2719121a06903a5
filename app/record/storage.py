"""The life cycle of the case record on the appliance's storage: how much each case takes,
whether a new case fits, and retention (pruning cases that are safe elsewhere).

Owns: ``space_check`` (asked by ``Journal.open_case`` before a case starts),
``case_usage``, ``measured_bytes_per_hour``, ``prunable`` / ``prune`` (retention) and
``ROW_OVERHEAD``; ``lnm storage`` is its shell in ``app.record.cli``.
May import: the standard library. The journal imports this module (the space check); this
module works on the ``Journal`` it is given and never imports the journal back.

Space. Before a case opens the journal compares the free space of its folder (plus the
pages inside the journal file that pruning freed and SQLite reuses) with
``record.min_free_hours`` hours of recording at the measured bytes per hour: the mean of
the newest closed cases of at least five minutes (the ``closed`` case-index rows carry each
case's bytes and duration), else ``DEFAULT_BYTES_PER_HOUR`` (the recording benchmark at the
default settings, rounded up). Below it, the case still opens (monitoring never waits on
the record): the journal writes a ``storage`` entry ``low_space`` into the case, logs it
and sets ``Journal.space_warning``.

Retention. ``record.retention_days`` = 0 (the default) keeps every case: how long a
hospital keeps records is its policy, not the monitor's. Above 0, a case may be pruned
when all of these hold: it is closed; a USB export of it was verified by reading the
files back (an ``exported`` case-index row with ``verified: true``) and documented the case
up to its last entry (same last seq and hash); it was closed more than N days ago; and
its chain still verifies now. Pruning removes its entries and writes, in the same
transaction, a ``pruned`` case-index row with the summary (opened, closed, patient code,
entries, bytes, first and last hash, when and where it was exported), so ``lnm cases``
still lists it, ``lnm verify`` still checks the index chain across it, and the exported
copy can be checked against the summary (``lnm verify --against``). ``lnm storage
--prune`` applies the setting (``--older-than DAYS`` instead of the setting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any

DEFAULT_BYTES_PER_HOUR = 150_000_000  # bench/record.py at the default recording settings, rounded up
MIN_MEASURED_S = 300.0  # cases shorter than this say little about bytes per hour
MEASURED_CASES = 20  # the newest closed cases the figure is taken from
ROW_OVERHEAD = 220  # bytes an entry takes besides its payload and blob (hashes, columns, index)


@dataclass(frozen=True)
class SpaceCheck:
    """Free space against what ``min_hours`` of recording need."""

    ok: bool
    free_bytes: int
    hours_left: float
    bytes_per_hour: int
    measured: bool  # bytes_per_hour from this journal's cases (else the default)
    message: str


def free_bytes(journal: Any) -> int:
    """Bytes free for the journal: its folder's free space plus pages inside the file freed by pruning."""
    st = os.statvfs(Path(journal.path).parent)
    free = st.f_bavail * st.f_frsize
    try:
        pages = journal.conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = journal.conn.execute("PRAGMA page_size").fetchone()[0]
        free += int(pages) * int(size)
    except Exception:  # noqa: BLE001 - a figure for a warning; the folder's free space stands alone
        pass
    return int(free)


def measured_bytes_per_hour(journal: Any) -> tuple[int, bool]:
    """(bytes per hour of case, measured?) from the newest closed cases, else the default."""
    rows, _problem = journal.index_rows()
    closed = [r.data for r in rows if r.event == "closed"
              and isinstance(r.data.get("bytes"), int) and float(r.data.get("duration_s") or 0) >= MIN_MEASURED_S]
    closed = closed[-MEASURED_CASES:]
    if not closed:
        return DEFAULT_BYTES_PER_HOUR, False
    total = sum(d["bytes"] for d in closed)
    hours = sum(float(d["duration_s"]) for d in closed) / 3600.0
    return int(total / hours), True


def space_check(journal: Any, min_hours: float) -> SpaceCheck:
    """Is there room for ``min_hours`` of recording in the journal's folder?"""
    free = free_bytes(journal)
    bph, measured = measured_bytes_per_hour(journal)
    hours = free / bph if bph > 0 else float("inf")
    how = "measured" if measured else "expected"
    if hours >= min_hours:
        return SpaceCheck(True, free, hours, bph, measured,
                          f"{free / 1e9:.1f} GB free: about {hours:.0f} h of recording at {bph / 1e6:.0f} MB/h ({how})")
    return SpaceCheck(False, free, hours, bph, measured, (
        f"case record storage low: {free / 1e9:.2f} GB free in {Path(journal.path).parent}, about {hours:.1f} h of "
        f"recording at {bph / 1e6:.0f} MB/h ({how}), less than record.min_free_hours = {min_hours:g} h; "
        "export and prune old cases (lnm storage) or free space"))


def case_usage(journal: Any) -> list[dict[str, Any]]:
    """Per case: id, state, opened, closed, entries, bytes, hours, exported (wall or None), problems."""
    sizes = {cid: (int(b), float(t or 0.0)) for cid, b, t in journal.conn.execute(
        "SELECT case_id, coalesce(sum(length(payload) + coalesce(length(blob), 0)), 0) + ? * count(*), max(t_s) "
        "FROM entries GROUP BY case_id", (ROW_OVERHEAD,))}
    rows, _problem = journal.index_rows()
    exported: dict[str, str] = {}
    for r in rows:
        if r.event == "exported" and r.data.get("verified"):
            exported[r.case_id] = r.wall
    out = []
    for c in journal.cases():
        size, t = sizes.get(c["case_id"], (0, 0.0))
        if c["state"] == "pruned":
            summary: dict[str, Any] = next(
                (r.data for r in rows if r.event == "pruned" and r.case_id == c["case_id"]), {})
            t = float(summary.get("duration_s") or 0.0)
        out.append({**c, "bytes": size, "hours": t / 3600.0, "exported": exported.get(c["case_id"])})
    return out


def _parse_wall(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def prunable(journal: Any, older_than_days: float, now: datetime | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Cases retention may prune, each with the summary its ``pruned`` row will keep (see module doc)."""
    if older_than_days <= 0:
        return []
    now = now or datetime.now(UTC)
    rows, problem = journal.index_rows()
    if problem is not None:
        return []  # a damaged index: prune nothing until someone has looked
    by_case: dict[str, list[Any]] = {}
    for r in rows:
        by_case.setdefault(r.case_id, []).append(r)
    out = []
    for case_id, crs in by_case.items():
        if any(r.event == "pruned" for r in crs):
            continue
        closed = next((r for r in crs if r.event == "closed"), None)
        if closed is None:
            closed = next((r for r in crs if r.event == "adopted" and r.data.get("closed")), None)
        if closed is None:
            continue
        last_seq, last_hash = closed.data.get("last_seq"), closed.data.get("last_hash")
        export = next((r for r in reversed(crs) if r.event == "exported" and r.data.get("verified")
                       and r.data.get("last_seq") == last_seq and r.data.get("last_hash") == last_hash), None)
        if export is None:
            continue
        closed_at = _parse_wall(closed.wall)
        if closed_at is None or now - closed_at < timedelta(days=older_than_days):
            continue
        start = next((r for r in crs if r.event in ("opened", "adopted")), None)
        try:
            data = journal.case_data(case_id)
        except Exception:  # noqa: BLE001 - no first entry: the verification below refuses it anyway
            data = {}
        out.append((case_id, {
            "opened": start.wall if start else None, "closed": closed.wall, "patient_id": data.get("patient_id"),
            "entries": (last_seq + 1) if isinstance(last_seq, int) else None,
            "first_hash": start.data.get("first_hash") if start else None,
            "last_seq": last_seq, "last_hash": last_hash, "bytes": closed.data.get("bytes"),
            "duration_s": closed.data.get("duration_s"), "exported": export.wall,
            "export_folder": export.data.get("folder"),
            "reason": f"retention: exported and verified, closed more than {older_than_days:g} days ago"}))
    return out


@dataclass(frozen=True)
class PruneResult:
    """One case retention looked at: pruned, or why not."""

    case_id: str
    pruned: bool
    message: str
    bytes: int = 0


def prune(journal: Any, older_than_days: float, now: datetime | None = None,
          dry_run: bool = False) -> list[PruneResult]:
    """Prune what ``prunable`` allows, each case only if its chain verifies right now."""
    out = []
    for case_id, summary in prunable(journal, older_than_days, now):
        result = journal.verify(case_id)
        if not result.ok or result.last_hash != summary["last_hash"]:
            out.append(PruneResult(case_id, False,
                                   f"case {case_id} not pruned: it does not verify ({result.describe()})"))
            continue
        size = int(summary.get("bytes") or 0)
        if dry_run:
            out.append(PruneResult(case_id, False, f"case {case_id} can be pruned ({size / 1e6:.0f} MB)", size))
            continue
        journal.prune_case(case_id, summary)
        out.append(PruneResult(case_id, True, f"case {case_id} pruned ({size / 1e6:.0f} MB; summary kept in the "
                                              "case index)", size))
    return out
