"""The case record: the append-only, hash-chained case journal and the documentation made from it.

Owns: the journal (``journal.py``: SQLite, WAL, synchronous writes, hash chain, crash
resume, storage-failure handling), the entry kinds and their payload schemas
(``entries.py``), waveform blobs (``waveform.py``), chain verification (``verify.py``),
the INMSG case document as JSON (``document.py``, format in ``CASE_FORMAT.md``), the PDF
report (``report.py``), the EDF+ export (``edf_export.py``), the USB export
(``usb.py``) and the ``lnm verify/report/export/cases`` commands (``cli.py``).
May import: the standard library, numpy, reportlab, ``app.model``, ``app.settings``,
``app.analysis`` (the EDF+ writer, the breathing variation in words). Nothing above this
stage (engine, api, ui).

The engine writes through ``Journal``: ``open_case``, ``append``, ``append_many`` (the
entries of one stimulus in one transaction), ``close_case``, and at start
``find_open_case`` + ``resume_case`` for a case left open by a crash.
"""

from app.record.journal import (  # noqa: F401
    Entry,
    Journal,
    JournalError,
    StorageError,
    StorageStatus,
    default_journal_path,
)
