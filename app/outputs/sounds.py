"""Every sound the monitor makes, synthesised with numpy (pure functions, no I/O).

Owns: the IEC 60601-1-8 alarm signals (``ALARM_SIGNALS``, ``alarm_burst``,
``alarm_cycle``), the feedback tones (``FEEDBACK_TONES``, ``feedback_tone``), the choice of
feedback tone for a measured stimulus (``tone_for``) and the volume law with its floor
(``volume_gain``, ``alarm_gain``, ``feedback_gain``).
May import: numpy, ``app.model``, ``app.settings``.

Sample values are float32 in [-1, 1] at ``rate`` (default ``SAMPLE_RATE`` = 48 kHz).

Alarm signals (IEC 60601-1-8 Table 3 ranges in brackets)
---------------------------------------------------------
Times are measured as the standard does: pulse duration between the 50 % points of the
rise and fall, pulse spacing from the 50 % fall of one pulse to the 50 % rise of the
next, rise/fall time from 10 % to 90 % of the amplitude.

| priority | pulses        | f0     | pulse (td)        | spacing (ts)     | gaps                                 | rise/fall   |
|----------|---------------|--------|-------------------|------------------|--------------------------------------|-------------|
| high     | 3+2, pause, 3+2 | 523 Hz | 120 ms [75-200] | 80 ms [50-125]   | 3rd-4th 2ts+td = 280 ms; 5th-6th 600 ms [350-1300] | 15 % [10-20] |
| medium   | 3             | 440 Hz | 200 ms [125-250]  | 180 ms [125-250] | -                                    | 15 %        |
| low      | 2             | 330 Hz | 200 ms [125-250]  | 200 ms [125-250] | -                                    | 15 %        |

Each pulse is the fundamental plus four harmonics (2f0-5f0, all within 300-4000 Hz) at
0, -3.1, -5.2, -6.9 and -9.1 dB relative to the fundamental (limit: within +-15 dB), so
the energy lies between 330 Hz and 2.7 kHz (limit 200-5000 Hz). Ramps are linear; the
ramp length is chosen so that the 10-90 % time is 15 % of the pulse duration.

The *interburst interval* follows the standard's definition: from the end (50 % fall)
of the last pulse of a burst to the start (50 % rise) of the first pulse of the next.
It is the setting ``alarms.<priority>_repeat_s`` (high 2.5-15 s, medium 2.5-30 s,
low 15-120 s). ``alarm_cycle`` returns one full period (burst plus the interburst
silence): looping it plays the alarm exactly as the annunciator does.

Feedback tones (what each sound means; one sound per probe stimulus)
---------------------------------------------------------------------
| name            | sound                                                     | meaning |
|-----------------|-----------------------------------------------------------|---------|
| response-left   | clear bell-like tone, 988 Hz (B5), 160 ms                 | probe current delivered and the LEFT vocal fold responded (>= event threshold) |
| response-right  | clear bell-like tone, 1480 Hz (F#6, a fifth higher), 160 ms | probe current delivered and the RIGHT vocal fold responded |
| stimulus        | short quiet dry tick, 2 kHz, 12 ms                        | probe current delivered, NO response: the tissue touched is not a (working) nerve |
| no-current      | low buzzy double pulse, 196 Hz rich in odd harmonics, 2 x 90 ms | the stimulus was NOT delivered as set (open circuit, dry contact, shunting): absence of a response means nothing |
| reminder        | one soft alarm-timbre pulse, 440 Hz, 150 ms              | alarm audio is OFF (repeated every ``alarms.audio_off_reminder_s``) |
| mark            | two quick rising notes, 1319 -> 1760 Hz                   | footswitch press registered (snapshot / event mark) |
| selftest        | rising chime C5-E5-G5 with harmonics                      | start-up check of the loudspeaker |

Design choices behind the table:

- A probe stimulus yields exactly ONE of three sounds: response tone (delivered and
  answered), tick (delivered, not answered) or buzz (not delivered). Silence therefore
  never stands for "no response"; the competitor complaint "no tone with the probe on
  the nerve" cannot be confused with "no current": the buzz is low, rough and double,
  the response tones are high, pure and single, the tick is a click without pitch.
- Left and right differ by a musical fifth (988 vs 1480 Hz), far apart enough to be
  told apart without a reference.
- Stimuli whose epoch is invalid (cautery, saturation, artifact, no channel) and stimuli
  of the continuous vagal electrode make no feedback sound: the first cannot be judged,
  the second would tick every second for hours; both are covered by the alarms.
- Feedback tones never use the alarm pulse patterns (3+2, 3 or 2 regularly spaced
  harmonic pulses), so no feedback tone can be mistaken for an alarm.

Volume
------
``volume_gain(pct) = (pct/100)^2`` (a perceptual taper). Alarms play at
``max(audio.volume_pct, audio.alarm_volume_floor_pct)``: they can never be turned down
below the floor; feedback tones follow ``audio.volume_pct`` down to silence. An
escalated high-priority alarm plays at 100 %.
"""  # noqa: E501 - the tables above are read as tables

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from collections.abc import Mapping

import numpy as np

from app.model import Measurement, Priority, Source
from app.settings import Settings

SAMPLE_RATE = 48000
_LEVEL = 0.89  # peak of a full-scale alarm pulse (about -1 dBFS headroom)
_HARMONICS = (1.0, 0.7, 0.55, 0.45, 0.35)


@dataclass(frozen=True)
class AlarmSignal:
    """The timing and timbre of one priority's burst (see the module table)."""

    priority: str
    f0_hz: float
    pulse_s: float  # td, 50 %-50 %
    spacing_s: float  # ts, 50 % fall to 50 % rise
    pattern: tuple[int, ...]  # pulses per group
    group_gaps_s: tuple[float, ...]  # 50 % fall to 50 % rise between groups
    harmonics: tuple[float, ...] = _HARMONICS  # amplitude of partials 1..n
    rise_fraction: float = 0.15  # 10-90 % rise (and fall) time / pulse duration

    @property
    def ramp_s(self) -> float:
        """Length of the linear 0-100 % ramp giving the 10-90 % time wanted."""
        return self.rise_fraction * self.pulse_s / 0.8

    @property
    def pulses(self) -> int:
        return sum(self.pattern)

    def onsets(self) -> tuple[float, ...]:
        """50 % rise time of every pulse, seconds from the start of the burst."""
        t = self.ramp_s / 2
        out = []
        for g, n in enumerate(self.pattern):
            for i in range(n):
                out.append(t)
                t += self.pulse_s + (self.spacing_s if i < n - 1 else 0.0)
            if g < len(self.pattern) - 1:
                t += self.group_gaps_s[g]
        return tuple(out)

    def pulse_windows(self) -> tuple[tuple[float, float], ...]:
        """(50 % rise, 50 % fall) of every pulse: when a buzzer or LED would be on."""
        return tuple((t, t + self.pulse_s) for t in self.onsets())

    @property
    def burst_s(self) -> float:
        """Length of the sound of one burst, first ramp start to last ramp end."""
        return self.onsets()[-1] - self.ramp_s / 2 + self.pulse_s + self.ramp_s

    def cycle_s(self, interburst_s: float) -> float:
        """Start-to-start period of bursts separated by ``interburst_s`` of silence."""
        return self.onsets()[-1] + self.pulse_s + interburst_s - self.ramp_s / 2

    @property
    def pattern_text(self) -> str:
        """``3+2, pause, 3+2`` style description of the grouping."""
        text = str(self.pattern[0])
        for gap, n in zip(self.group_gaps_s, self.pattern[1:], strict=True):
            text += (", pause, " if gap >= 0.35 else "+") + str(n)
        return text

    def pulse_on(self, t: float) -> bool:
        """Is a pulse sounding ``t`` seconds after the start of the burst (50 % gate)?"""
        return any(a <= t < b for a, b in self.pulse_windows())


_HIGH_TD, _HIGH_TS = 0.120, 0.080
ALARM_SIGNALS: Mapping[str, AlarmSignal] = MappingProxyType(
    {
        Priority.HIGH.value: AlarmSignal(
            "high", 523.0, _HIGH_TD, _HIGH_TS, (3, 2, 3, 2),
            (2 * _HIGH_TS + _HIGH_TD, 0.600, 2 * _HIGH_TS + _HIGH_TD),
        ),
        Priority.MEDIUM.value: AlarmSignal("medium", 440.0, 0.200, 0.180, (3,), ()),
        Priority.LOW.value: AlarmSignal("low", 330.0, 0.200, 0.200, (2,), ()),
    }
)


def _priority_key(priority: Priority | str) -> str:
    p = Priority(priority).value
    if p not in ALARM_SIGNALS:
        raise ValueError(f"no alarm sound for priority {p!r}; choose high, medium or low")
    return p


def signal_for(priority: Priority | str) -> AlarmSignal:
    """The IEC 60601-1-8 alarm signal of a priority."""
    return ALARM_SIGNALS[_priority_key(priority)]


def interburst_s(priority: Priority | str, settings: Settings) -> float:
    """The interburst interval setting for ``priority``."""
    return float(settings[f"alarms.{_priority_key(priority)}_repeat_s"])


# ----------------------------------------------------------------------------- synthesis


def _harmonic_wave(t: np.ndarray, f0: float, harmonics: tuple[float, ...]) -> np.ndarray:
    wave = np.zeros_like(t)
    for k, a in enumerate(harmonics, start=1):
        wave += a * np.sin(2 * np.pi * k * f0 * t)
    # Normalise by the peak over one period so every pulse has the same peak level.
    one = np.arange(0, 1.0 / f0, 1.0 / (f0 * 512))
    peak = np.max(np.abs(sum(a * np.sin(2 * np.pi * k * f0 * one) for k, a in enumerate(harmonics, 1))))
    return wave / peak


def _pulse(sig: AlarmSignal, rate: int) -> np.ndarray:
    r = sig.ramp_s
    length = sig.pulse_s + r
    n = int(round(length * rate))
    t = np.arange(n) / rate
    env = np.interp(t, [0.0, r, sig.pulse_s, length], [0.0, 1.0, 1.0, 0.0])
    return env * _harmonic_wave(t, sig.f0_hz, sig.harmonics)


def alarm_burst(priority: Priority | str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """One burst of ``priority`` (no trailing silence), float32, peak ``_LEVEL``."""
    sig = signal_for(priority)
    out = np.zeros(int(round(sig.burst_s * rate)) + 1)
    pulse = _pulse(sig, rate)
    for onset in sig.onsets():
        i = int(round((onset - sig.ramp_s / 2) * rate))
        seg = pulse[: len(out) - i]
        out[i : i + len(seg)] += seg
    return (out * _LEVEL).astype(np.float32)


def alarm_cycle(priority: Priority | str, interburst: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """One full period: the burst followed by silence up to the next burst's start."""
    sig = signal_for(priority)
    burst = alarm_burst(priority, rate)
    n = int(round(sig.cycle_s(interburst) * rate))
    out = np.zeros(max(n, len(burst)), dtype=np.float32)
    out[: len(burst)] = burst
    return out


# ----------------------------------------------------------------------------- feedback


@dataclass(frozen=True)
class ToneSpec:
    """One feedback tone: its name, meaning, description and sound."""

    name: str
    meaning: str
    description: str
    fundamental_hz: float


def _env(n: int, rate: int, attack_s: float, release_s: float) -> np.ndarray:
    t = np.arange(n) / rate
    dur = n / rate
    return np.clip(np.minimum(t / attack_s, (dur - t) / release_s), 0.0, 1.0)


def _tone_stimulus(rate: int) -> np.ndarray:
    n = int(0.012 * rate)
    t = np.arange(n) / rate
    wave = np.sin(2 * np.pi * 2000.0 * t) * np.exp(-t / 0.003)
    return 0.3 * wave * _env(n, rate, 0.0005, 0.002)


def _bell(freq: float, rate: int) -> np.ndarray:
    n = int(0.160 * rate)
    t = np.arange(n) / rate
    wave = np.sin(2 * np.pi * freq * t) + 0.15 * np.sin(2 * np.pi * 2 * freq * t)
    decay = np.exp(-t / 0.12)
    return 0.8 / 1.15 * wave * decay * _env(n, rate, 0.008, 0.040)


def _tone_no_current(rate: int) -> np.ndarray:
    f0 = 196.0
    n = int(0.090 * rate)
    t = np.arange(n) / rate
    wave = np.zeros(n)
    for k in range(1, 16, 2):  # band-limited square wave: buzzy, unmistakably low
        wave += np.sin(2 * np.pi * k * f0 * t) / k
    wave *= _env(n, rate, 0.005, 0.010) / np.max(np.abs(wave))
    gap = np.zeros(int(0.060 * rate))
    return 0.8 * np.concatenate([wave, gap, wave])


def _tone_reminder(rate: int) -> np.ndarray:
    sig = AlarmSignal("reminder", 440.0, 0.150, 0.0, (1,), ())
    return 0.5 * _pulse(sig, rate)


def _notes(freqs: tuple[float, ...], each_s: float, rate: int, harmonics: tuple[float, ...]) -> np.ndarray:
    parts = []
    for f in freqs:
        n = int(each_s * rate)
        t = np.arange(n) / rate
        parts.append(_harmonic_wave(t, f, harmonics) * _env(n, rate, 0.005, 0.020))
    return np.concatenate(parts)


def _tone_mark(rate: int) -> np.ndarray:
    return 0.5 * _notes((1319.0, 1760.0), 0.050, rate, (1.0,))


def _tone_selftest(rate: int) -> np.ndarray:
    return 0.7 * _notes((523.0, 659.0, 784.0), 0.150, rate, _HARMONICS)


_TONE_BUILDERS = {
    "stimulus": _tone_stimulus,
    "response-left": lambda rate: _bell(988.0, rate),
    "response-right": lambda rate: _bell(1480.0, rate),
    "no-current": _tone_no_current,
    "reminder": _tone_reminder,
    "mark": _tone_mark,
    "selftest": _tone_selftest,
}

FEEDBACK_TONES: Mapping[str, ToneSpec] = MappingProxyType(
    {
        "stimulus": ToneSpec("stimulus", "probe current delivered, no response",
                             "short quiet dry tick, 2 kHz, 12 ms", 2000.0),
        "response-left": ToneSpec("response-left", "current delivered, LEFT vocal fold responded",
                                  "clear tone 988 Hz, 160 ms", 988.0),
        "response-right": ToneSpec("response-right", "current delivered, RIGHT vocal fold responded",
                                   "clear tone 1480 Hz, 160 ms", 1480.0),
        "no-current": ToneSpec("no-current", "stimulus NOT delivered as set",
                               "low buzzy double pulse 196 Hz, 2 x 90 ms", 196.0),
        "reminder": ToneSpec("reminder", "alarm audio is off",
                             "one soft alarm-timbre pulse 440 Hz, 150 ms", 440.0),
        "mark": ToneSpec("mark", "footswitch press registered",
                         "two quick rising notes 1319-1760 Hz", 1319.0),
        "selftest": ToneSpec("selftest", "loudspeaker start-up check",
                             "rising chime C5-E5-G5", 523.0),
    }
)

_tone_cache: dict[tuple[str, int], np.ndarray] = {}


def feedback_tone(name: str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The samples of feedback tone ``name`` (float32, read-only, cached)."""
    if name not in _TONE_BUILDERS:
        raise ValueError(f"no feedback tone {name!r}; choose one of {', '.join(_TONE_BUILDERS)}")
    key = (name, int(rate))
    if key not in _tone_cache:
        arr = np.asarray(_TONE_BUILDERS[name](int(rate)), dtype=np.float32)
        arr.setflags(write=False)
        _tone_cache[key] = arr
    return _tone_cache[key]


def tone_for(measurement: Measurement, settings: Settings) -> str | None:
    """Which feedback tone a measured stimulus gets (the table in the module docstring).

    Delivered means: delivered current not measured (the set current stands) or at
    least (100 - ``stim.delivered_tolerance_pct``) % of the set current.
    """
    s = measurement.stimulus
    if Source(s.source) is not Source.PROBE:
        return None
    tol = float(settings["stim.delivered_tolerance_pct"])
    delivered = s.delivered_mA is None or s.delivered_mA >= s.set_mA * (1 - tol / 100.0)
    if not delivered:
        return "no-current"
    if not measurement.valid:
        return None
    if measurement.response:
        return "response-left" if s.side.value == "L" else "response-right"
    return "stimulus"


# ----------------------------------------------------------------------------- volume


def volume_gain(pct: float) -> float:
    """Amplitude factor for a volume in percent (perceptual square law)."""
    p = min(max(float(pct), 0.0), 100.0) / 100.0
    return p * p


def alarm_gain(volume_pct: float, floor_pct: float, escalated: bool = False) -> float:
    """Alarms never go below the floor; an escalated high alarm plays at full volume."""
    if escalated:
        return 1.0
    return volume_gain(max(float(volume_pct), float(floor_pct)))


def feedback_gain(volume_pct: float) -> float:
    """The gain of feedback tones at a volume setting in percent."""
    return volume_gain(volume_pct)


def all_sounds(settings: Settings, rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Every sound by file stem: ``alarm-high`` (one full cycle), ..., ``tone-mark``."""
    out: dict[str, np.ndarray] = {}
    for p in ALARM_SIGNALS:
        out[f"alarm-{p}"] = alarm_cycle(p, interburst_s(p, settings), rate)
    for name in FEEDBACK_TONES:
        out[f"tone-{name}"] = np.asarray(feedback_tone(name, rate))
    return out
