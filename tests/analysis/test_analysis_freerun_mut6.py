"""Free-running EMG: what the detector is built with and where its edges lie.

- Built with nothing, it uses the shipped settings at 20 kHz; any positive rate is accepted
  (even below 1 Hz); no channel at all is refused with a clear message.
- The band-pass: a 4th-order high-pass, a 2nd-order low-pass; at a low stream rate the
  high-pass corner is capped at half the (capped) low-pass corner.
- Frames are 10 ms rounded to whole samples; the 4 ms refractory period too (at least one
  sample); ``emg.cautery_hold_ms`` and the stimulus window (``analysis.window_ms``) are
  milliseconds.
- A frame whose band-passed samples all sit exactly at the cautery level is cautery.
- A potential exactly at ``emg.spike_threshold_uV`` counts.
- An episode is over once the gap after its last potential is longer than
  ``emg.max_gap_ms`` (a gap of exactly that long is not yet over), whether or not another
  channel has a potential in that frame; the events of the frame before are kept, and the
  episode's end is reported at the end of that frame.

Most streams are single-sample pulses at 8192 Hz on otherwise silent channels: a pulse's
band-passed peak is the sample after it, frames are 82 samples, and times in 1/8192 s are
exact in binary floating point.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis.freerun import EmgEvent, EmgEventKind, FreeRunDetector
from app.settings import Settings, load

FS = 8192.0
FRAME = 82  # round(10 ms * 8192 Hz)
ONE = ("EMG L",)
TWO = ("EMG L", "EMG R")


def pulses(n: int, at: dict[int, list[int]], size: float = 300.0, channels: int = 1) -> np.ndarray:
    x = np.zeros((channels, n))
    for ch, idx in at.items():
        x[ch, idx] = size
    return x


def run(det: FreeRunDetector, x: np.ndarray, block: int | None = None, fs: float = FS) -> list[EmgEvent]:
    block = block or x.shape[1]
    events: list[EmgEvent] = []
    for s in range(0, x.shape[1], block):
        events += det.feed(x[:, s:s + block], s / fs)
    return events + det.flush()


def kinds(events: list[EmgEvent], kind: EmgEventKind) -> list[EmgEvent]:
    return [e for e in events if e.kind is kind]


# ---------------------------------------------------------------- construction


def test_built_with_nothing_it_uses_the_shipped_settings_at_20_khz():
    x = np.zeros((2, 20000))
    x[0, [1000, 3000]] = 300.0
    got = run(FreeRunDetector(), x, fs=20000.0)
    want = run(FreeRunDetector(load(), 20000.0), x, fs=20000.0)
    assert got == want
    assert kinds(got, EmgEventKind.ACTIVITY_START) == []  # shipped: 4 potentials make an episode
    det = FreeRunDetector(Settings({"emg.min_potentials": 2}))
    (start,) = kinds(run(det, x, fs=20000.0), EmgEventKind.ACTIVITY_START)
    # frames of 200 samples at 20 kHz: the second potential completes the episode in the frame ending at 3200
    assert start.t_s == pytest.approx(3200 / 20000.0, rel=1e-12)


def test_a_rate_below_one_hertz_is_still_a_rate():
    det = FreeRunDetector(Settings(), 0.5, channels=ONE)  # frames of 8 samples (16 s)
    assert det.feed(np.zeros((1, 16)), 0.0) == []
    assert det.noise_uV() == {"EMG L": 0.0}


@pytest.mark.parametrize("channels", [(), []])
def test_no_channel_at_all_is_refused_with_a_clear_message(channels):
    with pytest.raises(ValueError, match=r"^at least one channel is needed$"):
        FreeRunDetector(Settings(), FS, channels=channels)


def test_at_a_low_rate_the_high_pass_corner_is_half_the_capped_low_pass_corner():
    # 1 kHz: the low-pass is capped at 450 Hz, so a 500 Hz high-pass (at Nyquist) becomes 225 Hz
    fs = 1000.0
    det = FreeRunDetector(Settings({"emg.highpass_hz": 500.0}), fs, channels=ONE)
    n = np.arange(2000)
    x = 20.0 * np.sin(2 * np.pi * 300.0 * n / fs)[None, :]  # inside 225-450 Hz
    det.feed(x, 0.0)
    floor = det.noise_uV()["EMG L"]
    assert floor is not None and floor > 0.5 * 20.0 * 1.4826 * np.sin(np.pi / 4)


def _butterworth(f: float, corner: float, order: int, fs: float, high: bool) -> float:
    """|H| of a digital Butterworth filter (bilinear transform, corner prewarped)."""
    r = np.tan(np.pi * f / fs) / np.tan(np.pi * corner / fs)
    if high:
        r = 1.0 / r
    return float(1.0 / np.sqrt(1.0 + r ** (2 * order)))


@pytest.mark.parametrize(("freq", "expect"), [
    (50.0, lambda: _butterworth(50.0, 100.0, 4, 20000.0, True) * _butterworth(50.0, 2000.0, 2, 20000.0, False)),
    (4000.0, lambda: _butterworth(4000.0, 100.0, 4, 20000.0, True) * _butterworth(4000.0, 2000.0, 2, 20000.0, False)),
])
def test_the_band_pass_is_a_4th_order_high_pass_and_a_2nd_order_low_pass(freq, expect):
    # a sine's robust RMS (1.4826 x median |y|) is about 1.4826 sin(pi/4) x its amplitude (a few % off
    # with few samples per period); one order more or less would halve or double it
    fs, amp = 20000.0, 200.0
    det = FreeRunDetector(Settings(), fs, channels=ONE)
    n = np.arange(int(fs))
    det.feed(amp * np.sin(2 * np.pi * freq * n / fs)[None, :], 0.0)
    floor = det.noise_uV()["EMG L"]
    want = 1.4826 * np.sin(np.pi / 4) * amp * expect()
    assert floor == pytest.approx(want, rel=0.25)


def test_frames_are_10_ms_rounded_to_whole_samples():
    fs = 100000.0  # 1000 samples
    det = FreeRunDetector(Settings(), fs, channels=ONE)
    x = np.random.default_rng(1).normal(0.0, 30000.0, (1, 3000))  # broadband, far above the cautery level
    (start,) = kinds(det.feed(x, 0.0), EmgEventKind.CAUTERY_START)
    assert start.onset_s == 0.0
    assert start.t_s == pytest.approx(0.01, rel=1e-12)


def test_at_250_hz_the_refractory_period_is_one_sample_and_peaks_two_samples_apart_are_two_potentials():
    # 20 Hz-112.5 Hz band at 250 Hz: a pulse's band-passed response is 0.41, -0.36, -0.53 x its size:
    # over a 38 uV threshold at the pulse and two samples (8 ms, more than 4 ms) later
    fs = 250.0
    det = FreeRunDetector(Settings({"emg.highpass_hz": 20.0, "emg.spike_threshold_uV": 38.0,
                                    "emg.min_potentials": 2}), fs, channels=ONE)
    x = pulses(500, {0: [81]}, size=100.0)  # both samples in the frame 80-87
    (e,) = kinds(run(det, x, fs=fs), EmgEventKind.ACTIVITY)
    assert e.potentials == 2
    assert e.onset_s == 81 / fs and e.duration_s == pytest.approx(2 / fs)


def test_the_refractory_period_rounds_4_ms_to_whole_samples():
    # 2627.5 Hz: 4 ms is 10.51 samples, 11; two pulses 11 samples apart are one potential
    fs = 2627.5
    det = FreeRunDetector(Settings({"emg.highpass_hz": 20.0, "emg.spike_threshold_uV": 50.0,
                                    "emg.min_potentials": 2}), fs, channels=ONE)
    x = np.zeros((1, 5000))
    for b in (26 * 20 + 2, 26 * 30 + 2):  # both pulses of a pair in one 26-sample frame
        x[0, [b, b + 11]] = 100.0
    (e,) = kinds(run(det, x, fs=fs), EmgEventKind.ACTIVITY)
    assert e.potentials == 2
    assert e.duration_s == pytest.approx(260 / fs)


def test_a_frame_whose_samples_all_sit_exactly_at_the_cautery_level_is_cautery():
    # a sine at a quarter of the rate, phased so the band-passed samples are +-A (all the same size)
    fs, a_uV = 4000.0, 2500.0
    changes = {"analysis.cautery_rms_uV": a_uV * (1.0 - 1e-10)}
    det = FreeRunDetector(Settings(changes), fs, channels=ONE)
    _, h = sps.sosfreqz(det._sos, worN=[fs / 4], fs=fs)
    b = a_uV * np.sqrt(2.0) / abs(h[0])
    four = b * np.cos(np.pi / 2 * np.arange(4) + np.pi / 4 - np.angle(h[0]))
    x = np.tile(four, 1500)[None, :]  # 1.5 s
    events: list[EmgEvent] = []
    for s in range(0, x.shape[1], 400):
        events += det.feed(x[:, s:s + 400], s / fs)
    assert [e.kind for e in events] == [EmgEventKind.CAUTERY_START]
    assert det.cautery_active


def test_cautery_ends_after_the_hold_time_in_milliseconds():
    # frames of 82/8192 s = 10.0098 ms: ten frames are 100.098 ms, less than a 100.15 ms hold
    det = FreeRunDetector(Settings({"emg.cautery_hold_ms": 100.15}), FS, channels=ONE)
    x = np.zeros((1, 40 * FRAME))
    x[0, 5 * FRAME:10 * FRAME] = np.random.default_rng(2).normal(0.0, 20000.0, 5 * FRAME)
    events = run(det, x, block=FRAME)
    (start,) = kinds(events, EmgEventKind.CAUTERY_START)
    (end,) = kinds(events, EmgEventKind.CAUTERY_END)
    last = end.onset_s + end.duration_s  # end of the last frame at cautery level
    assert round((end.t_s - last) * FS) == 11 * FRAME


def test_the_stimulus_window_ends_at_its_length_in_milliseconds_rounded_up_to_a_sample():
    # stimulus at sample 4096.5: the 50 ms window ends at ceil(4096.5 + 409.6) = 4507, so
    # sample 4506 is blanked and 4507 is not
    def stream(offset: int) -> list[EmgEvent]:
        det = FreeRunDetector(Settings({"emg.min_potentials": 2}), FS, channels=ONE)
        at = []
        for k in range(2):
            base = 1024 * k  # 0.125 s apart
            det.note_stimulus((4096.5 + base) / FS)
            at.append(4506 + base + offset)
        return kinds(run(det, pulses(8192, {0: at})), EmgEventKind.ACTIVITY)

    assert stream(0) == []
    (e,) = stream(1)
    assert e.potentials == 2


# ---------------------------------------------------------------- thresholds and gaps


def test_a_potential_exactly_at_the_threshold_counts():
    x = pulses(8192, {0: [1000]}, size=300.0)
    x[0, 3000] = 250.0  # smaller: the episode's peak is the first one's
    det = FreeRunDetector(Settings({"emg.min_potentials": 2}), FS, channels=ONE)
    (probe,) = kinds(run(det, x), EmgEventKind.ACTIVITY)
    first = probe.peak_uV  # the band-passed peak of the first pulse (from a silent start)
    x[0, 3000] = 0.0
    x[0, [3000, 4000]] = 600.0
    det = FreeRunDetector(Settings({"emg.min_potentials": 3, "emg.spike_threshold_uV": first}), FS, channels=ONE)
    (e,) = kinds(run(det, x), EmgEventKind.ACTIVITY)
    assert e.potentials == 3
    assert e.onset_s == 1001 / FS


def test_the_episode_start_is_reported_at_the_end_of_the_frame_of_its_last_potential():
    det = FreeRunDetector(Settings({"emg.min_potentials": 2}), FS, channels=ONE)
    events = run(det, pulses(8192, {0: [1000, 3000]}))
    (start,) = kinds(events, EmgEventKind.ACTIVITY_START)
    assert start.onset_s == 1001 / FS
    assert start.t_s == 3034 / FS  # potential at 3001, in the frame 2952-3033


def test_a_gap_of_exactly_max_gap_does_not_end_the_episode_yet():
    # max gap 125 ms = 1024 samples; last potential at 2256: the frame ending at 3280 is exactly
    # 1024 later (not over), the one ending at 3362 is over
    det = FreeRunDetector(Settings({"emg.min_potentials": 2, "emg.max_gap_ms": 125.0}), FS, channels=ONE)
    events = run(det, pulses(8192, {0: [1755, 2255]}))
    (end,) = kinds(events, EmgEventKind.ACTIVITY)
    assert end.t_s == 3362 / FS
    assert end.onset_s == 1756 / FS and end.potentials == 2


def test_the_episode_on_one_channel_ends_in_a_frame_where_the_other_has_a_potential():
    # as above on EMG L; EMG R has potentials in the frame ending at 3280 (gap exactly max: not over)
    # and in the frame ending at 3362 (over): EMG L's episode ends there, its start is kept
    det = FreeRunDetector(Settings({"emg.min_potentials": 2, "emg.max_gap_ms": 125.0}), FS, channels=TWO)
    x = pulses(8192, {0: [1755, 2255], 1: [3220, 3320]}, channels=2)
    events = run(det, x)  # one block: the whole stream is one run of frames
    left = [e for e in events if e.channel == "EMG L"]
    assert [e.kind for e in left] == [EmgEventKind.ACTIVITY_START, EmgEventKind.ACTIVITY]
    assert left[0].t_s == 2296 / FS
    assert left[1].t_s == 3362 / FS
    assert left[1].onset_s == 1756 / FS and left[1].duration_s == 500 / FS
    right = [e for e in events if e.channel == "EMG R"]
    assert [e.kind for e in right] == [EmgEventKind.ACTIVITY_START, EmgEventKind.ACTIVITY]
    assert right[0].t_s == 3362 / FS and right[0].onset_s == 3221 / FS
