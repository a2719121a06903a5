"""LED patterns and the footswitch debouncer: pure functions and classes of time.

Owns: the IEC 60601-1-8 visual alarm patterns (``led_states``, ``flash``), the status
LED pattern, and ``Footswitch`` (debounce, short and long press).
May import: the standard library and ``app.alarms``.

| LED    | when                                                         | pattern                         |
|--------|--------------------------------------------------------------|---------------------------------|
| red    | any high-priority alarm present (incl. acknowledged/latched) | flashing 2.0 Hz, 50 % duty [IEC 1.4-2.8 Hz, 20-60 %] |
| yellow | any medium-priority alarm present                            | flashing 0.6 Hz, 50 % duty [IEC 0.4-0.8 Hz, 20-60 %] |
| yellow | only low-priority alarms (no medium)                         | steady on [IEC: cyan or yellow, steady] |
| green  | monitor running, no technical alarm present                  | 1 Hz blink, on 90 %: a frozen program stops the blink |
| green  | a technical alarm is present                                 | off                             |

Flashing starts "on" at the time the oldest alarm of that priority began, so a new alarm
lights its LED at once. Red and yellow are independent: a high and a medium alarm
together flash both. Visual indications continue during audio paused/off and after
acknowledgement (only sound is silenced) until the alarm has gone.

Footswitch: the raw level must stay unchanged for ``debounce_s`` before the debounced
state follows it (the change is dated at its first raw edge). A press released before
``long_press_s`` yields ``"press"`` (on release); holding for ``long_press_s`` yields
``"long_press"`` once, while still held (the release after it yields nothing).
"""  # noqa: E501 - the table above is read as a table

from __future__ import annotations

from app.alarms import AlarmState
from app.outputs.gpio import GREEN, RED, YELLOW

RED_HZ, RED_DUTY = 2.0, 0.5
YELLOW_HZ, YELLOW_DUTY = 0.6, 0.5
GREEN_HZ, GREEN_DUTY = 1.0, 0.9


def flash(t: float, t0: float, hz: float, duty: float) -> bool:
    """On during the first ``duty`` of every period of a ``hz`` flash started at ``t0``."""
    if t < t0:
        return False
    return ((t - t0) * hz) % 1.0 < duty


def led_states(state: AlarmState, t: float, running: bool = True) -> dict[str, bool]:
    """Red, yellow and green LED levels at time ``t`` for the alarm ``state``."""
    highs = [a.since for a in state.alarms if a.priority == "high"]
    mediums = [a.since for a in state.alarms if a.priority == "medium"]
    lows = [a for a in state.alarms if a.priority == "low"]
    red = flash(t, min(highs), RED_HZ, RED_DUTY) if highs else False
    if mediums:
        yellow = flash(t, min(mediums), YELLOW_HZ, YELLOW_DUTY)
    else:
        yellow = bool(lows)
    technical = any(a.category == "technical" for a in state.alarms)
    green = running and not technical and flash(t, 0.0, GREEN_HZ, GREEN_DUTY)
    return {RED: red, YELLOW: yellow, GREEN: green}


class Footswitch:
    """Debounced footswitch fed with polled raw levels."""

    def __init__(self, debounce_s: float = 0.030, long_press_s: float = 1.5) -> None:
        if debounce_s < 0 or long_press_s <= debounce_s:
            raise ValueError(
                f"footswitch: need 0 <= debounce ({debounce_s} s) < long press ({long_press_s} s)"
            )
        self.debounce_s = float(debounce_s)
        self.long_press_s = float(long_press_s)
        self._raw = False
        self._raw_since = float("-inf")
        self.pressed = False  # debounced
        self._down_at: float | None = None
        self._long_fired = False

    def update(self, t: float, raw_pressed: bool) -> list[str]:
        """Feed the raw level read at time ``t``; returns the events now due."""
        events: list[str] = []
        raw = bool(raw_pressed)
        if raw != self._raw:
            self._raw = raw
            self._raw_since = t
        if raw != self.pressed and t - self._raw_since >= self.debounce_s:
            self.pressed = raw
            if raw:
                self._down_at = self._raw_since
                self._long_fired = False
            else:
                if not self._long_fired and self._down_at is not None:
                    events.append("press")
                self._down_at = None
        if self.pressed and not self._long_fired and self._down_at is not None:
            if t - self._down_at >= self.long_press_s:
                self._long_fired = True
                events.append("long_press")
        return events
