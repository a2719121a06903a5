"""Running ``LnmApp`` embedded, one frame at a time (tests and the benchmark).

Owns: ``start(app)`` (build the app, add it to the window, start the event loop without
entering Kivy's main loop), ``step()`` (one frame: clock, input, drawing),
``request_redraw()`` and ``stop(app)``. This is how Kivy's own tests drive an app; it keeps Kivy imports inside
``app.ui``.
May import: Kivy. Call ``app.ui.options.configure_kivy`` before importing this module.
"""

from __future__ import annotations

from typing import Any

from kivy.base import EventLoop, runTouchApp, stopTouchApp


def start(app: Any) -> None:
    app._run_prepare()  # build, add the root to the window, on_start
    runTouchApp(embedded=True)


def step(n: int = 1) -> None:
    for _ in range(n):
        EventLoop.idle()


def request_redraw() -> None:
    """Make the next ``step`` redraw the whole window."""
    from kivy.core.window import Window

    Window.canvas.ask_update()


def stop(app: Any) -> None:
    app.stop()
    stopTouchApp()
    EventLoop.close()
