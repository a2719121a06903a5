"""The ``lnm`` command: one console script, one subcommand per module.

Owns: argument parsing and dispatch only. Each subcommand lives in the module named in
``COMMANDS``; that module provides ``configure(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``lnm analyze`` never loads
Kivy and a broken optional part cannot stop the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("app.commands.run", "start the engine on the virtual board and the touchscreen UI"),
    "engine": ("app.engine.cli", "run the monitoring engine (the process that protects the patient)"),
    "ui": ("app.ui.cli", "run the touchscreen UI against a running engine"),
    "screens": ("app.ui.gallery", "play a day of cases on the virtual board and write a PNG of every screen"),
    "simulate": ("app.engine.simulate", "run a scripted case headless and write its documentation"),
    "status": ("app.api.clients", "show what the engine sees now"),
    "ack": ("app.api.clients", "acknowledge the top alarm"),
    "events": ("app.api.clients", "print engine events (--follow to keep watching)"),
    "board-sim": ("firmware_bridge.sim.cli", "run the virtual board on a pty or TCP port"),
    "link-proxy": ("firmware_bridge.proxy", "service tool: a board link proxy that injects faults on command"),
    "analyze": ("app.commands.analyze", "analyse an EDF+ recording and write the result as JSON"),
    "sounds": ("app.outputs.cli", "write every alarm and feedback sound as WAV files"),
    "verify": ("app.record.cli", "verify a case journal's hash chain"),
    "report": ("app.record.cli", "write a case's INMSG documentation (PDF, JSON, EDF+)"),
    "export": ("app.record.cli", "export a case to a USB stick"),
    "cases": ("app.record.cli", "list the cases in the journal"),
    "storage": ("app.record.cli", "show the record's use per case and free space; prune by retention"),
    "config-check": ("app.commands.config_check", "validate a configuration directory"),
    "station": ("app.station.cli", "the remote reading station (web app); adduser, acl, --demo"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (for ``--help`` and unknown commands)."""
    parser = argparse.ArgumentParser(prog="lnm", description="LNM, the open laryngeal nerve monitor")
    from app import __version__

    parser.add_argument("--version", action="version", version=f"lnm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help", "--version"):
            parser.print_usage(sys.stderr)
            print(f"lnm: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            print(f"lnm {name}: not available in this build ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"lnm {name}", description=help_text)
    module.configure(parser, name) if _takes_name(module.configure) else module.configure(parser)
    args = parser.parse_args(rest)
    args.command = name
    return int(module.run(args) or 0)


def _takes_name(func) -> bool:  # modules serving several commands receive the name
    import inspect

    return len(inspect.signature(func).parameters) >= 2


if __name__ == "__main__":
    sys.exit(main())
