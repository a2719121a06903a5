"""The annunciator driven by a ManualClock: bursts, pause, audio off, floor, LEDs,
buzzer on audio failure, footswitch, feedback tones and EMG."""

from __future__ import annotations

import numpy as np
import pytest

from app.alarms import AlarmKind, AlarmManager
from app.model import Measurement, Side, Site, Source, Stimulus
from app.outputs import sounds
from app.outputs.annunciator import Annunciator
from app.outputs.audio import ALARM, CaptureAudio
from app.outputs.gpio import BUZZER, GREEN, RED, YELLOW, SimulatedGpio
from app.settings import Settings
from firmware_bridge.clock import ManualClock

DT = 0.01
S = Settings()
HIGH = sounds.signal_for("high")
HIGH_CYCLE = HIGH.cycle_s(S["alarms.high_repeat_s"])
MED_CYCLE = sounds.signal_for("medium").cycle_s(S["alarms.medium_repeat_s"])


class Rig:
    def __init__(self, settings: Settings = S, start: float = 1000.0) -> None:
        self.clock = ManualClock(start)
        self.manager = AlarmManager(self.clock, settings)
        self.audio = CaptureAudio(self.clock)
        self.gpio = SimulatedGpio(self.clock)
        self.footswitch_events: list[str] = []
        self.ann = Annunciator(self.manager, self.audio, self.gpio, self.clock, settings,
                               on_footswitch=self.footswitch_events.append)

    def run(self, seconds: float) -> None:
        for _ in range(int(round(seconds / DT))):
            self.ann.update()
            self.clock.advance(DT)

    def bursts(self, priority: str | None = None):
        return [p for p in self.audio.played
                if p.tag.startswith("alarm-") and (priority is None or p.tag == f"alarm-{priority}")]


def test_high_alarm_plays_bursts_at_the_repeat_interval():
    r = Rig()
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    t0 = r.clock.now()
    r.run(40.0)
    times = [p.t - t0 for p in r.bursts("high")]
    n = int(40.0 // HIGH_CYCLE) + 1
    assert len(times) == n
    assert times[0] == pytest.approx(0.0)
    assert np.allclose(np.diff(times), HIGH_CYCLE, atol=DT + 1e-9)
    # The silence between bursts is the IEC interburst interval setting.
    p = r.bursts("high")[0]
    assert np.diff(times)[0] - HIGH.burst_s + HIGH.ramp_s == pytest.approx(
        S["alarms.high_repeat_s"], abs=DT + 1e-9)
    # At the alarm volume (70 % > 40 % floor) and the samples are the high burst.
    assert p.gain == pytest.approx(sounds.alarm_gain(70, 40))
    assert np.allclose(p.samples, sounds.alarm_burst("high") * p.gain)


def test_pause_silences_for_120_s_then_bursts_resume():
    r = Rig()
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    r.run(1.0)
    t_pause = r.clock.now()
    r.manager.pause_audio(who="nurse")
    r.run(0.05)
    assert r.audio.stops and r.audio.stops[-1] == (pytest.approx(t_pause, abs=DT), ALARM)
    r.run(130.0)
    after = [p.t - t_pause for p in r.bursts("high")][1:]
    assert after, "bursts must resume"
    assert after[0] == pytest.approx(S["alarms.audio_pause_s"], abs=2 * DT)
    assert np.allclose(np.diff(after), HIGH_CYCLE, atol=DT + 1e-9)
    st = r.ann.status
    assert st.sounding == "high"


def test_acknowledge_stops_the_burst_and_lower_priority_takes_over():
    r = Rig()
    r.manager.raise_condition(AlarmKind.AMPLITUDE_DECREASE, "VAGUS-R")
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    r.run(1.0)
    assert [p.tag for p in r.bursts()] == ["alarm-high"]
    r.manager.acknowledge("loss_of_signal:VAGUS-L", who="nurse")
    t_ack = r.clock.now()
    r.run(MED_CYCLE + 1)
    med = r.bursts("medium")
    assert med[0].t == pytest.approx(t_ack, abs=DT)
    assert len(med) == 2 and med[1].t - med[0].t == pytest.approx(MED_CYCLE, abs=DT + 1e-9)


def test_new_higher_alarm_interrupts_a_medium_cycle_at_once():
    r = Rig()
    r.manager.raise_condition(AlarmKind.LEAD_OFF, "L")
    r.run(2.0)
    r.manager.raise_condition(AlarmKind.BOARD_LINK_LOST, "board")
    t = r.clock.now()
    r.run(0.05)
    assert r.bursts("high")[0].t == pytest.approx(t, abs=DT)


def test_volume_floor_and_escalation_louder():
    r = Rig()
    assert r.ann.set_volume(0) == S["audio.alarm_volume_floor_pct"]
    r.manager.raise_condition(AlarmKind.COMBINED_EVENT, "VAGUS-L")
    r.run(0.1)
    assert sounds.volume_gain(40) > 0
    assert r.bursts()[-1].gain == pytest.approx(sounds.volume_gain(40))
    r.ann.play_tone("response-left")
    assert r.audio.tagged("tone-response-left")[-1].gain == 0.0  # feedback may go silent
    r.run(S["alarms.escalation_s"] + HIGH_CYCLE)
    assert r.manager.state().sounding_escalated
    assert r.bursts()[-1].gain == 1.0
    with pytest.raises(ValueError, match="audio.volume_pct"):
        r.ann.set_volume(150)


def test_audio_off_silences_medium_keeps_high_and_reminds():
    r = Rig(Settings({"alarms.audio_off_reminder_s": 30.0}))
    r.manager.raise_condition(AlarmKind.LEAD_OFF, "L")
    r.run(0.5)
    r.manager.audio_off(who="nurse")
    r.run(0.5)
    n_med = len(r.bursts("medium"))
    r.run(65.0)
    assert len(r.bursts("medium")) == n_med  # silent
    reminders = r.audio.tagged("tone-reminder")
    assert len(reminders) == 2
    assert reminders[1].t - reminders[0].t == pytest.approx(30.0, abs=DT)
    assert reminders[0].gain >= sounds.volume_gain(S["audio.alarm_volume_floor_pct"])
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "RLN-L")
    r.run(0.1)
    assert r.bursts("high"), "high priority sounds through audio off"


def leds(r: Rig, role: str, since: float):
    ev = [e for e in r.gpio.changes(role) if e.t >= since]
    rises = [e.t for e in ev if e.value]
    falls = [e.t for e in ev if not e.value]
    return rises, falls


def test_leds_flash_at_iec_rates_measured_from_the_history():
    r = Rig()
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    r.manager.raise_condition(AlarmKind.AMPLITUDE_DECREASE, "VAGUS-R")
    t0 = r.clock.now()
    r.run(12.0)
    rises, falls = leds(r, RED, t0)
    hz = 1 / np.median(np.diff(rises))
    on = np.median(np.array(falls[: len(rises)]) - np.array(rises[: len(falls)]))
    assert 1.4 <= hz <= 2.8 and 0.2 <= on * hz <= 0.6
    rises, falls = leds(r, YELLOW, t0)
    hz = 1 / np.median(np.diff(rises))
    assert 0.4 <= hz <= 0.8
    assert not r.gpio.get(BUZZER) and not r.gpio.changes(BUZZER)


def test_green_blinks_when_well_and_goes_dark_on_a_technical_alarm():
    r = Rig()
    r.run(3.0)
    assert len(leds(r, GREEN, 0)[0]) >= 2
    r.manager.raise_condition(AlarmKind.STORAGE_PROBLEM, "disk")
    t = r.clock.now()
    r.run(3.0)
    assert leds(r, GREEN, t + DT)[0] == [] and not r.gpio.get(GREEN)


def test_audio_failure_raises_the_technical_alarm_and_the_buzzer_takes_over():
    r = Rig()
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    r.run(0.2)
    r.audio.fail("aplay exited with status 1: audio open error")
    t = r.clock.now()
    r.run(HIGH_CYCLE)
    alarm = r.manager.state().by_id("audio_failure:speaker")
    assert alarm is not None and alarm.category == "technical" and alarm.priority == "high"
    assert alarm.detail["error"].startswith("aplay exited")
    rises, falls = leds(r, BUZZER, t)
    assert len(rises) == 10  # one high burst on the buzzer: 10 pulses
    widths = np.array(falls[:10]) - np.array(rises[:10])
    assert np.allclose(widths, HIGH.pulse_s, atol=DT + 1e-9)
    # Recovery ends the condition; the alarm waits for acknowledgement.
    r.audio.recover()
    r.run(0.1)
    alarm = r.manager.state().by_id("audio_failure:speaker")
    assert alarm.latched and not alarm.condition_active
    assert not r.gpio.get(BUZZER)


def test_footswitch_short_press_marks_and_long_press_acknowledges():
    r = Rig()
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    r.run(0.2)
    r.gpio.press()
    r.run(0.3)
    r.gpio.release()
    r.run(0.2)
    assert r.footswitch_events == ["press"]
    assert r.audio.tagged("tone-mark")
    assert not r.manager.state().alarms[0].acknowledged
    r.gpio.press()
    r.run(S["gpio.footswitch_long_press_s"] + 0.1)
    st = r.manager.state()
    assert st.alarms[0].acknowledged and st.alarms[0].acknowledged_by == "footswitch"
    assert r.footswitch_events == ["press", "long_press"]
    r.gpio.release()
    r.run(0.2)
    assert r.footswitch_events == ["press", "long_press"]
    assert [e for e in r.manager.log if e.transition == "acknowledged"][0].who == "footswitch"


def meas(side, response, delivered=1.0):
    stim = Stimulus(3, 1.0, Site.RLN, side, Source.PROBE, 1.0, delivered)
    return Measurement(stim, side.channel, True, None, response, 600.0 if response else 20.0,
                       3.6 if response else None, 2.8 if response else None)


def test_feedback_tones_for_measurements():
    r = Rig()
    assert r.ann.feedback_for(meas(Side.L, True)) == "response-left"
    assert r.ann.feedback_for(meas(Side.R, True)) == "response-right"
    assert r.ann.feedback_for(meas(Side.R, False)) == "stimulus"
    assert r.ann.feedback_for(meas(Side.R, False, delivered=0.2)) == "no-current"
    tags = [p.tag for p in r.audio.played]
    assert tags == ["tone-response-left", "tone-response-right", "tone-stimulus", "tone-no-current"]
    assert all(p.gain == pytest.approx(sounds.feedback_gain(70)) for p in r.audio.played)


def test_emg_audio_is_fed_and_ducked_during_a_high_burst():
    r = Rig()
    fs = 20000
    t = np.arange(400) / fs

    def block(k):
        return np.vstack([100 * np.sin(2 * np.pi * 500 * (t + k * 0.02))] * 2)

    for k in range(25):  # 0.5 s of EMG, no alarm
        r.ann.emg(block(k), fs)
        r.clock.advance(0.02)
    assert r.audio.emg_blocks[-1][2] > 0.05
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    r.ann.update()
    for k in range(25, 50):
        r.ann.emg(block(k), fs)
        r.clock.advance(0.02)
    assert r.audio.emg_blocks[-1][2] == 0.0
    assert r.ann.emg_audio.last_mute_reason == "alarm"


def test_self_test_walks_the_leds_and_buzzer():
    r = Rig()
    r.ann.self_test()
    t0 = r.clock.now()
    r.run(2.0)
    assert r.audio.tagged("tone-selftest")
    order = [(e.role, e.t - t0) for e in r.gpio.history if e.value and e.role != GREEN]
    assert [role for role, _t in order[:3]] == [RED, YELLOW, BUZZER]
    assert [t for _role, t in order[:3]] == pytest.approx([0.0, 0.5, 1.5], abs=DT + 1e-9)
    assert any(e.role == GREEN and e.value and 1.0 <= e.t - t0 < 1.5 for e in r.gpio.history)
    assert not r.ann.status.self_test


def test_status_is_json_ready_and_close_switches_off():
    import json

    r = Rig()
    r.manager.raise_condition(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")
    r.run(0.1)
    json.dumps(r.ann.status.to_json())
    assert r.ann.status.sounding == "high" and r.ann.status.outputs[RED]
    r.ann.close()
    assert not any(r.gpio.get(x) for x in (RED, YELLOW, GREEN, BUZZER))
    assert r.audio.stops[-1][1] == "feedback"


def test_emg_work_is_skipped_when_nobody_listens():
    clock = ManualClock()
    m = AlarmManager(clock, S)
    for audio, settings, fed in [
        (CaptureAudio(clock, keep_samples=False), S, False),
        (CaptureAudio(clock, keep_samples=False, process_emg=True), S, True),
        (CaptureAudio(clock), Settings({"audio.emg_audio": False}), False),
    ]:
        ann = Annunciator(m, audio, None, clock, settings)
        ann.emg(np.ones((2, 400)), 20000)
        assert (audio.emg_samples > 0) is fed


def test_reminder_beeps_the_buzzer_when_the_speaker_failed():
    r = Rig(Settings({"alarms.audio_off_reminder_s": 30.0}))
    r.audio.fail("dead")
    r.run(0.1)
    r.manager.acknowledge("audio_failure:speaker", who="nurse")  # nothing sounding now
    r.manager.audio_off(who="nurse")
    t = r.clock.now()
    r.run(31.0)
    rises, falls = leds(r, BUZZER, t)
    falls = [f for f in falls if f > rises[0]]
    assert len(rises) == 1 and falls[0] - rises[0] == pytest.approx(0.15, abs=DT + 1e-9)
    assert rises[0] - t == pytest.approx(30.0, abs=DT + 1e-9)
