"""``lnm screens DIR``: a day of cases on the virtual board, photographed screen by screen.

Owns: the command's options and its run: an engine of its own on the virtual board (a
temporary record, socket and USB folder, nothing of an installation touched), the
touchscreen UI on a virtual display (Xvfb) when there is one, else on the display there
is, the day of ``app.ui.day`` played by touches, and a PNG of every screen and state at
each size (default 800x480 and 1280x800: ``NAME-800x480.png``, ``NAME-1280x800.png``).
Reviewers read the day from these files; the README shows a few.
May import: the standard library, ``app.api.client``, ``app.ui.display``,
``app.ui.options``; Kivy and the rest of ``app.ui`` only inside ``run``, after the display
and ``KIVY_HOME`` are set.

Exit status: 0 every screen photographed and the UI raised nothing; 1 the UI raised an
error (each is printed with its trace) or the day could not be played (the step that
failed is named); 2 bad options, no display, or an engine that did not start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = ((800, 480), (1280, 800))


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes takes WxH[,WxH], e.g. 800x480,1280x800 (got {text!r})") from None
        if not (320 <= w <= 1920 and 240 <= h <= 1200):
            raise argparse.ArgumentTypeError(f"--sizes: {part.strip()} is out of range (320x240 to 1920x1200)")
        out.append((w, h))
    return tuple(out)


def _say(text: str) -> None:
    """One line to the terminal (Kivy, once imported, takes ``sys.stderr`` over for its log)."""
    err = sys.__stderr__ or sys.stderr
    err.write(f"lnm screens: {text}\n")
    err.flush()


def _cases(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 3:
        raise argparse.ArgumentTypeError(f"--cases must be 1, 2 or 3 (got {text!r})")
    return n


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder for the PNG files (made if missing)")
    parser.add_argument("--cases", type=_cases, default=3, metavar="N", help="cases in the day, 1-3 (default 3)")
    parser.add_argument("--sizes", type=_sizes, default=SIZES, metavar="WxH[,WxH]",
                        help="screen sizes of every photograph (default 800x480,1280x800)")
    parser.add_argument("--seed", type=int, default=7, help="the virtual patient's random seed (default 7)")


class _Engine:
    """``lnm engine`` on the virtual board, in a temporary folder of its own."""

    def __init__(self, tmp: Path, seed: int) -> None:
        self.socket = tmp / "engine.sock"
        self.usb = tmp / "usb"
        self.log = tmp / "engine.log"
        self.usb.mkdir()
        cmd = [sys.executable, "-m", "app.cli", "engine", "--board", f"sim://?seed={seed}", "--socket",
               str(self.socket), "--data", str(tmp / "data"), "--no-resume"]
        env = {**os.environ, "LNM_EXPORT_DIR": str(self.usb)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)

    def wait_ready(self, timeout_s: float = 60.0) -> str | None:
        """None once the engine answers; else why not."""
        from app.api.client import EngineClient, EngineUnavailable

        client = EngineClient(self.socket, name="screens", timeout_s=5.0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"the engine exited ({self.proc.returncode}): {self.log.read_text(errors='replace')[-800:]}"
            try:
                client.connect(timeout_s=1.0)
                client.close()
                return None
            except EngineUnavailable:
                time.sleep(0.2)
        return f"the engine did not answer within {timeout_s:g} s (log: {self.log})"

    def stop(self) -> None:
        """End the engine (it closes its record)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _prepare_dir(path: Path) -> str | None:
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".lnm-screens-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"cannot write to {path}: {exc.strerror or exc}"
    return None


def run(args: argparse.Namespace) -> int:
    """Play the day and write the photographs; the exit status (module docstring)."""
    from app.ui.display import NoDisplay, VirtualDisplay

    problem = _prepare_dir(args.dir)
    if problem:
        _say(problem)
        return 2
    width = max(w for w, _h in args.sizes)
    height = max(h for _w, h in args.sizes)
    virtual: VirtualDisplay | None = None
    with tempfile.TemporaryDirectory(prefix="lnm-screens-") as tmp_text:
        tmp = Path(tmp_text)
        try:
            virtual = VirtualDisplay(max(width, 1280), max(height, 800))
            os.environ["DISPLAY"] = virtual.start()
        except (NoDisplay, OSError) as exc:
            virtual = None
            if not os.environ.get("DISPLAY"):
                _say(f"no display to draw on: {exc}")
                return 2
        os.environ["KIVY_HOME"] = str(tmp / "kivy")  # no trace in the user's own Kivy settings
        os.environ["KIVY_NO_ARGS"] = "1"
        os.environ["SDL_AUDIODRIVER"] = "dummy"
        engine = _Engine(tmp, args.seed)
        try:
            why = engine.wait_ready()
            if why:
                _say(why)
                return 2
            return _play(args, engine)
        finally:
            engine.stop()
            if virtual is not None:
                virtual.stop()


def _play(args: argparse.Namespace, engine: _Engine) -> int:
    from app.ui.options import UiOptions, configure_kivy

    opts = UiOptions(socket=engine.socket, size=args.sizes[0], usb_target=str(engine.usb), stale_s=5.0)
    configure_kivy(opts)
    from app.ui import embed
    from app.ui.day import Day
    from app.ui.drive import DriveError, Driver
    from app.ui.main import LnmApp

    app = LnmApp(opts)
    embed.start(app)
    driver = Driver(app, shots=args.dir)
    driver.sizes = tuple(args.sizes)
    status = 0
    try:
        driver.frames(5)
        Day(driver, say=_say).play(args.cases)
    except (DriveError, LookupError) as exc:
        _say(f"the day stopped: {exc}")
        driver.screenshot("99-stopped-here")
        status = 1
    finally:
        faults: list[Any] = list(app.fault_log.recent)
        embed.stop(app)
    if app.fault_log.total:
        _say(f"the UI raised {app.fault_log.total} error(s):")
        for fault in faults:
            _say(fault.trace)
        status = 1
    _say(f"{len(driver.shots)} screenshots in {args.dir}")
    return status
