"""The audible EMG: band, gain, block continuity, cautery muting and alarm ducking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from app.outputs.emg_audio import EmgAudio
from app.settings import Settings

FS = 20000
OUT = 48000


def sine(f, amp_uV, seconds=1.0, fs=FS):
    t = np.arange(int(seconds * fs)) / fs
    return amp_uV * np.sin(2 * np.pi * f * t)


def test_band_limited_white_noise():
    x = np.random.default_rng(1).normal(0, 50, FS * 2)
    y = EmgAudio().process(x, FS, 0.0)
    f, p = signal.welch(y, OUT, nperseg=4096)
    inband = p[(f > 200) & (f < 2500)].mean()
    assert 10 * np.log10(inband / p[f < 40].mean()) > 20
    assert 10 * np.log10(inband / p[f > 5000].mean()) > 40


def test_mains_hum_is_strongly_attenuated_against_emg_band():
    hum = EmgAudio().process(sine(50, 100), FS, 0.0)[OUT // 2 :]
    emg = EmgAudio().process(sine(500, 100), FS, 0.0)[OUT // 2 :]
    assert 20 * np.log10(np.abs(hum).max() / np.abs(emg).max()) < -20


def test_gain_maps_full_scale_microvolts_with_soft_limit():
    y = EmgAudio(full_scale_uV=500.0).process(sine(500, 100), FS, 0.0)[OUT // 2 :]
    assert np.abs(y).max() == pytest.approx(np.tanh(100 / 500), rel=0.05)
    loud = EmgAudio(full_scale_uV=500.0).process(sine(500, 50000, 0.5), FS, 0.0, cautery=False)
    assert np.abs(loud).max() <= 1.0


@pytest.mark.parametrize("fs", [20000, 10000, 5000])
def test_blocks_join_exactly_like_one_long_block(fs):
    x = np.random.default_rng(2).normal(0, 80, fs)
    whole = EmgAudio().process(x, fs, 0.0)
    e = EmgAudio()
    parts, i = [], 0
    for n in [fs // 50, 123, 977, 1, 400] * 40:
        if i >= len(x):
            break
        parts.append(e.process(x[i : i + n], fs, i / fs))
        i += n
    joined = np.concatenate(parts)
    assert abs(len(joined) - len(whole)) <= 1
    n = min(len(joined), len(whole))
    assert np.max(np.abs(joined[:n] - whole[:n])) < 1e-5
    # no drift: output count matches the rate ratio to within one input sample of delay
    assert len(whole) == pytest.approx(len(x) * OUT / fs, abs=OUT / fs + 1)


def test_channels_mix_or_pick():
    left, right = sine(500, 100), sine(500, 0)
    both = np.vstack([left, right])
    mix = EmgAudio(channel="mix").process(both, FS, 0.0)[OUT // 2 :]
    only_r = EmgAudio(channel="R").process(both, FS, 0.0)[OUT // 2 :]
    only_l = EmgAudio(channel="L").process(both, FS, 0.0)[OUT // 2 :]
    assert np.abs(only_r).max() < 1e-6
    assert np.abs(mix).max() == pytest.approx(np.tanh(50 / 500), rel=0.05)
    assert np.abs(only_l).max() == pytest.approx(np.tanh(100 / 500), rel=0.05)
    with pytest.raises(ValueError, match="shape"):
        EmgAudio().process(np.zeros((2, 2, 2)), FS, 0.0)
    with pytest.raises(ValueError, match="channel"):
        EmgAudio(channel="X")


def _blocks(e, x, t0=0.0, block=400, cautery=None):
    out = []
    for k in range(0, len(x), block):
        out.append(e.process(x[k : k + block], FS, t0 + k / FS, cautery))
    return np.concatenate(out)


def test_cautery_detected_mutes_with_holdoff_then_fades_back():
    s = Settings()
    e = EmgAudio(s, cautery_holdoff_s=0.5)
    quiet = sine(500, 100, 1.0)
    rng = np.random.default_rng(3)
    burst = rng.normal(0, 10 * s["analysis.cautery_rms_uV"], FS // 2)  # 0.5 s of cautery
    y1 = _blocks(e, quiet, 0.0)
    assert e.last_mute_reason is None and np.abs(y1[OUT // 2 :]).max() > 0.15
    y2 = _blocks(e, burst, 1.0)
    assert e.last_mute_reason == "cautery"
    # Only the fade (10 ms) of the first cautery block may leak, never the blast.
    assert np.abs(y2[int(0.011 * OUT) :]).max() == 0.0
    y3 = _blocks(e, quiet[: FS // 2], 1.5)  # 1.5-2.0 s: within the holdoff: still muted
    assert np.abs(y3).max() == 0.0
    y4 = _blocks(e, quiet, 2.0)  # after the holdoff: sound again, without a click
    assert np.abs(y4[OUT // 10 :]).max() > 0.15
    step = np.max(np.abs(np.diff(y4[: int(0.02 * OUT)])))
    assert step < 0.05


def test_cautery_flag_from_the_caller_mutes_even_a_quiet_block():
    e = EmgAudio(cautery_holdoff_s=0.2)
    y = _blocks(e, sine(500, 100, 0.5), 0.0, cautery=True)
    assert np.abs(y[int(0.011 * OUT) :]).max() == 0.0
    assert e.muted


def test_ducking_during_a_high_alarm_burst():
    e = EmgAudio()
    _blocks(e, sine(500, 100, 0.5), 0.0)
    e.mute_until(1.0)
    y = _blocks(e, sine(500, 100, 0.5), 0.5)
    assert e.last_mute_reason == "alarm"
    assert np.abs(y[int(0.011 * OUT) :]).max() == 0.0
    y = _blocks(e, sine(500, 100, 0.5), 1.0)
    assert np.abs(y[OUT // 10 :]).max() > 0.15


def test_disabled_by_setting():
    e = EmgAudio(Settings({"audio.emg_audio": False}))
    y = _blocks(e, sine(500, 100, 0.5), 0.0)
    assert np.abs(y).max() == 0.0 and e.last_mute_reason == "disabled"


def test_nan_input_is_silenced_not_propagated():
    x = sine(500, 100, 0.1)
    x[100:200] = np.nan
    y = EmgAudio().process(x, FS, 0.0)
    assert np.all(np.isfinite(y))
