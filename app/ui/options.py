"""Options of the touchscreen UI and the Kivy configuration they imply (no Kivy import
at module level: ``configure_kivy`` must run before Kivy creates its window).

Owns: ``UiOptions`` and ``configure_kivy``.
May import: the standard library; ``kivy.config`` inside ``configure_kivy`` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class UiOptions:
    """How the UI runs: engine socket, window, screenshots, export folder, first screen."""

    socket: Path | None = None
    size: tuple[int, int] = (800, 480)
    fullscreen: bool = False
    diagonal_in: float | None = None
    dpi: float | None = None
    screenshot: Path | None = None  # written every ``screenshot_every_s`` when set
    screenshot_every_s: float = 2.0
    usb_target: str | None = None  # export folder (default: the engine finds the stick)
    config_dir: Path | None = None
    start_screen: str = "selftest"
    stale_s: float = 2.5
    name: str = "ui"
    max_fps: int = 30  # 0: unlimited (a benchmark paces the frames itself)
    extra: dict[str, Any] = field(default_factory=dict)


def configure_kivy(opts: UiOptions) -> None:
    """Window and input configuration; must run before ``kivy.core.window`` is imported."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.config import Config

    w, h = opts.size
    Config.set("graphics", "width", str(w))
    Config.set("graphics", "height", str(h))
    Config.set("graphics", "resizable", "0")
    Config.set("graphics", "fullscreen", "auto" if opts.fullscreen else "0")
    Config.set("graphics", "maxfps", str(int(opts.max_fps)))
    # no multisampling: it multiplies the fill cost of every frame on the Pi's GPU and on
    # software renderers; the traces are 1 px lines anyway
    Config.set("graphics", "multisamples", "0")
    Config.set("graphics", "show_cursor", "0" if opts.fullscreen else "1")
    Config.set("kivy", "exit_on_escape", "0" if opts.fullscreen else "1")
    Config.set("kivy", "keyboard_mode", "")
    Config.set("input", "mouse", "mouse,disable_multitouch")
