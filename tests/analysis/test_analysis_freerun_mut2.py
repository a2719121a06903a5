"""Free-running EMG: which stray potentials at the ends of a chain are left out of an episode.

``_trim`` (the rule the episodes' onset, duration, count and rate follow): a first or last
potential more than max(6 median intervals, 100 ms) from its neighbour and smaller than
half the chain's median potential is dropped, as long as more than ``keep`` remain.
Times in the boundary cases are binary fractions, so the distances are exact.
"""

from __future__ import annotations

import pytest

from app.analysis.freerun import _trim

BIG, SMALL = 100.0, 10.0
BURST = [1.0, 1.01, 1.02, 1.03, 1.04]


@pytest.mark.parametrize(
    ("times", "peaks", "want"),
    [
        # a small stray long before the burst, or long after it: dropped
        ([0.0, *BURST], [SMALL] + [BIG] * 5, BURST),
        ([*BURST, 2.04], [BIG] * 5 + [SMALL], BURST),
        ([0.0, *BURST, 2.04], [SMALL] + [BIG] * 5 + [SMALL], BURST),
        # far but not small: kept
        ([0.0, *BURST], [BIG] * 6, [0.0, *BURST]),
        ([*BURST, 2.04], [BIG] * 6, [*BURST, 2.04]),
        # small but close (95 ms, under the 100 ms floor): kept
        ([0.905, *BURST], [SMALL] + [BIG] * 5, [0.905, *BURST]),
        ([*BURST, 1.135], [BIG] * 5 + [SMALL], [*BURST, 1.135]),
        ([100.905, *[100.0 + t for t in BURST]], [SMALL] + [BIG] * 5, [100.905, *[100.0 + t for t in BURST]]),
        ([*[100.0 + t for t in BURST], 101.135], [BIG] * 5 + [SMALL], [*[100.0 + t for t in BURST], 101.135]),
    ],
)
def test_strays_at_the_ends_of_a_chain(times, peaks, want):
    t, p = _trim(times, peaks, 4)
    assert t == pytest.approx(want)
    assert len(p) == len(t)
    assert p == [pk for tk, pk in zip(times, peaks, strict=True) if any(abs(tk - w) < 1e-12 for w in t)]


def test_no_more_than_down_to_keep_are_dropped():
    times, peaks = [0.0, 1.0, 1.01, 1.02], [SMALL, BIG, BIG, BIG]
    assert _trim(times, peaks, 4) == (times, peaks)
    assert _trim([0.0, *BURST, 2.04], [SMALL] + [BIG] * 5 + [SMALL], 6) == ([*BURST, 2.04], [BIG] * 5 + [SMALL])


# intervals of 1/32 s: the limit is 6/32 = 0.1875 s (over the 100 ms floor)
STEP = 0.03125


@pytest.mark.parametrize("first", [True, False])
def test_a_stray_exactly_at_the_limit_or_exactly_half_the_median_is_kept(first):
    body = [0.5 + k * STEP for k in range(5)]
    if first:
        at_limit = ([body[0] - 6 * STEP, *body], [SMALL] + [BIG] * 5)
        half = ([body[0] - 8 * STEP, *body], [BIG / 2] + [BIG] * 5)
    else:
        at_limit = ([*body, body[-1] + 6 * STEP], [BIG] * 5 + [SMALL])
        half = ([*body, body[-1] + 8 * STEP], [BIG] * 5 + [BIG / 2])
    for times, peaks in (at_limit, half):
        assert _trim(times, peaks, 4) == (times, peaks)
    # a hair further, or a hair smaller: dropped
    if first:
        assert _trim([body[0] - 6 * STEP - STEP / 8, *body], [SMALL] + [BIG] * 5, 4) == (body, [BIG] * 5)
        assert _trim([body[0] - 8 * STEP, *body], [BIG / 2 - 0.5] + [BIG] * 5, 4) == (body, [BIG] * 5)
    else:
        assert _trim([*body, body[-1] + 6 * STEP + STEP / 8], [BIG] * 5 + [SMALL], 4) == (body, [BIG] * 5)
        assert _trim([*body, body[-1] + 8 * STEP], [BIG] * 5 + [BIG / 2 - 0.5], 4) == (body, [BIG] * 5)


def test_an_episode_is_announced_at_its_fourth_potential_with_their_peak():
    """``emg.min_potentials`` (4) potentials make an episode: the start event carries them
    and the largest of their peaks, and the end event the whole episode."""
    import numpy as np

    from app.analysis.freerun import EmgEventKind, FreeRunDetector
    from app.settings import Settings
    from emg_synth import Episode, make_stream

    fs = 5000.0
    x = make_stream(fs, 3.0, episodes=(Episode(0, 1.0, 1.0, "train", 200.0),), noise_uV=3.0, seed=11)
    det = FreeRunDetector(Settings(), fs)
    events = []
    for i in range(0, x.shape[1], 100):
        events += det.feed(x[:, i:i + 100], i / fs)
    events += det.flush()
    starts = [e for e in events if e.kind is EmgEventKind.ACTIVITY_START]
    ends = [e for e in events if e.kind is EmgEventKind.ACTIVITY]
    assert len(starts) == 1 and len(ends) == 1
    s, e = starts[0], ends[0]
    assert s.potentials == 4
    assert isinstance(s.peak_uV, float) and 100.0 < s.peak_uV <= e.peak_uV
    assert s.onset_s == e.onset_s and e.potentials > 4
    assert np.isfinite(s.t_s) and s.t_s < e.t_s
