"""The annunciator: turns the alarm manager's state into sound, LEDs and the buzzer.

Owns: ``Annunciator`` and its ``AnnunciatorStatus``.
May import: numpy, ``app.alarms``, ``app.model``, ``app.settings``, ``app.outputs.*`` and
``firmware_bridge.clock``.

Thin and clock-driven: no thread of its own. The engine's loop calls ``update()`` often
(every 20-50 ms: the footswitch is polled and the buzzer gated there); each call

1. ticks the alarm manager (pause expiry, escalation, reminders) and reads its state;
2. checks the loudspeaker: a failed audio backend raises the ``audio_failure`` technical
   alarm (key ``speaker``), a recovered one ends that condition (the alarm then waits for
   acknowledgement);
3. plays the sounding priority's burst, then the next one ``alarms.<p>_repeat_s`` after
   the end of the previous burst (the IEC interburst interval); a change of the sounding
   priority (a higher alarm, an acknowledgement, a pause) stops the burst at once and
   starts the new one; while a high burst plays the EMG audio is ducked;
4. gain: alarms at ``max(audio.volume_pct, audio.alarm_volume_floor_pct)``, an escalated
   high alarm at 100 %; feedback tones and EMG at ``audio.volume_pct``;
5. while audio is off, plays the reminder tone each time the manager issues a reminder
   (a 150 ms buzzer beep instead when the loudspeaker has failed);
6. drives the LEDs (``indicators.led_states``) and, when the loudspeaker has failed, the
   backup buzzer with the pulse pattern of the sounding burst;
7. polls and debounces the footswitch: a short press plays the "mark" tone and calls
   ``on_footswitch("press")`` (the engine takes a snapshot/marks an event); a long press
   acknowledges the top alarm (``who="footswitch"``) and calls ``on_footswitch("long_press")``.

``feedback_for(measurement)`` plays the one feedback tone a probe stimulus deserves
(table in ``app.outputs.sounds``); ``emg(block, rate)`` feeds the audible EMG.
Not thread-safe: call it from the engine loop only (the audio backends themselves are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import numpy as np

from app.alarms import AlarmKind, AlarmManager
from app.model import Measurement
from app.outputs import sounds
from app.outputs.audio import ALARM, FEEDBACK, AudioBackend
from app.outputs.emg_audio import EmgAudio
from app.outputs.gpio import BUZZER, GREEN, OUTPUTS, RED, YELLOW, GpioBackend
from app.outputs.indicators import Footswitch, led_states
from app.settings import Settings, setting
from firmware_bridge.clock import Clock

AUDIO_FAILURE_KEY = "speaker"

# Self-test sequence: (start, end, output) relative to the start of the test.
SELF_TEST_STEPS = ((0.0, 0.5, RED), (0.5, 1.0, YELLOW), (1.0, 1.5, GREEN), (1.5, 1.8, BUZZER))
SELF_TEST_S = 1.8
REMINDER_BUZZ_S = 0.15  # audio-off reminder on the buzzer when the loudspeaker has failed


@dataclass(frozen=True)
class AnnunciatorStatus:
    """What the annunciator is doing: the priority sounding, the next burst, the backends' health."""

    t: float
    sounding: str | None  # priority whose bursts are being played
    next_burst_in_s: float | None
    audio_failed: bool
    audio_error: str | None
    outputs: dict[str, bool]
    volume_pct: float
    alarm_volume_pct: float
    emg_muted: str | None
    self_test: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 6),
            "sounding": self.sounding,
            "next_burst_in_s": None if self.next_burst_in_s is None else round(self.next_burst_in_s, 3),
            "audio_failed": self.audio_failed,
            "audio_error": self.audio_error,
            "outputs": dict(self.outputs),
            "volume_pct": self.volume_pct,
            "alarm_volume_pct": self.alarm_volume_pct,
            "emg_muted": self.emg_muted,
            "self_test": self.self_test,
        }


class Annunciator:
    """Sounds and shows the alarm manager's state: bursts, LEDs, buzzer and the footswitch."""

    def __init__(
        self,
        manager: AlarmManager,
        audio: AudioBackend,
        gpio: GpioBackend | None,
        clock: Clock,
        settings: Settings | None = None,
        *,
        on_footswitch: Callable[[str], None] | None = None,
        emg_audio: EmgAudio | None = None,
    ) -> None:
        self.manager = manager
        self.audio = audio
        self.gpio = gpio
        self.clock = clock
        self.on_footswitch = on_footswitch
        self.settings = settings or Settings()
        self.emg_audio = emg_audio or EmgAudio(self.settings, out_rate=audio.rate)
        self._bursts = {p: sounds.alarm_burst(p, audio.rate) for p in sounds.ALARM_SIGNALS}
        self._playing: str | None = None
        self._burst_start: float | None = None
        self._next_burst: float | None = None
        self._reminders_seen = 0
        self._audio_alarm_raised = False
        self._self_test_start: float | None = None
        self._reminder_buzz_until = float("-inf")
        self._last_status: AnnunciatorStatus | None = None
        self.update_settings(self.settings)

    # -- configuration -------------------------------------------------------------------

    def update_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.volume_pct = float(settings["audio.volume_pct"])
        self.floor_pct = float(settings["audio.alarm_volume_floor_pct"])
        self.emg_audio.update_settings(settings)
        timing = (float(settings["gpio.footswitch_debounce_ms"]) / 1000.0,
                  float(settings["gpio.footswitch_long_press_s"]))
        current = getattr(self, "footswitch", None)
        if current is None or (current.debounce_s, current.long_press_s) != timing:
            self.footswitch = Footswitch(*timing)  # a press in progress is kept otherwise

    def set_volume(self, pct: float) -> float:
        """Set the loudspeaker volume (validated like the setting); returns the alarm volume."""
        value = setting("audio.volume_pct").validate(pct, "volume control")
        self.settings = self.settings.with_changes({"audio.volume_pct": value})
        self.volume_pct = float(value)
        return self.alarm_volume_pct

    @property
    def alarm_volume_pct(self) -> float:
        return max(self.volume_pct, self.floor_pct)

    # -- the loop ------------------------------------------------------------------------

    def update(self) -> AnnunciatorStatus:
        now = self.clock.now()
        self.manager.tick()
        self._check_audio()
        st = self.manager.state()

        # 3-4: alarm bursts
        want = st.sounding
        if want != self._playing:
            if want is None:
                self.audio.stop(ALARM)
                self._burst_start = self._next_burst = None
            self._playing = want
            if want is not None:
                self._start_burst(want, st.sounding_escalated, now)
        elif want is not None and self._next_burst is not None and now >= self._next_burst:
            self._start_burst(want, st.sounding_escalated, now)

        # 5: audio-off reminder
        if st.audio.reminders > self._reminders_seen:
            self._reminders_seen = st.audio.reminders
            self.audio.play(FEEDBACK, sounds.feedback_tone("reminder", self.audio.rate), "tone-reminder",
                            sounds.alarm_gain(self.volume_pct, self.floor_pct))
            self._reminder_buzz_until = now + REMINDER_BUZZ_S
        # 6: LEDs and buzzer (the buzzer only stands in for a failed loudspeaker)
        outputs = led_states(st, now, running=True)
        buzzer = False
        if self.audio.failed:
            if self._playing is not None and self._burst_start is not None:
                buzzer = sounds.signal_for(self._playing).pulse_on(now - self._burst_start)
            buzzer = buzzer or now < self._reminder_buzz_until
        outputs[BUZZER] = buzzer
        testing = self._self_test_start is not None and now - self._self_test_start < SELF_TEST_S
        if testing:
            dt = now - self._self_test_start  # type: ignore[operator]
            outputs = {role: any(a <= dt < b and r == role for a, b, r in SELF_TEST_STEPS)
                       for role in OUTPUTS}
        elif self._self_test_start is not None:
            self._self_test_start = None
        if self.gpio is not None:
            for role in OUTPUTS:
                self.gpio.set(role, outputs[role])
            # 7: footswitch
            for event in self.footswitch.update(now, self.gpio.footswitch_pressed()):
                self._footswitch_event(event)
        self._last_status = AnnunciatorStatus(
            t=now,
            sounding=self._playing,
            next_burst_in_s=None if self._next_burst is None else max(0.0, self._next_burst - now),
            audio_failed=self.audio.failed,
            audio_error=self.audio.error,
            outputs=outputs,
            volume_pct=self.volume_pct,
            alarm_volume_pct=self.alarm_volume_pct,
            emg_muted=self.emg_audio.last_mute_reason,
            self_test=testing,
        )
        return self._last_status

    def _start_burst(self, priority: str, escalated: bool, now: float) -> None:
        sig = sounds.signal_for(priority)
        gain = sounds.alarm_gain(self.volume_pct, self.floor_pct, escalated and priority == "high")
        self.audio.play(ALARM, self._bursts[priority], f"alarm-{priority}", gain)
        self._burst_start = now
        self._next_burst = now + sig.cycle_s(sounds.interburst_s(priority, self.settings))
        if priority == "high":
            self.emg_audio.mute_until(now + sig.burst_s)

    def _check_audio(self) -> None:
        failed = self.audio.failed
        if failed and not self._audio_alarm_raised:
            self._audio_alarm_raised = True
            self.manager.raise_condition(
                AlarmKind.AUDIO_FAILURE, AUDIO_FAILURE_KEY,
                detail={"error": self.audio.error}, who="audio",
            )
        elif not failed and self._audio_alarm_raised:
            self._audio_alarm_raised = False
            self.manager.clear_condition(AlarmKind.AUDIO_FAILURE, AUDIO_FAILURE_KEY, who="audio",
                                         detail={"recovered": True})

    def _footswitch_event(self, event: str) -> None:
        if event == "press":
            self.play_tone("mark")
        elif event == "long_press":
            self.manager.acknowledge(None, who="footswitch")
            self.play_tone("mark")
        if self.on_footswitch is not None:
            self.on_footswitch(event)

    # -- feedback and EMG ----------------------------------------------------------------

    def play_tone(self, name: str) -> None:
        """Play feedback tone ``name`` at the loudspeaker volume (no floor)."""
        self.audio.play(FEEDBACK, sounds.feedback_tone(name, self.audio.rate), f"tone-{name}",
                        sounds.feedback_gain(self.volume_pct))

    def feedback_for(self, measurement: Measurement) -> str | None:
        """Play the feedback tone for a measured stimulus; returns its name (or None)."""
        name = sounds.tone_for(measurement, self.settings)
        if name is not None:
            self.play_tone(name)
        return name

    def emg(self, block_uV: np.ndarray, rate: float, cautery: bool | None = None,
            t: float | None = None) -> None:
        """Feed one free-running EMG block (µV, (channels, n) or (n,)) to the loudspeaker.

        Skipped (no work) when the backend does not render EMG or ``audio.emg_audio`` is off.
        """
        if not self.audio.renders_emg or not self.emg_audio.enabled:
            return
        out = self.emg_audio.process(block_uV, rate, self.clock.now() if t is None else t, cautery)
        if out.size:
            self.audio.feed(out * np.float32(sounds.feedback_gain(self.volume_pct)))

    def self_test(self) -> None:
        """Start-up check: the self-test chime, then each LED and the buzzer in turn
        (driven by the following ``update()`` calls over ``SELF_TEST_S`` seconds)."""
        self._self_test_start = self.clock.now()
        self.play_tone("selftest")

    @property
    def status(self) -> AnnunciatorStatus | None:
        return self._last_status

    def close(self) -> None:
        """Silence everything and switch the outputs off (backends stay open)."""
        self.audio.stop(ALARM)
        self.audio.stop(FEEDBACK)
        self._playing = None
        if self.gpio is not None and not self.gpio.closed:
            for role in OUTPUTS:
                self.gpio.set(role, False)
