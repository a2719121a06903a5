"""Free-running EMG: the noise-floor history gives the same floor however it was reduced in
between (queried after every block or only at the end), the median helper is the median,
and a stream that ends during cautery ends it at the last sample analysed."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.freerun import EmgEventKind, FreeRunDetector
from app.analysis.noise import median_rows as _median_last
from app.settings import Settings

FS = 2000.0  # 10 ms frames of 20 samples
FRAME = 20
CHANNELS = ("EMG L", "EMG R")


def detector() -> FreeRunDetector:
    return FreeRunDetector(Settings(), FS, channels=CHANNELS, stimulus_wait_s=0.0)


def noise(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 4.0, (2, frames * FRAME)) * rng.uniform(0.5, 2.0, (2, 1))


@pytest.mark.parametrize(("first", "second"), [(60, 49), (60, 50), (120, 1), (50, 49), (51, 48)])
def test_the_floor_does_not_depend_on_when_the_history_was_reduced(first, second):
    x = noise(first + second, seed=first * 7 + second)
    a, b = detector(), detector()
    a.feed(x[:, : first * FRAME], 0.0)
    a.noise_uV()  # reduced after the first block: the newest 50 frames kept
    a.feed(x[:, first * FRAME:], first * FRAME / FS)
    b.feed(x[:, : first * FRAME], 0.0)
    b.feed(x[:, first * FRAME:], first * FRAME / FS)
    got, want = a.noise_uV(), b.noise_uV()
    assert got == want
    assert all(v is not None and v > 0 for v in got.values())


@pytest.mark.parametrize("shape", [(7,), (8,), (3, 9), (3, 10), (2, 5, 50), (2, 4, 51), (4, 3, 2)])
def test_the_median_helper_is_numpys_median_along_the_last_axis(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape)
    assert np.array_equal(_median_last(x), np.median(x, axis=-1))


def test_the_median_of_an_even_count_takes_the_two_middle_values():
    x = np.array([[9.0, 1.0, 8.0, 2.0, 7.0, 3.0]])  # sorted 1 2 3 7 8 9: (3 + 7) / 2
    assert _median_last(x)[0] == 5.0


def test_a_stream_that_ends_during_cautery_ends_it_at_the_last_sample_analysed():
    det = detector()
    rng = np.random.default_rng(3)
    quiet = rng.normal(0.0, 3.0, (2, 40 * FRAME))
    burst = rng.normal(0.0, 5000.0, (2, 30 * FRAME))  # broadband, far above the cautery level
    events = det.feed(quiet, 0.0) + det.feed(burst, quiet.shape[1] / FS)
    assert [e.kind for e in events if e.kind is EmgEventKind.CAUTERY_START]
    end = det.flush()
    ends = [e for e in end if e.kind is EmgEventKind.CAUTERY_END]
    assert len(ends) == 1 and end[-1] is ends[0]
    t_end = (quiet.shape[1] + burst.shape[1]) / FS
    assert ends[0].t_s == pytest.approx(t_end)
    assert 0.0 < ends[0].duration_s <= burst.shape[1] / FS
