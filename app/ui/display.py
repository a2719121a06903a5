"""Where the UI draws: the desktop, the appliance's KMS console, or a virtual display.

Owns: ``choose_display(env)``, which decides before Kivy is imported, and
``VirtualDisplay``, an Xvfb server on a free display number (``-displayfd``) for
machines without a screen (a development container, a CI runner): the UI then runs
there, says so plainly, and can write screenshots to a file so one can look at it.

Decision: an X11 ``DISPLAY`` or a ``WAYLAND_DISPLAY`` wins; else a KMS/DRM console
(``SDL_VIDEODRIVER=kmsdrm`` as the appliance's unit sets it, or a ``/dev/dri/card*``
this user may open); else a virtual display, when ``Xvfb`` is installed.

May import: the standard library only.
"""

from __future__ import annotations

import glob
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from collections.abc import Mapping


class NoDisplay(RuntimeError):
    """No screen and no way to make a virtual one."""


@dataclass
class DisplayChoice:
    """Where the UI will draw, and the words that say so."""

    kind: str  # x11 | wayland | kms | virtual
    message: str


def _kms_card() -> str | None:
    for card in sorted(glob.glob("/dev/dri/card*")):
        if os.access(card, os.R_OK | os.W_OK):
            return card
    return None


def choose_display(env: Mapping[str, str] | None = None) -> DisplayChoice:
    """The display to use (see the module docstring for the order)."""
    env = os.environ if env is None else env
    if env.get("DISPLAY"):
        return DisplayChoice("x11", f"X11 display {env['DISPLAY']}")
    if env.get("WAYLAND_DISPLAY"):
        return DisplayChoice("wayland", f"Wayland display {env['WAYLAND_DISPLAY']}")
    if env.get("SDL_VIDEODRIVER", "").lower() == "kmsdrm":
        return DisplayChoice("kms", "the console's KMS/DRM display")
    card = _kms_card()
    if card:
        return DisplayChoice("kms", f"the console's KMS/DRM display ({card})")
    return DisplayChoice("virtual", "no screen found (no DISPLAY, WAYLAND_DISPLAY or KMS console)")


class VirtualDisplay:
    """An Xvfb server on a free display number; ``stop()`` ends it."""

    def __init__(self, width: int = 1280, height: int = 800, depth: int = 24) -> None:
        self.width, self.height, self.depth = width, height, depth
        self.proc: subprocess.Popen | None = None
        self.display = ""

    def start(self, timeout_s: float = 15.0) -> str:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise NoDisplay(
                "no screen found (no DISPLAY, WAYLAND_DISPLAY or KMS console) and Xvfb is not installed; "
                "run on the touchscreen, set DISPLAY, or install the xvfb package (make run does)")
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [exe, "-displayfd", str(w), "-screen", "0", f"{self.width}x{self.height}x{self.depth}",
                 "-nolisten", "tcp", "-noreset"],
                pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            os.close(w)
        data = b""
        deadline = time.monotonic() + timeout_s
        try:
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    self.stop()
                    raise NoDisplay(f"Xvfb did not start within {timeout_s:g} s")
                chunk = os.read(r, 32)
                if not chunk:
                    code = self.proc.wait() if self.proc else None
                    raise NoDisplay(f"Xvfb exited (status {code}) before opening a display")
                data += chunk
        finally:
            os.close(r)
        self.display = ":" + data.decode().strip()
        return self.display

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> VirtualDisplay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
