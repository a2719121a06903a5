"""Respiratory variation of the baseline EMG (tube check) on synthetic streams with known truth.

Truth: the baseline swings by ``wander`` µV (amplitude; peak-to-peak twice that) at the
breathing rate and the background noise is modulated by ``(1 + m sin)``. Tolerances:
wander within 10 % (+0.5 µV), modulation within 2.5 percentage points, rate within
0.5 breaths per minute; noise only: wander under 1.5 µV and modulation under 3 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.analysis.breathing import (
    REASONS,
    BreathingMeter,
    measuring_json,
    not_measured_json,
    side_text,
)
from app.settings import SettingError, Settings
from emg_synth import ecg, hum, white_noise, wander


@dataclass(frozen=True)
class Side:
    wander_uV: float = 20.0  # amplitude of the baseline swing (peak-to-peak = 2x)
    modulation: float = 0.25  # modulation depth of the background
    noise_uV: float = 3.0
    ecg_uV: float = 15.0
    hum_uV: float = 3.0


def stream(fs: float, dur_s: float, left: Side, right: Side, *, rate_hz: float = 0.25, hum_hz: float = 50.0,
           heart_bpm: float = 72.0, seed: int = 0, phase: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(round(dur_s * fs))
    t = np.arange(n) / fs
    breath = np.sin(2 * np.pi * rate_hz * t + phase)
    out = np.empty((2, n))
    for ch, sd in enumerate((left, right)):
        x = white_noise(rng, n, fs, sd.noise_uV) * (1.0 + sd.modulation * breath)
        x += wander(t, sd.wander_uV, rate_hz, phase)
        x += ecg(t, sd.ecg_uV * (1 if ch == 0 else -0.8), heart_bpm, phase_s=0.13)
        x += hum(t, sd.hum_uV, hum_hz, phase=0.3 + ch)
        out[ch] = x
    return out


def measure(x: np.ndarray, fs: float, *, block_s: float = 0.020, t0: float = 50.0, meter: BreathingMeter | None = None,
            s: Settings | None = None, window: tuple[float, float] | None = None):
    m = meter or BreathingMeter(s or Settings(), fs)
    blk = max(1, int(round(block_s * fs)))
    for i in range(0, x.shape[1], blk):
        m.feed(x[:, i:i + blk], t0 + i / fs)
    if window is None:
        return m.evaluate(t0 + 0.5, t0 + 0.5 + m.window_s)
    return m.evaluate(t0 + window[0], t0 + window[1])


def close(got: float | None, want: float, rel: float = 0.10, abs_: float = 0.5) -> bool:
    return got is not None and abs(got - want) <= rel * want + abs_


# ---------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("fs", [20000.0, 2000.0])
@pytest.mark.parametrize("hum_hz", [50.0, 60.0])
def test_present_breathing_is_measured_through_ecg_and_hum(fs, hum_hz):
    x = stream(fs, 16.0, Side(), Side(wander_uV=12.0, modulation=0.15, ecg_uV=25.0, hum_uV=8.0), rate_hz=0.25,
               hum_hz=hum_hz)
    r = measure(x, fs)
    L, R = r.sides["L"], r.sides["R"]
    assert L.present is True and R.present is True
    assert close(L.wander_uV, 40.0) and close(R.wander_uV, 24.0)
    assert abs(L.modulation_pct - 25.0) <= 2.5 and abs(R.modulation_pct - 15.0) <= 2.5
    assert abs(r.rate_per_min - 15.0) <= 0.5 and L.rate_per_min == r.rate_per_min
    assert L.coverage_pct == 100.0 and L.reason is None and L.status == "measured"
    in_band = 3.0 * math.sqrt((min(fs / 2, 5000.0) - 100.0) / 5000.0)  # white noise above the 100 Hz high-pass
    assert close(L.background_uV, in_band, rel=0.1, abs_=0.0)


def test_displaced_tube_gives_absent_with_small_values():
    x = stream(20000.0, 16.0, Side(wander_uV=2.5, modulation=0.03), Side(), rate_hz=0.2)
    r = measure(x, 20000.0)
    L, R = r.sides["L"], r.sides["R"]
    assert L.present is False and R.present is True
    assert close(L.wander_uV, 5.0, abs_=1.0) and abs(L.modulation_pct - 3.0) <= 2.5
    assert abs(r.rate_per_min - 12.0) <= 0.5


@pytest.mark.parametrize("ecg_uV,hum_uV", [(0.0, 0.0), (15.0, 3.0), (40.0, 20.0)])
def test_noise_only_is_absent(ecg_uV, hum_uV):
    quiet = Side(wander_uV=0.0, modulation=0.0, ecg_uV=ecg_uV, hum_uV=hum_uV)
    x = stream(20000.0, 16.0, quiet, quiet, heart_bpm=50.0, seed=3)
    r = measure(x, 20000.0)
    for side in "LR":
        s = r.sides[side]
        assert s.present is False, s
        assert s.wander_uV < 1.5 and s.modulation_pct < 3.0, s


def test_each_side_on_its_own():
    x = stream(20000.0, 16.0, Side(wander_uV=0.0, modulation=0.0), Side(wander_uV=25.0, modulation=0.3), seed=5)
    r = measure(x, 20000.0)
    assert r.sides["L"].present is False and r.sides["R"].present is True
    assert close(r.sides["R"].wander_uV, 50.0) and abs(r.sides["R"].modulation_pct - 30.0) <= 2.5


def test_wander_alone_or_modulation_alone_is_not_enough_by_default():
    x = stream(20000.0, 16.0, Side(wander_uV=20.0, modulation=0.0), Side(wander_uV=0.0, modulation=0.3), seed=7)
    r = measure(x, 20000.0)
    assert r.sides["L"].present is False and r.sides["R"].present is False
    assert close(r.sides["L"].wander_uV, 40.0) and abs(r.sides["R"].modulation_pct - 30.0) <= 2.5
    # an amplifier that removes the slow swing: the wander limit set to 0 is not required
    r = measure(x, 20000.0, s=Settings({"tube.breathing_min_wander_uV": 0.0}))
    assert r.sides["L"].present is False and r.sides["R"].present is True


def test_thresholds_come_from_the_settings():
    x = stream(20000.0, 16.0, Side(modulation=0.12), Side(modulation=0.12), seed=2)
    assert measure(x, 20000.0).sides["L"].present is True
    strict = Settings({"tube.breathing_min_modulation_pct": 20.0})
    assert measure(x, 20000.0, s=strict).sides["L"].present is False
    strict = Settings({"tube.breathing_min_wander_uV": 60.0})
    assert measure(x, 20000.0, s=strict).sides["L"].present is False


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=st.floats(0.15, 0.6), amp=st.floats(5.0, 40.0), mod=st.floats(0.08, 0.4),
       phase=st.floats(0.0, 2 * math.pi), seed=st.integers(0, 10_000))
def test_accuracy_over_breathing_rates_and_depths(rate, amp, mod, phase, seed):
    fs = 20000.0
    x = stream(fs, 16.0, Side(wander_uV=amp, modulation=mod), Side(wander_uV=0.0, modulation=0.0), rate_hz=rate,
               seed=seed, phase=phase)
    r = measure(x, fs, block_s=0.05)
    L = r.sides["L"]
    assert abs(r.rate_per_min - 60.0 * rate) <= 0.5
    assert close(L.wander_uV, 2 * amp)
    assert abs(L.modulation_pct - 100 * mod) <= 2.5
    assert r.sides["R"].present is False


def test_gain_scales_the_wander_not_the_modulation():
    x = stream(20000.0, 16.0, Side(), Side(), seed=11)
    a = measure(x, 20000.0).sides["L"]
    b = measure(10.0 * x, 20000.0).sides["L"]
    assert b.wander_uV == pytest.approx(10.0 * a.wander_uV, rel=0.01)
    assert b.modulation_pct == pytest.approx(a.modulation_pct, abs=0.2)


# ---------------------------------------------------------------------- artifacts


def _cautery(x: np.ndarray, fs: float, start_s: float, dur_s: float, seed: int = 9) -> np.ndarray:
    y = x.copy()
    a, b = int(start_s * fs), int((start_s + dur_s) * fs)
    rng = np.random.default_rng(seed)
    y[:, a:b] += np.clip(rng.standard_normal((2, b - a)) * 60000.0, -100000.0, 100000.0)
    return y


def test_short_cautery_is_skipped_and_long_cautery_makes_it_not_measurable():
    fs = 20000.0
    x = stream(fs, 16.0, Side(), Side(), seed=4)
    r = measure(_cautery(x, fs, 6.0, 0.8), fs)
    L = r.sides["L"]
    assert L.present is True and close(L.wander_uV, 40.0) and abs(L.modulation_pct - 25.0) <= 2.5
    assert 85.0 <= L.coverage_pct < 95.0  # 0.8 s of cautery and a frame on either side
    r = measure(_cautery(x, fs, 4.0, 5.0), fs)
    for side in "LR":
        assert r.sides[side].present is None and r.sides[side].reason == REASONS["cautery"]
        assert r.sides[side].status == "not_measurable"


def test_stimulus_frames_are_blanked():
    fs = 20000.0
    x = stream(fs, 16.0, Side(), Side(), seed=8)
    # continuous vagal stimulation at 1 Hz: artifact and an 800 uV response in the stream
    t0 = 50.0
    m = BreathingMeter(Settings(), fs)
    y = x.copy()
    onsets = np.arange(0.3, 16.0, 1.0)
    tt = np.arange(int(0.03 * fs)) / fs
    cmap = 400.0 * np.sin(2 * np.pi * 100 * tt) * np.exp(-tt / 0.006) + 3000.0 * np.exp(-tt / 0.0003)
    for on in onsets:
        k = int(on * fs)
        y[:, k:k + tt.size] += cmap
        m.blank(t0 + on - 0.001, t0 + on + 0.05)
    r = measure(y, fs, meter=m, t0=t0)
    L = r.sides["L"]
    assert L.present is True and close(L.wander_uV, 40.0) and abs(L.modulation_pct - 25.0) <= 2.5
    assert L.coverage_pct == 100.0  # the stimulus samples are left out, the frames stay
    # the same stream without telling the meter: the responses pass for breathing
    r = measure(y, fs, t0=t0)
    assert abs(r.sides["L"].modulation_pct - 25.0) > 5.0 or r.sides["L"].present is not True
    # the probe at 4 Hz: still measured from the samples between the stimuli
    m = BreathingMeter(Settings(), fs)
    for on in np.arange(0.0, 16.0, 0.25):
        m.blank(t0 + on - 0.001, t0 + on + 0.05)
    L = measure(x, fs, meter=m, t0=t0).sides["L"]
    assert L.present is True and close(L.wander_uV, 40.0) and abs(L.modulation_pct - 25.0) <= 2.5
    # stimulation at 20 Hz leaves nothing between the stimulus windows: not measurable
    m = BreathingMeter(Settings(), fs)
    for on in np.arange(0.0, 16.0, 0.05):
        m.blank(t0 + on - 0.001, t0 + on + 0.05)
    r = measure(x, fs, meter=m, t0=t0)
    assert r.sides["L"].present is None and r.sides["L"].reason == REASONS["stimulation"]


def test_blank_after_the_frames_were_cut_still_counts():
    fs = 2000.0
    x = stream(fs, 16.0, Side(), Side(), seed=8)
    m = BreathingMeter(Settings(), fs)
    t0 = 10.0
    measure(x, fs, meter=m, t0=t0)
    for on in np.arange(0.0, 16.0, 0.25):  # stimulus epochs arrive after their stream blocks
        m.blank(t0 + on - 0.001, t0 + on + 0.05)
    assert m.evaluate(t0 + 0.5, t0 + 15.5).sides["L"].reason == REASONS["stimulation"]


def test_flat_channel_is_no_signal():
    fs = 20000.0
    x = stream(fs, 16.0, Side(), Side(), seed=1)
    x[1] = 0.0
    r = measure(x, fs)
    assert r.sides["L"].present is True
    assert r.sides["R"].present is None and r.sides["R"].reason == REASONS["no_signal"]


def test_gaps_in_the_stream():
    fs = 2000.0
    x = stream(fs, 20.0, Side(), Side(), seed=6)
    t0 = 0.0
    m = BreathingMeter(Settings(), fs)
    blk = 40
    for i in range(0, x.shape[1], blk):
        t = t0 + i / fs
        if 6.0 <= t < 7.0:
            continue  # 1 s lost: the rest still measures
        m.feed(x[:, i:i + blk], t)
    L = m.evaluate(0.5, 15.5).sides["L"]
    assert L.present is True and 85.0 <= L.coverage_pct <= 93.0 and close(L.wander_uV, 40.0)
    m = BreathingMeter(Settings(), fs)
    for i in range(0, x.shape[1], blk):
        t = t0 + i / fs
        if 4.0 <= t < 9.0:
            continue
        m.feed(x[:, i:i + blk], t)
    assert m.evaluate(0.5, 15.5).sides["L"].reason == REASONS["interrupted"]


def test_nothing_fed_is_no_stream():
    r = BreathingMeter(Settings(), 20000.0).evaluate(0.0, 15.0)
    assert all(s.present is None and s.reason == REASONS["no_stream"] for s in r.sides.values())
    assert r.rate_per_min is None


# ---------------------------------------------------------------------- streaming


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=40))
def test_block_sizes_do_not_change_the_result(cuts):
    fs = 2000.0
    x = stream(fs, 16.0, Side(), Side(wander_uV=5.0, modulation=0.05), seed=12)
    whole = measure(x, fs, block_s=100.0).to_json()
    m = BreathingMeter(Settings(), fs)
    i, k = 0, 0
    while i < x.shape[1]:
        n = cuts[k % len(cuts)]
        m.feed(x[:, i:i + n], 50.0 + i / fs)
        i += n
        k += 1
    got = m.evaluate(50.5, 50.5 + m.window_s).to_json()
    for side in "LR":
        for key, v in whole[side].items():
            if isinstance(v, float):
                assert got[side][key] == pytest.approx(v, abs=0.11), (side, key)
            else:
                assert got[side][key] == v


def test_memory_is_bounded():
    fs = 2000.0
    m = BreathingMeter(Settings(), fs)
    x = stream(fs, 20.0, Side(), Side(), seed=1)
    for rep in range(6):  # two minutes
        for i in range(0, x.shape[1], 400):
            m.feed(x[:, i:i + 400], rep * 20.0 + i / fs)
    assert len(m._frames) <= m._frames.maxlen == int(math.ceil((m.window_s + 10.0) / 0.1))
    assert m.ready(120.0 - 16.0) and not m.ready(120.0 - 10.0)
    assert m.evaluate().sides["L"].present is True  # the newest window


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="at least 100 Hz"):
        BreathingMeter(Settings(), 50.0)
    m = BreathingMeter(Settings(), 2000.0)
    with pytest.raises(ValueError, match=r"shape \(2, n\)"):
        m.feed(np.zeros((3, 10)), 0.0)
    m.feed(np.full((2, 400), np.nan), 0.0)  # NaN does not raise


def test_settings_are_checked_together():
    with pytest.raises(SettingError, match="tube.breathing_low_hz"):
        Settings({"tube.breathing_low_hz": 0.5, "tube.breathing_high_hz": 0.4})
    with pytest.raises(SettingError, match="tube.breathing_window_s"):
        Settings({"tube.breathing_window_s": 8.0, "tube.breathing_low_hz": 0.1})
    with pytest.raises(SettingError, match=r"tube.breathing_min_modulation_pct \(%\).*1-50 %"):
        Settings({"tube.breathing_min_modulation_pct": 80.0})


def test_words():
    x = stream(20000.0, 16.0, Side(), Side(wander_uV=0.0, modulation=0.0), seed=1)
    r = measure(x, 20000.0).to_json()
    assert side_text(r["L"]).startswith("present (wander 4") and "modulation 2" in side_text(r["L"])
    assert side_text(r["R"]).startswith("absent")
    assert side_text(measuring_json(["L"], 9.6, 15.0)["L"]) == "measuring (10 s)"
    assert side_text(not_measured_json(["R"], REASONS["cautery"])["R"]) == "not measurable: electrocautery"
    assert side_text(True) == "present" and side_text(False) == "absent" and side_text(None) == "not measured"
