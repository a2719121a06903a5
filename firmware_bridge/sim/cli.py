"""``lnm board-sim``: the virtual board as its own process, on a pty or a TCP port.

Owns: the command's arguments and its serving loop (a thin shell around ``VirtualBoard``:
bytes in from the pty/socket -> ``receive``, ``poll`` -> bytes out).
May import: the standard library, ``firmware_bridge.clock``, ``firmware_bridge.serve`` and
``firmware_bridge.sim``.

    lnm board-sim --pty [--scenario NAME] [--seed N] [--speed X]
    lnm board-sim --tcp PORT [...]

``--pty`` creates a pseudo-terminal pair in raw mode and prints the path of its slave
side (e.g. ``/dev/pts/7``) on stdout as the first line; the product connects to it like
to the real board's USB serial port (``lnm run --board /dev/pts/7``). ``--tcp PORT``
listens on 127.0.0.1 (PORT 0: any free port; the line printed names it) and serves one
client at a time (``socket://127.0.0.1:PORT``); a new client takes over from the last.
The board keeps running while nobody is connected: its host watchdog stops stimulation
and sounds the backup beeper as it would on the bench. Beeper and scenario messages go
to stderr. It runs until SIGTERM or SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys

from firmware_bridge.clock import ScaledClock
from firmware_bridge.serve import PtyServer, TcpServer

# the servers lived here once; bench/engine.py still reaches them by these names
_PtyServer, _TcpServer = PtyServer, TcpServer

LOOP_S = 0.001  # longest wait for input before the board is polled again
MAX_PENDING = 1 << 20  # output the peer does not take is dropped beyond this (bytes)


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal; prints its path")
    where.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT (0: any free port)")
    parser.add_argument("--scenario", default=None, help="scenario name in config/scenarios (or a .toml path)")
    parser.add_argument("--seed", type=int, default=None, help="patient seed (default: the scenario's, else 0)")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor (default 1: real time)")
    parser.add_argument("--board-id", default=None, help="serial number reported in Capabilities")


def run(args: argparse.Namespace) -> int:
    """Serve the virtual board until SIGTERM or SIGINT; 2 for bad options."""
    from firmware_bridge.sim.board import ControlError, VirtualBoard
    from firmware_bridge.sim.scenario import ScenarioError, load_scenario

    if not args.speed > 0:
        print(f"lnm board-sim: --speed must be > 0 (got {args.speed})", file=sys.stderr)
        return 2
    if args.tcp is not None and not 0 <= args.tcp <= 65535:
        print(f"lnm board-sim: --tcp PORT must be 0-65535 (got {args.tcp})", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario) if args.scenario else None
        board = VirtualBoard(ScaledClock(args.speed), seed=args.seed, scenario=scenario, board_id=args.board_id)
    except (ScenarioError, ControlError) as exc:
        print(f"lnm board-sim: {exc}", file=sys.stderr)
        return 2
    stop = {"flag": False}

    def _stop(_signum, _frame) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    what = f"scenario {scenario.name}" if scenario else "no scenario"
    print(f"lnm board-sim: patient seed {board.seed}, {what}, speed {args.speed:g}", file=sys.stderr, flush=True)
    server = PtyServer() if args.pty else TcpServer(args.tcp, name="lnm board-sim", peer="host")
    print(server.address, flush=True)
    try:
        _serve(board, server, stop)
    finally:
        server.close()
    return 0


def _serve(board, server, stop: dict) -> None:
    pending = bytearray()
    beeps = 0
    errors = 0
    while not stop["flag"]:
        try:
            data = server.read(LOOP_S)
        except InterruptedError:
            continue
        if data:
            board.receive(data)
        out = board.poll()
        if server.connected:
            pending += out
            if len(pending) > MAX_PENDING:
                del pending[: len(pending) - MAX_PENDING]
            if pending:
                n = server.write(bytes(pending))
                del pending[:n]
        else:
            pending.clear()
        while beeps < len(board.beeper_history):
            t, on = board.beeper_history[beeps]
            print(f"lnm board-sim: t={t:.1f} s backup beeper {'ON (host silent)' if on else 'off (host back)'}",
                  file=sys.stderr, flush=True)
            beeps += 1
        while errors < len(board.event_errors):
            print(f"lnm board-sim: {board.event_errors[errors]}", file=sys.stderr, flush=True)
            errors += 1
