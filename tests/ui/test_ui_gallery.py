"""``lnm screens DIR``: a (shortened) day on the virtual board, a PNG of every screen and
state at each size; bad options are refused with exit status 2 and one line."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ui


def _lnm(*args: str, tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KIVY_NO_ARGS": "1", "SDL_AUDIODRIVER": "dummy", "KIVY_HOME": str(tmp / "kivy")}
    env.pop("DISPLAY", None)  # a virtual display of its own
    return subprocess.run([sys.executable, "-m", "app.cli", "screens", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    w, h = struct.unpack(">II", head[16:24])
    return w, h


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (make test installs it)")
def test_screens_plays_a_day_and_writes_every_screen_at_each_size(tmp_path):
    out = tmp_path / "gallery"
    r = _lnm(str(out), "--cases", "1", "--sizes", "800x480,1280x800", tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    shots = sorted(out.glob("*.png"))
    names = {p.name.rsplit("-", 1)[0] for p in shots}
    for want in ("02-selftest-passed", "c1-03-setup", "c1-05-tube-passed", "c1-07-monitor-steps",
                 "c1-08-monitor-loss-of-signal", "c1-10-los-checks", "c1-15-event-list", "c1-18-closeout-reasons",
                 "c1-19-report", "c1-20-exported", "91-settings-stimulation", "92-past-cases"):
        assert want in names, (want, sorted(names))
    for name in names:  # every state at both sizes, each file the size it says
        for size in ((800, 480), (1280, 800)):
            path = out / f"{name}-{size[0]}x{size[1]}.png"
            assert path.is_file(), path
            assert _png_size(path) == size, path
    assert "screenshots in" in r.stderr and not list(out.glob(".*.png"))


@pytest.mark.parametrize("args, words", [
    (["--cases", "5"], "--cases must be 1, 2 or 3"),
    (["--sizes", "800by480"], "--sizes takes WxH"),
])
def test_screens_refuses_bad_options(tmp_path, args, words):
    r = _lnm(str(tmp_path / "g"), *args, tmp=tmp_path, timeout=60)
    assert r.returncode == 2 and words in r.stderr, r.stderr


def test_screens_refuses_a_file_for_the_folder(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    r = _lnm(str(target), tmp=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"lnm screens: {target} is a file, not a folder"
