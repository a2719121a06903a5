"""``lnm run`` with the UI, from the outside: on a machine without a screen it starts the
engine and the UI on a virtual display and says so; a UI that dies is restarted while
the engine keeps monitoring; everything it started is stopped at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from waiting import wait_until

pytestmark = pytest.mark.ui
ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(LNM_SOCKET=str(tmp_path / "engine.sock"), KIVY_HOME=str(tmp_path / "kivy"))
    return env


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture()
def no_screen(tmp_path):
    import shutil

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (make test installs it)")
    if Path("/dev/dri").exists():
        pytest.skip("this machine has a KMS console: lnm run would draw on it")
    return _env(tmp_path)


def test_run_without_a_screen_uses_a_virtual_display_and_says_where_to_look(tmp_path, no_screen):
    shot = tmp_path / "screen.png"
    r = subprocess.run([sys.executable, "-m", "app.cli", "run", "--data", str(tmp_path / "data"), "--duration", "12",
                        "--screenshot", str(shot)], cwd=ROOT, env=no_screen, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "virtual display" in r.stderr and str(shot) in r.stderr, r.stderr[-3000:]
    img = Image.open(shot)
    assert img.size == (800, 480)
    assert len(img.convert("L").getcolors(65536) or []) > 10  # a drawn screen, not a blank one
    assert not (tmp_path / "engine.sock").exists()  # the engine it started was stopped


def test_run_restarts_a_dead_ui_while_the_engine_keeps_monitoring(tmp_path, no_screen):
    from app.api.client import EngineClient

    shot = tmp_path / "screen.png"
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--data", str(tmp_path / "data"),
                             "--duration", "40", "--screenshot", str(shot)], cwd=ROOT, env=no_screen,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: shot.exists() or proc.poll() is not None, 40, interval=0.1)
        assert shot.exists() and proc.poll() is None, "the UI never drew"
        uis = [p for p in _children(proc.pid) if " ui " in _cmdline(p)]
        assert len(uis) == 1, [_cmdline(p) for p in _children(proc.pid)]
        os.kill(uis[0], signal.SIGKILL)  # the UI dies
        with EngineClient(tmp_path / "engine.sock", name="test") as c:
            st = c.call("state.get")  # the engine is still there, untouched
            assert st["board"]["connected"]
        first = shot.stat().st_mtime

        def restarted() -> bool:
            new = [p for p in _children(proc.pid) if " ui " in _cmdline(p) and p != uis[0]]
            return bool(new) and shot.stat().st_mtime > first + 1

        wait_until(lambda: restarted() or proc.poll() is not None, 60, interval=0.1)
        assert restarted() and proc.poll() is None, "the UI was not restarted"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "restarting the UI" in err and "keeps monitoring" in err
    assert not (tmp_path / "engine.sock").exists()
