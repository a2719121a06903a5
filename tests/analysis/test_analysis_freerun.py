"""Free-running EMG: spontaneous activity and cautery in synthetic streams with known episodes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analysis.freerun import EmgEvent, EmgEventKind, FreeRunDetector
from app.settings import Settings
from emg_synth import Episode, ResponseSpec, StimEvent, SyntheticSignal, add_episode, make_stream, mup

RATES = [20000.0, 10000.0, 5000.0, 2000.0]  # 5 and 2 kHz: a decimated stream


def run(x: np.ndarray, fs: float, block_s: float = 0.020, t0: float = 100.0, det=None) -> list[EmgEvent]:
    det = det or FreeRunDetector(Settings(), fs)
    blk = max(1, int(round(block_s * fs)))
    events: list[EmgEvent] = []
    for i in range(0, x.shape[1], blk):
        events += det.feed(x[:, i : i + blk], t0 + i / fs)
    return events + det.flush()


def episodes_of(events, kind=EmgEventKind.ACTIVITY):
    return [e for e in events if e.kind is kind]


def random_episodes(rng: np.random.Generator, duration_s: float) -> tuple[Episode, ...]:
    eps, t = [], 1.0
    while True:
        kind = str(rng.choice(["burst", "train"]))
        dur = float(rng.uniform(0.2, 0.8) if kind == "burst" else rng.uniform(1.0, 4.0))
        if t + dur > duration_s - 1.5:
            break
        eps.append(Episode(int(rng.integers(2)), t, dur, kind, float(rng.uniform(80, 400))))
        t += dur + float(rng.uniform(1.0, 3.0))
    return tuple(eps)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_known_episodes_are_found(fs, seed):
    rng = np.random.default_rng(seed)
    duration = 30.0
    eps = random_episodes(rng, duration)
    assert len(eps) >= 4
    x = make_stream(fs, duration, episodes=eps, noise_uV=float(rng.uniform(3, 10)), ecg_uV=100.0,
                    ecg_sharpness=float(rng.uniform(1, 2)), hum_uV=20.0, hum_hz=float(rng.choice([50.0, 60.0])),
                    wander_uV=300.0, seed=seed)
    t0 = 100.0
    events = run(x, fs, t0=t0)
    found = episodes_of(events)
    assert len(found) == len(eps), (eps, found)
    for ep, ev in zip(sorted(eps, key=lambda e: e.onset_s), sorted(found, key=lambda e: e.onset_s), strict=True):
        assert ev.channel == ("EMG L", "EMG R")[ep.channel]
        assert ev.onset_s == pytest.approx(t0 + ep.onset_s, abs=0.020), (ep, ev)
        assert ev.duration_s == pytest.approx(ep.duration_s, rel=0.15), (ep, ev)
        assert ev.pattern == ep.kind, (ep, ev)
        # (in a dense burst, overlapping potentials add up)
        assert 0.6 * ep.amplitude_uV <= ev.peak_uV <= (3.5 if ep.kind == "burst" else 1.6) * ep.amplitude_uV, (ep, ev)
        assert ev.potentials >= 4 and ev.rate_hz > 0
        assert ev.t_s >= ev.onset_s + ev.duration_s  # reported once over
    starts = episodes_of(events, EmgEventKind.ACTIVITY_START)
    assert len(starts) == len(found)
    for s, ev in zip(starts, found, strict=True):
        assert s.channel == ev.channel and s.onset_s == pytest.approx(ev.onset_s, abs=0.02)
        assert s.t_s - s.onset_s <= 0.5  # recognised while it goes on
        assert type(s.onset_s) is float and type(s.peak_uV) is float  # plain numbers, as the episode's
    assert not episodes_of(events, EmgEventKind.CAUTERY_START)


@pytest.mark.parametrize("fs", RATES)
def test_ecg_hum_and_wander_alone_make_no_episode(fs):
    for sharp, rate, hum_hz in ((1.0, 60.0, 50.0), (3.0, 150.0, 60.0), (2.0, 90.0, 50.0)):
        x = make_stream(fs, 30.0, noise_uV=5.0, ecg_uV=300.0, ecg_rate_bpm=rate, ecg_sharpness=sharp,
                        hum_uV=50.0, hum_hz=hum_hz, wander_uV=1000.0, seed=int(rate))
        events = run(x, fs)
        assert events == [], events[:3]


@pytest.mark.parametrize("fs", RATES)
def test_cautery_is_reported_and_never_irritation(fs):
    cautery = ((3.0, 2.0), (8.0, 0.6))
    x = make_stream(fs, 12.0, noise_uV=5.0, ecg_uV=100.0, hum_uV=20.0, cautery=cautery, cautery_uV=5000.0, seed=4)
    events = run(x, fs, t0=0.0)
    assert not episodes_of(events) and not episodes_of(events, EmgEventKind.ACTIVITY_START)
    starts = episodes_of(events, EmgEventKind.CAUTERY_START)
    ends = episodes_of(events, EmgEventKind.CAUTERY_END)
    assert len(starts) == len(ends) == 2
    for (onset, dur), s, e in zip(cautery, starts, ends, strict=True):
        assert s.onset_s == pytest.approx(onset, abs=0.02)
        assert s.t_s - onset <= 0.025  # audio can be muted at once
        assert e.onset_s == pytest.approx(onset, abs=0.02) and e.duration_s == pytest.approx(dur, abs=0.03)
        assert e.t_s == pytest.approx(onset + dur + 0.3, abs=0.03)  # after the hold time


def test_cautery_closes_an_episode_and_its_noise_is_not_counted():
    fs = 20000.0
    eps = (Episode(0, 1.0, 2.0, "train", 200.0),)
    x = make_stream(fs, 6.0, episodes=eps, noise_uV=5.0, cautery=((2.5, 1.5),), seed=5)
    det = FreeRunDetector(Settings(), fs)
    events = run(x, fs, t0=0.0, det=det)
    kinds = [e.kind for e in events]
    assert kinds == [EmgEventKind.ACTIVITY_START, EmgEventKind.CAUTERY_START, EmgEventKind.ACTIVITY,
                     EmgEventKind.CAUTERY_END] or kinds == [EmgEventKind.ACTIVITY_START, EmgEventKind.ACTIVITY,
                                                            EmgEventKind.CAUTERY_START, EmgEventKind.CAUTERY_END]
    act = episodes_of(events)[0]
    assert act.onset_s == pytest.approx(1.0, abs=0.02) and act.onset_s + act.duration_s <= 2.52


def test_low_level_continuous_noise_raises_the_floor_not_episodes():
    """Broadband noise well above the spike threshold but below cautery: no episodes."""
    fs = 10000.0
    x = make_stream(fs, 10.0, noise_uV=150.0, seed=6)
    assert episodes_of(run(x, fs)) == []


def test_live_state_and_thresholds_are_settings():
    fs = 10000.0
    eps = (Episode(1, 0.5, 3.0, "train", 60.0),)
    x = make_stream(fs, 4.0, episodes=eps, noise_uV=3.0, seed=7)
    det = FreeRunDetector(Settings(), fs)
    blk = int(0.02 * fs)
    seen_active = False
    for i in range(0, x.shape[1], blk):
        det.feed(x[:, i : i + blk], i / fs)
        seen_active |= det.active_channels == ["EMG R"]
    assert seen_active and det.noise_uV()["EMG L"] < 10.0
    deaf = FreeRunDetector(Settings({"emg.spike_threshold_uV": 200.0}), fs)
    assert episodes_of(run(x, fs, det=deaf)) == []


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 4000), min_size=1, max_size=40), seed=st.integers(0, 3))
def test_block_sizes_do_not_change_the_result(cuts, seed):
    fs = 5000.0
    eps = (Episode(0, 0.5, 0.4, "burst", 200.0), Episode(1, 1.5, 1.5, "train", 150.0))
    x = make_stream(fs, 4.0, episodes=eps, noise_uV=5.0, ecg_uV=50.0, cautery=((3.2, 0.3),), seed=seed)
    reference = run(x, fs, block_s=0.020, t0=0.0)
    det = FreeRunDetector(Settings(), fs)
    events: list[EmgEvent] = []
    i = 0
    for c in cuts * 100:
        if i >= x.shape[1]:
            break
        events += det.feed(x[:, i : i + c], i / fs)
        i += c
    events += det.feed(x[:, i:], i / fs) + det.flush()
    assert events == reference


def test_gap_in_the_stream_restarts_cleanly():
    fs = 10000.0
    eps = (Episode(0, 0.5, 2.0, "train", 200.0),)
    x = make_stream(fs, 3.0, episodes=eps, noise_uV=5.0, seed=8)
    det = FreeRunDetector(Settings(), fs)
    events = det.feed(x[:, :15000], 0.0)  # 1.5 s, in the middle of the train
    events += det.feed(x[:, 15000:], 60.0)  # the stream resumes a minute later
    act = episodes_of(events)
    assert act and act[0].onset_s == pytest.approx(0.5, abs=0.02) and act[0].t_s <= 1.5 + 1e-9


def test_bad_blocks_are_refused():
    det = FreeRunDetector(Settings(), 20000.0)
    with pytest.raises(ValueError, match=r"shape \(2, n\)"):
        det.feed(np.zeros((3, 100)), 0.0)
    assert det.feed(np.zeros((2, 0)), 0.0) == []
    one = FreeRunDetector(Settings(), 20000.0, channels=("EMG R",))
    assert one.feed(np.zeros(500), 0.0) == []
    with pytest.raises(ValueError, match="sample rate"):
        FreeRunDetector(Settings(), 0.0)
    x = np.full((2, 2000), np.nan)
    assert det.feed(x, 0.0) == []  # non-finite samples do not raise


def test_event_json():
    ev = EmgEvent(EmgEventKind.ACTIVITY, 12.3456789, "EMG L", 10.0, 2.0, 123.456, "train", 20, 9.5)
    assert ev.to_json() == {"kind": "activity", "t_s": 12.3457, "channel": "EMG L", "onset_s": 10.0, "duration_s": 2.0,
                            "peak_uV": 123.5, "pattern": "train", "potentials": 20, "rate_hz": 9.5}


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 900), min_size=1, max_size=30), seed=st.integers(0, 5))
def test_noise_floor_is_the_median_of_the_last_half_second_of_frames(cuts, seed):
    """The floor (computed a block at a time) is, after every block, exactly the median of
    the robust RMS of the last 50 whole 10 ms frames of the band-passed signal."""
    from scipy import signal as sps

    fs = 2000.0
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (2, 6000)) * np.linspace(2.0, 20.0, 6000)  # noise growing over 3 s
    det = FreeRunDetector(Settings(), fs)
    y = sps.sosfilt(det._sos, x, axis=1, zi=sps.sosfilt_zi(det._sos)[:, None, :] * x[None, :, 0:1])[0]
    frame = det.frame
    i = 0
    for c in cuts * 20:
        if i >= x.shape[1]:
            break
        det.feed(x[:, i : i + c], i / fs)
        i = min(i + c, x.shape[1])
        nf = i // frame
        got = det.noise_uV()
        if nf == 0:
            assert got == {"EMG L": None, "EMG R": None}
            continue
        frames = np.abs(y[:, : nf * frame]).reshape(2, nf, frame)[:, -50:]
        sigma = 1.4826 * np.median(frames, axis=2)
        want = np.median(sigma, axis=1)
        assert [got["EMG L"], got["EMG R"]] == pytest.approx(want.tolist(), rel=1e-12)


# ----------------------------------------------------------------------------- stimuli

EPOCH_ARRIVES_S = 0.06  # a stimulus is known once its epoch (50 ms window) has arrived
WAIT_S = 0.08


def stimulated_stream(fs, duration_s, rate_hz, episodes=(), seed=0):
    """Free-running EMG with stimuli on the left (artifact on both channels, a 600 uV
    response on the left) and optional spontaneous episodes; (samples, onsets)."""
    n = int(round(duration_s * fs))
    stims = [StimEvent(0.5 + k / rate_hz, 0, ResponseSpec(600.0, 6.0))
             for k in range(int((duration_s - 1.0) * rate_hz))]
    x = np.vstack([SyntheticSignal(fs, n, ch, stims, noise_uV=5.0, seed=seed)[0:n] for ch in (0, 1)])
    rng = np.random.default_rng(seed)
    for ep in episodes:
        add_episode(x, fs, ep, rng)
    return x, [st.t_s for st in stims]


def run_noted(x, fs, onsets, cuts=None, t0=0.0, upfront=False, wait=WAIT_S):
    """Feed in blocks (``cuts`` sample counts, repeated; default 20 ms), noting each stimulus
    as the engine learns of it: before the first block that ends after its epoch arrived
    (or all of them before the stream when ``upfront``)."""
    det = FreeRunDetector(Settings(), fs, stimulus_wait_s=wait)
    pending = list(onsets)
    if upfront:
        for t in pending:
            det.note_stimulus(t0 + t)
        pending = []
    cuts = cuts or [int(0.02 * fs)]
    events: list[EmgEvent] = []
    i, k = 0, 0
    while i < x.shape[1]:
        c = cuts[k % len(cuts)]
        k += 1
        end = min(i + c, x.shape[1])
        while pending and pending[0] + EPOCH_ARRIVES_S <= end / fs:
            det.note_stimulus(t0 + pending.pop(0))
        events += det.feed(x[:, i:end], t0 + i / fs)
        i = end
    return events + det.flush()


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("rate_hz", [4.0, 30.0])
def test_noted_stimuli_are_not_irritation(fs, rate_hz):
    x, onsets = stimulated_stream(fs, 6.0, rate_hz, seed=int(rate_hz))
    # the evoked responses and artifacts look like activity when the detector is not told
    assert episodes_of(run(x, fs, t0=50.0), EmgEventKind.ACTIVITY_START)
    events = run_noted(x, fs, onsets, t0=50.0)
    assert events == []


@pytest.mark.parametrize("fs", [20000.0, 2000.0])
def test_irritation_during_stimulation_is_still_found(fs):
    ep = Episode(1, 2.1, 2.5, "train", 150.0)  # first and last potentials between stimulus windows
    x, onsets = stimulated_stream(fs, 6.0, 4.0, episodes=(ep,), seed=3)
    events = run_noted(x, fs, onsets, t0=10.0)
    found = episodes_of(events)
    assert [e.channel for e in found] == ["EMG R"], events
    assert found[0].onset_s == pytest.approx(12.1, abs=0.02)
    assert found[0].duration_s == pytest.approx(2.5, rel=0.15)
    assert found[0].pattern == "train"
    assert not episodes_of(events, EmgEventKind.CAUTERY_START)


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=20), seed=st.integers(0, 2))
def test_block_sizes_and_note_timing_do_not_change_the_result_with_stimuli(cuts, seed):
    fs = 5000.0
    eps = (Episode(1, 1.2, 1.5, "train", 150.0), Episode(0, 3.3, 0.4, "burst", 250.0))
    x, onsets = stimulated_stream(fs, 4.5, 10.0, episodes=eps, seed=seed)
    reference = run_noted(x, fs, onsets)
    assert episodes_of(reference)  # the episodes are there, the responses are not
    assert run_noted(x, fs, onsets, cuts=cuts) == reference
    assert run_noted(x, fs, onsets, cuts=cuts, upfront=True) == reference


def test_stimulus_windows_leave_the_callers_samples_alone_and_bad_notes_are_refused():
    fs = 2000.0
    x, onsets = stimulated_stream(fs, 2.0, 10.0)
    before = x.copy()
    run_noted(x, fs, onsets, cuts=[700])
    assert np.array_equal(x, before)
    det = FreeRunDetector(Settings(), fs, stimulus_wait_s=WAIT_S)
    with pytest.raises(ValueError, match="stimulus time"):
        det.note_stimulus(float("nan"))
    with pytest.raises(ValueError, match="stimulus_wait_s"):
        FreeRunDetector(Settings(), fs, stimulus_wait_s=-1.0)
    det.note_stimulus(-5.0)  # before the stream: nothing to blank
    assert det.feed(x[:, :1000], 0.0) == [] and det.flush() == []


def test_a_note_after_its_window_was_analysed_changes_nothing():
    fs = 2000.0
    x, onsets = stimulated_stream(fs, 4.0, 4.0, seed=1)
    unnoted = run(x, fs, t0=0.0)
    det = FreeRunDetector(Settings(), fs)  # no wait
    events: list[EmgEvent] = []
    blk = int(0.02 * fs)
    pending = list(onsets)
    for i in range(0, x.shape[1], blk):
        while pending and pending[0] + 0.1 <= i / fs:
            det.note_stimulus(pending.pop(0))  # long after its window was analysed
        events += det.feed(x[:, i : i + blk], i / fs)
    assert events + det.flush() == unnoted


def near_the_levels(fs: float, duration_s: float, seed: int) -> np.ndarray:
    """Noise with potentials around the spike threshold (40 uV), some of them in trains,
    and bursts around the cautery level (2000 uV RMS), some out of range after them."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * fs))
    x = rng.normal(0.0, 1.0, (2, n)) * (6.0 + 4.0 * np.sin(np.arange(n) / fs * 2.0))
    half = int(0.004 * fs)
    kernel_t = np.arange(-half, half + 1) * 1000.0 / fs
    spikes = [(int(rng.integers(2)), t) for t in rng.uniform(0.1, duration_s - 0.1, 8)]
    for _ in range(3):  # trains: chains of potentials, some closed by cautery
        ch, t, rate = int(rng.integers(2)), float(rng.uniform(0.1, duration_s - 1.0)), float(rng.uniform(8, 30))
        spikes += [(ch, t + k / rate) for k in range(int(rng.integers(3, 12)))]
    for ch, t in spikes:
        c = int(round(t * fs))
        if half <= c < n - half - 1:
            x[ch, c - half : c + half + 1] += mup(kernel_t, float(rng.uniform(25.0, 90.0) * rng.choice([-1, 1])))
    for _ in range(3):
        lo = int(rng.uniform(0.2, duration_s - 0.5) * fs)
        hi = lo + int(rng.uniform(0.005, 0.4) * fs)
        x[:, lo:hi] += rng.normal(0.0, float(rng.uniform(1500.0, 3000.0)), (2, hi - lo))
        if rng.random() < 0.5:
            x[int(rng.integers(2)), hi : hi + int(rng.integers(1, 200))] = 1e5  # out of range
    return x


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 2500), min_size=1, max_size=20), every=st.integers(2, 15), seed=st.integers(0, 5))
def test_blocks_near_the_levels_and_floor_queries_do_not_change_the_result(cuts, every, seed):
    """Blocks under the spike threshold or the cautery level take shortcuts, and the noise
    floor is worked out only when needed: a stream around both levels gives the same
    events however it is cut, and the same floor whether it is asked for after every block
    or only now and then."""
    fs = 10000.0
    x = near_the_levels(fs, 5.0, seed)
    reference = run(x, fs, block_s=0.1, t0=3.0, det=FreeRunDetector(Settings(), fs, stimulus_wait_s=0.08))
    eager = FreeRunDetector(Settings(), fs, stimulus_wait_s=0.08)
    lazy = FreeRunDetector(Settings(), fs, stimulus_wait_s=0.08)
    events: list[EmgEvent] = []
    i, k = 0, 0
    while i < x.shape[1]:
        c = cuts[k % len(cuts)]
        events += lazy.feed(x[:, i : i + c], 3.0 + i / fs)
        eager.feed(x[:, i : i + c], 3.0 + i / fs)
        floor = eager.noise_uV()
        if k % every == every - 1:
            assert lazy.noise_uV() == floor
        i, k = i + c, k + 1
    assert events + lazy.flush() == reference
