"""Verification of the case record: was anything changed, removed or added after it was written?

Owns: ``verify_case`` / ``verify_path`` (one case), ``verify_journal`` (every case and the
case index), ``verify_against`` (a journal against an exported case document) and the
result types (``VerifyResult`` is ``app.record.chain.VerifyResult``).
May import: the standard library, ``app.record.journal``, ``app.record.chain``.

One case (``Journal.verify``, the pure checks in ``chain.py``): the case's own hash chain
entry by entry (the first altered, removed, inserted or reordered entry, with its seq and
kind), then the case against the case index (a removed first entry, removed last
entries of a closed case or before an open case's newest pin, entries added after the
close, a case missing altogether, a case the index does not know).

The whole journal: the case index's own chain, then every case, including those only
the index still knows (pruned by retention: their summary is kept; removed: reported).

Against a document (``lnm verify --against case.json``): the case the document names must
verify, and hold at the document's ``journal.last_seq`` the entry whose hash is the
document's ``journal.last_hash``: a case shortened, rewritten or removed since the
document was made is found even when its chain was recomputed from the start, as long
as the document itself is kept elsewhere (the USB export). The document's
``journal.index`` (row and hash of the case index when it was made) pins every case
before it in the same way.

``lnm verify`` exits 0 when everything checked is intact, 1 when something was altered,
removed or added (or does not match the document), 2 when the journal, the case or the
document cannot be read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from app.record.chain import VerifyResult
from app.record.journal import Journal, JournalError

__all__ = ["VerifyResult", "JournalReport", "verify_case", "verify_path", "verify_journal", "verify_against",
           "DocumentError"]


class DocumentError(ValueError):
    """The case document given to ``--against`` cannot be read; the message names the file."""


@dataclass
class JournalReport:
    """Every case of a journal and its case index, verified."""

    path: str
    cases: list[VerifyResult] = field(default_factory=list)
    index_problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.index_problem is None and all(c.ok for c in self.cases)

    def lines(self) -> list[str]:
        """One line per case, then the index, then a summary."""
        out = [c.describe() for c in self.cases]
        if self.index_problem:
            out.append(f"case index: ALTERED: {self.index_problem}")
        out += [f"note: {n}" for n in self.notes]
        bad = sum(not c.ok for c in self.cases) + (1 if self.index_problem else 0)
        out.append(f"{self.path}: {len(self.cases)} cases checked, "
                   + ("all intact" if not bad else f"{bad} ALTERED (see above)"))
        return out


def verify_case(journal: Journal, case_id: str) -> VerifyResult:
    """One case: its chain and what the case index says about it."""
    return journal.verify(case_id)


def verify_path(path: str | Path, case_ref: str) -> VerifyResult:
    """Open the journal read-only and verify one case (id, unique prefix, ``last``)."""
    with Journal(path, readonly=True) as j:
        return verify_case(j, j.resolve_case(case_ref))


def verify_journal(journal: Journal) -> JournalReport:
    """Every case the journal or its case index knows, and the index's own chain."""
    report = JournalReport(str(journal.path))
    _rows, problem = journal.index_rows()
    report.index_problem = problem
    if journal.format != "lnm-journal/2":
        report.notes.append(f"format {journal.format}: no case index yet, so a removed case or removed last "
                            "entries cannot be seen; the engine adds the index when it next opens the journal")
    for c in journal.cases():
        report.cases.append(journal.verify(c["case_id"]))
    return report


def read_document(path: str | Path) -> dict[str, Any]:
    """A case document (``lnm-case/1`` JSON) from a file; ``DocumentError`` names the file and problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise DocumentError(f"case document {p}: is a folder, not a case.json file") from None
    except OSError as exc:
        raise DocumentError(f"case document {p}: cannot be read ({exc.strerror})") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DocumentError(f"case document {p}: not a JSON case document (lnm report --json writes one)") from None
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("lnm-case/"):
        raise DocumentError(f"case document {p}: not an LNM case document (no \"format\": \"lnm-case/...\")")
    j = doc.get("journal")
    case = doc.get("case")
    if not isinstance(j, dict) or not isinstance(case, dict) or not case.get("case_id"):
        raise DocumentError(f"case document {p}: its case or journal part is missing")
    return doc


def verify_against(journal: Journal, doc: Mapping[str, Any]) -> VerifyResult:
    """The document's case in ``journal``, checked against what the document pinned."""
    case_id = str(doc["case"]["case_id"])
    pin = doc["journal"]
    try:
        result = journal.verify(case_id)
    except JournalError:
        return VerifyResult(False, case_id, 0, None, None, None,
                            f"the case documented in the document is not in {journal.path} (removed?)")
    problems = []
    last_seq, last_hash = pin.get("last_seq"), pin.get("last_hash")
    if result.pruned is not None:
        p = result.pruned
        if isinstance(last_seq, int) and isinstance(p.get("last_seq"), int) and last_seq > p["last_seq"]:
            problems.append(f"the document records entry {last_seq}; the pruned case kept only up to {p['last_seq']}")
        elif last_seq == p.get("last_seq") and last_hash != p.get("last_hash"):
            problems.append("the pruned case's kept last hash differs from the document's")
    elif isinstance(last_seq, int) and last_hash:
        e = journal.entry(case_id, last_seq)
        if e is None:
            problems.append(f"entry {last_seq}, the last one the document records, is no longer in the journal "
                            "(entries removed)")
        elif e.hash != last_hash:
            problems.append(f"entry {last_seq} is not the one the document records (hash {e.hash[:16]}... instead "
                            f"of {last_hash[:16]}...): the case was rewritten after the document was made")
    else:
        problems.append("the document holds no journal.last_seq/last_hash to check against")
    index = pin.get("index")
    if isinstance(index, dict) and isinstance(index.get("n"), int):
        rows, _problem = journal.index_rows()
        row = rows[index["n"]] if index["n"] < len(rows) else None
        if row is None:
            problems.append(f"case index row {index['n']}, pinned by the document, is missing or no longer verifies "
                            "(cases or index rows removed)")
        elif row.hash != index.get("hash"):
            problems.append(f"case index row {index['n']} is not the one the document pinned: the index (and so "
                            "the record of earlier cases) was rewritten")
    if problems or not result.ok:
        text = "; ".join(([result.problem] if not result.ok else [])
                         + (["does not match the document: " + "; ".join(problems)] if problems else []))
        seq = result.seq if not result.ok else (last_seq if isinstance(last_seq, int) else None)
        return VerifyResult(False, case_id, result.entries, None, seq, result.kind, text, closed=result.closed)
    notes = result.notes + ((f"matches the document (entry {last_seq}, hash {str(last_hash)[:16]}...)",))
    return VerifyResult(True, case_id, result.entries, result.last_hash, closed=result.closed, notes=notes,
                        pruned=result.pruned)
