"""``lnm link-proxy``: a man-in-the-middle between a board and the engine that drops,
delays, duplicates, replays, reorders, corrupts or injects frames on command.

Owns: ``LinkProxy`` (the thin threaded shell around ``faults.FaultPlan``: the board's
port, the engine's pty or TCP port, the control channel) and the command's options.
May import: the standard library, ``firmware_bridge.clock``, ``.transport``, ``.serve``
and ``.faults``.

    lnm link-proxy --board URL (--pty | --tcp PORT) [--control tcp:PORT|unix:PATH]
                   [--fault "COMMAND"]... [--seed N]

The board is opened by URL like the engine opens it (a device such as ``/dev/ttyACM0``,
a pty of ``lnm board-sim --pty``, ``socket://HOST:PORT``, ``sim://...``) and reopened
with backoff when it goes away. The engine connects to the proxy instead: ``--pty``
prints the path of a new pty, ``--tcp PORT`` listens on 127.0.0.1 (``socket://...`` is
printed); that line comes first on stdout. ``--fault`` gives a fixed plan (the commands
of ``faults``, e.g. ``--fault "drop StimEpoch p=0.5"``). ``--control`` opens a line
channel to change the plan live: each line is a command, each answer one line starting
``ok`` or ``error`` (``echo "drop StimEpoch count=3" | nc 127.0.0.1 PORT``); its address
is the second line on stdout (``control: tcp://127.0.0.1:PORT`` or ``control: unix:PATH``).
Runs until SIGTERM or SIGINT, then exits 0; bad options exit 2 with one line.
"""

from __future__ import annotations

import argparse
import os
import signal
import socketserver
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from firmware_bridge.clock import Clock, MonotonicClock
from firmware_bridge.faults import FaultPlan, FaultSyntaxError
from firmware_bridge.serve import PtyServer, TcpServer
from firmware_bridge.transport import Port, clock_for_url, open_port

MAX_PENDING = 1 << 22  # bytes for the engine that it does not take: the oldest are dropped
MAX_LINE = 4096  # control line length


class LinkProxy:
    """The proxy between a board (``board_url`` or ``port_factory``) and the engine
    (``engine``: ``"pty"`` or a TCP port number), applying ``plan``."""

    def __init__(self, board_url: str | None = None, *, engine: str | int = "pty", control: str | None = None,
                 plan: FaultPlan | None = None, clock: Clock | None = None,
                 port_factory: Callable[[], Port] | None = None, read_timeout_s: float = 0.005,
                 log: Callable[[str], None] | None = None) -> None:
        if (board_url is None) == (port_factory is None):
            raise ValueError("give the proxy either a board URL or a port factory")
        self.board_url = str(board_url or getattr(port_factory, "url", "board"))
        self.clock: Clock = clock or (clock_for_url(board_url) if board_url else MonotonicClock())
        self._factory = port_factory or (lambda: open_port(self.board_url, timeout_s=read_timeout_s, clock=self.clock))
        self.plan = plan or FaultPlan()
        self._log = log or (lambda text: None)
        self._lock = threading.Lock()  # the plan
        self._engine_lock = threading.Lock()  # writing to the engine side
        self._board_lock = threading.Lock()  # writing to the board
        self._pending = bytearray()
        self._board: Port | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_error = ""
        self.server = PtyServer() if engine == "pty" else TcpServer(int(engine), name="lnm link-proxy", peer="engine")
        self.address = self.server.address
        self.dropped_for_engine = 0
        self._control = _ControlServer(control, self.command) if control else None
        self.control_address = self._control.address if self._control else None

    def start(self) -> LinkProxy:
        """Open the board (or keep trying in the background) and start proxying."""
        self._open_board()
        self._threads = [threading.Thread(target=self._board_loop, name="link-proxy-board", daemon=True),
                         threading.Thread(target=self._engine_loop, name="link-proxy-engine", daemon=True)]
        if self._control is not None:
            self._threads.append(threading.Thread(target=self._control.serve_forever, kwargs={"poll_interval": 0.1},
                                                  name="link-proxy-control", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        board, self._board = self._board, None
        if board is not None:
            try:
                board.close()
            except OSError:
                pass
        self.server.close()

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def command(self, line: str) -> str:
        """One command line; the one-line answer (``ok: ...`` or ``error: ...``)."""
        now = self.clock.now()
        try:
            with self._lock:
                answer, out = self.plan.command(line, now)
        except FaultSyntaxError as exc:
            return f"error: {exc}"
        self._to_engine(out.get("board", b""))
        self._to_board(out.get("host", b""))
        return answer

    # ------------------------------------------------------------------ the two directions

    def _board_loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            port = self._board
            if port is None:
                port = self._open_board()
                if port is None:
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                backoff = 0.05
            try:
                data = port.read(65536)
            except (OSError, ValueError) as exc:
                self._board = None
                try:
                    port.close()
                except OSError:
                    pass
                self._note(f"board port failed: {exc}")
                continue
            now = self.clock.now()
            with self._lock:
                out = self.plan.process("board", data, now) if data else b""
                due = self.plan.release(now)
            self._to_engine(out + due.get("board", b""))
            self._to_board(due.get("host", b""))

    def _open_board(self) -> Port | None:
        try:
            port = self._factory()
        except (OSError, ValueError) as exc:
            self._note(f"cannot open the board ({self.board_url}): {exc}")
            return None
        with self._lock:
            self.plan.restart_stream("board")  # a partial frame of the last connection is gone
        self._board = port
        self._note(f"board open ({self.board_url})")
        return port

    def _engine_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.server.read(0.005)
            except OSError as exc:
                self._note(f"engine side failed: {exc}")
                self._stop.wait(0.05)
                continue
            now = self.clock.now()
            with self._lock:
                out = self.plan.process("host", data, now) if data else b""
                due = self.plan.release(now)
            self._to_board(out + due.get("host", b""))
            self._to_engine(due.get("board", b""))

    def _to_engine(self, data: bytes) -> None:
        with self._engine_lock:
            self._pending += data
            if len(self._pending) > MAX_PENDING:
                drop = len(self._pending) - MAX_PENDING
                del self._pending[:drop]
                self.dropped_for_engine += drop
            if self._pending:
                n = self.server.write(bytes(self._pending))
                del self._pending[:n]

    def _to_board(self, data: bytes) -> None:
        if not data:
            return
        port = self._board
        if port is None:
            return  # no board: what the engine says goes nowhere, as on a cable without a board
        with self._board_lock:
            try:
                port.write(data)
            except OSError as exc:
                self._note(f"board port write failed: {exc}")

    def _note(self, text: str) -> None:
        if text != self._last_error:
            self._last_error = text
            self._log(text)


# ----------------------------------------------------------------------------- control channel


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        run = self.server.run_command  # type: ignore[attr-defined]
        while True:
            try:
                raw = self.rfile.readline(MAX_LINE + 1)
            except OSError:
                return
            if not raw:
                return
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                self._reply(f"error: line longer than {MAX_LINE} bytes")
                return
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                self._reply("error: not UTF-8 text")
                continue
            if line in ("quit", "exit"):
                self._reply("ok: bye")
                return
            self._reply(run(line))

    def _reply(self, text: str) -> None:
        try:
            self.wfile.write(text.replace("\n", " ").encode("utf-8") + b"\n")
            self.wfile.flush()
        except OSError:
            pass


class _Control:
    """What both control servers carry: the address they listen on and the command runner."""

    address: str = ""
    run_command: Callable[[str], str]


class _TcpControl(_Control, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UnixControl(_Control, socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def _ControlServer(spec: str, run: Callable[[str], str]) -> _TcpControl | _UnixControl:  # noqa: N802 - a factory named for what it makes
    """``tcp:PORT`` (127.0.0.1) or ``unix:PATH``; raises ``ValueError`` naming the spec."""
    kind, _sep, where = spec.partition(":")
    if kind == "tcp":
        try:
            port = int(where)
        except ValueError:
            raise ValueError(f"--control {spec!r}: expected tcp:PORT or unix:PATH") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"--control {spec!r}: port must be 0-65535")
        tcp = _TcpControl(("127.0.0.1", port), _Handler)
        tcp.address = f"tcp://127.0.0.1:{tcp.server_address[1]}"
        server: _TcpControl | _UnixControl = tcp
    elif kind == "unix" and where:
        path = Path(where)
        if path.exists() and path.is_socket():
            path.unlink()  # a stale socket of an earlier run
        server = _UnixControl(str(path), _Handler)
        server.address = f"unix:{path}"
    else:
        raise ValueError(f"--control {spec!r}: expected tcp:PORT or unix:PATH")
    server.run_command = run
    return server


# ----------------------------------------------------------------------------- the command


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--board", required=True, metavar="URL",
                        help="the board: a device (/dev/ttyACM0), a pty, socket://HOST:PORT or sim://...")
    side = parser.add_mutually_exclusive_group(required=True)
    side.add_argument("--pty", action="store_true", help="offer the engine a new pty (its path is printed)")
    side.add_argument("--tcp", type=int, metavar="PORT", help="offer the engine 127.0.0.1:PORT (0: any free port)")
    parser.add_argument("--control", metavar="tcp:PORT|unix:PATH", help="a line channel to change faults live")
    parser.add_argument("--fault", action="append", default=[], metavar="COMMAND",
                        help='a standing fault, e.g. "drop StimEpoch p=0.5" (repeatable; see PROTOCOL.md)')
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choices (default 0)")


def run(args: argparse.Namespace) -> int:
    """Proxy until SIGTERM or SIGINT; 2 for bad options."""
    if args.tcp is not None and not 0 <= args.tcp <= 65535:
        print(f"lnm link-proxy: --tcp PORT must be 0-65535 (got {args.tcp})", file=sys.stderr)
        return 2
    plan = FaultPlan(seed=args.seed)
    for line in args.fault:
        try:
            plan.command(line, 0.0)
        except FaultSyntaxError as exc:
            print(f"lnm link-proxy: --fault {line!r}: {exc}", file=sys.stderr)
            return 2

    def log(text: str) -> None:
        print(f"lnm link-proxy: {text}", file=sys.stderr, flush=True)

    try:
        proxy = LinkProxy(args.board, engine="pty" if args.pty else args.tcp, control=args.control, plan=plan,
                          log=log)
    except ValueError as exc:
        print(f"lnm link-proxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lnm link-proxy: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(proxy.address, flush=True)
    if proxy.control_address:
        print(f"control: {proxy.control_address}", flush=True)
    log(f"board {args.board}, engine side {proxy.address}, {len(plan.rules)} standing fault(s)")
    proxy.start()
    try:
        while not stop.wait(0.2):
            pass
    finally:
        proxy.close()
        if args.control and args.control.startswith("unix:"):
            try:
                os.unlink(args.control[5:])
            except OSError:
                pass
    return 0


__all__ = ["LinkProxy", "configure", "run"]
