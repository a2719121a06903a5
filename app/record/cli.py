"""``lnm cases``, ``lnm verify``, ``lnm report``, ``lnm export`` and ``lnm storage``.

Owns: the command-line shell around the journal, the documentation, the USB export and
the storage life cycle (``app.record.storage``: use per case, free space, retention).
May import: the standard library, ``app.settings`` and ``app.record``.

The journal is ``--journal PATH``, else ``$LNM_JOURNAL``, else ``$LNM_DATA_DIR/journal.db``,
else ``~/.local/share/lnm/journal.db``. ``CASE`` is a case id, a unique prefix of one,
``last`` (the newest case) or ``open`` (the newest case left open).

``lnm cases`` lists every case the journal or its case index knows, with its state
(``open``, ``closed``, ``pruned`` by retention, ``MISSING``: all entries removed,
``DAMAGED``: first or last entries removed or added, ``UNINDEXED``); problems are
repeated on standard error. ``lnm verify`` without CASE verifies every case and the case
index; ``--against case.json`` checks the case against an exported document.

``lnm report`` never replaces the journal, a folder, a link, or a file LNM did not write
(``--force`` replaces such a file when it is of the same kind); the target is refused
before anything is written.

Exit status: 0 success; 1 ``verify`` or ``cases`` found something altered, removed or
added (or ``report``/``export`` documented an altered case); 2 the journal, the case, the
configuration, a document or a target cannot be read or written (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.record.atomic import OutputRefused
from app.record.journal import Journal, JournalError, StorageError, default_journal_path
from app.record.storage import case_usage, prunable, prune, space_check


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of ``lnm cases/verify/report/export/storage``."""
    parser.add_argument("--journal", type=Path, default=None,
                        help="case journal file (default: $LNM_JOURNAL or the data folder)")
    if name == "storage":
        _configure_storage(parser)
        return
    if name == "cases":
        parser.add_argument("--open", action="store_true", help="only cases left open (not closed)")
        return
    if name == "verify":
        parser.add_argument("case", metavar="CASE", nargs="?", default=None,
                            help="case id, unique prefix, 'last' or 'open' (default: every case and the case index)")
        parser.add_argument("--against", type=Path, default=None, metavar="CASE.JSON",
                            help="check the journal against an exported case document (its case by default)")
        return
    parser.add_argument("case", metavar="CASE", help="case id, unique prefix, 'last' or 'open'")
    parser.add_argument("--identified", action="store_true",
                        help="keep the surgeon's and operators' names (default: pseudonymised)")
    if name == "report":
        parser.add_argument("--out", type=Path, help="write the PDF report here")
        parser.add_argument("--json", type=Path, help="write the case document (lnm-case/1 JSON) here")
        parser.add_argument("--edf", type=Path, help="write the raw EMG and stimuli as EDF+ here")
        parser.add_argument("--out-dir", type=Path,
                            help="write report.pdf, case.json and case.edf into this folder")
        parser.add_argument("--force", action="store_true",
                            help="replace an existing file of the same kind that LNM did not write")
    elif name == "export":
        parser.add_argument("--to", type=Path, default=None,
                            help="mount point of the USB stick (default: the one mounted stick; "
                                 "$LNM_EXPORT_DIR overrides detection)")
        parser.add_argument("--config", type=Path, default=None, metavar="DIR",
                            help="configuration directory (export.media_roots)")


def run(args: argparse.Namespace) -> int:
    """Run one of the record commands; see the module docstring for the exit status."""
    if args.command == "storage":
        return _storage(args)
    path = args.journal or default_journal_path()
    roots = None
    if args.command == "export":
        from app import settings as settings_mod

        try:
            roots = settings_mod.load(args.config)["export.media_roots"]
        except settings_mod.SettingError as exc:
            print(f"lnm export: {exc}", file=sys.stderr)
            return 2
    try:
        with Journal(path, readonly=True) as journal:
            if args.command == "cases":
                return _cases(journal, args)
            if args.command == "verify":
                return _verify(journal, args)
            case_id = journal.resolve_case(args.case)
            if args.command == "report":
                return _report(journal, case_id, args)
            if args.command == "export":
                from app.record.usb import export_case_cli

                return export_case_cli(journal, case_id, args, roots=roots)
    except (StorageError, JournalError, OutputRefused) as exc:
        print(f"lnm {args.command}: {exc}", file=sys.stderr)
        return 2
    print(f"lnm: unknown record command {args.command!r}", file=sys.stderr)
    return 2


def _verify(journal: Journal, args: argparse.Namespace) -> int:
    from app.record.verify import DocumentError, read_document, verify_against, verify_journal

    if args.against is not None:
        try:
            doc = read_document(args.against)
        except DocumentError as exc:
            print(f"lnm verify: {exc}", file=sys.stderr)
            return 2
        if args.case is not None and journal.resolve_case(args.case) != doc["case"]["case_id"]:
            print(f"lnm verify: {args.against} documents case {doc['case']['case_id']}, not {args.case}",
                  file=sys.stderr)
            return 2
        result = verify_against(journal, doc)
        print(result.describe(), file=sys.stdout if result.ok else sys.stderr)
        return 0 if result.ok else 1
    if args.case is None:
        report = verify_journal(journal)
        for line in report.lines():
            print(line, file=sys.stdout if report.ok else sys.stderr)
        return 0 if report.ok else 1
    result = journal.verify(journal.resolve_case(args.case))
    print(result.describe(), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


_STATE_WORDS = {"open": "OPEN", "closed": "closed", "pruned": "pruned", "missing": "MISSING",
                "damaged": "DAMAGED", "unindexed": "UNINDEXED"}


def _cases(journal: Journal, args: argparse.Namespace) -> int:
    cases = journal.cases()
    if args.open:
        cases = [c for c in cases if c["state"] == "open"]
    if not cases:
        print(f"no {'open ' if args.open else ''}cases in {journal.path}")
        return 0
    width = max([7] + [len(str(c["patient_id"])) for c in cases])
    print(f"{'case':<22} {'opened (UTC)':<20} {'patient':<{width}} {'sides':<5} {'entries':>7}  state")
    problems = []
    for c in cases:
        sides = "".join(c["planned_sides"] or [])
        state = _STATE_WORDS.get(c["state"], c["state"])
        print(f"{c['case_id']:<22} {str(c['opened'])[:19]:<20} {str(c['patient_id']):<{width}} {sides:<5} "
              f"{c['entries']:>7}  {state}")
        problems += [p for p in c["problems"] if p not in problems]
    for p in problems:
        print(f"WARNING: {p}", file=sys.stderr)
    return 1 if problems else 0


def _report(journal: Journal, case_id: str, args: argparse.Namespace) -> int:
    from app.record.export import write_documents

    targets = {}
    if args.out_dir:
        if args.out_dir.exists() and not args.out_dir.is_dir():
            print(f"lnm report: {args.out_dir}: is not a folder; it was not touched", file=sys.stderr)
            return 2
        targets = {"pdf": args.out_dir / "report.pdf", "json": args.out_dir / "case.json",
                   "edf": args.out_dir / "case.edf"}
    if args.out:
        targets["pdf"] = args.out
    if args.json:
        targets["json"] = args.json
    if args.edf:
        targets["edf"] = args.edf
    if not targets:
        print("lnm report: say what to write: --out FILE.pdf, --json FILE, --edf FILE or --out-dir DIR",
              file=sys.stderr)
        return 2
    result = write_documents(journal, case_id, targets, identified=args.identified, force=args.force)
    for line in result.messages:
        print(line)
    return result.exit_code


# ----------------------------------------------------------------------------- lnm storage


def _configure_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="DIR",
                        help="configuration directory (record.retention_days, record.min_free_hours)")
    parser.add_argument("--prune", action="store_true",
                        help="prune the cases retention allows (exported, verified, older than the setting)")
    parser.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                        help="with --prune: this many days instead of record.retention_days")
    parser.add_argument("--dry-run", action="store_true", help="with --prune: say what would be pruned")


def _storage(args: argparse.Namespace) -> int:
    """``lnm storage``: use per case, free space, hours left, and retention."""
    from app import settings as settings_mod

    try:
        st = settings_mod.load(args.config)
    except settings_mod.SettingError as exc:
        print(f"lnm storage: {exc}", file=sys.stderr)
        return 2
    days = args.older_than if args.older_than is not None else float(st["record.retention_days"])
    if args.older_than is not None and args.older_than <= 0:
        print("lnm storage: --older-than must be a number of days above 0", file=sys.stderr)
        return 2
    path = args.journal or default_journal_path()
    try:
        with Journal(path, readonly=not args.prune) as journal:
            _print_usage(journal, float(st["record.min_free_hours"]))
            if not args.prune:
                _print_retention(journal, days, args.older_than is not None)
                return 0
            results = prune(journal, days, dry_run=args.dry_run)
    except (StorageError, JournalError) as exc:
        print(f"lnm storage: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lnm storage: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if days <= 0:
        print("retention is off (record.retention_days = 0): nothing pruned; give --older-than DAYS to prune")
        return 0
    for r in results:
        print(r.message)
    if not results:
        print(f"no case to prune (none exported, verified and closed more than {days:g} days ago)")
    return 1 if any(not r.pruned and not args.dry_run for r in results) else 0


def _print_usage(journal: Journal, min_hours: float) -> None:
    cases = case_usage(journal)
    try:
        size = sum(p.stat().st_size for p in Path(journal.path).parent.glob(Path(journal.path).name + "*")
                   if p.name in (journal.path.name, journal.path.name + "-wal", journal.path.name + "-shm"))
    except OSError:
        size = 0
    print(f"journal {journal.path}: {size / 1e6:.0f} MB on disk, {len(cases)} cases")
    if cases:
        w = max(22, max(len(c["case_id"]) for c in cases))
        print(f"{'case':<{w}} {'opened (UTC)':<20} {'state':<9} {'entries':>8} {'MB':>8} {'hours':>6}  exported")
        for c in cases:
            print(f"{c['case_id']:<{w}} {str(c['opened'])[:19]:<20} {c['state']:<9} {c['entries']:>8} "
                  f"{c['bytes'] / 1e6:>8.1f} {c['hours']:>6.2f}  {(c['exported'] or '-')[:19]}")
    check = space_check(journal, min_hours)
    print(("" if check.ok else "WARNING: ") + check.message)


def _print_retention(journal: Journal, days: float, explicit: bool) -> None:
    if days <= 0:
        print("retention: off (record.retention_days = 0): every case is kept")
        return
    can = prunable(journal, days)
    src = "--older-than" if explicit else "record.retention_days"
    print(f"retention: cases exported and verified, closed more than {days:g} days ago ({src}): "
          f"{len(can)} can be pruned" + (" with lnm storage --prune" if can else ""))
