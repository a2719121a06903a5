"""Free-running EMG: exactly what a noted stimulus window is replaced by.

The module docstring's promise: the window, from 1 ms before the stimulus to the end of the
response window, is replaced by a straight line between the samples at its edges (the last
sample before it, the first one after it) before anything is analysed. So a detector told
of a stimulus must give exactly what a detector not told of it gives on the same stream
with that window replaced by the line beforehand (``expected``): the same events and, after
every block at which both have analysed the same frames, the same noise floor on every
channel (several channels of independent noise, so that any other replacement shows).
The edge cases: a window at the start of the stream (no sample before it: it is flat at the
first sample after it, or at zero when none arrived either), a window whose far edge never
arrived (flat at the sample before it to the end of the stream), a window noted after part
of it was analysed (only the rest is replaced; its left edge is the last sample analysed).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.freerun import EmgEvent, FreeRunDetector
from app.settings import Settings

FS = 2000.0  # 10 ms frames of 20 samples; the 50 ms window is about 102 samples
FRAME = 20
NCH = 6
CHANNELS = tuple(f"ch{k}" for k in range(NCH))
PRE_S = 0.001
WINDOW_S = 0.05


def noise(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 5.0, (NCH, n)) + rng.uniform(-200.0, 200.0, (NCH, 1))  # noise on a DC offset
    return x


def with_artifact(x: np.ndarray, t: float, t0: float = 0.0) -> np.ndarray:
    """A large stimulus artifact (3 samples) just after the stimulus at ``t``."""
    x = x.copy()
    i = int(round((t - t0) * FS)) + 1
    if 0 <= i < x.shape[1] - 3:
        x[:, i:i + 3] += 1500.0
    return x


def edges(t: float, t0: float = 0.0) -> tuple[int, int]:
    """First sample of the window of a stimulus at ``t`` and the first after it."""
    return int(np.floor((t - PRE_S - t0) * FS)), int(np.ceil((t + WINDOW_S - t0) * FS))


def stim_at(i0: int, t0: float = 0.0) -> float:
    """A stimulus time whose window starts at sample ``i0`` (clear of rounding)."""
    t = t0 + (i0 + 0.5) / FS + PRE_S
    assert edges(t, t0)[0] == i0
    return t


def line(x: np.ndarray, i0: int, i1: int, start: int, end: int, left: np.ndarray, anchor: int | None = None) -> None:
    """Replace samples ``max(i0, start)`` to ``min(i1, end)`` of the window ``[i0, i1)`` by
    the line from ``left`` (at ``anchor``, by default ``i0 - 1``) to sample ``i1`` (``left``
    again when the far edge is not in the stream), in place."""
    a = i0 - 1 if anchor is None else anchor
    right = x[:, i1] if i1 < end else left
    w = np.linspace(0.0, 1.0, i1 - a + 1)[1:-1]
    lo, hi = max(i0, start), min(i1, end)
    x[:, lo:hi] = left[:, None] + (right - left)[:, None] * w[None, :][:, lo - a - 1: hi - a - 1]


def expected(x: np.ndarray, t: float, *, t0: float = 0.0, start: int = 0) -> np.ndarray:
    """``x`` with the window of the stimulus at ``t`` replaced, as the docstring says;
    ``start``: the samples before it were analysed before the stimulus was noted."""
    y = x.copy()
    end = y.shape[1]
    i0, i1 = edges(t, t0)
    anchor = None
    if i0 - 1 >= start:
        left = y[:, i0 - 1]
    elif start > 0:
        left, anchor = y[:, start - 1], start - 1  # from the last sample analysed: no step where they meet
    else:
        left = y[:, i1] if i1 < end else np.zeros(NCH)  # nothing before the stream
    line(y, i0, i1, start, end, left, anchor)
    return y


def feed_all(det: FreeRunDetector, x: np.ndarray, t0: float = 0.0, block: int = FRAME,
             notes: dict[int, list[float]] | None = None, times: list[float] | None = None,
             ) -> tuple[list[EmgEvent], list[tuple[int, dict[str, float | None]]]]:
    """Feed ``x`` in blocks (``times``: each block's ``t0_s``, default the sample count);
    ``notes[k]``: stimuli noted before block ``k``. Returns the events (flush included)
    and (samples received, noise floor) after every block and after the flush."""
    events: list[EmgEvent] = []
    floors: list[tuple[int, dict[str, float | None]]] = []
    for k, i in enumerate(range(0, x.shape[1], block)):
        for t in (notes or {}).get(k, []):
            det.note_stimulus(t)
        events += det.feed(x[:, i:i + block], times[k] if times else t0 + i / FS)
        floors.append((min(i + block, x.shape[1]), det.noise_uV()))
    events += det.flush()
    floors.append((-1, det.noise_uV()))
    return events, floors


def detector(wait_s: float = 0.0) -> FreeRunDetector:
    return FreeRunDetector(Settings(), FS, channels=CHANNELS, stimulus_wait_s=wait_s)


def assert_same(got, want, held: tuple[int, int] | None = None) -> None:
    """Same events; same floors after every block but those received while the noted
    window ``held`` = (i0, i1) was waiting for its far edge (analysis held at its start)."""
    ev, fl = got
    ev_want, fl_want = want
    assert ev == ev_want
    assert len(fl) == len(fl_want)
    compared = 0
    for (n, a), (_, b) in zip(fl, fl_want, strict=True):
        if held is not None and held[0] < n <= held[1]:
            continue
        assert a == b, n
        compared += 1
    assert compared >= 3


def test_a_noted_window_is_the_straight_line_between_its_edges():
    x = noise(600)
    t = stim_at(207)
    xs = with_artifact(x, t)
    got = feed_all(detector(), xs, notes={0: [t]})
    assert_same(got, feed_all(detector(), expected(xs, t)), held=edges(t))
    # told of nothing, the artifact shows
    assert feed_all(detector(), xs)[1][-1] != got[1][-1]


def test_an_old_note_first_does_not_keep_the_next_window_from_being_blanked():
    x = noise(600, seed=2)
    t = stim_at(233)
    xs = with_artifact(x, t)
    got = feed_all(detector(), xs, notes={0: [-5.0, t]})  # -5 s: before the stream, nothing to blank
    assert_same(got, feed_all(detector(), expected(xs, t)), held=edges(t))


def test_a_window_is_blanked_as_soon_as_its_far_edge_arrived():
    """Analysis waits at a window's start only until its far edge has arrived: right after
    that block, everything received is analysed (no wait asked for)."""
    x = noise(600, seed=3)
    t = stim_at(151)
    xs = with_artifact(x, t)
    _, floors = feed_all(detector(), xs, notes={0: [t]})
    _, want = feed_all(detector(), expected(xs, t))
    i1 = edges(t)[1]
    after = [(a, b) for (n, a), (_, b) in zip(floors, want, strict=True) if n > i1 + FRAME]
    assert len(after) >= 10 and all(a == b for a, b in after)


@pytest.mark.parametrize("i0", [200, 201, 219, 220])
def test_a_window_starting_where_the_analysis_stopped_for_it(i0):
    """The analysis waits at the window's start (frame-aligned or not): the left edge is the
    sample before the window whether it was analysed already or is still held back."""
    x = noise(600, seed=i0)
    t = stim_at(i0)
    xs = with_artifact(x, t)
    got = feed_all(detector(), xs, notes={0: [t]})
    assert_same(got, feed_all(detector(), expected(xs, t)), held=edges(t))


@pytest.mark.parametrize("after", [0, 1, 5])
def test_a_late_note_blanks_only_the_rest_of_its_window(after):
    """Noted when the analysis has passed the window's start (``after`` samples past it):
    the rest is replaced by the line from the last sample analysed."""
    x = noise(600, seed=10 + after)
    i0 = 200 - after  # the analysis reaches sample 200 (10 frames) before the note
    t = stim_at(i0)
    xs = with_artifact(x, t)
    got = feed_all(detector(), xs, notes={10: [t]})
    assert_same(got, feed_all(detector(), expected(xs, t, start=200)), held=edges(t))


def test_a_window_at_the_start_of_the_stream_is_flat_at_the_sample_after_it():
    x = noise(600, seed=4)
    t = 0.0  # the window starts 1 ms before the first sample
    assert edges(t)[0] < 0
    xs = with_artifact(x, t)
    got = feed_all(detector(), xs, notes={0: [t]})
    assert_same(got, feed_all(detector(), expected(xs, t)), held=(0, edges(t)[1]))


@pytest.mark.parametrize("n", [40, 80, 99, 100, 101, 103, 140])
def test_a_stream_ending_inside_a_window_from_its_start(n):
    """No sample before the window and the far edge never arrives: the window is zeros to
    the end of the stream (or flat at the sample after it, when that arrived)."""
    x = noise(n, seed=n)
    t = 0.0
    xs = with_artifact(x, t)
    got = feed_all(detector(), xs, notes={0: [t]})
    want = expected(xs, t)
    if n < edges(t)[1]:
        assert not want[:, :n].any()
    assert_same_final(got, feed_all(detector(), want))


def assert_same_final(got, want) -> None:
    """Same events and the same floors after the stream (all of it analysed)."""
    assert got[0] == want[0]
    assert got[1][-1] == want[1][-1]


@pytest.mark.parametrize("future_first", [False, True])
def test_a_stream_ending_inside_a_window_is_flat_to_its_end(future_first):
    """The far edge never arrives: flat at the sample before the window to the end of the
    stream, also when a stimulus noted before it lies beyond the end of the stream."""
    x = noise(100, seed=7)
    t = stim_at(41)
    assert edges(t)[1] > 100
    xs = with_artifact(x, t)
    notes = [100.0, t] if future_first else [t]
    got = feed_all(detector(), xs, notes={0: notes})
    want = feed_all(detector(), expected(xs, t))
    assert_same_final(got, want)
    assert feed_all(detector(), xs)[1][-1] != got[1][-1]


def test_a_stimulus_in_the_block_time_base_is_moved_by_the_clock_jitter():
    """Blocks whose ``t0_s`` runs 4 ms ahead of the sample count (jitter below a gap): a
    stimulus noted in the blocks' time base lands 4 ms earlier in the samples."""
    x = noise(600, seed=5)
    jitter = 0.004
    times = [0.0] + [i / FS + jitter for i in range(FRAME, 600, FRAME)]
    t_samples = stim_at(251)
    xs = with_artifact(x, t_samples)
    got = feed_all(detector(), xs, notes={3: [t_samples + jitter]}, times=times)
    assert_same(got, feed_all(detector(), expected(xs, t_samples), times=times), held=edges(t_samples))


@pytest.mark.parametrize("count", [256, 257])
def test_the_newest_256_notes_wait_for_their_windows(count):
    """The oldest note is for a window in the stream, the others for windows long after
    it: with 256 notes it is kept (and blanked), with 257 it is the one forgotten."""
    x = noise(600, seed=6)
    t = stim_at(187)
    xs = with_artifact(x, t)
    notes = [t] + [50.0 + k for k in range(count - 1)]
    got = feed_all(detector(), xs, notes={0: notes})
    if count <= 256:
        assert_same(got, feed_all(detector(), expected(xs, t)), held=edges(t))
    else:
        assert_same(got, feed_all(detector(), xs))


def test_a_note_whose_window_is_empty_at_the_time_resolution_takes_no_place_among_the_256():
    """A stimulus time so large (1e18 s: nanoseconds taken for seconds) that its window has
    no sample at that resolution is dropped at the next block; it does not wait, so the 255
    notes after it leave room for an earlier one still waiting for its far edge."""
    x = noise(600, seed=8)
    t = stim_at(307)
    xs = with_artifact(x, t)
    later = [50.0 + k for k in range(255)]
    got = feed_all(detector(), xs, notes={0: [t, 1e18], 2: later})
    assert_same(got, feed_all(detector(), expected(xs, t)), held=edges(t))
