"""Writing a case's documentation files: PDF report, case JSON, EDF+ raw data.

Owns: ``write_documents`` (used by ``lnm report``, the USB export and the engine's
``report.get``/``export.usb``), ``waveform_loader`` and the atomic file writes.
May import: the standard library, ``app.record`` modules.

Each file is written to ``.NAME.tmp.SUFFIX`` beside its target, flushed and fsynced, then renamed
over the target, so a reader never sees half a report. A case whose hash chain does not
verify is still documented (the record must stay readable), but the PDF header and the
JSON say ``ALTERED`` with the first altered entry, and ``exit_code`` is 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from app.record import waveform as W
from app.record.atomic import OutputRefused, atomic_write, check_output
from app.record.document import build_document
from datetime import UTC


@dataclass
class WriteResult:
    """What ``write_documents`` wrote, said and returns as exit status, and the document."""

    written: dict[str, Path] = field(default_factory=dict)  # kind -> path
    messages: list[str] = field(default_factory=list)
    exit_code: int = 0
    document: dict[str, Any] | None = None


def waveform_loader(journal: Any, case_id: str) -> Callable[[int], Any]:
    """``seq -> (samples_uV, sample_rate_hz, pre_samples, labels)`` of a stimulus entry."""

    def load(seq: int) -> Any:
        e = journal.entry(case_id, seq)
        if e is None or e.blob is None or "waveform" not in e.payload:
            return None
        meta = e.payload["waveform"]
        try:
            samples = W.decode(meta, e.blob)
        except W.WaveformError:
            return None
        labels = list(meta.get("labels") or [])
        return samples, float(meta.get("sample_rate_hz", 20000)), int(meta.get("pre_samples", 0)), labels

    return load


def write_json(doc: Mapping[str, Any], path: Path) -> None:
    """The case document as JSON, written atomically."""

    def w(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False, allow_nan=False, default=_json_default)
            f.write("\n")

    atomic_write(path, w)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(f"cannot write {type(obj).__name__} into the case JSON")


def check_targets(journal: Any, targets: Mapping[str, Path], force: bool = False) -> None:
    """Refuse (``OutputRefused``) targets that would replace the journal, a file LNM did not
    write, a file of another kind, or the same file twice (``atomic.check_output``)."""
    seen: dict[str, str] = {}
    for kind, path in targets.items():
        real = os.path.realpath(path)
        if real in seen:
            raise OutputRefused(f"{path}: given for both the {seen[real].upper()} and the {kind.upper()}; "
                                "give each its own file")
        seen[real] = kind
        check_output(path, kind, force=force, protected=(journal.path,) if getattr(journal, "path", None) else ())


def write_documents(journal: Any, case_id: str, targets: Mapping[str, Path], identified: bool = False,
                    generated_at: str | None = None, force: bool = False) -> WriteResult:
    """Write the files named in ``targets`` (keys ``pdf``, ``json``, ``edf``). Targets are
    checked first (``check_targets``): a refused one raises ``OutputRefused`` and nothing is written."""
    from datetime import datetime

    unknown = set(targets) - {"pdf", "json", "edf"}
    if unknown:
        raise ValueError(f"unknown document kind(s) {sorted(unknown)}: use pdf, json, edf")
    check_targets(journal, targets, force)
    result = WriteResult()
    when = generated_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = build_document(journal, case_id, identified=identified, generated_at=when)
    index_head = getattr(journal, "index_head", None)
    pin = index_head() if callable(index_head) else None
    if pin is not None:
        doc["journal"]["index"] = pin  # the case index when the document was made (lnm verify --against)
    result.document = doc
    if doc["journal"].get("verified") is False:
        result.exit_code = 1
        result.messages.append(f"WARNING: case {case_id}: {doc['journal']['verify_problem']}")
    try:
        if "json" in targets:
            write_json(doc, Path(targets["json"]))
            result.written["json"] = Path(targets["json"])
            result.messages.append(f"case document (JSON): {targets['json']}")
        if "pdf" in targets:
            from app.record.report import write_pdf

            atomic_write(Path(targets["pdf"]), lambda tmp: write_pdf(doc, tmp, waveform_loader(journal, case_id)))
            result.written["pdf"] = Path(targets["pdf"])
            result.messages.append(f"report (PDF): {targets['pdf']}")
        if "edf" in targets:
            from app.record.edf_export import EdfUnavailable, write_case_edf

            try:
                info = write_case_edf(journal, case_id, Path(targets["edf"]), identified=identified)
            except EdfUnavailable as exc:
                result.messages.append(f"EDF+ not written: {exc}")
                result.exit_code = max(result.exit_code, 2)
            else:
                result.written["edf"] = Path(targets["edf"])
                result.messages.append(f"raw data (EDF+): {targets['edf']} ({info})")
    except OSError as exc:
        name = getattr(exc, "filename", None) or "the target"
        result.messages.append(f"cannot write {name}: {exc.strerror or exc}")
        result.exit_code = 2
    return result
