"""Fixtures for the touchscreen UI tests: a virtual display, a real engine on the virtual
board, and one Kivy app driven frame by frame with simulated touches.

Kivy's window and app are process-wide, so one ``LnmApp`` serves the whole session;
tests drive it the way Kivy's own tests do: ``EventLoop.idle()`` in a loop (the clock
ticks, input is dispatched, the window is drawn) and ``UnitTestTouch`` down/up events
at a widget's position in window coordinates. Nothing calls a handler directly.

Frames and touches run as Kivy's main loop runs them (``app.ui.embed.guarded``): an
exception goes to the app's ``ExceptionManager`` handler, which keeps the UI running.
So that no error slips by unnoticed, every test that uses the app fails when the app
recorded an unexpected error during it, unless the test says it expects one
(``ui.expect_faults()``).

Screenshots of every screen go to ``tests/screenshots/`` (git-ignored), or to
``$LNM_UI_SCREENSHOTS``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("LNM_UI_SCREENSHOTS", ROOT / "tests" / "screenshots"))


# ---------------------------------------------------------------------------- engine


class Engine:
    """``lnm engine`` as a subprocess on the virtual board, with a client for assertions."""

    def __init__(self, tmp: Path, board: str = "sim://?seed=7", export_dir: Path | None = None) -> None:
        self.tmp = tmp
        self.export_dir = export_dir  # the installation's export folder ($LNM_EXPORT_DIR): the test's USB stick
        self.socket = tmp / "engine.sock"
        self.data = tmp / "data"
        self.board = board
        self.proc: subprocess.Popen | None = None
        self.client: Any = None
        self.log = tmp / "engine.log"

    def start(self) -> Engine:
        from app.api.client import EngineClient, EngineUnavailable

        cmd = [sys.executable, "-m", "app.cli", "engine", "--board", self.board, "--socket", str(self.socket),
               "--data", str(self.data), "--no-resume"]
        env = {**os.environ, **({"LNM_EXPORT_DIR": str(self.export_dir)} if self.export_dir else {})}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True, env=env)
        client = EngineClient(self.socket, name="test", timeout_s=10.0)

        def connected() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the engine exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            client.connect(timeout_s=1.0)
            return True

        if not wait_until(connected, 30, interval=0.1, ignore=(EngineUnavailable,)):
            client.connect(timeout_s=1.0)  # raises, saying why
        self.client = client
        return self

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        return self.client.call(cmd, timeout_s=30.0, **args)

    def state(self) -> dict[str, Any]:
        return self.call("state.get")

    def wait(self, pred: Callable[[dict[str, Any]], Any], timeout_s: float = 15.0, what: str = "") -> dict[str, Any]:
        def showing() -> dict[str, Any] | None:
            st = self.state()
            return st if pred(st) else None

        st = wait_until(showing, timeout_s, interval=0.1)
        if not st:
            raise AssertionError(f"engine state never showed {what or pred}")
        return st

    def restart(self) -> Engine:
        """A new engine process on the same socket and data (after a kill)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------- UI driver


# what a test may have done to the virtual patient, undone
RESET_PATIENT: tuple[tuple[str, dict[str, Any]], ...] = (
    ("probe", {"contact": "none"}),
    ("release", {"side": "L", "recovery_s": 1.0}), ("release", {"side": "R", "recovery_s": 1.0}),
    ("nmb", {"level": 0.0, "onset_s": 1.0}), ("tube", {"left": 1.0, "right": 1.0, "over_s": 1.0}),
    ("impedance", {"electrode": "L_POS", "ohm": 2000.0}), ("output", {"output": "probe", "state": "ok"}),
    ("output", {"output": "APS", "state": "ok"}), ("aps_detach", {}),
)


class Ui:
    """Drives the one ``LnmApp`` of the session: frames, touches, waits, screenshots."""

    def __init__(self, app: Any) -> None:
        self.app = app
        from kivy.base import EventLoop
        from kivy.core.window import Window

        self.loop = EventLoop
        self.window = Window
        self.shots: list[Path] = []
        self.faults_allowed = False

    # -- faults
    def expect_faults(self) -> None:
        """This test provokes unexpected errors on purpose: they do not fail it."""
        self.faults_allowed = True

    # -- frames
    def idle(self) -> None:
        """One frame, as Kivy's main loop runs it."""
        from app.ui import embed

        embed.step(1)

    def frames(self, n: int = 1) -> None:
        for _ in range(n):
            self.idle()

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.idle()

    def wait(self, pred: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            self.idle()
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the UI never showed {what or pred}")

    # -- finding widgets
    def all_widgets(self) -> Iterator[Any]:
        for top in list(self.window.children):
            yield from top.walk(restrict=True)

    def find(self, tid: str, visible: bool = True) -> Any:
        from kivy.uix.modalview import ModalView

        modals = [w for w in self.window.children if isinstance(w, ModalView)]
        roots = modals[:1] if modals else list(self.window.children)  # a modal takes the touches
        for top in roots:
            for w in top.walk(restrict=True):
                if getattr(w, "tid", None) == tid and (not visible or self._shown(w)):
                    return w
        raise LookupError(f"no visible widget {tid!r} on screen {self.app.sm.current!r}"
                          + (" (a dialog is open)" if modals else ""))

    def has(self, tid: str) -> bool:
        try:
            self.find(tid)
            return True
        except LookupError:
            return False

    def _shown(self, w: Any) -> bool:
        from kivy.uix.screenmanager import Screen, ScreenManager

        node = w
        while node is not None and node is not self.window:
            if getattr(node, "opacity", 1) == 0:
                return False
            parent = node.parent
            if isinstance(node, Screen) and isinstance(parent, ScreenManager) and parent.current_screen is not node:
                return False
            if isinstance(node, Screen) and parent is None:
                return False
            node = parent
        return True

    # -- touches
    def tap(self, target: Any) -> Any:
        from kivy.tests.common import UnitTestTouch

        w = self.find(target) if isinstance(target, str) else target
        self.frames(1)
        if w.disabled:
            raise AssertionError(f"{getattr(w, 'tid', w)!r} is disabled")
        x, y = w.to_window(*w.center)
        if not (0 <= x < self.window.width and 0 <= y < self.window.height):
            raise AssertionError(f"{getattr(w, 'tid', w)!r} is outside the window at {x:.0f},{y:.0f}")
        from app.ui import embed

        touch = UnitTestTouch(x, y)
        embed.guarded(touch.touch_down)  # touches are dispatched at once, as the main loop would
        self.frames(1)
        embed.guarded(touch.touch_up)
        self.frames(2)
        return w

    def type_text(self, text: str) -> None:
        """Type on the on-screen keypad that is open, then OK."""
        for ch in text:
            key = {" ": "key.space"}.get(ch)
            if key is None:
                if ch.isalpha():
                    pad = self.keypad()
                    if (ch.isupper() and not pad.upper) or (ch.islower() and pad.upper):
                        self.tap("key.shift")
                    key = f"key.{ch.upper()}"
                else:
                    key = f"key.{ch}"
            self.tap(key)
        self.tap("key.ok")

    def keypad(self) -> Any:
        from app.ui.widgets import Keypad

        pads = [w for w in self.window.children if isinstance(w, Keypad)]
        if not pads:
            raise LookupError("no keypad is open")
        return pads[0]

    def answer_selftest(self, timeout_s: float = 30.0) -> None:
        """On the self-test screen: answer "yes" to each played output and wait for the result."""
        scr = self.app.screens["selftest"]
        deadline = time.monotonic() + timeout_s
        while self.app.sm.current == "selftest" and not scr.done:
            if self.has("dialog.confirm"):
                self.tap("dialog.confirm")
            self.frames(2)
            if time.monotonic() > deadline:
                raise AssertionError(f"the self-test never finished: {scr.summary!r}")

    def dismiss_dialogs(self) -> None:
        """Close every dialog and keypad that is open (as touching outside it would)."""
        from kivy.uix.modalview import ModalView

        for _ in range(10):
            modals = [w for w in self.window.children if isinstance(w, ModalView)]
            if not modals:
                return
            for m in modals:
                m.dismiss(animation=False)
            self.frames(2)

    def home(self, engine: Engine) -> None:
        """Back to the start of a case, whatever the last test left: no dialog, the
        self-test answered, no case open (closed through the engine), the case set-up
        screen with an empty form, the probe's simulator contact lifted."""
        app = self.app
        self.dismiss_dialogs()
        if app.sm.current == "selftest":
            self.answer_selftest()
            self.dismiss_dialogs()
        if engine.state().get("case"):
            engine.call("case.close", note="back to the start")
        self.wait(lambda: not app.case_open and app.state.get("case") is None, 15, "no case open")
        if app.simulated:  # a healthy virtual patient again, the probe lifted
            for command, args in RESET_PATIENT:
                engine.call("sim.control", command=command, args=args)
        app.go("setup")
        self.wait(lambda: app.sm.current == "setup", 5, "the case set-up screen")
        app.screens["setup"].clear()
        app.message_bar.message, app.message_bar.level = "", "info"
        self.frames(2)

    def go(self, screen: str) -> None:
        # a test run on its own meets the start-up self-test's questions (the played outputs): yes
        if self.app.sm.current == "selftest":
            self.answer_selftest()
        self.tap(f"nav.{screen}")
        self.wait(lambda: self.app.sm.current in (screen, "setup", "endcase") if screen == "case"
                  else self.app.sm.current == screen, 5, f"screen {screen}")

    # -- screenshots
    def screenshot(self, name: str) -> Path:
        from app.ui.main import save_screenshot

        self.frames(3)
        w, h = self.window.size
        path = SHOTS / f"{name}-{w}x{h}.png"
        # a name of this process's own first (two test runs at once share SHOTS), then
        # moved into place whole
        own = SHOTS / f".{name}-{w}x{h}.{os.getpid()}.png"
        save_screenshot(own)
        os.replace(own, path)
        self.shots.append(path)
        return path


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (make test installs it)")
    from app.ui.display import VirtualDisplay

    vd = VirtualDisplay(1280, 800)
    disp = vd.start()
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = disp
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ["KIVY_NO_ARGS"] = "1"
    yield disp
    vd.stop()
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory, usb_dir: Path) -> Iterator[Engine]:
    # exports go only below the removable-media folders or the installation's $LNM_EXPORT_DIR
    eng = Engine(tmp_path_factory.mktemp("engine"), export_dir=usb_dir).start()
    yield eng
    eng.stop()


@pytest.fixture(scope="session")
def usb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("usb")


@pytest.fixture(scope="session")
def ui(display: str, engine: Engine, usb_dir: Path) -> Iterator[Ui]:
    from app.ui.options import UiOptions, configure_kivy

    opts = UiOptions(socket=engine.socket, size=(800, 480), usb_target=str(usb_dir), stale_s=2.0)
    configure_kivy(opts)
    from app.ui import embed
    from app.ui.main import LnmApp

    app = LnmApp(opts)
    embed.start(app)
    driver = Ui(app)
    driver.frames(5)
    yield driver
    embed.stop(app)


@pytest.fixture(autouse=True)
def _no_unexpected_ui_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the app fails if the app caught an unexpected error meanwhile."""
    if "ui" not in request.fixturenames:
        yield
        return
    driver: Ui = request.getfixturevalue("ui")
    log = driver.app.fault_log
    before = log.total
    driver.faults_allowed = False
    yield
    n = log.total - before
    allowed = driver.faults_allowed
    driver.faults_allowed = False
    if n and not allowed:
        traces = {id(f): f.trace for f in list(log.recent)[-n:]}
        pytest.fail(f"the UI caught {n} unexpected error(s):\n" + "\n".join(traces.values()), pytrace=False)
