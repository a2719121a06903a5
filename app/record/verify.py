"""Verification of a case's hash chain: was anything changed after it was written?

Owns: ``verify_case`` / ``verify_path`` and ``VerifyResult``.
May import: the standard library, ``app.record.journal``.

Reads the raw rows of a case in ``seq`` order (no trust in the stored hashes) and, for each
entry, checks in this order: the seq follows the previous one (a gap means entries were
removed); the payload still matches its digest; the blob still matches its digest; the
entry's hash recomputed from all its fields matches the stored one; the entry's
``prev_hash`` is the previous entry's hash; the payload is readable JSON; the first entry
is ``case_opened`` with the genesis hash. The first failure is reported with the seq, the
kind and what is wrong. ``lnm verify`` exits 0 when the chain is intact, 1 when an entry
was altered, 2 when the journal or case cannot be read.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from app.record.journal import GENESIS, Journal, JournalError, StorageError, entry_hash, sha256_hex


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    case_id: str
    entries: int  # entries checked (up to and including the first bad one)
    last_hash: str | None  # hash of the last entry when ok
    seq: int | None = None  # first altered entry
    kind: str | None = None
    problem: str = ""
    closed: bool = False

    def describe(self) -> str:
        if self.ok:
            state = "closed" if self.closed else "open (no case_closed entry yet)"
            return (f"case {self.case_id}: {self.entries} entries, hash chain intact; case {state}; "
                    f"last hash {self.last_hash}")
        kind = f" ({self.kind})" if self.kind else ""
        return f"case {self.case_id}: ALTERED at entry {self.seq}{kind}: {self.problem}"


def verify_case(journal: Journal, case_id: str) -> VerifyResult:
    try:
        cur = journal.conn.execute(
            "SELECT seq, kind, t_s, wall, payload, payload_sha256, blob, blob_sha256, prev_hash, hash "
            "FROM entries WHERE case_id = ? ORDER BY seq", (case_id,))
        rows = _iter(cur)
        return _check(case_id, rows, journal)
    except sqlite3.Error as exc:
        raise StorageError(f"case journal {journal.path}: cannot be read ({exc})", journal.path, "corrupt") from None


def _iter(cur: sqlite3.Cursor):
    while True:
        batch = cur.fetchmany(256)
        if not batch:
            return
        yield from batch


def _check(case_id: str, rows, journal: Journal) -> VerifyResult:
    prev_hash = GENESIS
    expected_seq = 0
    n = 0
    closed = False
    for seq, kind, t_s, wall, payload, psha, blob, bsha, prev, h in rows:
        n += 1

        def bad(problem: str, at: int = seq, k: str | None = kind) -> VerifyResult:
            return VerifyResult(False, case_id, n, None, at, k, problem)

        if seq != expected_seq:
            if seq > expected_seq:
                return bad(f"entry missing: after seq {expected_seq - 1} the journal continues at seq {seq} "
                           "(entries removed)", expected_seq, None)
            return bad(f"duplicate seq {seq}")
        if closed:
            return bad("entry after case_closed (entries added to a closed case)")
        if not isinstance(payload, str):
            return bad("payload is not text")
        if sha256_hex(payload.encode("utf-8")) != psha:
            return bad("payload changed after it was written (it no longer matches its digest)")
        if (blob is None) != (bsha is None) or (blob is not None and sha256_hex(bytes(blob)) != bsha):
            return bad("waveform/blob changed after it was written (it no longer matches its digest)")
        recomputed = entry_hash(case_id, seq, kind, t_s, wall, psha, bsha,
                                len(blob) if blob is not None else None, prev)
        if recomputed != h:
            moved = _moved_from(journal, case_id, prev, seq)
            if moved is not None:
                return bad(f"entry out of order: it was written as seq {moved}, not {seq} (entries reordered)")
            return bad("entry fields (kind, time, seq or digests) changed after it was written "
                       "(recomputed hash differs from the stored one)")
        if prev != prev_hash:
            return bad("chain broken: prev_hash is not the hash of the entry before it "
                       "(entries removed, inserted or reordered)")
        try:
            json.loads(payload)
        except ValueError:
            return bad("payload is not readable JSON")
        if seq == 0 and kind != "case_opened":
            return bad("the first entry of a case must be case_opened")
        if kind == "case_closed":
            closed = True
        prev_hash = h
        expected_seq += 1
    if n == 0:
        raise JournalError(f"no case {case_id!r} in {journal.path}")
    return VerifyResult(True, case_id, n, prev_hash, closed=closed)


def _moved_from(journal: Journal, case_id: str, prev: str, seq: int) -> int | None:
    """If this entry's prev_hash is the hash of another entry, it was written after that one."""
    row = journal.conn.execute("SELECT seq FROM entries WHERE case_id = ? AND hash = ?", (case_id, prev)).fetchone()
    if row is None or row[0] + 1 == seq:
        return None
    return row[0] + 1


def verify_path(path: str | Path, case_ref: str) -> VerifyResult:
    """Open the journal read-only and verify one case (id, unique prefix, ``last``)."""
    with Journal(path, readonly=True) as j:
        return verify_case(j, j.resolve_case(case_ref))
