"""The first major peak of a clean waveform (``app.analysis.template.first_major_peak``):
which lobe is the first major one, where its peak is, and the width of its phase at half
height, on small hand-made waveforms whose answers can be read off by eye (t = sample
index, in ms)."""

from __future__ import annotations

import numpy as np
from app.analysis.template import first_major_peak


def _peak(y: list[float]) -> tuple[float, float, float]:
    return first_major_peak(np.arange(float(len(y))), np.asarray(y, dtype=np.float64))


def test_a_lobe_reaching_exactly_half_the_largest_is_major():
    """Major means at least half the largest magnitude: a first lobe of exactly half counts."""
    assert _peak([0.0, 0.5, 0.0, -1.0, 0.0])[0] == 1.0


def test_the_first_major_lobe_ends_where_it_drops_below_half_height():
    """Two positive lobes with a small positive dip between them: the first, already major,
    is the first major peak even though the second is larger and the sign never changes."""
    assert _peak([0.0, 1.2, 0.2, 2.0, 0.0, 0.0])[0] == 1.0


def test_the_first_major_lobe_ends_at_its_sign_change():
    """A major positive lobe followed directly by a larger negative one: the positive one is
    the first major peak."""
    assert _peak([0.0, 1.2, -2.0, 0.0])[0] == 1.0


def test_a_waveform_still_rising_at_its_end_peaks_at_its_last_sample():
    peak_ms, onset_ms, width_ms = _peak([0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0])
    assert peak_ms == 6.0
    assert onset_ms == 1.0  # the last sample at most a tenth of the peak
    assert width_ms == 2.0  # from 4 (the first at half height) to the end


def test_the_phase_width_is_measured_between_the_half_height_crossings():
    """Peak 4 at t = 5 on a flat start: at or above half height (2) from t = 4 to t = 6."""
    peak_ms, onset_ms, width_ms = _peak([0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 3.0, 1.0, 0.0, 0.0])
    assert peak_ms == 5.0
    assert onset_ms == 2.0
    assert width_ms == 2.0


def test_the_phase_width_of_a_negative_first_phase():
    peak_ms, _onset, width_ms = _peak([0.0, -0.5, -1.5, -3.0, -2.0, -1.0, 2.0, 0.0])
    assert peak_ms == 3.0
    assert width_ms == 2.0  # from -1.5 (exactly half of -3) to -2; -0.5 and -1 are under half


def test_samples_exactly_at_half_height_are_inside_the_phase_on_both_sides():
    assert _peak([0.0, 0.5, 1.0, 0.5, 0.0])[2] == 2.0


def test_a_waveform_starting_at_its_peak_has_its_phase_from_the_first_sample():
    peak_ms, onset_ms, width_ms = _peak([4.0, 2.0, 1.0, 0.0])
    assert (peak_ms, onset_ms, width_ms) == (0.0, 0.0, 1.0)


def test_a_waveform_starting_above_half_height_has_its_phase_from_the_first_sample():
    assert _peak([3.0, 4.0, 2.0, 0.0]) == (1.0, 0.0, 2.0)
