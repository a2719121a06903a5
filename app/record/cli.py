"""``lnm cases``, ``lnm verify``, ``lnm report`` and ``lnm export``.

Owns: the command-line shell around the journal, the documentation and the USB export.
May import: the standard library and ``app.record``.

The journal is ``--journal PATH``, else ``$LNM_JOURNAL``, else ``$LNM_DATA_DIR/journal.db``,
else ``~/.local/share/lnm/journal.db``. ``CASE`` is a case id, a unique prefix of one,
``last`` (the newest case) or ``open`` (the newest case left open).

Exit status: 0 success; 1 ``verify`` found an altered entry (or ``report``/``export``
refused to document an altered case); 2 the journal, the case or a target cannot be
read or written (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.record.journal import Journal, JournalError, StorageError, default_journal_path


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--journal", type=Path, default=None,
                        help="case journal file (default: $LNM_JOURNAL or the data folder)")
    if name == "cases":
        parser.add_argument("--open", action="store_true", help="only cases left open (not closed)")
        return
    parser.add_argument("case", metavar="CASE", help="case id, unique prefix, 'last' or 'open'")
    if name == "verify":
        return
    parser.add_argument("--identified", action="store_true",
                        help="keep the surgeon's and operators' names (default: pseudonymised)")
    if name == "report":
        parser.add_argument("--out", type=Path, help="write the PDF report here")
        parser.add_argument("--json", type=Path, help="write the case document (lnm-case/1 JSON) here")
        parser.add_argument("--edf", type=Path, help="write the raw EMG and stimuli as EDF+ here")
        parser.add_argument("--out-dir", type=Path,
                            help="write report.pdf, case.json and case.edf into this folder")
    elif name == "export":
        parser.add_argument("--to", type=Path, default=None,
                            help="mount point of the USB stick (default: the one mounted stick; "
                                 "$LNM_EXPORT_DIR overrides detection)")


def run(args: argparse.Namespace) -> int:
    path = args.journal or default_journal_path()
    try:
        with Journal(path, readonly=True) as journal:
            if args.command == "cases":
                return _cases(journal, args)
            case_id = journal.resolve_case(args.case)
            if args.command == "verify":
                result = journal.verify(case_id)
                print(result.describe(), file=sys.stdout if result.ok else sys.stderr)
                return 0 if result.ok else 1
            if args.command == "report":
                return _report(journal, case_id, args)
            if args.command == "export":
                from app.record.usb import export_case_cli

                return export_case_cli(journal, case_id, args)
    except StorageError as exc:
        print(f"lnm {args.command}: {exc}", file=sys.stderr)
        return 2
    except JournalError as exc:
        print(f"lnm {args.command}: {exc}", file=sys.stderr)
        return 2
    print(f"lnm: unknown record command {args.command!r}", file=sys.stderr)
    return 2


def _cases(journal: Journal, args: argparse.Namespace) -> int:
    cases = journal.cases()
    if args.open:
        cases = [c for c in cases if c["closed"] is None]
    if not cases:
        print(f"no {'open ' if args.open else ''}cases in {journal.path}")
        return 0
    width = max([7] + [len(str(c["patient_id"])) for c in cases])
    print(f"{'case':<22} {'opened (UTC)':<20} {'patient':<{width}} {'sides':<5} {'entries':>7}  state")
    for c in cases:
        sides = "".join(c["planned_sides"] or [])
        state = "closed" if c["closed"] else "OPEN"
        print(f"{c['case_id']:<22} {c['opened'][:19]:<20} {str(c['patient_id']):<{width}} {sides:<5} "
              f"{c['entries']:>7}  {state}")
    return 0


def _report(journal: Journal, case_id: str, args: argparse.Namespace) -> int:
    from app.record.export import write_documents

    targets = {}
    if args.out_dir:
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
    result = write_documents(journal, case_id, targets, identified=args.identified)
    for line in result.messages:
        print(line)
    return result.exit_code
