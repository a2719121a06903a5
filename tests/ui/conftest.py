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
        from app.api.client import EngineUnavailable

        try:
            return self.client.call(cmd, timeout_s=30.0, **args)
        except EngineUnavailable:
            # the engine drops a client idle for a minute (a long drive of the UI): connect again
            if self.proc is None or self.proc.poll() is not None:
                raise
            self.client.connect(timeout_s=5.0)
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


def _ui_class() -> type:
    """``Ui``: the one ``LnmApp`` of the session driven as a nurse would
    (``app.ui.drive.Driver``), with the tests' own: expected faults, the way home between
    tests, screenshots to ``SHOTS``. Made once Kivy may be imported (the display is set)."""
    from app.ui.drive import Driver

    class Ui(Driver):
        faults_allowed = False

        def expect_faults(self) -> None:
            """This test provokes unexpected errors on purpose: they do not fail it."""
            self.faults_allowed = True

        def _shown(self, w: Any) -> bool:
            return self.shown(w)

        def home(self, engine: Engine) -> None:
            _home(self, engine)

    return Ui


def _home(ui: Any, engine: Engine) -> None:
    """Back to the start of a case, whatever the last test left: no dialog, the self-test
    answered, no case open (closed through the engine), the virtual patient healthy and the
    probe lifted, the case set-up screen with an empty form, the window at 800x480."""
    app = ui.app
    if app.sm.current == "selftest":
        ui.answer_selftest()
    ui.dismiss_dialogs()
    ui.resize((800, 480))
    if engine.state().get("case"):
        engine.call("case.close", note="back to the start")
    ui.wait(lambda: not app.case_open and app.state.get("case") is None, 15, "no case open")
    if app.simulated:
        for command, args in RESET_PATIENT:
            engine.call("sim.control", command=command, args=args)
    app.go("setup")
    ui.wait(lambda: app.sm.current == "setup", 5, "the case set-up screen")
    app.screens["setup"].clear()
    app.message_bar.message, app.message_bar.level = "", "info"
    ui.frames(2)


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
def ui(display: str, engine: Engine, usb_dir: Path) -> Iterator[Any]:
    from app.ui.options import UiOptions, configure_kivy

    opts = UiOptions(socket=engine.socket, size=(800, 480), usb_target=str(usb_dir), stale_s=2.0)
    configure_kivy(opts)
    from app.ui import embed
    from app.ui.main import LnmApp

    app = LnmApp(opts)
    embed.start(app)
    driver = _ui_class()(app, shots=SHOTS)
    driver.frames(5)
    yield driver
    embed.stop(app)


@pytest.fixture(autouse=True)
def _no_unexpected_ui_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the app fails if the app caught an unexpected error meanwhile."""
    if "ui" not in request.fixturenames:
        yield
        return
    driver: Any = request.getfixturevalue("ui")
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
