"""Driving the running ``LnmApp`` as a nurse would: frames, touches, typing, waits, screenshots.

Owns: ``Driver``, used by the screen gallery (``lnm screens``, ``app.ui.gallery``), the
day of cases (``app.ui.day``) and the UI tests. It finds widgets by their ``tid`` (a
dialog that is open takes the touches, as on the panel), touches them where they are
drawn (``UnitTestTouch`` down and up at the widget's centre, in window coordinates),
types on the on-screen keyboard key by key, and draws frames one at a time
(``app.ui.embed.step``). Nothing calls a screen's handler directly.
May import: Kivy, ``app.ui.embed`` and ``app.ui.main``; only after
``app.ui.options.configure_kivy`` (the window exists).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.ui import embed


class DriveError(AssertionError):
    """The UI did not show what a step of the drive waited for (names the step and the screen)."""


class Driver:
    """Touches, typing and waits on the one running ``LnmApp`` (see the module docstring)."""

    def __init__(self, app: Any, shots: Path | None = None) -> None:
        from kivy.core.window import Window

        self.app = app
        self.window = Window
        self.shots_dir = shots
        self.shots: list[Path] = []
        # window sizes every screenshot is taken at; the first is the one the drive runs at
        self.sizes: tuple[tuple[int, int], ...] = ()

    # -- frames
    def idle(self) -> None:
        """One frame, as Kivy's main loop runs it."""
        embed.step(1)

    def frames(self, n: int = 1) -> None:
        """``n`` frames."""
        for _ in range(n):
            self.idle()

    def run_for(self, seconds: float) -> None:
        """Frames for ``seconds`` of wall-clock time."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.idle()

    def wait(self, pred: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
        """Frames until ``pred()`` is true (its value); ``DriveError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.idle()
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DriveError(f"the UI never showed {what or pred} (screen {self.app.sm.current!r})")

    # -- finding widgets
    def modals(self) -> list[Any]:
        """The dialogs and keyboards open now, topmost first."""
        from kivy.uix.modalview import ModalView

        return [w for w in self.window.children if isinstance(w, ModalView)]

    def all_widgets(self) -> Iterator[Any]:
        """Every widget in the window (dialogs included)."""
        for top in list(self.window.children):
            yield from top.walk(restrict=True)

    def find(self, tid: str, visible: bool = True) -> Any:
        """The widget with ``tid`` where a touch would reach it (in the open dialog if any)."""
        modals = self.modals()
        roots = modals[:1] if modals else list(self.window.children)  # a dialog takes the touches
        for top in roots:
            for w in top.walk(restrict=True):
                if getattr(w, "tid", None) == tid and (not visible or self.shown(w)):
                    return w
        raise LookupError(f"no visible widget {tid!r} on screen {self.app.sm.current!r}"
                          + (" (a dialog is open)" if modals else ""))

    def has(self, tid: str) -> bool:
        """A visible widget ``tid`` is there."""
        try:
            self.find(tid)
            return True
        except LookupError:
            return False

    def shown(self, w: Any) -> bool:
        """``w`` is drawn: not transparent, on the current screen of every screen manager."""
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
        """Touch ``target`` (a tid or a widget) at its centre; the widget."""
        from kivy.tests.common import UnitTestTouch

        w = self.find(target) if isinstance(target, str) else target
        self.frames(1)
        if w.disabled:
            raise DriveError(f"{getattr(w, 'tid', w)!r} is disabled")
        x, y = w.to_window(*w.center)
        if not (0 <= x < self.window.width and 0 <= y < self.window.height):
            raise DriveError(f"{getattr(w, 'tid', w)!r} is outside the window at {x:.0f},{y:.0f}")
        touch = UnitTestTouch(x, y)
        embed.guarded(touch.touch_down)  # touches are dispatched at once, as the main loop would
        self.frames(1)
        embed.guarded(touch.touch_up)
        self.frames(2)
        return w

    def tap_text(self, text: str) -> Any:
        """Touch the button that reads ``text`` (in the open dialog if any)."""
        modals = self.modals()
        roots = modals[:1] if modals else list(self.window.children)
        for top in roots:
            for w in top.walk(restrict=True):
                if getattr(w, "text", None) == text and getattr(w, "tid", "") and self.shown(w):
                    return self.tap(w)
        raise LookupError(f"no button {text!r} on screen {self.app.sm.current!r}")

    def keypad(self) -> Any:
        """The on-screen keyboard that is open."""
        from app.ui.widgets import Keypad

        pads = [w for w in self.window.children if isinstance(w, Keypad)]
        if not pads:
            raise LookupError("no keypad is open")
        return pads[0]

    def type_text(self, text: str) -> None:
        """Type on the on-screen keyboard that is open, key by key, then OK."""
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

    # -- screens
    def answer_selftest(self, timeout_s: float = 30.0) -> None:
        """On the self-test screen: "yes" to each played output, until the result shows."""
        scr = self.app.screens["selftest"]
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while self.app.sm.current == "selftest" and not scr.done:
            if self.has("dialog.confirm"):
                self.tap("dialog.confirm")
                quiet = 0
            elif not scr.running and not self.modals():
                quiet += 1
                if quiet > 30:  # a question closed unanswered: run the test again
                    self.tap("selftest.again")
                    quiet = 0
            self.frames(2)
            if time.monotonic() > deadline:
                raise DriveError(f"the self-test never finished: {scr.summary!r}")

    def dismiss_dialogs(self) -> None:
        """Close every dialog and keyboard that is open."""
        for _ in range(10):
            modals = self.modals()
            if not modals:
                return
            for m in modals:
                m.dismiss(animation=False)
            self.frames(2)

    def go(self, screen: str) -> None:
        """Touch the screen's button in the navigation bar."""
        if self.app.sm.current == "selftest":
            self.answer_selftest()
        self.tap(f"nav.{screen}")
        self.wait(lambda: self.app.sm.current in (screen, "setup", "endcase") if screen == "case"
                  else self.app.sm.current == screen, 5, f"screen {screen}")

    # -- screenshots
    def resize(self, size: tuple[int, int]) -> None:
        """The window at ``size`` (the layout follows)."""
        if tuple(self.window.size) != tuple(size):
            self.window.size = size
            self.wait(lambda: tuple(self.window.size) == tuple(size), 5, f"the window at {size[0]}x{size[1]}")
        self.frames(3)

    def screenshot(self, name: str) -> list[Path]:
        """``name-WxH.png`` in the shots folder, at the current size or at each of ``sizes``
        (then back to the first); the files written."""
        from app.ui.main import save_screenshot

        if self.shots_dir is None:
            return []
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        sizes = self.sizes or (tuple(self.window.size),)
        out = []
        for size in sizes:
            self.resize(size)
            self.frames(3)
            w, h = self.window.size
            path = self.shots_dir / f"{name}-{w}x{h}.png"
            own = self.shots_dir / f".{name}-{w}x{h}.{os.getpid()}.png"  # written whole, then moved into place
            save_screenshot(own)
            os.replace(own, path)
            out.append(path)
        if self.sizes:
            self.resize(self.sizes[0])
        self.shots += out
        return out
