"""GPIO: alarm LEDs, status LED, backup buzzer and footswitch behind a small interface.

Owns: the pin roles, the default wiring table, ``GpioBackend`` (the interface, with a
timestamped history of every output change) and ``SimulatedGpio`` (product code: the
backend used without hardware, in tests and in ``lnm simulate``).
May import: the standard library and ``firmware_bridge.clock``. The real backend is
``app.outputs.gpio_rpi`` (the only module that imports RPi.GPIO).

Default wiring (BCM GPIO numbers; override with ``pins={role: bcm, ...}``):

| role       | BCM | header pin | electrical                                                         |
|------------|-----|-----------:|--------------------------------------------------------------------|
| red_led    | 17  | 11         | red LED + 330 ohm to GND, active high (high-priority alarm)        |
| yellow_led | 27  | 13         | yellow LED + 330 ohm to GND, active high (medium/low alarm)        |
| green_led  | 22  | 15         | green LED + 330 ohm to GND, active high (monitor alive, no technical alarm) |
| buzzer     | 23  | 16         | 5 V active piezo buzzer via NPN transistor, active high (backup sound) |
| footswitch | 24  | 18         | normally-open switch to GND (pin 20), internal pull-up: pressed reads low |

What the outputs mean (patterns in ``app.outputs.indicators``): red flashes 2 Hz at 50 %
duty while a high-priority alarm is present; yellow flashes 0.6 Hz for medium, steady
for low; green blinks 1 Hz (on 90 %) while the monitor runs without a technical alarm;
the buzzer follows the alarm pulse pattern when the loudspeaker has failed.
"""

from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from collections.abc import Mapping

from firmware_bridge.clock import Clock

RED = "red_led"
YELLOW = "yellow_led"
GREEN = "green_led"
BUZZER = "buzzer"
FOOTSWITCH = "footswitch"
OUTPUTS = (RED, YELLOW, GREEN, BUZZER)
INPUTS = (FOOTSWITCH,)
ROLES = OUTPUTS + INPUTS

DEFAULT_WIRING: Mapping[str, int] = MappingProxyType(
    {RED: 17, YELLOW: 27, GREEN: 22, BUZZER: 23, FOOTSWITCH: 24}
)


class GpioError(RuntimeError):
    """A GPIO backend cannot be used (missing library, bad wiring, closed)."""


def wiring(overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """The default wiring with ``overrides`` applied, checked (BCM 2-27, no pin twice)."""
    pins = dict(DEFAULT_WIRING)
    for role, pin in (overrides or {}).items():
        if role not in ROLES:
            raise GpioError(f"GPIO wiring: unknown role {role!r}; roles are {', '.join(ROLES)}")
        if isinstance(pin, bool) or not isinstance(pin, int) or not 2 <= pin <= 27:
            raise GpioError(f"GPIO wiring: {role} pin {pin!r} is not a BCM GPIO number 2-27")
        pins[role] = pin
    used: dict[int, str] = {}
    for role, pin in pins.items():
        if pin in used:
            raise GpioError(f"GPIO wiring: BCM {pin} assigned to both {used[pin]} and {role}")
        used[pin] = role
    return pins


def wiring_from_settings(settings: Mapping[str, Any]) -> dict[str, int]:
    """The wiring the configuration asks for (``gpio.<role>_pin``), checked."""
    return wiring({role: int(settings[f"gpio.{role}_pin"]) for role in ROLES})


@dataclass(frozen=True)
class GpioEvent:
    """One change of an output or input, as the simulated backend records it."""

    t: float
    role: str
    value: bool


class GpioBackend(abc.ABC):
    """Outputs by role, the footswitch input, and a history of output changes."""

    label = "LEDs and buzzer"  # what the nurse reads in the self-test

    def __init__(self, clock: Clock, pins: Mapping[str, int] | None = None,
                 history: int = 100000) -> None:
        self.clock = clock
        self.pins = wiring(pins)
        self.history: deque[GpioEvent] = deque(maxlen=history)
        self._levels = {role: False for role in OUTPUTS}
        self._closed = False

    # subclass hooks
    @abc.abstractmethod
    def _write(self, pin: int, on: bool) -> None: ...

    @abc.abstractmethod
    def _read_pressed(self, pin: int) -> bool: ...

    @abc.abstractmethod
    def _release(self) -> None: ...

    def _check_open(self) -> None:
        if self._closed:
            raise GpioError("GPIO backend is closed")

    def set(self, role: str, on: bool) -> None:
        """Drive output ``role``; only changes reach the pin and the history."""
        self._check_open()
        if role not in OUTPUTS:
            raise GpioError(f"GPIO: {role!r} is not an output; outputs are {', '.join(OUTPUTS)}")
        on = bool(on)
        if self._levels[role] == on:
            return
        self._write(self.pins[role], on)
        self._levels[role] = on
        self.history.append(GpioEvent(self.clock.now(), role, on))

    def get(self, role: str) -> bool:
        """The level last written to output ``role``."""
        if role not in OUTPUTS:
            raise GpioError(f"GPIO: {role!r} is not an output; outputs are {', '.join(OUTPUTS)}")
        return self._levels[role]

    def footswitch_pressed(self) -> bool:
        """The raw (not debounced) footswitch level: True while pressed."""
        self._check_open()
        return bool(self._read_pressed(self.pins[FOOTSWITCH]))

    def close(self) -> None:
        """Every output off, then release the pins. Idempotent."""
        if self._closed:
            return
        for role in OUTPUTS:
            self.set(role, False)
        self._release()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def changes(self, role: str) -> list[GpioEvent]:
        return [e for e in self.history if e.role == role]


class SimulatedGpio(GpioBackend):
    """A GPIO backend without hardware: pins are remembered, the footswitch is pressed
    by calling ``press()``/``release()`` (or ``set_footswitch``)."""

    label = "simulated LEDs and buzzer (no GPIO pins on this machine)"

    def __init__(self, clock: Clock, pins: Mapping[str, int] | None = None, history: int = 100000) -> None:
        super().__init__(clock, pins, history)
        self.pin_levels: dict[int, bool] = {p: False for p in self.pins.values()}
        self._pressed = False
        self.released = False

    def _write(self, pin: int, on: bool) -> None:
        self.pin_levels[pin] = on

    def _read_pressed(self, pin: int) -> bool:
        return self._pressed

    def _release(self) -> None:
        self.released = True

    def set_footswitch(self, pressed: bool) -> None:
        self._pressed = bool(pressed)

    def press(self) -> None:
        self.set_footswitch(True)

    def release(self) -> None:
        self.set_footswitch(False)
