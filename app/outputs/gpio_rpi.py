"""The Raspberry Pi GPIO backend: the only module in the product that imports RPi.GPIO.

Owns: ``RpiGpio``.
May import: the standard library, ``app.outputs.gpio`` and, lazily inside ``load_module``,
``RPi.GPIO`` (provided by the RPi.GPIO package on a Pi 4 and by rpi-lgpio on a Pi 5).

Importing this module never touches the hardware and never fails on a PC; constructing
``RpiGpio`` does, and raises ``GpioError`` with what to install when the library is
missing. On the appliance that error is final: there is no silent fall-back to the
simulated backend.
"""

from __future__ import annotations

from types import ModuleType
from collections.abc import Mapping

from app.outputs.gpio import FOOTSWITCH, OUTPUTS, GpioBackend, GpioError
from firmware_bridge.clock import Clock


def load_module() -> ModuleType:
    """Import ``RPi.GPIO`` now (lazily), or explain what is missing."""
    try:
        import RPi.GPIO as gpio_module  # noqa: N813 - the library's own name
    except ImportError as exc:
        raise GpioError(
            f"RPi.GPIO cannot be imported ({exc}): install rpi-lgpio on a Raspberry Pi 5 "
            "or RPi.GPIO on a Raspberry Pi 4 (deploy installs the right one)"
        ) from None
    except RuntimeError as exc:  # raised by RPi.GPIO when not on a Pi or without access
        raise GpioError(f"RPi.GPIO refused to start: {exc}") from None
    return gpio_module


class RpiGpio(GpioBackend):
    """GPIO through RPi.GPIO, BCM numbering; footswitch with the internal pull-up."""

    label = "LEDs and buzzer on the GPIO pins"

    def __init__(self, clock: Clock, pins: Mapping[str, int] | None = None, *,
                 footswitch_active_low: bool = True, history: int = 100000) -> None:
        super().__init__(clock, pins, history)
        self._gpio = load_module()
        self._active_low = footswitch_active_low
        g = self._gpio
        try:
            g.setwarnings(False)
            g.setmode(g.BCM)
            for role in OUTPUTS:
                g.setup(self.pins[role], g.OUT, initial=g.LOW)
            pull = g.PUD_UP if footswitch_active_low else g.PUD_DOWN
            g.setup(self.pins[FOOTSWITCH], g.IN, pull_up_down=pull)
        except (RuntimeError, ValueError) as exc:
            raise GpioError(f"GPIO set-up failed: {exc}") from None

    def _write(self, pin: int, on: bool) -> None:
        g = self._gpio
        g.output(pin, g.HIGH if on else g.LOW)

    def _read_pressed(self, pin: int) -> bool:
        g = self._gpio
        level = g.input(pin)
        return level == (g.LOW if self._active_low else g.HIGH)

    def _release(self) -> None:
        self._gpio.cleanup(list(self.pins.values()))
