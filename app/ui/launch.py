"""Running the touchscreen UI next to an engine, as ``lnm run`` does (no Kivy here).

Owns: ``supervise``: the UI as its own process (``lnm ui``) beside the engine's, both
watched: a UI that dies is restarted while the engine keeps monitoring and alarming (as
systemd does on the appliance); an engine that dies is restarted too (it resumes the
open case) while the UI says "engine connection lost"; closing the UI window ends both.
On a machine without a screen the UI gets a virtual display (Xvfb), said plainly, with
the path of the screenshot the UI keeps writing.
May import: the standard library and ``app.ui.display`` / ``app.ui.cli`` (no Kivy).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable, Sequence

from app.ui.display import NoDisplay, VirtualDisplay, choose_display

RESTARTS_PER_MINUTE = 5  # more UI crashes than this in a minute: give up (something is broken)


def ui_command(sock: Path, extra: Sequence[str] = ()) -> list[str]:
    """The command line of ``lnm ui`` against the engine at ``sock``."""
    return [sys.executable, "-m", "app.cli", "ui", "--socket", str(sock), *extra]


def supervise(sock: Path, procs: dict[str, subprocess.Popen | None],
              start_engine: Callable[[], subprocess.Popen] | None, ui_args: Sequence[str] = (),
              duration_s: float | None = None, say: Callable[[str], None] | None = None,
              stop: dict[str, bool] | None = None) -> int:
    """Run the UI (restarting it if it dies) until it is closed, ``duration_s`` passes or
    ``stop["now"]`` is set. ``procs["engine"]`` (if we started it) is restarted with
    ``start_engine`` when it dies, and replaced in ``procs`` so the caller stops the
    current one. Returns the exit status for ``lnm run``."""
    say = say or (lambda text: print(f"lnm run: {text}", file=sys.stderr, flush=True))
    stop = stop if stop is not None else {"now": False}
    env = dict(os.environ)
    virtual: VirtualDisplay | None = None
    extra = list(ui_args)
    choice = choose_display(env)
    if choice.kind == "virtual":
        virtual = VirtualDisplay(1280, 800)
        try:
            env["DISPLAY"] = virtual.start()
        except NoDisplay as exc:
            say(str(exc))
            return 2
        if "--screenshot" not in extra:
            from app.ui.cli import default_screenshot_path

            extra += ["--screenshot", str(default_screenshot_path())]
        shot = extra[extra.index("--screenshot") + 1]
        say(f"{choice.message}: the UI runs on a virtual display {env['DISPLAY']} (Xvfb), not on a screen; "
            f"a screenshot of it is written every 2 s to {shot}")
    else:
        say(f"the UI draws on {choice.message}")
    env.setdefault("KIVY_NO_ARGS", "1")
    env.setdefault("KIVY_NO_CONSOLELOG", "1")  # Kivy's log goes to its file; the terminal stays readable
    env.setdefault("SDL_AUDIODRIVER", "dummy")
    crashes: list[float] = []
    ui: subprocess.Popen | None = None
    t_end = None if duration_s is None else time.monotonic() + duration_s
    try:
        while True:
            if ui is None:
                ui = subprocess.Popen(ui_command(sock, extra), env=env, stdin=subprocess.DEVNULL)
            if stop["now"] or (t_end is not None and time.monotonic() >= t_end):
                return 0
            code = ui.poll()
            if code is not None:
                if code == 0:
                    say("the UI was closed; stopping")
                    return 0
                now = time.monotonic()
                crashes = [t for t in crashes if now - t < 60.0] + [now]
                if len(crashes) > RESTARTS_PER_MINUTE:
                    say(f"the UI keeps failing (status {code}, {len(crashes)} times in a minute); giving up")
                    return 1
                say(f"the UI stopped (status {code}); the engine keeps monitoring and alarming; restarting the UI")
                ui = None
                time.sleep(1.0)
                continue
            engine = procs.get("engine")
            if engine is not None and engine.poll() is not None:
                say(f"the engine stopped (status {engine.returncode}); the UI shows it; restarting the engine "
                    "(it resumes the open case)")
                if start_engine is None:
                    return 1
                time.sleep(1.0)
                procs["engine"] = start_engine()
            time.sleep(0.2)
    finally:
        if ui is not None and ui.poll() is None:
            ui.send_signal(signal.SIGTERM)
            try:
                ui.wait(timeout=10)
            except subprocess.TimeoutExpired:
                ui.kill()
                ui.wait()
        if virtual is not None:
            virtual.stop()
