"""The alarm signals and feedback tones, measured from their samples (IEC 60601-1-8)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.model import InvalidReason, Measurement, Side, Site, Source, Stimulus
from app.outputs import sounds
from app.settings import Settings

RATE = sounds.SAMPLE_RATE
TOL_S = 0.003  # timing tolerance of the envelope measurement


# ----------------------------------------------------------------------------- measuring


def fundamental(x: np.ndarray, rate: int = RATE) -> float:
    """Lowest strong spectral peak (>= -20 dB of the maximum), parabolic-interpolated."""
    n = 1 << int(np.ceil(np.log2(len(x) * 8)))
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    thresh = spec.max() * 10 ** (-20 / 20)
    for i in range(2, len(spec) - 1):
        if spec[i] >= thresh and spec[i] >= spec[i - 1] and spec[i] >= spec[i + 1] and freqs[i] > 50:
            a, b, c = np.log(spec[i - 1 : i + 2] + 1e-12)
            off = 0.5 * (a - c) / (a - 2 * b + c)
            return float(freqs[i] + off * (freqs[1] - freqs[0]))
    raise AssertionError("no spectral peak")


def harmonic_levels_db(x: np.ndarray, f0: float, kmax: int = 12, rate: int = RATE) -> dict[int, float]:
    """Level of each harmonic k*f0 relative to the fundamental, in dB."""
    n = 1 << int(np.ceil(np.log2(len(x) * 8)))
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    freqs = np.fft.rfftfreq(n, 1 / rate)

    def level(f: float) -> float:
        band = (freqs > f * 0.97) & (freqs < f * 1.03)
        return float(spec[band].max()) if band.any() else 0.0

    ref = level(f0)
    return {k: 20 * np.log10(max(level(k * f0), 1e-12) / ref) for k in range(2, kmax + 1)
            if k * f0 < rate / 2}


def envelope(x: np.ndarray, f0: float, rate: int = RATE) -> np.ndarray:
    """Centered moving RMS over one period, scaled so the steady pulse level is 1."""
    w = max(1, int(round(rate / f0)))
    e = np.sqrt(np.convolve(np.asarray(x, float) ** 2, np.ones(w) / w, mode="same"))
    top = e[e > 0.5 * e.max()]
    return e / np.median(top)


def crossings(e: np.ndarray, level: float, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated upward and downward crossing times of ``level``."""
    above = e >= level
    d = np.diff(above.astype(int))
    ups, downs = np.flatnonzero(d == 1), np.flatnonzero(d == -1)

    def interp(i: np.ndarray) -> np.ndarray:
        y0, y1 = e[i], e[i + 1]
        return (i + (level - y0) / (y1 - y0)) / rate

    return interp(ups), interp(downs)


def pulses(x: np.ndarray, f0: float) -> dict[str, np.ndarray]:
    e = envelope(x, f0)
    on50, off50 = crossings(e, 0.5)
    on10, off10 = crossings(e, 0.1)
    on90, off90 = crossings(e, 0.9)
    assert len(on50) == len(off50) == len(on10) == len(on90) == len(off10) == len(off90)
    return {"on": on50, "off": off50, "rise": on90 - on10, "fall": off10 - off90}


def count_pulses(x: np.ndarray, f0: float, level: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and ends (s) of the pulses of a tone whose envelope need not be flat:
    crossings of ``level`` x peak, ignoring dips shorter than 10 ms."""
    w = max(1, int(round(RATE / f0)))
    e = np.sqrt(np.convolve(np.asarray(x, float) ** 2, np.ones(w) / w, mode="same"))
    on = e >= level * e.max()
    d = np.diff(np.r_[0, on.astype(int), 0])
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    keep_s, keep_e = [starts[0]], [ends[0]]
    for a, b in zip(starts[1:], ends[1:], strict=True):
        if a - keep_e[-1] < 0.010 * RATE:
            keep_e[-1] = b
        else:
            keep_s.append(a)
            keep_e.append(b)
    return np.array(keep_s) / RATE, np.array(keep_e) / RATE


# IEC 60601-1-8 ranges
IEC = {
    "high": {"n": 10, "td": (0.075, 0.200), "ts": (0.050, 0.125), "interburst": (2.5, 15.0)},
    "medium": {"n": 3, "td": (0.125, 0.250), "ts": (0.125, 0.250), "interburst": (2.5, 30.0)},
    "low": {"n": (1, 2), "td": (0.125, 0.250), "ts": (0.125, 0.250), "interburst": (15.0, 1e9)},
}
PRIORITIES = ("high", "medium", "low")


@pytest.fixture(scope="module")
def measured():
    out = {}
    for p in PRIORITIES:
        x = sounds.alarm_burst(p).astype(float)
        f0 = fundamental(x[: int(0.1 * RATE)])
        out[p] = (x, f0, pulses(x, f0))
    return out


@pytest.mark.parametrize("p", PRIORITIES)
def test_pulse_count_duration_and_spacing(measured, p):
    x, f0, m = measured[p]
    iec = IEC[p]
    n = len(m["on"])
    if isinstance(iec["n"], tuple):
        assert iec["n"][0] <= n <= iec["n"][1]
    else:
        assert n == iec["n"]
    td = m["off"] - m["on"]
    lo, hi = iec["td"]
    assert np.all((td >= lo) & (td <= hi)), td
    sig = sounds.signal_for(p)
    assert np.allclose(td, sig.pulse_s, atol=TOL_S)
    # onsets where the synthesis says they are
    assert np.allclose(m["on"], sig.onsets(), atol=TOL_S)
    spacing = m["on"][1:] - m["off"][:-1]
    within = spacing[spacing < 0.25] if p == "high" else spacing
    lo, hi = iec["ts"]
    assert np.all((within >= lo) & (within <= hi)), spacing


def test_high_grouping_three_two_pause_three_two(measured):
    _x, _f0, m = measured["high"]
    spacing = m["on"][1:] - m["off"][:-1]
    td = np.median(m["off"] - m["on"])
    ts = np.min(spacing)
    # Groups split wherever the spacing is clearly longer than the basic spacing.
    groups, size = [], 1
    for s in spacing:
        if s > 1.5 * ts:
            groups.append(size)
            size = 1
        else:
            size += 1
    groups.append(size)
    assert groups == [3, 2, 3, 2]
    long_gaps = sorted(spacing)[-3:]
    # Between the 3 and the 2: one pulse slot missing (2 ts + td); between halves: the pause.
    assert spacing[2] == pytest.approx(2 * ts + td, abs=TOL_S)
    assert spacing[7] == pytest.approx(2 * ts + td, abs=TOL_S)
    assert 0.350 <= spacing[4] <= 1.300
    assert spacing[4] == max(long_gaps)


@pytest.mark.parametrize("p", PRIORITIES)
def test_rise_and_fall_times_10_to_20_percent(measured, p):
    _x, _f0, m = measured[p]
    td = m["off"] - m["on"]
    for ratio in (m["rise"] / td, m["fall"] / td):
        assert np.all((ratio >= 0.10) & (ratio <= 0.20)), ratio


@pytest.mark.parametrize("p", PRIORITIES)
def test_spectrum_fundamental_and_four_harmonics_within_15_db(measured, p):
    x, f0, m = measured[p]
    assert 150 <= f0 <= 1000
    assert f0 == pytest.approx(sounds.signal_for(p).f0_hz, rel=0.01)
    # steady part of the first pulse
    a, b = m["on"][0] + 0.02, m["off"][0] - 0.02
    seg = x[int(a * RATE) : int(b * RATE)]
    levels = harmonic_levels_db(seg, f0)
    good = [k for k, db in levels.items() if 300 <= k * f0 <= 4000 and -15 <= db <= 15]
    assert len(good) >= 4, levels


@pytest.mark.parametrize("p", PRIORITIES)
def test_energy_between_200_and_5000_hz(p):
    x = sounds.alarm_burst(p).astype(float)
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    inside = spec[(freqs >= 200) & (freqs <= 5000)].sum()
    assert inside / spec.sum() >= 0.99


@pytest.mark.parametrize("p", PRIORITIES)
def test_no_continuous_tone(measured, p):
    _x, f0, m = measured[p]
    assert np.max(m["off"] - m["on"]) <= 0.250
    cycle = sounds.alarm_cycle(p, sounds.interburst_s(p, Settings()))
    e = envelope(cycle.astype(float), f0)
    assert np.mean(e > 0.1) < 0.35  # mostly silence over a full cycle


@pytest.mark.parametrize("p,repeat", [("high", 2.5), ("high", 5.0), ("high", 15.0), ("medium", 10.0),
                                      ("medium", 30.0), ("low", 20.0)])
def test_interburst_interval_measured_across_two_cycles(p, repeat):
    settings = Settings({f"alarms.{p}_repeat_s": repeat})
    cycle = sounds.alarm_cycle(p, sounds.interburst_s(p, settings)).astype(float)
    two = np.concatenate([cycle, cycle, np.zeros(RATE // 10)])
    sig = sounds.signal_for(p)
    m = pulses(two, sig.f0_hz)
    n = sig.pulses
    assert len(m["on"]) == 2 * n
    interburst = m["on"][n] - m["off"][n - 1]
    assert interburst == pytest.approx(repeat, abs=TOL_S)
    lo, hi = IEC[p]["interburst"]
    assert lo - TOL_S <= interburst <= hi + TOL_S
    assert m["on"][n] - m["on"][0] == pytest.approx(len(cycle) / RATE, abs=TOL_S)


def test_alarm_cycle_settings_bounds_are_iec_bounds():
    from app.settings import SCHEMA

    for p in PRIORITIES:
        s = SCHEMA[f"alarms.{p}_repeat_s"]
        lo, hi = IEC[p]["interburst"]
        assert s.minimum >= lo and s.maximum <= hi


def test_the_three_priorities_are_distinct():
    f0s = {p: sounds.signal_for(p).f0_hz for p in PRIORITIES}
    values = sorted(f0s.values())
    assert all(b / a >= 1.15 for a, b in itertools.pairwise(values))
    assert f0s["high"] > f0s["medium"] > f0s["low"]  # more urgent = higher and faster
    patterns = {sounds.signal_for(p).pattern for p in PRIORITIES}
    assert len(patterns) == 3


# ----------------------------------------------------------------------------- feedback tones


def tone(name: str) -> np.ndarray:
    return np.asarray(sounds.feedback_tone(name), dtype=float)


def test_response_tones_pitch_tells_the_side():
    fl, fr = fundamental(tone("response-left")), fundamental(tone("response-right"))
    assert fl == pytest.approx(988, rel=0.01) and fr == pytest.approx(1480, rel=0.01)
    assert fr / fl >= 1.4  # a fifth apart
    for name in ("response-left", "response-right"):
        x = tone(name)
        on, _off = count_pulses(x, fundamental(x))
        assert len(on) == 1  # one pulse: never an alarm pattern


def test_no_current_is_a_low_double_buzz_unlike_a_response():
    x = tone("no-current")
    f0 = fundamental(x[: int(0.09 * RATE)])
    assert f0 == pytest.approx(196, rel=0.02)
    assert f0 < 0.3 * fundamental(tone("response-left"))
    on, off = count_pulses(x, f0)
    assert len(on) == 2
    assert np.all(off - on < 0.125)  # shorter than any alarm pulse
    # Buzzy: strong odd harmonics, unlike the nearly pure response tone.
    seg = x[int(0.02 * RATE) : int(0.07 * RATE)]
    assert harmonic_levels_db(seg, f0)[3] > -12
    resp = tone("response-left")
    fr = fundamental(resp)
    assert harmonic_levels_db(resp[: int(0.1 * RATE)], fr)[3] < -30


def test_stimulus_tick_is_short_quiet_and_unpitched_against_responses():
    x = tone("stimulus")
    assert len(x) / RATE <= 0.020
    assert np.max(np.abs(x)) <= 0.5 * np.max(np.abs(tone("response-left")))
    rms = lambda y: float(np.sqrt(np.mean(y**2)))  # noqa: E731
    energy_tick = rms(x) ** 2 * len(x)
    energy_resp = rms(tone("response-left")) ** 2 * len(tone("response-left"))
    assert energy_tick < 0.05 * energy_resp


def test_every_feedback_tone_distinct_from_every_other():
    names = list(sounds.FEEDBACK_TONES)
    signatures = {}
    for n in names:
        x = tone(n)
        signatures[n] = (round(fundamental(x[: int(0.05 * RATE)]) / 25), round(len(x) / RATE, 2))
    assert len(set(signatures.values())) == len(names), signatures


def test_no_feedback_tone_looks_like_an_alarm_burst():
    for name in sounds.FEEDBACK_TONES:
        x = tone(name)
        on, off = count_pulses(x, 440.0)
        if name == "reminder":
            assert len(on) == 1  # deliberately alarm timbre, but a single pulse
        elif len(on) >= 2:  # several notes: shorter than any alarm pulse, at most 3
            assert len(on) <= 3
            assert np.all(off - on < 0.125), name


def test_unknown_tone_and_priority_are_refused():
    with pytest.raises(ValueError, match="no feedback tone 'beep'"):
        sounds.feedback_tone("beep")
    with pytest.raises(ValueError, match="no alarm sound for priority 'info'"):
        sounds.alarm_burst("info")


# ----------------------------------------------------------------------------- semantics & volume


def meas(side=Side.L, response=True, delivered=1.0, valid=True, source=Source.PROBE, reason=None):
    stim = Stimulus(1, 2.0, Site.RLN, side, source, 1.0, delivered)
    return Measurement(stim, side.channel, valid, reason, response and valid,
                       500.0 if valid else None, 3.5 if response else None, 2.5 if response else None)


@pytest.mark.parametrize("m,expected", [
    (meas(Side.L), "response-left"),
    (meas(Side.R), "response-right"),
    (meas(Side.L, delivered=None), "response-left"),
    (meas(Side.R, response=False), "stimulus"),
    (meas(Side.R, response=False, delivered=0.96), "stimulus"),
    (meas(Side.L, response=False, delivered=0.94, valid=False, reason=InvalidReason.NO_CURRENT), "no-current"),
    (meas(Side.L, delivered=0.0, valid=False, reason=InvalidReason.NO_CURRENT), "no-current"),
    (meas(Side.L, valid=False, reason=InvalidReason.CAUTERY), None),
    (meas(Side.L, source=Source.APS), None),
])
def test_tone_semantics_one_sound_per_probe_stimulus(m, expected):
    assert sounds.tone_for(m, Settings()) == expected


def test_volume_floor_for_alarms_only():
    floor = 40.0
    assert sounds.alarm_gain(0.0, floor) == pytest.approx(sounds.volume_gain(floor))
    assert sounds.alarm_gain(10.0, floor) == sounds.alarm_gain(40.0, floor) > 0
    assert sounds.alarm_gain(80.0, floor) == pytest.approx(0.64)
    assert sounds.feedback_gain(0.0) == 0.0
    assert sounds.feedback_gain(10.0) < sounds.alarm_gain(10.0, floor)
    assert sounds.alarm_gain(10.0, floor, escalated=True) == 1.0
    gains = [sounds.volume_gain(p) for p in range(0, 101, 5)]
    assert gains == sorted(gains) and gains[-1] == 1.0
