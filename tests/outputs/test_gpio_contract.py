"""One contract for every GPIO backend: SimulatedGpio and RpiGpio (with a fake RPi.GPIO)."""

from __future__ import annotations

import pathlib
import re
import sys
import types

import pytest

from app.outputs.gpio import (
    BUZZER, DEFAULT_WIRING, FOOTSWITCH, GREEN, OUTPUTS, RED, YELLOW, GpioError, SimulatedGpio, wiring,
)
from firmware_bridge.clock import ManualClock


class FakeGpioModule(types.ModuleType):
    """Enough of RPi.GPIO to check what the backend does with it."""

    BCM, BOARD = 11, 10
    OUT, IN = 0, 1
    HIGH, LOW = 1, 0
    PUD_UP, PUD_DOWN, PUD_OFF = 22, 21, 20

    def __init__(self) -> None:
        super().__init__("RPi.GPIO")
        self.mode = None
        self.setups: dict[int, tuple] = {}
        self.levels: dict[int, int] = {}
        self.inputs: dict[int, int] = {}
        self.cleaned: list[int] = []
        self.calls: list[tuple] = []

    def setwarnings(self, flag):
        self.calls.append(("setwarnings", flag))

    def setmode(self, mode):
        self.mode = mode

    def setup(self, pin, direction, initial=None, pull_up_down=None):
        if self.mode is None:
            raise RuntimeError("Please set pin numbering mode")
        self.setups[pin] = (direction, initial, pull_up_down)
        if direction == self.OUT:
            self.levels[pin] = self.LOW if initial is None else initial
        else:
            self.inputs.setdefault(pin, self.HIGH if pull_up_down == self.PUD_UP else self.LOW)

    def output(self, pin, value):
        if self.setups.get(pin, (None,))[0] != self.OUT:
            raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
        self.levels[pin] = value

    def input(self, pin):
        if pin in self.levels:
            return self.levels[pin]
        return self.inputs[pin]

    def cleanup(self, pins=None):
        self.cleaned.extend(pins or [])


@pytest.fixture
def fake_rpi(monkeypatch):
    module = FakeGpioModule()
    package = types.ModuleType("RPi")
    package.GPIO = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "RPi", package)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", module)
    return module


class Rig:
    """A backend plus backend-specific probes used by the contract."""

    def __init__(self, backend, pin_level, press, released):
        self.backend = backend
        self.pin_level = pin_level
        self.press = press
        self.released = released


@pytest.fixture(params=["simulated", "rpi"])
def rig(request, monkeypatch):
    clock = ManualClock(5.0)
    if request.param == "simulated":
        b = SimulatedGpio(clock)
        return Rig(b, lambda pin: b.pin_levels[pin], b.set_footswitch, lambda: b.released), clock
    module = request.getfixturevalue("fake_rpi")
    from app.outputs.gpio_rpi import RpiGpio

    b = RpiGpio(clock)

    def press(pressed: bool) -> None:  # switch to GND with pull-up: pressed reads LOW
        module.inputs[b.pins[FOOTSWITCH]] = module.LOW if pressed else module.HIGH

    return Rig(b, lambda pin: module.levels[pin] == module.HIGH, press,
               lambda: set(b.pins.values()) <= set(module.cleaned)), clock


def test_outputs_start_off(rig):
    r, _clock = rig
    for role in OUTPUTS:
        assert r.backend.get(role) is False
        assert r.pin_level(r.backend.pins[role]) is False


def test_set_drives_the_wired_pin_and_records_history(rig):
    r, clock = rig
    b = r.backend
    b.set(RED, True)
    clock.advance(0.25)
    b.set(RED, True)  # no change: no history entry
    b.set(BUZZER, True)
    clock.advance(0.25)
    b.set(RED, False)
    assert r.pin_level(DEFAULT_WIRING[RED]) is False
    assert r.pin_level(DEFAULT_WIRING[BUZZER]) is True
    assert b.get(BUZZER) is True
    assert [(e.t, e.role, e.value) for e in b.history] == [
        (5.0, RED, True), (5.25, BUZZER, True), (5.5, RED, False)]
    assert [e.value for e in b.changes(RED)] == [True, False]


def test_footswitch_reads_pressed_and_released(rig):
    r, _clock = rig
    assert r.backend.footswitch_pressed() is False
    r.press(True)
    assert r.backend.footswitch_pressed() is True
    r.press(False)
    assert r.backend.footswitch_pressed() is False


def test_roles_are_checked(rig):
    r, _clock = rig
    with pytest.raises(GpioError, match="not an output"):
        r.backend.set(FOOTSWITCH, True)
    with pytest.raises(GpioError, match="not an output"):
        r.backend.set("siren", True)


def test_close_switches_everything_off_and_releases(rig):
    r, _clock = rig
    b = r.backend
    for role in OUTPUTS:
        b.set(role, True)
    b.close()
    b.close()  # idempotent
    for role in OUTPUTS:
        assert r.pin_level(b.pins[role]) is False
    assert r.released()
    assert b.closed
    with pytest.raises(GpioError, match="closed"):
        b.set(GREEN, True)
    with pytest.raises(GpioError, match="closed"):
        b.footswitch_pressed()


def test_wiring_can_be_overridden(fake_rpi):
    from app.outputs.gpio_rpi import RpiGpio

    clock = ManualClock()
    pins = {RED: 5, YELLOW: 6}
    for b in (SimulatedGpio(clock, pins), RpiGpio(clock, pins)):
        assert b.pins[RED] == 5 and b.pins[YELLOW] == 6 and b.pins[GREEN] == DEFAULT_WIRING[GREEN]
        b.set(RED, True)
    assert fake_rpi.levels[5] == fake_rpi.HIGH


@pytest.mark.parametrize("pins,match", [
    ({RED: 22}, "BCM 22 assigned to both"),
    ({"laser": 5}, "unknown role"),
    ({RED: 40}, "not a BCM GPIO number"),
    ({RED: True}, "not a BCM GPIO number"),
])
def test_bad_wiring_is_refused(pins, match):
    with pytest.raises(GpioError, match=match):
        wiring(pins)


def test_rpi_setup_uses_bcm_outputs_low_and_pull_up(fake_rpi):
    from app.outputs.gpio_rpi import RpiGpio

    b = RpiGpio(ManualClock())
    assert fake_rpi.mode == fake_rpi.BCM
    for role in OUTPUTS:
        assert fake_rpi.setups[b.pins[role]] == (fake_rpi.OUT, fake_rpi.LOW, None)
    assert fake_rpi.setups[b.pins[FOOTSWITCH]] == (fake_rpi.IN, None, fake_rpi.PUD_UP)


def test_rpi_without_the_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "RPi", None)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    from app.outputs.gpio_rpi import RpiGpio

    with pytest.raises(GpioError, match="install rpi-lgpio"):
        RpiGpio(ManualClock())


def test_only_gpio_rpi_imports_rpi_gpio():
    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(import RPi|from RPi)", re.M)
    offenders = [str(p.relative_to(root)) for base in ("app", "firmware_bridge")
                 for p in (root / base).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == ["app/outputs/gpio_rpi.py"]


def test_the_configured_wiring_defaults_to_the_documented_one_and_can_be_changed():
    from app.outputs.gpio import wiring_from_settings
    from app.settings import Settings, SettingError

    assert wiring_from_settings(Settings()) == dict(DEFAULT_WIRING)
    moved = wiring_from_settings(Settings({"gpio.buzzer_pin": 5, "gpio.footswitch_pin": 6}))
    assert moved[BUZZER] == 5 and moved[FOOTSWITCH] == 6 and moved[RED] == DEFAULT_WIRING[RED]
    with pytest.raises(SettingError) as info:
        Settings({"gpio.footswitch_pin": 17})
    assert "gpio.footswitch_pin" in str(info.value) and "gpio.red_led_pin" in str(info.value)
    with pytest.raises(SettingError) as info:
        Settings({"gpio.green_led_pin": 31})
    assert "gpio.green_led_pin" in str(info.value) and "2-27" in str(info.value)
