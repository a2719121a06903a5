"""The appliance outputs as the engine core sees them: ``app.outputs`` behind ``core.Outputs``.

Owns: ``AnnunciatorOutputs`` (alarm sounds, LEDs and buzzer through the ``Annunciator``,
feedback tones, audible EMG, the self-test) and ``make_outputs`` (backends chosen by
name: ``--audio capture|alsa``, ``--gpio sim|rpi``; a real backend that cannot be opened
is an error, never a silent fall-back to simulation).
May import: ``app.outputs``, ``app.alarms``, ``app.model``, ``app.settings``,
``app.engine.core`` and ``firmware_bridge.clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from app.alarms import AlarmManager
from app.engine.core import Outputs
from app.model import Measurement
from app.settings import Settings
from firmware_bridge.clock import Clock


class OutputsError(RuntimeError):
    """An output backend could not be opened; the message says which and why."""


class AnnunciatorOutputs(Outputs):
    """The appliance outputs behind ``Outputs``: the ``Annunciator`` and its backends."""

    def __init__(self, annunciator: Any, audio: Any, gpio: Any) -> None:
        self.annunciator = annunciator
        self.audio = audio
        self.gpio = gpio

    def stimulus(self, m: Measurement, response: bool) -> None:
        self.annunciator.feedback_for(m)

    def emg(self, samples_uV: np.ndarray, sample_rate_hz: float, muted: bool) -> None:
        self.annunciator.emg(samples_uV, sample_rate_hz, cautery=muted or None)

    def update(self) -> None:
        self.annunciator.update()

    def settings_changed(self, settings: Settings) -> None:
        self.annunciator.update_settings(settings)

    def status(self) -> tuple[bool, str]:
        return (not self.audio.failed, self.audio.error or "")

    def describe(self) -> str:
        return str(getattr(self.audio, "label", "loudspeaker"))

    def self_test(self) -> list[dict[str, Any]]:
        """Play the chime, light the LEDs in turn, sound the buzzer. None of the shipped
        backends observes its output (no microphone, no sense line on the LEDs or the
        buzzer): each played output is ``confirm`` for the nurse (``app.engine.selftest``),
        only a failure the backend reports is known by readback."""
        self.annunciator.self_test()
        if self.audio.failed:
            items = [{"item": "audio", "status": "failed", "check": "readback",
                      "message": f"audio output failed: {self.audio.error}"}]
        else:
            items = [{"item": "audio", "status": "confirm", "check": "nurse",
                      "message": f"self-test chime played on {self.describe()}: played, confirm",
                      "question": "Did you hear the rising chime from the loudspeaker?"}]
        if self.gpio is None:
            return items + [{"item": k, "status": "failed", "check": "readback", "message": "no GPIO output"}
                            for k in ("leds", "buzzer")]
        if getattr(self.gpio, "closed", False):
            return items + [{"item": k, "status": "failed", "check": "readback", "message": "GPIO output closed"}
                            for k in ("leds", "buzzer")]
        where = getattr(self.gpio, "label", "LEDs and buzzer")
        items.append({"item": "leds", "status": "confirm", "check": "nurse",
                      "message": f"red, yellow and green lights driven in turn ({where}): played, confirm",
                      "question": "Did the red, then the yellow, then the green light come on?"})
        items.append({"item": "buzzer", "status": "confirm", "check": "nurse",
                      "message": "backup buzzer driven briefly: played, confirm",
                      "question": "Did the backup buzzer sound?"})
        return items

    def close(self) -> None:
        self.annunciator.close()
        try:
            self.audio.close()
        except OSError:
            pass
        if self.gpio is not None:
            try:
                self.gpio.close()
            except (OSError, RuntimeError):
                pass


def make_outputs(
    manager: AlarmManager,
    clock: Clock,
    settings: Settings,
    *,
    audio: str = "capture",
    gpio: str = "sim",
    on_footswitch: Callable[[str], None] | None = None,
    keep_samples: bool = False,
    history: int = 2000,
) -> AnnunciatorOutputs:
    """Outputs with the named backends. Raises ``OutputsError`` for a real backend that fails.

    ``history``: how many recent sounds and GPIO changes the capturing/simulated backends
    keep (bounded so that a long case keeps a flat memory; tests may ask for more)."""
    from app.outputs.annunciator import Annunciator
    from app.outputs.audio import CaptureAudio

    if audio == "capture":
        audio_backend: Any = CaptureAudio(clock, keep_samples=keep_samples, max_records=history)
    elif audio == "alsa":
        from app.outputs.audio import AplayAudio, aplay_available

        missing = aplay_available()
        if missing:
            raise OutputsError(f"--audio alsa: {missing}")
        try:
            audio_backend = AplayAudio(device=str(settings["audio.alsa_device"]))
        except (OSError, ValueError, TypeError) as exc:
            raise OutputsError(f"--audio alsa: the ALSA output cannot be opened ({exc})") from None
    else:
        raise OutputsError(f"--audio {audio!r}: must be capture or alsa")
    if gpio == "sim":
        from app.outputs.gpio import SimulatedGpio, wiring_from_settings

        gpio_backend: Any = SimulatedGpio(clock, pins=wiring_from_settings(settings), history=history)
    elif gpio == "rpi":
        from app.outputs.gpio import GpioError, wiring_from_settings
        from app.outputs.gpio_rpi import RpiGpio

        try:
            gpio_backend = RpiGpio(clock, pins=wiring_from_settings(settings), history=history)
        except GpioError as exc:
            raise OutputsError(f"--gpio rpi: {exc}") from None
    else:
        raise OutputsError(f"--gpio {gpio!r}: must be sim or rpi")
    ann = Annunciator(manager, audio_backend, gpio_backend, clock, settings, on_footswitch=on_footswitch)
    return AnnunciatorOutputs(ann, audio_backend, gpio_backend)
