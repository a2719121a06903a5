"""The breathing-variation part of the tube check, as the engine runs it.

Owns: ``BreathingCheck``: after the electrode impedances of a tube check have come back,
it watches ``tube.breathing_window_s`` of free-running EMG (stimulus windows blanked),
then gives the respiratory variation of the baseline per side
(``app.analysis.breathing``); ``breathing_message`` (the result in words) and
``interrupted`` (what a window cut short by an engine restart becomes).
May import: ``app.analysis.breathing``, ``app.settings``. Pure: no clock of its own (the
engine passes its clock's time; block times are on the same clock), no I/O; memory is
bounded by the meter (a window of 100 ms frames) and the meter exists only while a window
is being recorded.

The per-side JSON is ``app.analysis.breathing.SideBreathing.to_json`` once measured,
``{"status": "measuring", "present": null, "remaining_s", "window_s"}`` while the window
runs (see ``app/api/API.md``, ``state.tube.breathing_variation``).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from app.analysis.breathing import REASONS, BreathingMeter, measuring_json, not_measured_json, side_text
from app.settings import Settings

GRACE_S = 3.0  # after the window's end without a complete window of stream: judge what there is
SIDE_NAMES = {"L": "left", "R": "right"}


class BreathingCheck:
    """One breathing-variation window at a time (see the module docstring)."""

    def __init__(self, settings: Settings, sides: Sequence[str] = ("L", "R"),
                 meter_factory: Callable[[Settings, float], BreathingMeter] | None = None) -> None:
        self.settings = settings
        self.sides = tuple(sides)
        self._factory = meter_factory or (lambda st, rate: BreathingMeter(st, rate, self.sides))
        self.meter: BreathingMeter | None = None
        self._rate: float | None = None
        self.t_from: float | None = None  # engine-clock start of the window being recorded
        self.result: dict[str, dict[str, Any]] | None = None  # the last finished window

    @property
    def window_s(self) -> float:
        return float(self.settings["tube.breathing_window_s"])

    @property
    def active(self) -> bool:
        return self.t_from is not None

    def settings_changed(self, settings: Settings, now: float) -> None:
        self.settings = settings
        if self.active:  # the meter was made with the old window, band and limits: start again
            self.start(now)

    def start(self, now: float) -> None:
        """A new window from ``now`` (engine clock); a window still running is dropped."""
        self.t_from = float(now)
        self.meter = None
        self._rate = None
        self.result = None

    def cancel(self, reason: str) -> dict[str, dict[str, Any]] | None:
        """Stop a running window; its result is ``not measurable: reason``."""
        if not self.active:
            return None
        return self._finish(not_measured_json(self.sides, reason, self.window_s))

    def json(self, now: float) -> dict[str, dict[str, Any]] | None:
        """Per side: measuring (with the time left) while a window runs, else the last result."""
        if self.active:
            return measuring_json(self.sides, (self.t_from or 0.0) + self.window_s - float(now), self.window_s)
        return self.result

    def blank(self, t_start: float, t_end: float) -> None:
        """A stimulus: its window is not baseline EMG."""
        if self.meter is not None:
            self.meter.blank(t_start, t_end)

    def feed(self, uv: np.ndarray, t0: float, rate: float) -> dict[str, dict[str, Any]] | None:
        """One free-running EMG block (engine-clock ``t0``); the result when the window is complete."""
        if not self.active or uv.ndim != 2 or uv.shape[0] != len(self.sides):
            return None
        if t0 + uv.shape[1] / rate <= (self.t_from or 0.0):
            return None
        if self.meter is None or self._rate != rate:
            self.meter = self._factory(self.settings, rate)  # a new rate: the window goes on, frames restart
            self._rate = rate
        self.meter.feed(uv, t0)
        if self.meter.ready(self._window_start()):
            return self._evaluate()
        return None

    def _window_start(self) -> float:
        """The window begins at the start or, if later, at the first frame the meter made."""
        t_from = self.t_from or 0.0
        first = self.meter.first_frame_t if self.meter is not None else None
        return t_from if first is None else max(t_from, first)

    def poll(self, now: float) -> dict[str, dict[str, Any]] | None:
        """Timer: a window whose stream stopped is judged on what there is."""
        if self.active and float(now) >= (self.t_from or 0.0) + self.window_s + GRACE_S:
            if self.meter is not None:
                self.meter.flush()
            return self._evaluate()
        return None

    def _evaluate(self) -> dict[str, dict[str, Any]]:
        t_from = self._window_start()
        if self.meter is None:
            return self._finish(not_measured_json(self.sides, REASONS["no_stream"], self.window_s))
        res = self.meter.evaluate(t_from, t_from + self.window_s)
        return self._finish(res.to_json())

    def _finish(self, result: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        self.result = result
        self.t_from = None
        self.meter = None
        self._rate = None
        return result


def interrupted(bv: Any) -> Any:
    """A stored per-side entry still ``measuring`` (the engine restarted meanwhile) becomes
    not measurable; anything else is returned as it is."""
    if not isinstance(bv, Mapping):
        return bv
    out = {}
    for side, d in bv.items():
        if isinstance(d, Mapping) and d.get("status") == "measuring":
            d = not_measured_json([side], REASONS["interrupted_restart"], float(d.get("window_s") or 0.0))[side]
        out[side] = d
    return out


def breathing_message(bv: Mapping[str, Any]) -> tuple[str, bool]:
    """(the result in words, True when some side lacks a present variation)."""
    parts, missing = [], False
    for side, d in bv.items():
        parts.append(f"{SIDE_NAMES.get(side, side)} {side_text(d)}")
        if not (isinstance(d, Mapping) and d.get("present") is True):
            missing = True
    text = "Breathing variation of the baseline EMG: " + "; ".join(parts)
    if any(isinstance(d, Mapping) and d.get("present") is False for d in bv.values()):
        text += ". Absent: check the tube position (electrodes against the vocal folds)"
    return text, missing
