"""Case documentation for the API: the report and the USB export, made by ``app.record``.

Owns: ``Documents``, the engine-side shell that answers ``report.get`` and ``export.usb``
from the journal (``app.record.document``, ``app.record.export``, ``app.record.usb``),
writing into the data folder (``DATA/reports/CASE/``).
May import: the standard library, ``app.record``, ``app.api.protocol``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.api import protocol as p

log = logging.getLogger("lnm.engine")


class Documents:
    def __init__(self, journal: Any, data_dir: Path, settings: Any = None) -> None:
        self.journal = journal
        self.data_dir = Path(data_dir)
        self.settings = settings

    def report(self, case_id: str, pdf: bool = True) -> dict[str, Any]:
        try:
            from app.record.document import build_document
        except ImportError as exc:
            raise p.ApiError(p.BAD_STATE, f"report.get: the case documentation is not available ({exc})") from None
        try:
            doc = build_document(self.journal, case_id)
        except (ValueError, KeyError, OSError) as exc:
            raise p.ApiError(p.BAD_STATE, f"report.get: case {case_id}: {exc}") from None
        result: dict[str, Any] = {"case_id": case_id, "document": doc, "pdf_path": None}
        if pdf:
            out = self.data_dir / "reports" / case_id
            written = self.write(case_id, out, kinds=("pdf",))
            result["pdf_path"] = written.get("pdf")
            result["messages"] = written.get("messages", [])
        return result

    def write(self, case_id: str, out_dir: Path, kinds: tuple[str, ...] = ("pdf", "json", "edf"),
              identified: bool = False) -> dict[str, Any]:
        """Write the case documentation files into ``out_dir``; returns their paths."""
        try:
            from app.record.export import write_documents
        except ImportError as exc:
            raise p.ApiError(p.BAD_STATE, f"documentation writer not available ({exc})") from None
        names = {"pdf": "report.pdf", "json": "case.json", "edf": "case.edf"}
        out_dir.mkdir(parents=True, exist_ok=True)
        targets = {k: out_dir / names[k] for k in kinds}
        try:
            res = write_documents(self.journal, case_id, targets, identified=identified)
        except ImportError as exc:
            raise p.ApiError(p.BAD_STATE, f"documentation writer not available ({exc})") from None
        if getattr(res, "exit_code", 0) != 0:
            raise p.ApiError(p.BAD_STATE, "; ".join(getattr(res, "messages", []) or ["documentation failed"]))
        return {**{k: str(v) for k, v in targets.items() if v.exists()}, "messages": list(getattr(res, "messages", []))}

    def export(self, case_id: str, target: str | None = None, pseudonymise: bool = True) -> dict[str, Any]:
        try:
            from app.record import usb
        except ImportError as exc:
            raise p.ApiError(p.BAD_STATE, f"export.usb: USB export is not available ({exc})") from None
        fn = getattr(usb, "export_case", None)
        if fn is None:
            raise p.ApiError(p.BAD_STATE, "export.usb: USB export is not available in this build")
        try:
            res = fn(self.journal, case_id, target=Path(target) if target else None, identified=not pseudonymise)
        except (OSError, ValueError) as exc:
            raise p.ApiError(p.BAD_STATE, f"export.usb: {exc}") from None
        if isinstance(res, dict):
            return res
        return {k: v for k, v in getattr(res, "__dict__", {}).items() if not k.startswith("_")}
