"""The screens: one ``.py`` + ``.kv`` pair each, the ``.kv`` loaded by a path relative to
its ``.py``.

Owns: ``LnmScreen`` (the base: ``update(state)`` on each engine state while shown,
``frame()`` on each pump of the frame clock) and ``SCREENS`` (name -> class, the order
of the screen manager).
May import: Kivy, ``app.ui.widgets``, ``app.ui.plots``, ``app.ui.present``, ``app.ui.data``.
"""

from __future__ import annotations

import os
from typing import Any

from kivy.app import App
from kivy.lang import Builder
from kivy.uix.screenmanager import Screen


def load_kv(py_file: str) -> None:
    """Load the ``.kv`` next to ``py_file`` (same name)."""
    Builder.load_file(os.path.splitext(os.path.abspath(py_file))[0] + ".kv")


class LnmScreen(Screen):
    """Base screen: shows the engine's state; asks through ``self.app.cmd``."""

    @property
    def app(self) -> Any:
        return App.get_running_app()

    def on_enter(self, *args: Any) -> None:
        if self.app is not None and self.app.state:
            self.update(self.app.state)

    def update(self, state: dict[str, Any]) -> None:
        """Called with each engine state while this screen is shown."""

    def frame(self) -> None:
        """Called on every pump of the frame clock (about 30 Hz) while shown."""


def _screens() -> dict[str, type[LnmScreen]]:
    from app.ui.screens.alarms import AlarmsScreen
    from app.ui.screens.cases import CasesScreen
    from app.ui.screens.endcase import EndCaseScreen
    from app.ui.screens.los import LosScreen
    from app.ui.screens.monitor import MonitorScreen
    from app.ui.screens.report import ReportScreen
    from app.ui.screens.selftest import SelfTestScreen
    from app.ui.screens.settings import SettingsScreen
    from app.ui.screens.setup import SetupScreen
    from app.ui.screens.sim import SimScreen
    from app.ui.screens.tube import TubeScreen

    return {"selftest": SelfTestScreen, "setup": SetupScreen, "tube": TubeScreen, "monitor": MonitorScreen,
            "alarms": AlarmsScreen, "los": LosScreen, "endcase": EndCaseScreen, "report": ReportScreen,
            "settings": SettingsScreen, "sim": SimScreen, "cases": CasesScreen}


def __getattr__(name: str) -> Any:
    if name == "SCREENS":
        return _screens()
    raise AttributeError(name)
