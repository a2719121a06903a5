"""Direct checks of two small helpers of ``app.analysis.epoch``: ``_extreme_rows`` (per row the
largest or smallest sample, refined by the parabola through it and its two neighbours) and
``EpochAnalyzer._around`` (the mask of samples around a centre). Expected values are computed
here independently, by fitting the parabola with ``np.polyfit``."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer, _extreme_rows


def _vertex(y0: float, y1: float, y2: float) -> tuple[float, float]:
    """(value, offset from the middle sample) of the parabola through (-1, y0), (0, y1), (1, y2)."""
    a, b, c = np.polyfit([-1.0, 0.0, 1.0], [y0, y1, y2], 2)
    x = -b / (2.0 * a)
    return float(c - b * b / (4.0 * a)), float(x)


# Rows of 7 samples whose maximum sits at every interior index, with unequal neighbours so
# that the refinement moves the peak away from the sample.
_PEAKS = np.array(
    [
        [0.0, 5.0, 2.0, 1.0, 0.0, -1.0, -2.0],  # index 1, right neighbour lower than left
        [1.0, 3.0, 6.0, 5.0, 0.0, 0.0, 0.0],  # index 2
        [0.0, 0.0, 1.0, 4.0, 3.5, 0.0, 0.0],  # index 3
        [0.0, 0.0, 0.0, 2.0, 9.0, 4.0, 1.0],  # index 4
        [-3.0, -2.0, -1.0, 0.0, 1.0, 7.0, 6.0],  # index 5 (next to the last)
    ]
)


def test_interior_maxima_are_refined_by_the_parabola_through_the_neighbours():
    val, off, idx = _extreme_rows(_PEAKS, 1.0)
    assert idx.tolist() == [1, 2, 3, 4, 5]
    for row, i, v, o in zip(_PEAKS, idx, val, off, strict=True):
        want_v, want_o = _vertex(row[i - 1], row[i], row[i + 1])
        assert o == pytest.approx(want_o, abs=1e-12)
        assert v == pytest.approx(want_v, abs=1e-12)
        assert 0.0 < abs(o) < 0.5
        assert v > row[i]


def test_interior_minima_are_refined_the_same_way():
    w = -_PEAKS + 2.0
    val, off, idx = _extreme_rows(w, -1.0)
    assert idx.tolist() == [1, 2, 3, 4, 5]
    for row, i, v, o in zip(w, idx, val, off, strict=True):
        want_v, want_o = _vertex(row[i - 1], row[i], row[i + 1])
        assert o == pytest.approx(want_o, abs=1e-12)
        assert v == pytest.approx(want_v, abs=1e-12)
        assert v < row[i]


def test_a_known_peak_gives_its_exact_vertex():
    """0, 3, 2: the parabola 3 + 1x - 2x^2 peaks at x = 1/4 with value 3 + 1/8."""
    val, off, idx = _extreme_rows(np.array([[0.0, 3.0, 2.0, 0.0]]), 1.0)
    assert idx.tolist() == [1]
    assert off[0] == pytest.approx(0.25, abs=1e-15)
    assert val[0] == pytest.approx(3.125, abs=1e-15)


def test_the_first_of_tied_samples_is_taken_and_refined_towards_the_other():
    """3, 1, 0, 0, 3: the minimum is first reached at index 2; the parabola through 1, 0, 0
    has its vertex half a sample later, at -1/8."""
    val, off, idx = _extreme_rows(np.array([[3.0, 1.0, 0.0, 0.0, 3.0]]), -1.0)
    assert idx.tolist() == [2]
    assert off[0] == pytest.approx(0.5, abs=1e-15)
    assert val[0] == pytest.approx(-0.125, abs=1e-15)
    val, off, idx = _extreme_rows(np.array([[0.0, 3.0, 3.0, 0.0]]), 1.0)
    assert idx.tolist() == [1]
    assert off[0] == pytest.approx(0.5, abs=1e-15)
    assert val[0] == pytest.approx(3.375, abs=1e-15)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_extreme_at_either_edge_is_the_sample_itself(sign):
    w = sign * np.array(
        [
            [9.0, 4.0, 1.0, 0.0, 2.0],  # first sample
            [0.0, 1.0, 2.0, 3.0, 8.0],  # last sample
            [9.0, 9.0, 1.0, 0.0, 2.0],  # tie at the start: the first one
        ]
    )
    val, off, idx = _extreme_rows(w, sign)
    assert idx.tolist() == [0, 4, 0]
    assert off.tolist() == [0.0, 0.0, 0.0]
    assert val.tolist() == (sign * np.array([9.0, 8.0, 9.0])).tolist()


def test_an_edge_extreme_is_not_spoilt_by_an_infinite_far_sample():
    """An unrefined edge extreme is exactly its sample, even when another sample is infinite."""
    val, off, idx = _extreme_rows(np.array([[5.0, 1.0, 0.0, -np.inf]]), 1.0)
    assert idx.tolist() == [0]
    assert off.tolist() == [0.0]
    assert val.tolist() == [5.0]
    val, off, idx = _extreme_rows(np.array([[-np.inf, 0.0, 1.0, 5.0]]), 1.0)
    assert idx.tolist() == [3]
    assert val.tolist() == [5.0]


def test_a_flat_row_is_not_refined():
    w = np.full((2, 6), 2.5)
    for sign in (1.0, -1.0):
        val, off, idx = _extreme_rows(w, sign)
        assert idx.tolist() == [0, 0]
        assert off.tolist() == [0.0, 0.0]
        assert val.tolist() == [2.5, 2.5]


def test_a_row_holding_nan_is_reported_unrefined():
    """NaN wins the arg-extreme; the offset of that row stays 0, other rows are unaffected."""
    w = np.array([[0.0, 1.0, np.nan, 2.0, 0.0], [0.0, 3.0, 2.0, 0.0, 0.0]])
    val, off, idx = _extreme_rows(w, 1.0)
    assert idx.tolist() == [2, 1]
    assert off[0] == 0.0
    assert np.isnan(val[0])
    assert off[1] == pytest.approx(0.25, abs=1e-15)
    assert val[1] == pytest.approx(3.125, abs=1e-15)


def test_around_is_the_half_open_span_before_to_after_the_centre():
    cols = np.arange(12)
    mask = EpochAnalyzer._around(cols, np.array([5, 2]), 2, 3)
    assert np.flatnonzero(mask[0]).tolist() == [3, 4, 5, 6, 7]
    assert np.flatnonzero(mask[1]).tolist() == [0, 1, 2, 3, 4]
    assert mask.shape == (2, 12)
