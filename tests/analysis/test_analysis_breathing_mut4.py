"""Breathing variation: how the meter is built and how it takes its blocks.

- The default rate (20 kHz), the shipped settings when none are given, the lowest rate
  (100 Hz) and the high-pass capped at a quarter of the rate; the errors for no side and
  for a block of the wrong shape name what was expected.
- ``keep_s`` bounds the frames kept, down to a single frame; at most 256 stimulus windows
  wait for their frames (the oldest is forgotten).
- A single-side meter takes 1-D blocks and (1, n) blocks alike; a block of nested lists
  is read as numbers (None, like NaN, is 0 µV); NaN is 0 µV and +-inf is +-saturation.
- Frames are cut ``LAG_S`` after their samples arrived (a frame whose end is exactly
  ``LAG_S`` behind the newest sample is cut; one sample less and it waits), so a stimulus
  window told within the lag leaves out only its own samples.
- A jump of exactly ``_GAP_S`` in block times is not a gap; a larger one is.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.breathing import LAG_S, BreathingMeter
from app.settings import Settings, load

FS = 1000.0  # 100-sample frames


def feed(m: BreathingMeter, x: np.ndarray, t0: float, block: int = 100) -> None:
    for i in range(0, x.shape[-1], block):
        m.feed(x[..., i:i + block], t0 + i / m.fs)


def noise(dur_s: float, seed: int, fs: float = FS, sides: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 5.0, (sides, int(round(dur_s * fs))))


def breathing(dur_s: float, seed: int, fs: float = FS) -> np.ndarray:
    """Both sides: noise modulated by 25 % at 0.25 Hz plus a 20 µV swing."""
    t = np.arange(int(round(dur_s * fs))) / fs
    b = np.sin(2 * np.pi * 0.25 * t + 1.0)
    x = noise(dur_s, seed, fs)
    return x * (1.0 + 0.25 * b) + 20.0 * b


# ---------------------------------------------------------------------- construction


def test_the_default_rate_is_20_khz_with_frames_of_exactly_100_ms():
    m = BreathingMeter(Settings())
    assert m.fs == 20000.0 and m.frame == 2000 and m.frame_s == 0.1
    m.feed(np.zeros((2, 20000)), 5.0)
    m.flush()
    assert m.first_frame_t == pytest.approx(5.1, abs=1e-12)  # the first frame is the comb's reference
    assert m.covered_until == pytest.approx(6.0, abs=1e-12)


def test_without_settings_the_shipped_configuration_is_used():
    shipped = load()
    m = BreathingMeter(sample_rate_hz=FS)
    assert m.window_s == float(shipped["tube.breathing_window_s"])
    assert m.saturation_uV == float(shipped["analysis.saturation_uV"])
    assert m.highpass_hz == float(shipped["emg.highpass_hz"])


def test_100_hz_is_the_lowest_rate_accepted():
    m = BreathingMeter(Settings(), 100.0)
    assert m.frame == 10
    with pytest.raises(ValueError, match=r"at least 100 Hz"):
        BreathingMeter(Settings(), 99.9)


def test_a_meter_without_sides_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"^at least one side is needed$"):
        BreathingMeter(Settings(), FS, sides=())


def test_the_high_pass_is_capped_at_a_quarter_of_the_rate():
    """At 200 Hz the 100 Hz high-pass would sit at the Nyquist frequency: it is taken at 50 Hz."""
    m = BreathingMeter(Settings(), 200.0)
    assert m.highpass_hz == 50.0
    feed(m, breathing(20.0, seed=7, fs=200.0), 0.0, block=20)
    r = m.evaluate(1.0, 1.0 + m.window_s)
    assert r.sides["L"].status == "measured" and r.sides["L"].coverage_pct == 100.0


def test_keep_s_bounds_the_frames_kept():
    m = BreathingMeter(Settings(), FS, keep_s=1.0)
    feed(m, noise(3.0, seed=1), 20.0)
    m.flush()
    assert m.covered_until == pytest.approx(23.0, abs=1e-9)
    assert m.first_frame_t == pytest.approx(22.0, abs=1e-9)  # 10 frames of 100 ms


def test_keep_s_below_one_frame_keeps_the_newest_frame_only():
    m = BreathingMeter(Settings(), FS, keep_s=0.05)
    feed(m, noise(1.0, seed=2), 20.0)
    m.flush()
    assert m.covered_until == pytest.approx(21.0, abs=1e-9)
    assert m.first_frame_t == pytest.approx(20.9, abs=1e-9)


def test_at_most_256_stimulus_windows_wait_for_their_frames():
    """A window over a whole frame leaves it (and its comb partner) out, but not when 256
    newer windows were told before that frame was cut: the oldest is forgotten."""
    def coverage(n_later: int) -> float:
        m = BreathingMeter(Settings(), FS)
        m.blank(10.4, 10.5)
        for i in range(n_later):
            m.blank(30.0 + 0.01 * i, 30.0 + 0.01 * i + 0.001)
        feed(m, noise(2.0, seed=3), 10.0)
        m.flush()
        return m.evaluate(10.1, 12.0).sides["L"].coverage_pct

    assert coverage(0) == pytest.approx(100.0 * 17 / 19)
    assert coverage(255) == pytest.approx(100.0 * 17 / 19)
    assert coverage(256) == 100.0


# ---------------------------------------------------------------------- the blocks


def test_a_single_side_meter_takes_flat_and_two_dimensional_blocks_alike():
    x = breathing(20.0, seed=4)[:1]
    flat = BreathingMeter(Settings(), FS, sides=("L",))
    feed(flat, x[0], 0.0)
    rows = BreathingMeter(Settings(), FS, sides=("L",))
    feed(rows, x, 0.0)
    a, b = flat.evaluate(1.0, 16.0), rows.evaluate(1.0, 16.0)
    assert a.sides["L"].status == "measured" and a.sides["L"].coverage_pct == 100.0
    assert a == b


def test_a_block_of_the_wrong_shape_names_the_shape_and_the_sides():
    m = BreathingMeter(Settings(), FS)
    with pytest.raises(ValueError, match=r"^expected a block of shape \(2, n\) for sides L, R, got \(3, 100\)$"):
        m.feed(np.zeros((3, 100)), 0.0)
    with pytest.raises(ValueError, match=r"for sides L, R, got \(100,\)$"):
        m.feed(np.zeros(100), 0.0)


def test_a_block_of_nested_lists_is_read_as_numbers_with_none_as_zero():
    x = noise(2.0, seed=5)
    y = x.copy()
    y[0, 150] = 0.0
    y[1, 1234] = 0.0
    listed = x.tolist()
    listed[0][150] = None
    listed[1][1234] = None
    a = BreathingMeter(Settings(), FS)
    for i in range(0, 2000, 100):
        a.feed([row[i:i + 100] for row in listed], 3.0 + i / FS)
    b = BreathingMeter(Settings(), FS)
    feed(b, y, 3.0)
    a.flush()
    b.flush()
    assert a.evaluate(3.1, 5.0) == b.evaluate(3.1, 5.0)
    assert a.evaluate(3.1, 5.0).sides["R"].coverage_pct == 100.0


def test_nan_samples_are_zero_microvolts():
    """Every 7th sample lost (NaN): measured as if those samples were 0 µV."""
    x = breathing(20.0, seed=6)
    lost = np.zeros(x.shape, dtype=bool)
    lost[:, ::7] = True
    a = BreathingMeter(Settings(), FS)
    feed(a, np.where(lost, np.nan, x), 0.0)
    b = BreathingMeter(Settings(), FS)
    feed(b, np.where(lost, 0.0, x), 0.0)
    ra, rb = a.evaluate(1.0, 16.0), b.evaluate(1.0, 16.0)
    assert ra.sides["L"].status == "measured" and ra.sides["L"].coverage_pct == 100.0
    assert ra == rb


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_infinite_sample_is_the_saturation_value_of_its_sign(sign):
    """An infinite sample inside a stimulus window (so that its frame stays valid) gives
    exactly what the saturation value of the same sign gives there, and the frames after it
    are measured again: the filter is not left overflowed."""
    x = breathing(20.0, seed=8)
    results = []
    for value in (sign * np.inf, sign * Settings()["analysis.saturation_uV"]):
        y = x.copy()
        y[0, 1234] = value
        m = BreathingMeter(Settings(), FS)
        m.blank(1.233, 1.254)
        feed(m, y, 0.0)
        m.flush()
        results.append(m.evaluate(0.5, 15.5))
        after = m.evaluate(2.0, 17.0)
        assert after.sides["L"].status == "measured" and after.sides["L"].coverage_pct == 100.0
    assert results[0] == results[1]
    assert results[0].sides["L"].status == "measured"
    assert results[0].sides["L"].coverage_pct == 100.0


def test_the_sign_of_a_saturated_sample_matters_to_the_envelope():
    """Guard for the test above: +saturation and -saturation at that sample differ."""
    x = breathing(20.0, seed=8)
    out = []
    for value in (np.inf, -np.inf):
        y = x.copy()
        y[0, 1234] = value
        m = BreathingMeter(Settings(), FS)
        m.blank(1.233, 1.254)
        feed(m, y, 0.0)
        out.append(m.evaluate(0.5, 15.5).sides["L"].background_uV)
    assert out[0] != out[1]


# ---------------------------------------------------------------------- when frames are cut


def test_frames_are_cut_a_lag_after_their_samples_arrived():
    m = BreathingMeter(Settings(), FS)
    feed(m, noise(1.0, seed=9), 10.0)
    # newest sample at 11.0: frames ending by 11.0 - LAG_S = 10.75 are cut, the first as reference
    assert m.covered_until == pytest.approx(10.7, abs=1e-9)
    assert m.first_frame_t == pytest.approx(10.1, abs=1e-9)
    # a stimulus window told now inside a frame not yet cut leaves out only its samples
    m.blank(10.78, 10.785)
    m.flush()
    r = m.evaluate(10.1, 11.0)
    assert r.sides["L"].coverage_pct == 100.0


def test_a_stimulus_window_over_a_frame_already_cut_leaves_it_out():
    """The contrast to the test above: the same window told after the frame was cut."""
    m = BreathingMeter(Settings(), FS)
    feed(m, noise(1.2, seed=9), 10.0)
    m.blank(10.78, 10.785)
    m.flush()
    assert m.evaluate(10.1, 11.0).sides["L"].coverage_pct == pytest.approx(100.0 * 7 / 9)


def test_a_frame_whose_end_is_exactly_the_lag_behind_is_cut():
    assert 0.45 - LAG_S == 0.1 + 0.1  # the boundary is exact in floating point here
    m = BreathingMeter(Settings(), FS)
    m.feed(noise(0.45, seed=10), 0.0)
    assert m.covered_until == pytest.approx(0.2, abs=1e-12)


def test_the_second_frame_waits_for_its_last_sample_plus_the_lag():
    """At 102 Hz a frame is 10 samples and the lag 25.5 samples: the second frame (samples
    10-19) is cut with the 46th sample, not with the 45th."""
    m = BreathingMeter(Settings(), 102.0)
    assert m.frame == 10
    x = noise(1.0, seed=11, fs=102.0)
    m.feed(x[:, :45], 0.0)
    assert m.covered_until is None
    m.feed(x[:, 45:46], 45 / 102.0)
    assert m.covered_until == pytest.approx(20 / 102.0, abs=1e-12)


def test_a_jump_of_exactly_the_gap_limit_is_not_a_gap():
    """Block times jump by exactly 0.1 s: the stream continues by its sample count."""
    x = noise(1.0, seed=12)
    assert abs(0.2 - (0.0 + 100 / FS)) == 0.1
    m = BreathingMeter(Settings(), FS)
    m.feed(x[:, :100], 0.0)
    m.feed(x[:, 100:], 0.2)
    m.flush()
    assert m.first_frame_t == pytest.approx(0.1, abs=1e-12)
    assert m.covered_until == pytest.approx(1.0, abs=1e-12)


def test_a_jump_just_over_the_gap_limit_starts_a_new_segment():
    x = noise(1.0, seed=12)
    m = BreathingMeter(Settings(), FS)
    m.feed(x[:, :100], 0.0)
    m.feed(x[:, 100:], 0.2 + 1e-9)
    m.flush()
    assert m.first_frame_t == pytest.approx(0.3, abs=1e-6)  # the new segment's first frame is its reference
    assert m.covered_until == pytest.approx(1.1, abs=1e-6)
