"""The onset of the first major peak (``app.analysis.template.first_major_peak``): the last
sample before the peak still *within* 10 % of the peak's magnitude of the baseline
(``recording-exchange.md``), a sample at exactly 10 % included."""

from __future__ import annotations

import numpy as np

from app.analysis.template import first_major_peak


def test_a_sample_at_exactly_a_tenth_of_the_peak_is_still_baseline():
    t = np.arange(7.0)
    peak, onset, _width = first_major_peak(t, np.array([0.0, 1.0, 2.0, 4.0, 10.0, 4.0, 0.0]))
    assert peak == 4.0
    assert onset == 1.0  # 1.0 is exactly 10 % of 10.0: within it
    _peak, onset, _width = first_major_peak(t, np.array([0.0, 1.0001, 2.0, 4.0, 10.0, 4.0, 0.0]))
    assert onset == 0.0  # just above 10 %: the response has left the baseline there
