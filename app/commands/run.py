"""``lnm run``: the product on the virtual board: the engine and the touchscreen UI.

Owns: starting ``lnm engine`` on the virtual board as its own process (as on the
appliance: the engine keeps monitoring whatever happens to its clients), then the
touchscreen UI as another process, both supervised (``app.ui.launch``: a UI that dies
is restarted while the engine keeps alarming; on a machine without a screen the UI runs
on a virtual display and says where its screenshot is). With ``--headless``: opening a
demo case and the live view in the terminal instead: what the engine sees and does
(board, stimulation, last responses per side, baselines, alarms, events) until Ctrl-C;
in a terminal, single keys drive the virtual patient.
May import: the standard library, ``app.api`` (client, clients), ``app.engine.cli``
(defaults), ``app.record.journal`` (data folder) and ``app.ui.launch`` (no Kivy).

If an engine already answers on the socket, the view attaches to it instead of starting
another one.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

def _sim(command: str, **args: Any) -> tuple[str, dict[str, Any]]:
    """A virtual-board control as a local-API command."""
    return "sim.control", {"command": command, "args": args}


KEYS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "v": ("probe on the left vagus", [_sim("probe", contact="nerve", site="VAGUS", side="L"),
                                      ("probe.site", {"site": "VAGUS", "side": "L"})]),
    "n": ("probe on the left RLN", [_sim("probe", contact="nerve", site="RLN", side="L"),
                                    ("probe.site", {"site": "RLN", "side": "L"})]),
    "o": ("probe in the air", [_sim("probe", contact="air")]),
    "t": ("traction on the left RLN", [_sim("traction", side="L", severity=0.9, onset_s=20)]),
    "r": ("release the traction", [_sim("release", side="L", recovery_s=60)]),
    "d": ("tube displaced", [_sim("tube", left=0.3, right=0.3, over_s=2)]),
    "f": ("tube back in place", [_sim("tube", left=1.0, right=1.0, over_s=2)]),
    "c": ("cautery burst", [_sim("cautery", duration_s=3)]),
    "a": ("acknowledge the top alarm", [("alarm.ack", {})]),
    "p": ("pause alarm audio", [("alarm.pause_audio", {})]),
    "b": ("new continuous-vagal baseline", [("baseline.rebaseline", {"side": "L"})]),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``lnm run``."""
    parser.add_argument("--socket", type=Path, default=None, metavar="PATH", help="engine API socket")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="data folder for the demo journal (default: <data folder>/demo)")
    parser.add_argument("--board", default="sim://?seed=1", metavar="URL",
                        help="board URL (default: the virtual board)")
    parser.add_argument("--no-demo", action="store_true", help="do not open a demo case")
    parser.add_argument("--refresh", type=float, default=0.5, metavar="S", help="view refresh period (default 0.5 s)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: Ctrl-C)")
    parser.add_argument("--headless", action="store_true",
                        help="no touchscreen UI: a demo case and the live view in this terminal")
    parser.add_argument("--demo", action="store_true", help="with the UI: open the demo case too")
    parser.add_argument("--size", default=None, metavar="WxH", help="UI window size (800x480 or 1280x800)")
    parser.add_argument("--fullscreen", action="store_true", help="UI on the whole screen")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                        help="the UI writes its screen to this file every 2 s")


def run(args: argparse.Namespace) -> int:
    """``lnm run``: the engine on the board (the virtual one by default) and the UI or a terminal view."""
    from app.api.client import CommandFailed, EngineClient, EngineUnavailable
    from app.api.protocol import default_socket_path

    sock = args.socket or default_socket_path()
    engine: subprocess.Popen | None = None
    client = EngineClient(sock, name="lnm-run", reconnect=True, retry_s=0.2)
    try:
        client.connect(timeout_s=1.0)
        print(f"lnm run: attached to the engine already running on {sock}", file=sys.stderr)
    except EngineUnavailable:
        engine = _start_engine(args, sock)
        deadline = time.monotonic() + 20.0
        while True:
            if engine.poll() is not None:
                print(f"lnm run: the engine exited with status {engine.returncode}", file=sys.stderr)
                return engine.returncode or 1
            try:
                client.connect(timeout_s=1.0)
                break
            except EngineUnavailable:
                if time.monotonic() > deadline:
                    print(f"lnm run: the engine did not open {sock} within 20 s", file=sys.stderr)
                    _stop_engine(engine)
                    return 1
                time.sleep(0.1)
    if not args.headless:
        return _with_ui(args, sock, engine, client)
    client.start()
    client.subscribe(["state", "events"], state_hz=max(0.5, 1.0 / max(args.refresh, 0.1)))
    if not args.no_demo:
        _demo_case(client)
    stop = {"now": False}
    old = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    try:
        return _view(client, args, engine, stop)
    except KeyboardInterrupt:
        return 0
    except CommandFailed as exc:
        print(f"lnm run: {exc.message}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
        client.close()
        if engine is not None:
            _stop_engine(engine)


def _with_ui(args: argparse.Namespace, sock: Path, engine: subprocess.Popen | None, client: Any) -> int:
    """The engine (ours, or one already running) and the touchscreen UI until the UI is closed."""
    from app.ui.launch import supervise

    if args.demo:
        _demo_case(client)
    client.close()
    ui_args: list[str] = []
    if args.size:
        ui_args += ["--size", args.size]
    if args.fullscreen:
        ui_args.append("--fullscreen")
    if args.screenshot:
        ui_args += ["--screenshot", str(args.screenshot)]
    procs = {"engine": engine}
    stop = {"now": False}
    old_term = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    try:
        return supervise(sock, procs, (lambda: _start_engine(args, sock)) if engine is not None else None,
                         ui_args, duration_s=args.duration, stop=stop)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if procs["engine"] is not None:
            _stop_engine(procs["engine"])


def _start_engine(args: argparse.Namespace, sock: Path) -> subprocess.Popen:
    from app.engine.service import default_data_dir

    data = args.data or (default_data_dir() / "demo")
    cmd = [sys.executable, "-m", "app.cli", "engine", "--board", args.board, "--socket", str(sock), "--data", str(data)]
    print(f"lnm run: starting the engine on {args.board} (journal in {data})", file=sys.stderr)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)


def _stop_engine(engine: subprocess.Popen) -> None:
    if engine.poll() is None:
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(timeout=10)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()


def _demo_case(client: Any) -> None:
    """A case on the left side with the continuous vagal electrode, if none is open."""
    from app.api.client import CommandFailed

    state = client.call("state.get")
    if state.get("case") is None:
        try:
            client.call("case.start", patient_id="DEMO-1", procedure="left hemithyroidectomy (demo)",
                        planned_sides=["L"])
        except CommandFailed as exc:
            print(f"lnm run: demo case not opened: {exc.message}", file=sys.stderr)
            return
    if state.get("engine", {}).get("simulated") or (state.get("board") or {}).get("url", "").startswith("sim://"):
        for cmd, kw in (("sim.control", {"command": "aps_attach", "args": {"side": "L"}}),
                        ("aps.side", {"side": "L"}), ("stim.output", {"output": "aps", "on": True}),
                        ("stim.output", {"output": "probe", "on": True})):
            try:
                client.call(cmd, **kw)
            except CommandFailed as exc:
                print(f"lnm run: {cmd}: {exc.message}", file=sys.stderr)


def _view(client: Any, args: argparse.Namespace, engine: Any, stop: dict[str, bool]) -> int:
    from app.api.clients import format_status

    tty = sys.stdout.isatty()
    keys = _Keys() if sys.stdin.isatty() and tty else None
    state: dict[str, Any] | None = None
    events: list[str] = []
    connection = "connecting"
    t_end = None if args.duration is None else time.monotonic() + args.duration
    next_draw = 0.0
    try:
        while not stop["now"]:
            if t_end is not None and time.monotonic() >= t_end:
                break
            if engine is not None and engine.poll() is not None:
                print(f"\nlnm run: the engine exited with status {engine.returncode}", file=sys.stderr)
                return engine.returncode or 1
            state, connection = _absorb(client.poll(), state, connection, events, echo=not tty)
            if keys is not None and _keys_pressed(keys, client, events):
                return 0
            now = time.monotonic()
            if now >= next_draw:
                next_draw = now + args.refresh
                if tty:
                    _draw(state, events, connection, keys is not None)
                elif state is not None:
                    print("\n".join(format_status(state).splitlines()[:6]) + "\n", flush=True)
                    state = None
            time.sleep(0.05)
    finally:
        if keys is not None:
            keys.close()
    return 0


def _absorb(messages: Any, state: dict[str, Any] | None, connection: str, events: list[str],
            echo: bool) -> tuple[dict[str, Any] | None, str]:
    """The engine's messages taken into the view: the newest state, the connection, recent events."""
    from app.api.clients import format_event

    for msg in messages:
        kind = msg.get("type")
        if kind == "state":
            state = msg
        elif kind == "event":
            events.append(format_event(msg))
            del events[:-8]
            if echo:
                print(events[-1], flush=True)
        elif kind == "connection":
            connection = "connected" if msg.get("connected") else f"ENGINE GONE: {msg.get('message')}"
    return state, connection


def _keys_pressed(keys: _Keys, client: Any, events: list[str]) -> bool:
    """Send the commands of the keys pressed since the last look; True when ``q`` asks to quit."""
    from app.api.client import CommandFailed, EngineUnavailable

    for ch in keys.read():
        if ch == "q":
            return True
        if ch in KEYS:
            what, cmds = KEYS[ch]
            events.append(f"   key {ch!r}: {what}")
            for cmd, kw in cmds:
                try:
                    client.call(cmd, **kw)
                except (CommandFailed, EngineUnavailable) as exc:
                    events.append(f"   {cmd} refused: {exc}")
    return False


def _draw(state: dict[str, Any] | None, events: list[str], connection: str, with_keys: bool) -> None:
    from app.api.clients import format_status

    width = shutil.get_terminal_size((100, 30)).columns
    out = ["\x1b[H\x1b[2J", f"LNM live view ({connection}) - Ctrl-C to stop", ""]
    out.append(format_status(state) if state else "waiting for the engine's state ...")
    out.append("")
    out.append("recent events:")
    out.extend(events[-8:] or ["  (none yet)"])
    if with_keys:
        out.append("")
        out.append("keys: " + "  ".join(f"{k}={v[0]}" for k, v in KEYS.items()) + "  q=quit")
    sys.stdout.write("\n".join(line[:width] for line in out) + "\n")
    sys.stdout.flush()


class _Keys:
    """Single key presses from the terminal without Enter (restored on close)."""

    def __init__(self) -> None:
        import termios
        import tty

        self.fd = sys.stdin.fileno()
        self.old = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def read(self) -> str:
        out = ""
        while select.select([self.fd], [], [], 0)[0]:
            ch = os.read(self.fd, 1)
            if not ch:
                break
            out += ch.decode("utf-8", "replace")
        return out

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.old)
