"""``lnm board-sim``: the virtual board as its own process, on a pty or a TCP port.

Owns: the command's arguments and its serving loop (a thin shell around ``VirtualBoard``:
bytes in from the pty/socket -> ``receive``, ``poll`` -> bytes out).
May import: the standard library, ``firmware_bridge.clock`` and ``firmware_bridge.sim``.

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
import errno
import os
import select
import signal
import socket
import sys
import tty

from firmware_bridge.clock import ScaledClock

LOOP_S = 0.001  # longest wait for input before the board is polled again
MAX_PENDING = 1 << 20  # output the peer does not take is dropped beyond this (bytes)


def configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal; prints its path")
    where.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT (0: any free port)")
    parser.add_argument("--scenario", default=None, help="scenario name in config/scenarios (or a .toml path)")
    parser.add_argument("--seed", type=int, default=None, help="patient seed (default: the scenario's, else 0)")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor (default 1: real time)")
    parser.add_argument("--board-id", default=None, help="serial number reported in Capabilities")


def run(args: argparse.Namespace) -> int:
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
    server = _PtyServer() if args.pty else _TcpServer(args.tcp)
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


class _PtyServer:
    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # bytes pass unchanged: no echo, no line discipline
        os.set_blocking(self.master, False)
        self.address = os.ttyname(self._slave)
        self.connected = True  # the kernel buffers what nobody reads yet

    def read(self, timeout: float) -> bytes:
        r, _w, _x = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # nobody has the slave open
                return b""
            raise

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return 0
            raise

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _TcpServer:
    def __init__(self, port: int) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(1)
        self._listener.setblocking(False)
        self.address = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._client: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def read(self, timeout: float) -> bytes:
        socks = [self._listener] + ([self._client] if self._client else [])
        r, _w, _x = select.select(socks, [], [], timeout)
        if self._listener in r:
            try:
                client, _addr = self._listener.accept()
            except BlockingIOError:
                client = None
            if client is not None:
                self._drop_client()
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._client = client
                print("lnm board-sim: host connected", file=sys.stderr, flush=True)
            return b""
        if self._client is not None and self._client in r:
            try:
                data = self._client.recv(65536)
            except BlockingIOError:
                return b""
            except OSError:
                data = b""
            if not data:
                self._drop_client()
                print("lnm board-sim: host disconnected", file=sys.stderr, flush=True)
            return data
        return b""

    def write(self, data: bytes) -> int:
        if self._client is None:
            return len(data)
        try:
            return self._client.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            self._drop_client()
            return len(data)

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
            self._client = None

    def close(self) -> None:
        self._drop_client()
        self._listener.close()
