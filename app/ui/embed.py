"""Running ``LnmApp`` embedded, one frame at a time (tests and the benchmark).

Owns: ``start(app)`` (build the app, add it to the window, start the event loop without
entering Kivy's main loop), ``step()`` (one frame: clock, input, drawing),
``guarded(fn)`` (run ``fn`` as the main loop would: what it raises goes to Kivy's
``ExceptionManager``, whose handlers decide whether it ends the program),
``request_redraw()`` and ``stop(app)``. This is how Kivy's own tests drive an app; it
keeps Kivy imports inside ``app.ui``.
May import: Kivy. Call ``app.ui.options.configure_kivy`` before importing this module.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from kivy.base import EventLoop, ExceptionManager, runTouchApp, stopTouchApp


def start(app: Any) -> None:
    """Build ``app`` into the window and start the event loop without running it."""
    app._run_prepare()  # build, add the root to the window, on_start
    runTouchApp(embedded=True)


def guarded(fn: Callable[[], Any]) -> Any:
    """``fn()`` the way Kivy's main loop runs a frame: an exception goes to the
    ``ExceptionManager`` and is raised again only if its handlers say so."""
    try:
        return fn()
    except BaseException as exc:
        if ExceptionManager.handle_exception(exc) == ExceptionManager.RAISE:
            raise
        return None


def step(n: int = 1) -> None:
    """``n`` frames (clock, input, drawing), each guarded as the main loop guards it."""
    for _ in range(n):
        guarded(EventLoop.idle)


def request_redraw() -> None:
    """Make the next ``step`` redraw the whole window."""
    from kivy.core.window import Window

    Window.canvas.ask_update()


def stop(app: Any) -> None:
    """Stop ``app`` and close the event loop."""
    app.stop()
    stopTouchApp()
    EventLoop.close()
