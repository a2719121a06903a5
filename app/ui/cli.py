"""``lnm ui``: the touchscreen UI against a running engine.

Owns: the command's options, choosing the display before Kivy is imported (a desktop,
the appliance's KMS console, or, on a machine without a screen, a virtual Xvfb display,
said plainly together with where its screenshots go), and running ``LnmApp``.
May import: the standard library, ``app.ui.display``, ``app.ui.options``; Kivy and
``app.ui.main`` only inside ``run`` after the display is chosen.

Exit status: 0 closed normally; 2 bad options or no display at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SIZES = {"800x480": (800, 480), "1280x800": (1280, 800), "1024x600": (1024, 600)}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, e.g. 800x480 (got {text!r})") from None
    if not (320 <= w <= 7680 and 240 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"--size {text} is out of range (320x240 to 7680x4320)")
    return w, h


def default_screenshot_path() -> Path:
    """Where screenshots go on a virtual display when ``--screenshot`` is not given."""
    return Path(tempfile.gettempdir()) / f"lnm-{os.getuid()}" / "ui-screen.png"


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    from app.api.protocol import default_socket_path

    parser.add_argument("--socket", type=Path, default=None, metavar="PATH",
                        help=f"engine API socket (default {default_socket_path()})")
    parser.add_argument("--size", type=_size, default=(800, 480), metavar="WxH",
                        help="window size when not full screen: 800x480 (7\" panel, default) or 1280x800 (10.1\")")
    parser.add_argument("--fullscreen", action="store_true", help="use the whole screen (the appliance)")
    parser.add_argument("--diagonal", type=float, default=None, metavar="INCHES",
                        help="screen diagonal, for 9 mm touch targets (default: known panels by resolution)")
    parser.add_argument("--dpi", type=float, default=None, help="pixels per inch (overrides --diagonal)")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                        help="write the screen to this file every --screenshot-every seconds "
                             "(default on a virtual display: " + str(default_screenshot_path()) + ")")
    parser.add_argument("--screenshot-every", type=float, default=2.0, metavar="S")
    parser.add_argument("--usb", default=None, metavar="DIR", help="export folder (default: the USB stick)")
    parser.add_argument("--config", type=Path, default=None, metavar="DIR",
                        help="configuration directory (surgeon profile names)")
    parser.add_argument("--start", default="selftest", choices=("selftest", "setup", "monitor"),
                        help="first screen (default: the start-up self-test)")


def run(args: argparse.Namespace) -> int:
    """Choose the display, run the UI; the exit status (module docstring)."""
    from app.ui.display import NoDisplay, VirtualDisplay, choose_display
    from app.ui.options import UiOptions, configure_kivy

    choice = choose_display()
    virtual: VirtualDisplay | None = None
    screenshot = args.screenshot
    if choice.kind == "virtual":
        w, h = args.size
        virtual = VirtualDisplay(max(w, 1280), max(h, 800))
        try:
            display = virtual.start()
        except NoDisplay as exc:
            print(f"lnm ui: {exc}", file=sys.stderr)
            return 2
        os.environ["DISPLAY"] = display
        screenshot = screenshot or default_screenshot_path()
        print(f"lnm ui: {choice.message}: the UI runs on a virtual display {display} (Xvfb); "
              f"a screenshot is written every {args.screenshot_every:g} s to {screenshot}", file=sys.stderr)
    else:
        print(f"lnm ui: drawing on {choice.message}", file=sys.stderr)
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    opts = UiOptions(socket=args.socket, size=args.size, fullscreen=args.fullscreen, diagonal_in=args.diagonal,
                     dpi=args.dpi, screenshot=screenshot, screenshot_every_s=max(0.2, args.screenshot_every),
                     usb_target=args.usb, config_dir=args.config, start_screen=args.start)
    try:
        configure_kivy(opts)
        from app.ui.main import LnmApp

        LnmApp(opts).run()
        return 0
    finally:
        if virtual is not None:
            virtual.stop()
