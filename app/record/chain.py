"""The hash chains of the case record, as pure functions: entries of a case, and the case index.

Owns: ``entry_hash`` and ``index_hash`` (what each hash covers), ``check_case_rows`` (one
case's chain, from its raw rows), ``check_index_rows`` (the case index's own chain),
``check_case_index`` (a case's entries against what the index says about them) and
``VerifyResult``.
May import: the standard library, ``app.record.entries`` (canonical JSON).

No I/O: the journal (``journal.py``) reads the rows and hands them over, so the journal
never calls back into the verification commands (``verify.py``) and these checks can be
tested row by row.

Case index. Besides each case's own chain, the journal keeps one chained list of index
rows across all cases (table ``case_index``): ``opened`` (with the hash of the case's
first entry), ``checkpoint`` (an open case's newest seq and hash, about every minute and
when the engine stops), ``closed`` (the last seq and hash), ``exported`` (what a verified
export documented), ``pruned`` (the summary kept when retention removed the entries) and
``adopted`` (a case found when an older journal got its index). ``index_hash`` chains
them as ``entry_hash`` chains entries. With it a removed first entry, a removed tail, a
removed case and removed index rows are all found (``check_case_index``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

from app.record import entries as _entries

GENESIS = "0" * 64
INDEX_EVENTS = ("opened", "checkpoint", "closed", "exported", "pruned", "adopted")


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def entry_hash(case_id: str, seq: int, kind: str, t_s: float, wall: str, payload_sha256: str,
               blob_sha256: str | None, blob_len: int | None, prev_hash: str) -> str:
    """The chain hash of one entry: every field, the blob through its digest, the previous hash."""
    header = _entries.canonical_json({
        "v": 1, "case": case_id, "seq": seq, "kind": kind, "t_s": float(t_s), "wall": wall,
        "payload_sha256": payload_sha256, "blob_sha256": blob_sha256, "blob_len": blob_len,
        "prev": prev_hash,
    })
    return sha256_hex(header.encode("ascii"))


def index_hash(n: int, event: str, case_id: str, wall: str, data: str, prev_hash: str) -> str:
    """The chain hash of one case-index row (``data`` is its canonical JSON text)."""
    header = _entries.canonical_json({
        "v": 1, "n": n, "event": event, "case": case_id, "wall": wall,
        "data_sha256": sha256_hex(data.encode("utf-8")), "prev": prev_hash,
    })
    return sha256_hex(header.encode("ascii"))


@dataclass(frozen=True)
class VerifyResult:
    """What verification found for one case."""

    ok: bool
    case_id: str
    entries: int  # entries checked (up to and including the first bad one)
    last_hash: str | None  # hash of the last entry when ok
    seq: int | None = None  # first altered entry
    kind: str | None = None
    problem: str = ""
    closed: bool = False
    notes: tuple[str, ...] = ()  # what is known but not wrong (an open case's unpinned tail...)
    pruned: Mapping[str, Any] | None = None  # the kept summary of a pruned case

    def describe(self) -> str:
        """One line (plus notes) in plain words."""
        notes = "".join(f"; note: {n}" for n in self.notes)
        if self.ok and self.pruned is not None:
            p = self.pruned
            return (f"case {self.case_id}: pruned on {str(p.get('wall', '?'))[:10]} after a verified export "
                    f"({p.get('entries')} entries, last hash {p.get('last_hash')}); its summary is kept in the "
                    f"case index{notes}")
        if self.ok:
            state = "closed" if self.closed else "open (no case_closed entry yet)"
            return (f"case {self.case_id}: {self.entries} entries, hash chain intact; case {state}; "
                    f"last hash {self.last_hash}{notes}")
        kind = f" ({self.kind})" if self.kind else ""
        where = f" at entry {self.seq}{kind}" if self.seq is not None else ""
        return f"case {self.case_id}: ALTERED{where}: {self.problem}{notes}"


Row = tuple  # (seq, kind, t_s, wall, payload, payload_sha256, blob, blob_sha256, prev_hash, hash)


def check_case_rows(case_id: str, rows: Iterable[Row],
                    moved_from: Callable[[str, int], int | None] = lambda prev, seq: None) -> VerifyResult:
    """Check one case's chain from its raw rows in seq order; trusts no stored hash.

    Per entry, in this order: the seq follows the previous one (a gap means entries were
    removed); the payload and the blob still match their digests; the entry's hash
    recomputed from all its fields matches the stored one; ``prev_hash`` is the previous
    entry's hash; the payload is readable JSON; the first entry is ``case_opened``.
    ``moved_from(prev_hash, seq)``: the seq an entry was written at when its prev_hash
    is another entry's hash (reordering). Raises ``LookupError`` when there are no rows."""
    prev_hash = GENESIS
    expected_seq = 0
    n = 0
    closed = False
    for row in rows:
        n += 1
        kind, h = row[1], row[9]
        found = _row_problem(case_id, row, expected_seq, prev_hash, closed, moved_from)
        if found is not None:
            problem, at, k = found
            return VerifyResult(False, case_id, n, None, at, k, problem)
        if kind == "case_closed":
            closed = True
        prev_hash = h
        expected_seq += 1
    if n == 0:
        raise LookupError(case_id)
    return VerifyResult(True, case_id, n, prev_hash, closed=closed)


def _row_problem(case_id: str, row: Row, expected_seq: int, prev_hash: str, closed: bool,
                 moved_from: Callable[[str, int], int | None]) -> tuple[str, int | None, str | None] | None:
    """(problem, seq, kind) of the first thing wrong with one row, or None."""
    seq, kind, t_s, wall, payload, psha, blob, bsha, prev, h = row
    if seq != expected_seq:
        if expected_seq == 0 and seq > 0:
            return (f"the first entry (case_opened) is missing: the case starts at seq {seq} (entries removed)",
                    0, None)
        if seq > expected_seq:
            return (f"entry missing: after seq {expected_seq - 1} the journal continues at seq {seq} "
                    "(entries removed)", expected_seq, None)
        return f"duplicate seq {seq}", seq, kind
    problem = None
    if closed:
        problem = "entry after case_closed (entries added to a closed case)"
    elif not isinstance(payload, str):
        problem = "payload is not text"
    elif sha256_hex(payload.encode("utf-8")) != psha:
        problem = "payload changed after it was written (it no longer matches its digest)"
    elif (blob is None) != (bsha is None) or (blob is not None and sha256_hex(bytes(blob)) != bsha):
        problem = "waveform/blob changed after it was written (it no longer matches its digest)"
    elif entry_hash(case_id, seq, kind, t_s, wall, psha, bsha, len(blob) if blob is not None else None, prev) != h:
        moved = moved_from(prev, seq)
        problem = (f"entry out of order: it was written as seq {moved}, not {seq} (entries reordered)"
                   if moved is not None else
                   "entry fields (kind, time, seq or digests) changed after it was written "
                   "(recomputed hash differs from the stored one)")
    elif prev != prev_hash:
        problem = ("chain broken: prev_hash is not the hash of the entry before it "
                   "(entries removed, inserted or reordered)")
    elif not _is_json(payload):
        problem = "payload is not readable JSON"
    elif seq == 0 and kind != "case_opened":
        problem = "the first entry of a case must be case_opened"
    return None if problem is None else (problem, seq, kind)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- the case index


@dataclass(frozen=True)
class IndexRow:
    """One row of the case index."""

    n: int
    event: str
    case_id: str
    wall: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str
    data_text: str = field(default="", repr=False, compare=False)


def check_index_rows(rows: Iterable[tuple]) -> tuple[list[IndexRow], str | None]:
    """Check the index chain from raw rows ``(n, event, case_id, wall, data, prev_hash, hash)``
    in ``n`` order. Returns (the rows that verify, the first problem or ``None``)."""
    out: list[IndexRow] = []
    prev_hash = GENESIS
    for expected, (n, event, case_id, wall, data, prev, h) in enumerate(rows):
        where = f"case index row {n} ({event} {case_id})"
        if n != expected:
            return out, (f"case index row {expected} is missing: the index continues at row {n} "
                         "(index rows removed)")
        if not isinstance(data, str) or index_hash(n, event, case_id, wall, data, prev) != h:
            return out, f"{where} changed after it was written (recomputed hash differs from the stored one)"
        if prev != prev_hash:
            return out, f"{where}: chain broken (index rows removed, inserted or reordered)"
        try:
            parsed = json.loads(data)
        except ValueError:
            return out, f"{where}: data is not readable JSON"
        if event not in INDEX_EVENTS or not isinstance(parsed, dict):
            return out, f"{where}: unknown index event"
        out.append(IndexRow(n, event, case_id, wall, parsed, prev, h, data))
        prev_hash = h
    return out, None


@dataclass(frozen=True)
class CaseFacts:
    """What the journal holds of one case (read cheaply, without hashing the entries)."""

    case_id: str
    count: int  # entries present
    first_seq: int | None
    last_seq: int | None
    hash_at: Callable[[int], str | None]  # the stored hash of an entry, None when absent
    has_closed_entry: bool


@dataclass(frozen=True)
class IndexVerdict:
    """A case seen through the index: its state, the problems found, and notes."""

    state: str  # "open", "closed", "pruned", "missing", "unindexed", "damaged"
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    pruned: Mapping[str, Any] | None = None
    first_problem_seq: int | None = None


def check_case_index(facts: CaseFacts, rows: Sequence[IndexRow]) -> IndexVerdict:
    """A case's entries against its index rows (``rows``: this case's rows, in order)."""
    cid = facts.case_id
    if not rows:
        if facts.count == 0:
            return IndexVerdict("missing", (f"case {cid} is not in the journal",))
        return IndexVerdict("unindexed", (
            f"case {cid} is not in the case index (its index rows were removed, or another program wrote it)",))
    start = next((r for r in rows if r.event in ("opened", "adopted")), None)
    pruned = next((r for r in rows if r.event == "pruned"), None)
    closed = next((r for r in rows if r.event == "closed"), None)
    if closed is None and start is not None and start.event == "adopted" and start.data.get("closed"):
        closed = start
    pins = [r for r in rows if r.event in ("checkpoint", "closed", "exported", "adopted")
            and isinstance(r.data.get("last_seq", r.data.get("seq")), int)]
    problems: list[str] = []
    notes: list[str] = []
    first_bad: list[int] = []

    def problem(text: str, seq: int | None = None) -> None:
        problems.append(text)
        if seq is not None:
            first_bad.append(seq)

    if start is None:
        problem(f"case {cid}: its 'opened' index row is missing (index rows removed)")
    if pruned is not None:
        d = {**pruned.data, "wall": pruned.wall}
        if facts.count:
            problem(f"case {cid} was pruned on {pruned.wall[:10]}, yet {facts.count} of its entries are "
                    "in the journal (entries written back?)", facts.first_seq)
            return IndexVerdict("damaged", tuple(problems), pruned=d, first_problem_seq=facts.first_seq)
        return IndexVerdict("pruned", tuple(problems), pruned=d)
    if facts.count == 0:
        opened = start.wall if start is not None else "?"
        problem(f"case {cid} (opened {opened}) is missing: all its entries were removed", 0)
        return IndexVerdict("missing", tuple(problems), first_problem_seq=0)
    if start is not None:
        first_seq = int(start.data.get("first_seq", 0))
        want = start.data.get("first_hash")
        got = facts.hash_at(first_seq)
        if got is None:
            problem(f"case {cid}: its first entry (seq {first_seq}) was removed", first_seq)
        elif want is not None and got != want:
            problem(f"case {cid}: its first entry (seq {first_seq}) is not the one written "
                    "(the case was rewritten from the start)", first_seq)
    last_seq = facts.last_seq if facts.last_seq is not None else -1
    found = _pin_problem(facts, pins, last_seq)
    if found is not None:
        problem(*found)
    _closing(facts, closed, pins, last_seq, problem, notes)
    state = "closed" if closed is not None or facts.has_closed_entry else "open"
    if problems:
        state = "damaged"
    return IndexVerdict(state, tuple(problems), tuple(notes),
                        first_problem_seq=min(first_bad) if first_bad else None)


def _pin_problem(facts: CaseFacts, pins: Sequence[IndexRow], last_seq: int) -> tuple[str, int] | None:
    """The first pinned entry (checkpoint, close, export, adoption) that is gone or different."""
    cid = facts.case_id
    for pin in pins:
        seq = int(pin.data.get("last_seq", pin.data.get("seq")))
        want = pin.data.get("last_hash", pin.data.get("hash"))
        got = facts.hash_at(seq)
        if got is None and seq > last_seq:
            return (f"case {cid}: entries after seq {last_seq} were removed (the case index records seq {seq} "
                    f"at {pin.wall}, {pin.event})", last_seq + 1)
        if got is None:
            return f"case {cid}: entry {seq} recorded in the case index ({pin.event}) was removed", seq
        if want is not None and got != want:
            return (f"case {cid}: entry {seq} is not the one the case index recorded ({pin.event} at "
                    f"{pin.wall}): the case was rewritten", seq)
    return None


def _closing(facts: CaseFacts, closed: IndexRow | None, pins: Sequence[IndexRow], last_seq: int,
             problem: Callable[..., None], notes: list[str]) -> None:
    """Entries added after the close, a close the index lacks, or an open case's unpinned tail."""
    cid = facts.case_id
    if closed is not None:
        seq = closed.data.get("last_seq")
        if isinstance(seq, int) and last_seq > seq:
            problem(f"case {cid}: {last_seq - seq} entries after its close (seq {seq}) were added", seq + 1)
    elif facts.has_closed_entry:
        problem(f"case {cid}: it has a case_closed entry but the case index does not record its close "
                "(index rows removed?)", facts.last_seq)
    else:
        newest = max((p.data.get("last_seq", p.data.get("seq")) for p in pins), default=None)
        if newest is None or newest < last_seq:
            since = "" if newest is None else f" after seq {newest}"
            notes.append(f"open case: entries{since} are not yet pinned by the case index; removing them "
                         "would not be seen (they are pinned about every minute and when the engine stops)")
