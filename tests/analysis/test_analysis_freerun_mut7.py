"""Free-running EMG: how blocks are taken in, the filter without the compiled kernel, gaps,
the end of the stream and the cautery frames.

- Without the compiled sosfilt kernel (another scipy) the detector gives exactly the same
  events and noise floors as with it, block after block.
- Integer samples are taken as numbers of µV; a one-channel detector takes (1, n) blocks
  like 1-D ones; a 1-D block for two channels is refused, naming the channels and the shape.
- NaN samples count as 0 µV, +inf/-inf as +/- ``analysis.saturation_uV``.
- A block exactly 0.1 s off its expected time is not a gap; after a gap, times are those of
  the new blocks, and a stimulus noted for the new stream (through clock jitter) is still
  blanked there; a stimulus can be noted after a gap.
- At the end of the stream the samples held back for late stimulus notes are analysed.
- Cautery: an episode open when it starts is over at the end of its first frame; times
  follow the stream's start; it is over exactly ``emg.cautery_hold_ms`` after its last
  frame; a raw signal held at (or beyond) ``analysis.saturation_uV`` keeps it going.
- A potential exactly at the threshold counts in a block whose largest band-passed sample
  (either polarity) is that potential.

Streams at 8192 Hz: frames are 82 samples and times in 1/8192 s are exact in binary.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

import app.analysis.freerun as freerun
from app.analysis.freerun import EmgEvent, EmgEventKind, FreeRunDetector
from app.settings import Settings

FS = 8192.0
FRAME = 82
ONE = ("EMG L",)
TWO = ("EMG L", "EMG R")


def run(det: FreeRunDetector, x: np.ndarray, block: int | None = None, t0: float = 0.0) -> list[EmgEvent]:
    block = block or x.shape[1]
    events: list[EmgEvent] = []
    for s in range(0, x.shape[1], block):
        events += det.feed(x[:, s : s + block], t0 + s / FS)
    return events + det.flush()


def kinds(events: list[EmgEvent], kind: EmgEventKind) -> list[EmgEvent]:
    return [e for e in events if e.kind is kind]


def busy(n: int = 3 * 8192, seed: int = 7) -> np.ndarray:
    """Two channels of noise with bursts of potentials and a stretch of cautery."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 5.0, (2, n))
    for i in range(1000, 3000, 150):
        x[0, i] += 400.0
    for i in range(4000, 5500, 170):
        x[1, i] -= 350.0
    x[:, 6000:7000] += rng.normal(0.0, 12000.0, (2, 1000))
    return x


# ---------------------------------------------------------------- the filter without the kernel


def test_without_the_compiled_kernel_the_results_are_the_same(monkeypatch):
    x = busy()
    settings = Settings({"emg.min_potentials": 3})
    want = run(FreeRunDetector(settings, FS), x, block=1000)
    det = FreeRunDetector(settings, FS)
    want_noise = [det.feed(x[:, :5000], 0.0), det.noise_uV()]
    assert kinds(want, EmgEventKind.ACTIVITY) and kinds(want, EmgEventKind.CAUTERY_START)

    monkeypatch.setattr(freerun, "_SOSFILT", None)
    got = run(FreeRunDetector(settings, FS), x, block=1000)
    det = FreeRunDetector(settings, FS)
    got_noise = [det.feed(x[:, :5000], 0.0), det.noise_uV()]
    assert got == want
    assert got_noise == want_noise


# ---------------------------------------------------------------- taking blocks in


def test_integer_samples_are_microvolts_like_floats():
    x = busy(8192)
    ints = np.round(x).astype(np.int64)
    settings = Settings({"emg.min_potentials": 3})
    want = run(FreeRunDetector(settings, FS), ints.astype(np.float64), block=2048)
    got = run(FreeRunDetector(settings, FS), ints, block=2048)
    assert got == want
    assert kinds(got, EmgEventKind.ACTIVITY)


def test_a_one_channel_detector_takes_blocks_of_one_row_like_flat_ones():
    x = busy(8192)[:1]
    settings = Settings({"emg.min_potentials": 3})
    want = run(FreeRunDetector(settings, FS, channels=ONE), x[0][None, :], block=2048)
    det = FreeRunDetector(settings, FS, channels=ONE)
    got = [e for s in range(0, 8192, 2048) for e in det.feed(x[0, s : s + 2048], s / FS)] + det.flush()
    assert got == want
    assert kinds(got, EmgEventKind.ACTIVITY)


def test_a_flat_block_for_two_channels_is_refused_naming_them_and_its_shape():
    det = FreeRunDetector(Settings(), FS, channels=TWO)
    with pytest.raises(ValueError) as err:
        det.feed(np.zeros(100), 0.0)
    assert str(err.value) == "expected a block of shape (2, n) for EMG L, EMG R, got (100,)"


def test_nan_samples_count_as_zero():
    x = busy(8192)
    holes = x.copy()
    holes[:, 3000:3100] = np.nan
    x[:, 3000:3100] = 0.0
    settings = Settings({"emg.min_potentials": 3})
    a, b = FreeRunDetector(settings, FS), FreeRunDetector(settings, FS)
    assert a.feed(holes, 0.0) == b.feed(x, 0.0)
    assert a.noise_uV() == b.noise_uV()
    assert a.flush() == b.flush()


def test_infinite_samples_are_clipped_to_the_saturation_level_with_their_sign():
    x = busy(8192)
    inf = x.copy()
    inf[0, 2000], inf[0, 2001], inf[1, 2500] = np.inf, -np.inf, -np.inf
    settings = Settings({"emg.min_potentials": 3, "analysis.saturation_uV": 1000.0})
    sat = settings["analysis.saturation_uV"]  # low: the samples at 2000, 2001 are a potential, not cautery
    x[0, 2000], x[0, 2001], x[1, 2500] = sat, -sat, -sat
    a, b = FreeRunDetector(settings, FS), FreeRunDetector(settings, FS)
    assert a.feed(inf, 0.0) == b.feed(x, 0.0)
    assert a.noise_uV() == b.noise_uV()
    assert a.flush() == b.flush()


# ---------------------------------------------------------------- gaps


def test_a_block_exactly_a_tenth_of_a_second_late_is_not_a_gap():
    x = np.zeros((1, 8 * FRAME))
    x[0, [100, 300]] = 300.0
    det = FreeRunDetector(Settings({"emg.min_potentials": 2}), FS, channels=ONE)
    n = x.shape[1]
    (start,) = det.feed(x, -n / FS)  # the next sample is expected at 0.0 exactly
    assert start.kind is EmgEventKind.ACTIVITY_START
    assert det.feed(np.zeros((1, 10)), 0.1) == []  # a gap would have closed the episode
    assert det.active_channels == ["EMG L"]


def test_after_a_gap_times_are_those_of_the_new_blocks():
    det = FreeRunDetector(Settings({"emg.min_potentials": 2}), FS, channels=ONE)
    det.feed(np.zeros((1, 4 * FRAME)), 0.0)
    x = np.zeros((1, 40 * FRAME))
    x[0, [1000, 2000]] = 300.0
    events = det.feed(x, 10.0) + det.flush()
    (start,) = kinds(events, EmgEventKind.ACTIVITY_START)
    assert start.onset_s == 10.0 + 1001 / FS
    assert start.t_s == 10.0 + 25 * FRAME / FS  # potential at 2001, in the frame ending at 2050


def test_a_stimulus_noted_for_the_stream_after_a_gap_is_blanked_there():
    settings = Settings({"analysis.window_ms": 50.0})
    pulses = np.zeros((1, 8192))
    pulses[0, [150, 250, 350, 450]] = 500.0  # 4 potentials, 5.0 s + 8 ms to 5.0 s + 45 ms

    probe = FreeRunDetector(settings, FS, channels=ONE)
    assert kinds(run(probe, pulses, t0=4.99), EmgEventKind.ACTIVITY)  # not blanked: an episode

    det = FreeRunDetector(settings, FS, channels=ONE)
    det.feed(np.zeros((1, 8192)), 0.0)
    det.feed(np.zeros((1, 8192)), 1.05)  # 50 ms of clock jitter, not a gap
    det.note_stimulus(5.0)
    events = det.feed(pulses, 4.99)  # a gap: the new stream starts 10 ms before the stimulus
    events += det.flush()
    assert kinds(events, EmgEventKind.ACTIVITY) == []


def test_a_stimulus_can_be_noted_after_a_gap():
    det = FreeRunDetector(Settings(), FS, channels=ONE)
    det.feed(np.zeros((1, 4 * FRAME)), 0.0)
    det.feed(np.zeros((1, 4 * FRAME)), 10.0)
    pulses = np.zeros((1, 8192))
    pulses[0, [150, 250, 350, 450]] = 500.0
    det.note_stimulus(10.0 + 4 * FRAME / FS + 0.005)
    events = det.feed(pulses, 10.0 + 4 * FRAME / FS) + det.flush()
    assert kinds(events, EmgEventKind.ACTIVITY) == []


# ---------------------------------------------------------------- the end of the stream


def test_at_the_end_of_the_stream_the_samples_held_back_are_analysed():
    x = np.zeros((1, 8192))
    x[0, [7500, 7600, 7700, 7800]] = 300.0  # within the last 0.1 s
    det = FreeRunDetector(Settings(), FS, channels=ONE, stimulus_wait_s=0.1)
    assert det.feed(x, 0.0) == []
    (e,) = kinds(det.flush(), EmgEventKind.ACTIVITY)
    assert e.potentials == 4
    assert e.onset_s == 7501 / FS


# ---------------------------------------------------------------- cautery


def cautery_noise(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 20000.0, (1, n))


def test_an_episode_open_when_cautery_starts_is_over_at_the_end_of_its_first_frame():
    x = np.zeros((1, 40 * FRAME))
    x[0, [100, 300]] = 300.0
    x[:, 20 * FRAME : 30 * FRAME] = cautery_noise(10 * FRAME)
    det = FreeRunDetector(Settings({"emg.min_potentials": 2}), FS, channels=ONE)
    events = det.feed(x, 0.0)
    (act,) = kinds(events, EmgEventKind.ACTIVITY)
    (start,) = kinds(events, EmgEventKind.CAUTERY_START)
    assert act.t_s == start.t_s
    assert start.onset_s + FRAME / FS == start.t_s


def test_cautery_times_follow_the_start_of_the_stream():
    x = np.zeros((1, 40 * FRAME))
    x[:, 10 * FRAME : 20 * FRAME] = cautery_noise(10 * FRAME)
    det = FreeRunDetector(Settings(), FS, channels=ONE)
    (start,) = kinds(det.feed(x, 5.0), EmgEventKind.CAUTERY_START)
    assert start.onset_s == 5.0 + 10 * FRAME / FS
    assert start.t_s == 5.0 + 11 * FRAME / FS


def test_cautery_is_over_exactly_its_hold_time_after_its_last_frame():
    # hold 20.01953125 ms = 164 samples = 2 frames, exact in binary
    det = FreeRunDetector(Settings({"emg.cautery_hold_ms": 20.01953125}), FS, channels=ONE)
    x = np.zeros((1, 40 * FRAME))
    x[:, 10 * FRAME : 20 * FRAME] = cautery_noise(10 * FRAME)
    events = det.feed(x, 0.0)
    starts = kinds(events, EmgEventKind.CAUTERY_START)
    (end,) = kinds(events, EmgEventKind.CAUTERY_END)
    assert len(starts) == 1
    last = starts[0].onset_s + end.duration_s  # end of the last frame at cautery level
    assert end.t_s == last + 2 * FRAME / FS


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_raw_signal_held_at_the_saturation_level_keeps_cautery_going(sign):
    sat = Settings()["analysis.saturation_uV"]
    det = FreeRunDetector(Settings(), FS, channels=ONE)
    # the amplifier rails after cautery: the band-passed signal settles far below the cautery level
    first = np.concatenate([cautery_noise(10 * FRAME), np.full((1, 20 * FRAME), sign * sat)], axis=1)
    assert [e.kind for e in det.feed(first, 0.0)] == [EmgEventKind.CAUTERY_START]
    flat = np.full((1, 40 * FRAME), sign * sat)
    assert det.feed(flat, 30 * FRAME / FS) == []  # 0.4 s, longer than the hold time
    assert det.cautery_active
    (end,) = det.feed(np.zeros((1, 40 * FRAME)), 70 * FRAME / FS)
    assert end.kind is EmgEventKind.CAUTERY_END
    assert end.onset_s == 0.0
    assert end.duration_s >= 70 * FRAME / FS  # (the step back to 0 µV is cautery level too)


# ---------------------------------------------------------------- the threshold in a block of its own


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_potentials_exactly_at_the_threshold_count_when_they_are_the_blocks_largest_sample(sign):
    # isolated pulses of one size have the same band-passed peak (the filter has forgotten
    # the one before); with the threshold at that peak, the block's largest sample is it
    x = np.zeros((1, 8192))
    x[0, [1000, 3048, 5096]] = sign * 300.0
    settings = {"emg.min_potentials": 3, "emg.max_gap_ms": 500.0}
    (probe,) = kinds(run(FreeRunDetector(Settings(settings), FS, channels=ONE), x), EmgEventKind.ACTIVITY)
    det = FreeRunDetector(Settings({**settings, "emg.spike_threshold_uV": probe.peak_uV}), FS, channels=ONE)
    events = []
    for s in (0, 2048, 4096, 6144):
        events += det.feed(x[:, s : s + 2048], s / FS)
    (e,) = kinds(events + det.flush(), EmgEventKind.ACTIVITY)
    assert e.potentials == 3
    assert e.peak_uV == probe.peak_uV


# ---------------------------------------------------------------- the cautery level, exactly and in either polarity


def test_a_frame_whose_band_passed_rms_is_exactly_the_cautery_level_is_cautery():
    x = np.zeros((1, 12 * FRAME))
    x[:, FRAME : 11 * FRAME] = np.random.default_rng(5).normal(0.0, 3000.0, (1, 10 * FRAME))
    sos = FreeRunDetector(Settings(), FS, channels=ONE)._sos
    y = sps.sosfilt(sos, x, axis=1).reshape(1, 12, FRAME)  # as the detector filters it (from rest)
    level = float(np.sqrt(np.mean(y * y, axis=2)).max())
    det = FreeRunDetector(Settings({"analysis.cautery_rms_uV": level}), FS, channels=ONE)
    (start,) = det.feed(x, 0.0)
    assert start.kind is EmgEventKind.CAUTERY_START
    assert det.cautery_active


def test_a_band_passed_signal_at_cautery_level_in_one_polarity_only_is_cautery():
    # the raw signal whose band-passed version is 0 for a frame, then -5000 µV for a frame
    # (the inverse of the band-pass, from rest): the largest band-passed sample is 0
    det = FreeRunDetector(Settings(), FS, channels=ONE)
    b, a = sps.sos2tf(det._sos)
    want = np.zeros(2 * FRAME)
    want[FRAME:] = -5000.0
    x = sps.lfilter(a, b, want)[None, :]
    assert sps.sosfilt(det._sos, x, axis=1).max() < 1.0
    (start,) = det.feed(x, 0.0)
    assert start.kind is EmgEventKind.CAUTERY_START
    assert start.onset_s == FRAME / FS
