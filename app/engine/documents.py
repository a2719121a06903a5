"""Case documentation for the API: the report and the USB export, made by ``app.record``.

Owns: ``Documents``, the engine-side shell that answers ``report.get`` and ``export.usb``
from the journal (``app.record.export.write_documents``, ``app.record.usb.export_case``),
writing into the data folder (``DATA/reports/CASE/``), and the documentation files of
``lnm simulate``.
May import: the standard library, ``app.record``, ``app.api.protocol``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from app.api import protocol as p

log = logging.getLogger("lnm.engine")

NAMES = {"pdf": "report.pdf", "json": "case.json", "edf": "case.edf"}


class Documents:
    """The case documentation of the engine's journal (report, files, USB export)."""

    def __init__(self, journal: Any, data_dir: Path, settings: Any = None) -> None:
        self.journal = journal
        self.data_dir = Path(data_dir)
        self.settings = settings

    def _write(self, case_id: str, targets: dict[str, Path], identified: bool = False) -> Any:
        from app.record.export import write_documents
        from app.record.journal import JournalError

        try:
            return write_documents(self.journal, case_id, targets, identified=identified)
        except (JournalError, ValueError, KeyError) as exc:
            raise p.ApiError(p.BAD_STATE, f"case {case_id}: the documentation cannot be made ({exc})") from None

    def report(self, case_id: str, pdf: bool = True) -> dict[str, Any]:
        """The case document (JSON) and, with ``pdf``, the PDF in DATA/reports/CASE/."""
        targets: dict[str, Path] = {}
        if pdf:
            out = self.data_dir / "reports" / case_id
            out.mkdir(parents=True, exist_ok=True)
            targets["pdf"] = out / NAMES["pdf"]
        res = self._write(case_id, targets)
        return {"case_id": case_id, "document": res.document,
                "pdf_path": str(res.written["pdf"]) if "pdf" in res.written else None,
                "messages": list(res.messages)}

    def write(self, case_id: str, out_dir: Path, kinds: tuple[str, ...] = ("pdf", "json", "edf"),
              identified: bool = False) -> dict[str, Any]:
        """Write the documentation files into ``out_dir``; returns what was written and the messages."""
        out_dir.mkdir(parents=True, exist_ok=True)
        res = self._write(case_id, {k: out_dir / NAMES[k] for k in kinds}, identified=identified)
        return {**{k: str(v) for k, v in res.written.items()}, "messages": list(res.messages)}

    def media_roots(self) -> str | None:
        """The ``export.media_roots`` setting (None without settings: its shipped default)."""
        if self.settings is None:
            return None
        try:
            return str(self.settings["export.media_roots"])
        except KeyError:
            return None

    def export(self, case_id: str, target: str | None = None, pseudonymise: bool = True) -> dict[str, Any]:
        """``export.usb``: the case onto the stick, only below ``export.media_roots`` (or the
        installation's ``$LNM_EXPORT_DIR``), links resolved and checked."""
        from app.record.journal import JournalError
        from app.record.usb import UsbError, export_case

        try:
            res = export_case(self.journal, case_id, target=Path(target) if target else None,
                              identified=not pseudonymise, roots=self.media_roots())
        except UsbError as exc:
            raise p.ApiError(p.BAD_STATE, f"export.usb: {exc}") from None
        except (JournalError, OSError, ValueError) as exc:
            raise p.ApiError(p.BAD_STATE, f"export.usb: case {case_id}: {exc}") from None
        return dataclasses.asdict(res)
