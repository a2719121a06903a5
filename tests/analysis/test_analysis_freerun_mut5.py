"""Free-running EMG: what an activity event reports of its episode, and how much of the
stream the detector holds on to.

- ``rate_hz`` is (potentials - 1) / duration; ``pattern`` is "train" when the intervals'
  variation (SD / mean) is at most ``emg.train_cv`` (at it included), else "burst"; a chain
  with a single interval has no variation to measure and counts as 1.0 (a burst unless the
  limit is 1.0).
- The noise floor needs the newest 50 ordinary frames only: a quiet stream fed block after
  block holds a bounded amount of memory, and an old block is let go as soon as 50 newer
  ordinary frames have come.

The potentials are single-sample pulses on an otherwise silent channel at 8192 Hz: every
pulse gives the same band-passed shape, so the detected potentials are exactly as far apart
as the pulses, and times in 1/8192 s are exact in binary floating point (the variations
and rates below are exact).
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from app.analysis.freerun import EmgEvent, EmgEventKind, FreeRunDetector
from app.settings import Settings

FS = 8192.0
BLOCK = 512


def episodes(pulses: list[int], changes: dict[str, float]) -> list[EmgEvent]:
    """The activity events of one silent channel with 300 µV pulses at the sample indices ``pulses``."""
    det = FreeRunDetector(Settings(changes), FS, channels=("EMG L",))
    n = (max(pulses) // BLOCK + 16) * BLOCK  # a second of silence after the last: the episode is over
    x = np.zeros((1, n))
    x[0, pulses] = 300.0
    events: list[EmgEvent] = []
    for s in range(0, n, BLOCK):
        events += det.feed(x[:, s:s + BLOCK], s / FS)
    events += det.flush()
    return [e for e in events if e.kind is EmgEventKind.ACTIVITY]


# intervals of 1280 and 768 samples (0.15625 s, 0.09375 s): SD / mean = 0.03125 / 0.125 = 0.25 exactly
UNEVEN = [1000, 2280, 3048]


def test_the_rate_is_the_intervals_per_second_of_the_episode():
    (e,) = episodes(UNEVEN, {"emg.min_potentials": 3})
    assert e.potentials == 3 and e.duration_s == 0.25
    assert e.rate_hz == 8.0  # 2 intervals in 0.25 s


def test_a_variation_exactly_at_the_train_limit_is_a_train_and_above_it_a_burst():
    (e,) = episodes(UNEVEN, {"emg.min_potentials": 3, "emg.train_cv": 0.25})
    assert e.pattern == "train"
    (e,) = episodes(UNEVEN, {"emg.min_potentials": 3, "emg.train_cv": 0.24})
    assert e.pattern == "burst"


def test_three_evenly_spaced_potentials_are_a_train():
    (e,) = episodes([1000, 2000, 3000], {"emg.min_potentials": 3})
    assert e.potentials == 3 and e.pattern == "train"
    assert e.rate_hz == pytest.approx(8.192)


def test_an_episode_of_two_potentials_is_a_burst_unless_the_limit_is_one():
    (e,) = episodes([1000, 2024], {"emg.min_potentials": 2})
    assert e.potentials == 2 and e.duration_s == 0.125 and e.rate_hz == 8.0
    assert e.pattern == "burst"  # a single interval: variation taken as 1.0
    (e,) = episodes([1000, 2024], {"emg.min_potentials": 2, "emg.train_cv": 0.99})
    assert e.pattern == "burst"
    (e,) = episodes([1000, 2024], {"emg.min_potentials": 2, "emg.train_cv": 1.0})
    assert e.pattern == "train"


# ---------------------------------------------------------------------- memory held for the noise floor

QFS = 2000.0  # 10 ms frames of 20 samples
QFRAME = 20


def quiet(frames: int, seed: int) -> np.ndarray:
    """Two channels of 3 µV noise: far below the spike threshold (every frame only joins the floor)."""
    return np.random.default_rng(seed).normal(0.0, 3.0, (2, frames * QFRAME))


def held_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_a_quiet_stream_fed_in_small_blocks_holds_a_bounded_amount_of_memory():
    det = FreeRunDetector(Settings(), QFS, channels=("EMG L", "EMG R"))
    x = quiet(3000, seed=4)
    blocks = [x[:, i:i + QFRAME] for i in range(0, x.shape[1], QFRAME)]  # one frame each
    tracemalloc.start()
    try:
        for k, b in enumerate(blocks[:500]):
            det.feed(b, k * QFRAME / QFS)
        before = held_bytes()
        for k, b in enumerate(blocks[500:], start=500):
            det.feed(b, k * QFRAME / QFS)
        after = held_bytes()
    finally:
        tracemalloc.stop()
    # 2500 more blocks of 320 bytes each (band-passed): kept, they would be 800 kB and more
    assert after - before < 100_000
    floor = det.noise_uV()
    assert all(v is not None and 1.0 < v < 6.0 for v in floor.values())


def test_an_old_block_is_let_go_as_soon_as_50_newer_ordinary_frames_came():
    det = FreeRunDetector(Settings(), QFS, channels=("EMG L", "EMG R"))
    big, small = quiet(2000, seed=5), quiet(50, seed=6)  # 2000 frames: 640 kB band-passed
    t_small = big.shape[1] / QFS
    tracemalloc.start()
    try:
        det.feed(big, 0.0)
        with_big = held_bytes()
        det.feed(small, t_small)  # exactly the 50 frames the floor needs
        after = held_bytes()
    finally:
        tracemalloc.stop()
    assert with_big - after > 500_000
    # the floor is that of the newest 50 frames alone
    ref = FreeRunDetector(Settings(), QFS, channels=("EMG L", "EMG R"))
    ref.feed(big, 0.0)
    ref.noise_uV()
    ref.feed(small, t_small)
    assert det.noise_uV() == ref.noise_uV()
